//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to attach
//! a BPF LSM program: the type id of a hook, and the offsets of the
//! struct fields it reads, as this kernel lays them out.

use std::io;

const MAGIC: u16 = 0xeb9f;
pub(crate) const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
pub(crate) const KIND_FUNC: u32 = 12;

/// The parsed type section: where each type's record starts.
pub(crate) struct Btf {
    data: Vec<u8>,
    /// Offset of type `id`'s record, at index `id` (0 is `void`).
    types: Vec<usize>,
    strings: std::ops::Range<usize>,
}

impl Btf {
    pub fn vmlinux() -> io::Result<Btf> {
        Btf::parse(std::fs::read("/sys/kernel/btf/vmlinux")?)
    }

    pub fn parse(data: Vec<u8>) -> io::Result<Btf> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("BTF: {what}"));
        let u32_at = |at: usize| -> io::Result<u32> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
                .ok_or_else(|| bad("truncated"))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(bad("not little-endian BTF"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if strings.end > data.len() {
            return Err(bad("truncated strings"));
        }
        let (mut at, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
        let mut types = vec![0];
        while at < end {
            let info = u32_at(at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                1 | 14 | 17 => 4,          // int, var, decl tag
                3 => 12,                   // array
                4 | 5 => 12 * vlen,        // struct, union
                6 | 13 => 8 * vlen,        // enum, func proto
                15 | 19 => 12 * vlen,      // datasec, enum64
                2 | 7..=12 | 16 | 18 => 0, // the rest: no more
                other => return Err(bad(&format!("unknown kind {other}"))),
            };
            types.push(at);
            at += 12 + extra;
        }
        Ok(Btf {
            data,
            types,
            strings,
        })
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.data[at..at + 4].try_into().expect("four bytes"))
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.strings.start + name_off as usize;
        let rest = &self.data[start.min(self.strings.end)..self.strings.end];
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn kind(&self, id: u32) -> u32 {
        (self.u32_at(self.types[id as usize] + 4) >> 24) & 0x1f
    }

    /// The id of the type of `kind` named `name`.
    pub fn find(&self, kind: u32, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            let at = self.types[id as usize];
            self.kind(id) == kind && self.name(self.u32_at(at)) == name.as_bytes()
        })
    }

    /// The byte offset of field `field` in struct `id`, looking into its
    /// anonymous structs and unions.
    pub fn offset(&self, id: u32, field: &str) -> Option<u32> {
        let at = self.types[id as usize];
        let info = self.u32_at(at + 4);
        let (vlen, bitfields) = (info & 0xffff, info >> 31 == 1);
        (0..vlen).find_map(|i| {
            let m = at + 12 + 12 * i as usize;
            let (name_off, ty, offset) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bits = if bitfields {
                offset & 0xff_ffff
            } else {
                offset
            };
            if bits % 8 != 0 {
                return None;
            }
            if name_off == 0 {
                let inner = self.resolve(ty);
                matches!(self.kind(inner), KIND_STRUCT | KIND_UNION)
                    .then(|| self.offset(inner, field))
                    .flatten()
                    .map(|o| o + bits / 8)
            } else {
                (self.name(name_off) == field.as_bytes()).then_some(bits / 8)
            }
        })
    }

    /// `id` past typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        while matches!(self.kind(id), KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST) {
            id = self.u32_at(self.types[id as usize] + 8);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the host has BTF: the fields the listen fence reads are found,
    /// at offsets that agree with what the kernel's headers say of them.
    #[test]
    fn finds_hooks_and_fields_in_this_kernel() {
        let Ok(btf) = Btf::vmlinux() else {
            eprintln!("no /sys/kernel/btf/vmlinux here");
            return;
        };
        assert!(btf.find(KIND_FUNC, "bpf_lsm_socket_listen").is_some());
        let socket = btf.find(KIND_STRUCT, "socket").unwrap();
        let sock_common = btf.find(KIND_STRUCT, "sock_common").unwrap();
        assert!(btf.offset(socket, "sk").is_some());
        // skc_daddr, then skc_rcv_saddr, in an anonymous struct of an
        // anonymous union at the start of sock_common.
        assert_eq!(btf.offset(sock_common, "skc_daddr"), Some(0));
        assert_eq!(btf.offset(sock_common, "skc_rcv_saddr"), Some(4));
        assert!(btf.offset(sock_common, "skc_family").is_some());
        assert!(btf.offset(sock_common, "no_such_field").is_none());
    }
}

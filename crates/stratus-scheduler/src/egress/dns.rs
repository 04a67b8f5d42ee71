//! A small stub resolver that reports how long its answers hold: the
//! host's `/etc/hosts`, then A and AAAA queries over UDP to the name
//! servers of `/etc/resolv.conf` (or those the operator names), with the
//! records' TTLs. `getaddrinfo` says nothing of TTLs, and egress rules
//! must follow names as their addresses change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

/// How long an answer from `/etc/hosts` holds before the file is read
/// again.
pub const HOSTS_TTL: Duration = Duration::from_secs(60);
/// How long to wait for one name server's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Query each name server this many times before giving up on it.
const ATTEMPTS: usize = 2;

/// A name's addresses, and how long they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<IpAddr>,
    pub ttl: Duration,
}

/// Resolves names; a seam for tests.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `name` (an empty list when it has none), or why
    /// none could be had (no name server answered).
    async fn resolve(&self, name: &str) -> Result<Answer, String>;
}

/// The host's resolver configuration, read at each lookup.
pub struct Resolver {
    /// Name servers to ask; `None`: those of `/etc/resolv.conf`.
    servers: Option<Vec<SocketAddr>>,
    hosts: PathBuf,
    resolv_conf: PathBuf,
}

impl Resolver {
    pub fn new(servers: Option<Vec<SocketAddr>>) -> Resolver {
        Resolver {
            servers,
            hosts: "/etc/hosts".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// The name servers of `/etc/resolv.conf`, at port 53; loopback's when it
/// names none, as the C library does.
pub fn system_name_servers() -> Vec<SocketAddr> {
    name_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

fn name_servers(resolv_conf: &str) -> Vec<SocketAddr> {
    let servers: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A scoped IPv6 address (`fe80::1%eth0`) loses its scope.
        .filter_map(|addr| addr.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if servers.is_empty() {
        vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 53))]
    } else {
        servers
    }
}

/// The addresses `hosts` (the text of `/etc/hosts`) gives `name`.
fn from_hosts(hosts: &str, name: &str) -> Vec<IpAddr> {
    hosts
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut words = line.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

#[async_trait]
impl Resolve for Resolver {
    async fn resolve(&self, name: &str) -> Result<Answer, String> {
        let hosts = tokio::fs::read_to_string(&self.hosts)
            .await
            .unwrap_or_default();
        let listed = from_hosts(&hosts, name);
        if !listed.is_empty() {
            return Ok(Answer {
                addresses: listed,
                ttl: HOSTS_TTL,
            });
        }
        let servers = match &self.servers {
            Some(servers) => servers.clone(),
            None => name_servers(
                &tokio::fs::read_to_string(&self.resolv_conf)
                    .await
                    .unwrap_or_default(),
            ),
        };
        let mut failures = Vec::new();
        for server in &servers {
            match ask_both(*server, name).await {
                Ok(answer) => return Ok(answer),
                Err(err) => failures.push(format!("{server}: {err}")),
            }
        }
        Err(format!(
            "no name server answered for {name} ({})",
            failures.join("; ")
        ))
    }
}

/// A and AAAA from one server.
async fn ask_both(server: SocketAddr, name: &str) -> Result<Answer, String> {
    let (a, aaaa) = tokio::join!(ask(server, name, TYPE_A), ask(server, name, TYPE_AAAA));
    let (a, aaaa) = (a?, aaaa?);
    let mut addresses = a.addresses;
    addresses.extend(aaaa.addresses);
    Ok(Answer {
        addresses,
        ttl: a.ttl.min(aaaa.ttl),
    })
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// How long "no such name" or "no such record" holds: the lower of the
/// usual negative-caching times.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

async fn ask(server: SocketAddr, name: &str, qtype: u16) -> Result<Answer, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    let mut last = String::from("no answer");
    for _ in 0..ATTEMPTS {
        let id = uuid::Uuid::new_v4().as_u128() as u16;
        let query = query(id, name, qtype)?;
        socket.send(&query).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
            match received {
                Err(_) => {
                    last = format!("no answer in {QUERY_TIMEOUT:?}");
                    break;
                }
                Ok(Err(err)) => return Err(err.to_string()),
                // Another query's late answer, or not an answer at all.
                Ok(Ok(len)) => match parse(&buf[..len], id, qtype) {
                    Some(answer) => return answer,
                    None => continue,
                },
            }
        }
    }
    Err(last)
}

/// A query for `name`'s records of `qtype`, recursion desired.
fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// The answer to query `id`: `None` when `msg` is not one (another id,
/// not a response, malformed), so that the wait goes on.
fn parse(msg: &[u8], id: u16, qtype: u16) -> Option<Result<Answer, String>> {
    let u16_at = |at: usize| Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]));
    if u16_at(0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    let (qdcount, ancount) = (u16_at(4)?, u16_at(6)?);
    match rcode {
        0 => {}
        // No such name: no addresses.
        3 => {
            return Some(Ok(Answer {
                addresses: Vec::new(),
                ttl: NEGATIVE_TTL,
            }));
        }
        code => return Some(Err(format!("the name server answered with error {code}"))),
    }
    let mut at = 12;
    for _ in 0..qdcount {
        at = skip_name(msg, at)? + 4;
    }
    let (mut addresses, mut ttl) = (Vec::new(), None::<u32>);
    for _ in 0..ancount {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let record_ttl = u32::from_be_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?);
        let len = usize::from(u16_at(at + 8)?);
        let data = msg.get(at + 10..at + 10 + len)?;
        at += 10 + len;
        // The chain of aliases that led to them holds only as long.
        ttl = Some(ttl.map_or(record_ttl, |t| t.min(record_ttl)));
        match (rtype, data.len()) {
            (TYPE_A, 4) if qtype == TYPE_A => {
                addresses.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?));
            }
            (TYPE_AAAA, 16) if qtype == TYPE_AAAA => {
                addresses.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?));
            }
            _ => {}
        }
    }
    let ttl = match (addresses.is_empty(), ttl) {
        (false, Some(ttl)) => Duration::from_secs(u64::from(ttl)),
        _ => NEGATIVE_TTL,
    };
    Some(Ok(Answer { addresses, ttl }))
}

/// Where the name at `at` ends, compressed or not.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            // A pointer ends the name.
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_and_hosts_files() {
        assert_eq!(
            name_servers(
                "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
            ),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(name_servers(""), vec!["127.0.0.1:53".parse().unwrap()]);
        let hosts = "127.0.0.1 localhost\n10.1.2.3 db.internal db # the database\n::1 localhost ip6-localhost\n";
        assert_eq!(from_hosts(hosts, "DB"), vec![IpAddr::from([10, 1, 2, 3])]);
        assert_eq!(from_hosts(hosts, "localhost").len(), 2);
        assert!(from_hosts(hosts, "internal").is_empty());
    }

    /// An answer as a server sends it: the question, then a CNAME and an
    /// A record whose name points back at the question's.
    fn answer(id: u16, rcode: u8, records: &[(u16, u32, &[u8])]) -> Vec<u8> {
        let mut msg = query(id, "www.example.com", TYPE_A).unwrap();
        msg[2] |= 0x80;
        msg[3] = rcode;
        msg[7] = records.len() as u8;
        for (rtype, ttl, data) in records {
            msg.extend_from_slice(&[0xc0, 12]);
            msg.extend_from_slice(&rtype.to_be_bytes());
            msg.extend_from_slice(&CLASS_IN.to_be_bytes());
            msg.extend_from_slice(&ttl.to_be_bytes());
            msg.extend_from_slice(&(data.len() as u16).to_be_bytes());
            msg.extend_from_slice(data);
        }
        msg
    }

    #[test]
    fn answers_give_addresses_and_the_lowest_ttl() {
        let cname = [3, b'w', b'e', b'b', 0xc0, 16];
        let msg = answer(
            7,
            0,
            &[
                (5, 300, &cname),
                (TYPE_A, 60, &[192, 0, 2, 1]),
                (TYPE_A, 90, &[192, 0, 2, 2]),
            ],
        );
        let parsed = parse(&msg, 7, TYPE_A).unwrap().unwrap();
        assert_eq!(
            parsed,
            Answer {
                addresses: vec![IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2])],
                ttl: Duration::from_secs(60),
            }
        );
        // Another query's answer is not this one's.
        assert!(parse(&msg, 8, TYPE_A).is_none());
        // No such name, or a failure.
        let none = parse(&answer(7, 3, &[]), 7, TYPE_A).unwrap().unwrap();
        assert!(none.addresses.is_empty());
        assert_eq!(none.ttl, NEGATIVE_TTL);
        assert!(parse(&answer(7, 2, &[]), 7, TYPE_A).unwrap().is_err());
        // Truncated: not an answer.
        assert!(parse(&msg[..msg.len() - 3], 7, TYPE_A).is_none());
    }
}

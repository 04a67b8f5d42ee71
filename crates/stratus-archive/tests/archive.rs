//! Packing is deterministic and faithful; unpacking refuses hostile archives
//! without writing anything outside its destination.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use stratus_archive::{ArchiveError, Limits, pack, sha256_hex, unpack};
use tar::EntryType;

// ---- helpers ----------------------------------------------------------------

fn write(root: &Path, path: &str, contents: &str, mode: u32) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A code directory with a bit of everything: nested files, an executable,
/// relative symlinks, `.git`, and files that `.stratusignore` leaves out.
fn sample_tree(root: &Path) {
    write(
        root,
        "main.py",
        "def handler(event, context):\n    return event\n",
        0o644,
    );
    write(
        root,
        "bootstrap",
        "#!/bin/sh\nexec python3 main.py\n",
        0o755,
    );
    write(root, "lib/util.py", "X = 1\n", 0o600);
    write(root, "lib/deep/data.json", "{}\n", 0o664);
    write(root, "lib/cache.pyc", "junk", 0o644);
    write(root, "build/out.o", "junk", 0o644);
    write(
        root,
        "docs/build",
        "a file named like the ignored directory",
        0o644,
    );
    write(root, ".git/config", "[core]\n", 0o644);
    write(root, ".git/objects/ab/cdef", "blob", 0o444);
    write(
        root,
        ".stratusignore",
        "# generated\n*.pyc\nbuild/\n",
        0o644,
    );
    symlink("lib/util.py", root.join("util.py")).unwrap();
    symlink("../main.py", root.join("lib/main.py")).unwrap();
    symlink("deep", root.join("lib/here")).unwrap();
}

/// Copies a tree, symlinks as symlinks and modes kept, creating entries in
/// reverse order so that directory order on disk differs.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let mut children: Vec<_> = fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    children.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
    for child in children {
        let source = child.path();
        let target = to.join(child.file_name());
        let meta = fs::symlink_metadata(&source).unwrap();
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&source).unwrap(), &target).unwrap();
        } else if meta.is_dir() {
            copy_tree(&source, &target);
        } else {
            fs::copy(&source, &target).unwrap();
            fs::set_permissions(&target, meta.permissions()).unwrap();
        }
    }
}

/// Sets the modification time of every file and directory below `root`.
fn touch_all(root: &Path, time: SystemTime) {
    for path in walk(root) {
        if !fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            fs::File::open(&path).unwrap().set_modified(time).unwrap();
        }
    }
    fs::File::open(root).unwrap().set_modified(time).unwrap();
}

/// Every path below `root`, symlinks not followed.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

/// Every path below `root`, relative and `/`-separated, with a kind marker:
/// `d` directory, `f` file with its mode, `l` link with its target.
fn listing(root: &Path) -> BTreeSet<String> {
    walk(root)
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                format!("{rel} -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                format!("{rel}/")
            } else {
                format!("{rel} {:o}", meta.permissions().mode() & 0o777)
            }
        })
        .collect()
}

// ---- packing ----------------------------------------------------------------

#[test]
fn packing_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    sample_tree(&a);
    touch_all(&a, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));

    let first = pack(&a).unwrap();
    let second = pack(&a).unwrap();
    assert_eq!(first.bytes, second.bytes);
    assert_eq!(first.sha256, second.sha256);

    let b = tmp.path().join("b");
    copy_tree(&a, &b);
    touch_all(&b, SystemTime::now());
    let copy = pack(&b).unwrap();
    assert_eq!(
        first.bytes, copy.bytes,
        "a copy with other mtimes packs differently"
    );
    assert_eq!(first.sha256, copy.sha256);

    assert_eq!(first.sha256, sha256_hex(&first.bytes));
    assert_eq!(first.sha256.len(), 64);
    assert!(
        first
            .sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[test]
fn changing_content_or_mode_changes_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    sample_tree(&dir);
    let before = pack(&dir).unwrap();

    write(&dir, "main.py", "changed\n", 0o644);
    let content = pack(&dir).unwrap();
    assert_ne!(before.sha256, content.sha256);

    fs::set_permissions(dir.join("main.py"), fs::Permissions::from_mode(0o755)).unwrap();
    let mode = pack(&dir).unwrap();
    assert_ne!(content.sha256, mode.sha256);

    // Ignored files do not count.
    write(&dir, "lib/other.pyc", "more junk", 0o644);
    write(&dir, ".git/HEAD", "ref: refs/heads/main\n", 0o644);
    assert_eq!(mode.sha256, pack(&dir).unwrap().sha256);
}

#[test]
fn round_trip_keeps_files_modes_and_links_and_drops_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let package = pack(&src).unwrap();

    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let unpacked = unpack(&package.bytes, &dest, Limits::default()).unwrap();

    let expected: BTreeSet<String> = [
        ".stratusignore 644",
        "bootstrap 755",
        "docs/",
        "docs/build 644",
        "lib/",
        "lib/deep/",
        "lib/deep/data.json 644",
        "lib/here -> deep",
        "lib/main.py -> ../main.py",
        "lib/util.py 644",
        "main.py 644",
        "util.py -> lib/util.py",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(listing(&dest), expected);

    assert_eq!(unpacked.files, package.files);
    assert_eq!(unpacked.bytes, package.unpacked_bytes);
    assert_eq!(package.files, 6);
    for file in [
        "main.py",
        "bootstrap",
        "lib/util.py",
        "lib/deep/data.json",
        ".stratusignore",
    ] {
        assert_eq!(
            fs::read(src.join(file)).unwrap(),
            fs::read(dest.join(file)).unwrap(),
            "{file}"
        );
    }
    // The links work once unpacked.
    assert_eq!(fs::read_to_string(dest.join("util.py")).unwrap(), "X = 1\n");
    assert_eq!(
        fs::read_to_string(dest.join("lib/main.py")).unwrap(),
        fs::read_to_string(src.join("main.py")).unwrap()
    );
    assert!(dest.join("lib/here/data.json").is_file());
}

#[test]
fn symlink_pointing_outside_fails_to_pack() {
    for (link, target) in [
        ("escape", "../outside.txt"),
        ("lib/escape", "../../outside.txt"),
        ("absolute", "/etc/passwd"),
        // Lexically inside, but `lib/up` is the root, so this is its parent.
        ("chained", "lib/up/.."),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("app");
        write(&dir, "main.py", "", 0o644);
        write(&dir, "lib/util.py", "", 0o644);
        write(tmp.path(), "outside.txt", "secret", 0o644);
        symlink("..", dir.join("lib/up")).unwrap();
        symlink(target, dir.join(link)).unwrap();
        match pack(&dir) {
            Err(ArchiveError::LinkOutside { path, target: t }) => {
                assert_eq!((path.as_str(), t.as_str()), (link, target));
            }
            other => panic!("{link} -> {target}: expected LinkOutside, got {other:?}"),
        }
    }
}

#[test]
fn special_files_fail_to_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    write(&dir, "main.py", "", 0o644);
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("app.sock")).unwrap();
    match pack(&dir) {
        Err(ArchiveError::UnsupportedFile { path, .. }) => assert_eq!(path, "app.sock"),
        other => panic!("expected UnsupportedFile, got {other:?}"),
    }
    // Ignoring it is the way out the error suggests.
    write(&dir, ".stratusignore", "*.sock\n", 0o644);
    pack(&dir).unwrap();
}

// ---- hostile archives -------------------------------------------------------

/// One raw tar entry, written without the tar crate's path checks.
struct Raw<'a> {
    path: &'a [u8],
    kind: EntryType,
    link: &'a [u8],
    data: &'a [u8],
}

fn file<'a>(path: &'a str, data: &'a str) -> Raw<'a> {
    Raw {
        path: path.as_bytes(),
        kind: EntryType::Regular,
        link: b"",
        data: data.as_bytes(),
    }
}

fn dir(path: &str) -> Raw<'_> {
    Raw {
        path: path.as_bytes(),
        kind: EntryType::Directory,
        link: b"",
        data: b"",
    }
}

fn link<'a>(kind: EntryType, path: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        path: path.as_bytes(),
        kind,
        link: target.as_bytes(),
        data: b"",
    }
}

fn special(kind: EntryType, path: &str) -> Raw<'_> {
    Raw {
        path: path.as_bytes(),
        kind,
        link: b"",
        data: b"",
    }
}

/// A gzip-compressed tar of `entries`, exactly as given.
fn archive(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..entry.path.len()].copy_from_slice(entry.path);
        old.linkname[..entry.link.len()].copy_from_slice(entry.link);
        header.set_entry_type(entry.kind);
        header.set_mode(if entry.kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(entry.data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A destination three levels below a private directory, so that paths
/// escaping it by up to three levels still land where the test can look.
struct Sandbox {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("a/b/dest");
        fs::create_dir_all(&dest).unwrap();
        Sandbox { tmp, dest }
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("a/b/escaped")
    }

    fn unpack(
        &self,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<stratus_archive::Unpacked, ArchiveError> {
        unpack(bytes, &self.dest, limits)
    }

    /// Fails if anything exists below the private directory but outside `dest`.
    fn assert_nothing_outside(&self) {
        let root = self.tmp.path();
        let outside: Vec<_> = walk(root)
            .into_iter()
            .filter(|p| !p.starts_with(&self.dest))
            .map(|p| p.strip_prefix(root).unwrap().to_owned())
            .filter(|p| !["a", "a/b"].contains(&p.to_str().unwrap()))
            .collect();
        assert!(
            outside.is_empty(),
            "written outside the destination: {outside:?}"
        );
    }
}

/// Unpacks `entries` and returns the error, checking that nothing escaped.
fn refuse(entries: &[Raw<'_>]) -> ArchiveError {
    refuse_with(entries, Limits::default())
}

fn refuse_with(entries: &[Raw<'_>], limits: Limits) -> ArchiveError {
    let sandbox = Sandbox::new();
    let result = sandbox.unpack(&archive(entries), limits);
    sandbox.assert_nothing_outside();
    match result {
        Ok(unpacked) => panic!("hostile archive unpacked: {unpacked:?}"),
        Err(err) => err,
    }
}

#[test]
fn raw_archives_of_good_entries_unpack() {
    let sandbox = Sandbox::new();
    let bytes = archive(&[
        dir("./"),
        dir("sub/"),
        file("./sub/a.txt", "hello"),
        link(EntryType::Symlink, "sub/link", "a.txt"),
        link(EntryType::Symlink, "top", "./sub/a.txt"),
        link(EntryType::Symlink, "sub/again", "../top"),
    ]);
    let unpacked = sandbox.unpack(&bytes, Limits::default());
    sandbox.assert_nothing_outside();
    let unpacked = unpacked.unwrap();
    assert_eq!((unpacked.files, unpacked.bytes), (1, 5));
    for link in ["sub/link", "top", "sub/again"] {
        assert_eq!(
            fs::read_to_string(sandbox.dest.join(link)).unwrap(),
            "hello",
            "{link}"
        );
    }
}

#[test]
fn absolute_path_is_refused() {
    let sandbox = Sandbox::new();
    let target = sandbox.outside();
    let bytes = archive(&[file(target.to_str().unwrap(), "pwned")]);
    let err = sandbox.unpack(&bytes, Limits::default()).unwrap_err();
    sandbox.assert_nothing_outside();
    assert!(
        matches!(&err, ArchiveError::AbsolutePath { path } if path == target.to_str().unwrap()),
        "{err:?}"
    );

    let err = refuse(&[file("/etc/stratus-test-pwned", "pwned")]);
    assert!(matches!(err, ArchiveError::AbsolutePath { .. }), "{err:?}");
    assert!(!Path::new("/etc/stratus-test-pwned").exists());
}

#[test]
fn parent_dir_is_refused() {
    for path in [
        "../escaped",
        "sub/../../escaped",
        "./../../escaped",
        "sub/..",
    ] {
        let err = refuse(&[dir("sub/"), file(path, "pwned")]);
        assert!(
            matches!(&err, ArchiveError::ParentDir { path: p } if p == path),
            "{path}: {err:?}"
        );
    }
}

#[test]
fn symlink_out_of_the_tree_is_refused() {
    for (path, target) in [
        ("etc", "/etc"),
        ("up", ".."),
        ("sub/x", "../../x"),
        ("sub/deeper/x", "../../../escaped"),
    ] {
        let err = refuse(&[
            link(EntryType::Symlink, path, target),
            file(&format!("{path}/passwd"), "pwned"),
        ]);
        assert!(
            matches!(&err, ArchiveError::LinkOutside { path: p, target: t } if p == path && t == target),
            "{path} -> {target}: {err:?}"
        );
    }
}

#[test]
fn chained_symlinks_out_of_the_tree_are_refused() {
    // `sub/root` is the package root, which is inside; `escape` names
    // `sub/root/..`, which lexically looks inside but is the root's parent.
    let err = refuse(&[
        link(EntryType::Symlink, "sub/root", ".."),
        link(EntryType::Symlink, "escape", "sub/root/.."),
    ]);
    assert!(
        matches!(&err, ArchiveError::LinkOutside { path, .. } if path == "escape"),
        "{err:?}"
    );

    // The same with the links in the other order.
    let err = refuse(&[
        link(EntryType::Symlink, "escape", "sub/root/../.."),
        link(EntryType::Symlink, "sub/root", ".."),
    ]);
    assert!(
        matches!(&err, ArchiveError::LinkOutside { path, .. } if path == "escape"),
        "{err:?}"
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let err = refuse(&[
        dir("sub/"),
        link(EntryType::Symlink, "link", "sub"),
        file("link/x", "data"),
    ]);
    assert!(
        matches!(&err, ArchiveError::ThroughLink { path, link } if path == "link/x" && link == "link"),
        "{err:?}"
    );

    let err = refuse(&[link(EntryType::Symlink, "link", "."), dir("link/sub/")]);
    assert!(matches!(err, ArchiveError::ThroughLink { .. }), "{err:?}");
}

#[test]
fn hard_link_is_refused() {
    for target in ["/etc/passwd", "a.txt"] {
        let err = refuse(&[file("a.txt", "x"), link(EntryType::Link, "hard", target)]);
        assert!(
            matches!(&err, ArchiveError::HardLink { path } if path == "hard"),
            "{err:?}"
        );
    }
}

#[test]
fn devices_and_fifos_are_refused() {
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let err = refuse(&[special(kind, "dev")]);
        assert!(
            matches!(&err, ArchiveError::UnsupportedFile { path, .. } if path == "dev"),
            "{kind:?}: {err:?}"
        );
    }
}

#[test]
fn duplicate_entries_are_refused() {
    for second in ["a.txt", "./a.txt", "a.txt/"] {
        let err = refuse(&[file("a.txt", "first"), file(second, "second")]);
        assert!(
            matches!(&err, ArchiveError::Duplicate { path } if path == "a.txt"),
            "{second}: {err:?}"
        );
    }
    // A file swapped for a symlink after the fact.
    let err = refuse(&[
        file("a.txt", "first"),
        link(EntryType::Symlink, "a.txt", "b.txt"),
    ]);
    assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err:?}");
}

#[test]
fn size_limit_is_enforced() {
    let limits = Limits {
        max_unpacked_bytes: 10,
        ..Limits::default()
    };
    let err = refuse_with(&[file("big", "01234567890")], limits);
    assert!(
        matches!(err, ArchiveError::TooLarge { limit: 10 }),
        "{err:?}"
    );

    // The total counts, not each file alone.
    let err = refuse_with(&[file("a", "012345"), file("b", "012345")], limits);
    assert!(
        matches!(err, ArchiveError::TooLarge { limit: 10 }),
        "{err:?}"
    );

    // Exactly at the limit is fine.
    let sandbox = Sandbox::new();
    let ok = sandbox.unpack(&archive(&[file("a", "01234"), file("b", "56789")]), limits);
    assert_eq!(ok.unwrap().bytes, 10);
}

#[test]
fn entry_limit_is_enforced() {
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = refuse_with(
        &[dir("d/"), file("d/a", ""), file("d/b", ""), file("d/c", "")],
        limits,
    );
    assert!(
        matches!(err, ArchiveError::TooManyEntries { limit: 3 }),
        "{err:?}"
    );

    let sandbox = Sandbox::new();
    let ok = sandbox.unpack(
        &archive(&[dir("d/"), file("d/a", ""), file("d/b", "")]),
        limits,
    );
    assert_eq!(ok.unwrap().files, 2);
}

#[test]
fn garbage_is_corrupt() {
    let sandbox = Sandbox::new();
    for bytes in [
        b"this is not a gzip stream".to_vec(),
        Vec::new(),
        {
            // Valid gzip, but not a tar inside.
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&[0x5a; 1024]).unwrap();
            gz.finish().unwrap()
        },
        {
            // A real package cut short.
            let mut bytes = archive(&[file("a.txt", &"x".repeat(100_000))]);
            bytes.truncate(bytes.len() / 2);
            bytes
        },
    ] {
        let err = sandbox.unpack(&bytes, Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");
    }
    sandbox.assert_nothing_outside();
}

/// A gzip-compressed stream of `tar` bytes as they are.
fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

fn header(kind: EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..11].copy_from_slice(b"././@LongLi");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header.set_cksum();
    header
}

#[test]
fn extension_headers_are_bounded_before_they_are_read() {
    let sandbox = Sandbox::new();
    // A GNU long name claiming a gigabyte, its data not even there: the
    // `tar` crate would try to read it all into memory.
    let claimed = gzip(header(EntryType::GNULongName, 1 << 30).as_bytes());
    let err = sandbox.unpack(&claimed, Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Extension(_)), "{err:?}");
    assert!(err.to_string().contains("more than 65536"), "{err}");

    // A pax header of 100 KB, there in full.
    let mut tar = header(EntryType::XHeader, 100_000).as_bytes().to_vec();
    tar.extend(std::iter::repeat_n(b'a', 100_352));
    tar.extend_from_slice(&[0; 1024]);
    let err = sandbox.unpack(&gzip(&tar), Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Extension(_)), "{err:?}");

    // A long path takes a GNU long name of a few hundred bytes: fine.
    let long = format!("{}/{}/main.py", "d".repeat(150), "e".repeat(150));
    let mut builder = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(3);
    builder.append_data(&mut file, &long, &b"x=1"[..]).unwrap();
    let bytes = gzip(&builder.into_inner().unwrap());
    let unpacked = sandbox.unpack(&bytes, Limits::default()).unwrap();
    assert_eq!(unpacked.files, 1);
    assert_eq!(fs::read_to_string(sandbox.dest.join(&long)).unwrap(), "x=1");
    sandbox.assert_nothing_outside();
}

#[test]
fn every_decompressed_byte_counts_toward_the_limit() {
    let sandbox = Sandbox::new();
    // A directory entry that carries 10 MB of data, which the unpacker
    // skips: the files' own bytes are nothing, the stream is not.
    let mut dir = header(EntryType::Directory, 10_000_000);
    dir.as_old_mut().name[..11].copy_from_slice(b"somewhere/\0");
    dir.set_cksum();
    let mut tar = dir.as_bytes().to_vec();
    tar.extend(std::iter::repeat_n(0u8, 10_000_384));
    tar.extend_from_slice(&[0; 1024]);
    let limits = Limits {
        max_unpacked_bytes: 1_000_000,
        max_entries: 10,
    };
    let err = sandbox.unpack(&gzip(&tar), limits).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err:?}");
}

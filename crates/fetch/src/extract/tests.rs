use super::*;

const LIMITS: Limits = Limits {
    max_member_bytes: 1 << 20,
    max_total_bytes: 1 << 22,
};

/// A raw tar header, written by hand so that paths `tar::Builder` would refuse can be tested.
fn header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_old();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        old.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

fn tarball(members: &[(&str, tar::EntryType, &[u8], Option<&str>)], gz: bool) -> Vec<u8> {
    let mut raw = Vec::new();
    for (name, kind, data, link) in members {
        raw.extend_from_slice(header(name, *kind, data.len() as u64, *link).as_bytes());
        raw.extend_from_slice(data);
        raw.resize(raw.len().div_ceil(512) * 512, 0);
    }
    raw.extend_from_slice(&[0u8; 1024]);
    if !gz {
        return raw;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap()
}

fn run(
    members: &[(&str, tar::EntryType, &[u8], Option<&str>)],
    limits: Limits,
) -> (
    tempfile::TempDir,
    Result<Vec<(String, String)>, ExtractError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let ar = dir.path().join("a.tar.gz");
    fs::write(&ar, tarball(members, true)).unwrap();
    let dest = dir.path().join("out");
    let r = extract(&ar, ArchiveFormat::TarGz, &dest, limits);
    (dir, r)
}

use tar::EntryType as T;

#[test]
fn extracts_files_dirs_and_inner_links() {
    let (dir, r) = run(
        &[
            ("d/", T::Directory, b"", None),
            ("d/a.txt", T::Regular, b"abc", None),
            ("d/link", T::Symlink, b"", Some("a.txt")),
            ("d/hard", T::Link, b"", Some("d/a.txt")),
        ],
        LIMITS,
    );
    let files = r.unwrap();
    assert_eq!(
        files,
        vec![(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string(),
            "d/a.txt".to_string()
        )]
    );
    let out = dir.path().join("out");
    assert_eq!(fs::read(out.join("d/link")).unwrap(), b"abc");
    assert_eq!(fs::read(out.join("d/hard")).unwrap(), b"abc");
    // Plain tar works too.
    let ar = dir.path().join("b.tar");
    fs::write(&ar, tarball(&[("x", T::Regular, b"1", None)], false)).unwrap();
    extract(&ar, ArchiveFormat::Tar, &dir.path().join("out2"), LIMITS).unwrap();
}

fn refused(members: &[(&str, tar::EntryType, &[u8], Option<&str>)], limits: Limits, why: &str) {
    let (dir, r) = run(members, limits);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("refused") && e.contains(why), "{e}");
    // Nothing is left behind, and nothing escaped next to the target.
    assert!(!dir.path().join("out").exists());
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("a.tar.gz")]);
}

#[test]
fn path_traversal_is_refused() {
    refused(
        &[
            ("ok", T::Regular, b"1", None),
            ("../evil", T::Regular, b"x", None),
        ],
        LIMITS,
        "`..`",
    );
    refused(&[("a/../../evil", T::Regular, b"x", None)], LIMITS, "`..`");
}

#[test]
fn absolute_paths_are_refused() {
    refused(
        &[("/tmp/baddiffusion-extract-evil", T::Regular, b"x", None)],
        LIMITS,
        "absolute path",
    );
}

#[test]
fn escaping_links_are_refused() {
    refused(
        &[("l", T::Symlink, b"", Some("../outside"))],
        LIMITS,
        "outside the target",
    );
    refused(
        &[("l", T::Symlink, b"", Some("/etc/passwd"))],
        LIMITS,
        "outside the target",
    );
    refused(
        &[("d/l", T::Symlink, b"", Some("../../x"))],
        LIMITS,
        "outside the target",
    );
    refused(
        &[("h", T::Link, b"", Some("../x"))],
        LIMITS,
        "outside the target",
    );
    // A link that stays inside, then a member written through it.
    refused(
        &[
            ("d/", T::Directory, b"", None),
            ("l", T::Symlink, b"", Some("d")),
            ("l/f", T::Regular, b"x", None),
        ],
        LIMITS,
        "is a link",
    );
}

#[test]
fn oversized_members_and_special_files_are_refused() {
    let small = Limits {
        max_member_bytes: 4,
        max_total_bytes: 6,
    };
    refused(&[("big", T::Regular, b"12345", None)], small, "per member");
    refused(
        &[
            ("a", T::Regular, b"1234", None),
            ("b", T::Regular, b"1234", None),
        ],
        small,
        "in total",
    );
    refused(
        &[("dev", T::Char, b"", None)],
        LIMITS,
        "unsupported member type",
    );
}

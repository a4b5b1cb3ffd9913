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
    // The hard link is listed too, so that `verify` re-hashes it.
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string();
    assert_eq!(
        files,
        vec![
            (sha.clone(), "d/a.txt".to_string()),
            (sha, "d/hard".to_string())
        ]
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
        "passes through `l`",
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

/// A member for [`built`]: made with `tar::Builder`, as a real archiver would.
#[derive(Clone)]
enum M<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn built(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match m {
            M::File(p, data) => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            M::Dir(p) => {
                h.set_entry_type(T::Directory);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty()).unwrap();
            }
            M::Sym(p, t) | M::Hard(p, t) => {
                h.set_entry_type(if matches!(m, M::Sym(..)) {
                    T::Symlink
                } else {
                    T::Link
                });
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Extracts a plain tar built from `members` into `<tmp>/out`, with `outside` written first at
/// `<tmp>/secret` (where a link escaping the target by one level lands).
fn run_built(
    members: &[M],
) -> (
    tempfile::TempDir,
    Result<Vec<(String, String)>, ExtractError>,
) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("secret"), b"outside").unwrap();
    let ar = dir.path().join("a.tar");
    fs::write(&ar, built(members)).unwrap();
    let r = extract(&ar, ArchiveFormat::Tar, &dir.path().join("out"), LIMITS);
    (dir, r)
}

/// Refused, naming the archive and `member`, with `why` in the reason; nothing is left behind and
/// the file outside is untouched (no new name for it).
fn refused_built(members: &[M], member: &str, why: &str) {
    let (dir, r) = run_built(members);
    let e = match r {
        Err(e @ ExtractError::Refused { .. }) => e.to_string(),
        other => panic!("expected a refusal naming `{member}` ({why}), got {other:?}"),
    };
    assert!(
        e.contains(&format!("member `{member}` refused")) && e.contains(why),
        "{e}"
    );
    assert!(
        e.contains(&dir.path().join("a.tar").display().to_string()),
        "{e}"
    );
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.tar", "secret"]);
    let secret = dir.path().join("secret");
    assert_eq!(fs::read(&secret).unwrap(), b"outside");
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "no hard link to it was made"
        );
    }
}

#[test]
fn a_chain_of_links_that_each_look_inside_is_refused() {
    // `b` and `c` stay inside by their text, but `a` is `.`, so `b` is the target's parent and `c`
    // its grandparent once followed.
    let chain = [M::Sym("a", "."), M::Sym("b", "a/.."), M::Sym("c", "b/..")];
    refused_built(&chain, "b", "passes through `a`");
    // Then a member written through the chain.
    let mut through = chain.to_vec();
    through.push(M::File("c/escape", b"x"));
    refused_built(&through, "c/escape", "passes through `c`");
}

#[test]
fn a_hard_link_through_a_chain_of_links_is_refused() {
    // Without the check, `h` became a second name of `<tmp>/secret`, outside the target.
    let chain = [M::Sym("a", "."), M::Sym("b", "a/.."), M::Sym("c", "b/..")];
    let mut hard = chain.to_vec();
    hard.push(M::Hard("h", "b/secret"));
    refused_built(&hard, "h", "not a regular file unpacked earlier");
    // Even a hard link that ends inside, but through a link.
    let mut inside = chain.to_vec();
    inside.extend([M::File("f", b"1"), M::Hard("h", "a/f")]);
    refused_built(&inside, "h", "not a regular file unpacked earlier");
}

#[test]
fn a_member_under_a_file_is_refused_by_name() {
    // Found by the property test: this was a bare "Not a directory" naming no member.
    refused_built(
        &[M::File("d", b"1"), M::Dir("d/e/")],
        "d/e/",
        "passes through `d`, a file, not a directory",
    );
    refused_built(
        &[M::File("d", b"1"), M::File("d/e", b"2")],
        "d/e",
        "passes through `d`, a file",
    );
}

#[test]
fn a_link_planted_on_the_way_by_a_later_member_is_refused() {
    // When `d/l` arrives, `d/x` does not exist yet; once `d/x -> ..` is there, `d/l` leads to the
    // target's parent.
    refused_built(
        &[M::Dir("d/"), M::Sym("d/l", "x/.."), M::Sym("d/x", "..")],
        "d/l",
        "passes through `d/x`",
    );
}

#[test]
fn hard_links_only_to_regular_files_unpacked_earlier() {
    let why = "not a regular file unpacked earlier";
    refused_built(
        &[M::File("f", b"1"), M::Sym("l", "f"), M::Hard("h", "l")],
        "h",
        why,
    );
    refused_built(&[M::Dir("d/"), M::Hard("h", "d")], "h", why);
    refused_built(&[M::Hard("h", "f"), M::File("f", b"1")], "h", why);
    refused_built(&[M::Hard("h", "../secret")], "h", "outside the target");
}

#[test]
fn a_directory_member_over_a_link_is_refused() {
    refused_built(
        &[M::Dir("d/"), M::Sym("l", "d"), M::Dir("l/")],
        "l/",
        "duplicate member",
    );
    refused_built(
        &[M::File("f", b"1"), M::Sym("f2", "f"), M::File("f2", b"2")],
        "f2",
        "duplicate member",
    );
}

#[test]
fn links_that_stay_inside_through_real_directories_are_kept() {
    let (dir, r) = run_built(&[
        M::Dir("d/"),
        M::File("d/a.txt", b"abc"),
        M::Sym("d/l", "a.txt"),
        M::Sym("d/ll", "l"),
        M::Sym("d/up", "../d/a.txt"),
        M::Sym("top", "d"),
        M::Sym("self", "."),
        M::Hard("h", "d/a.txt"),
        M::Hard("h2", "./h"),
    ]);
    let files = r.unwrap();
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let paths: Vec<&str> = files.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths, ["d/a.txt", "h", "h2"]);
    assert!(files.iter().all(|(h, _)| h == sha));
    let out = dir.path().join("out");
    for p in ["d/l", "d/ll", "d/up", "top/a.txt", "self/h", "h2"] {
        assert_eq!(fs::read(out.join(p)).unwrap(), b"abc", "{p}");
    }
    assert_eq!(check_tree(&out).unwrap(), 9);
}

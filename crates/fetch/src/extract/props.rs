//! Bounded property tests: arbitrary member paths and link targets never panic the checks, and an
//! archive built from any sequence of members over a small, hostile alphabet of names and targets
//! either is refused or unpacks to a tree whose every link the kernel resolves inside it.
use super::*;
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "a", "b", "c", "d/", "d/e", "a/f", "b/g", "c/h", "./a", "d/./e",
];
const TARGETS: &[&str] = &[
    ".",
    "..",
    "a",
    "b",
    "c",
    "d",
    "a/..",
    "b/..",
    "c/..",
    "d/..",
    "../..",
    "d/e",
    "a/f",
    "b/g",
    "secret",
    "a/secret",
    "b/secret",
    "c/secret",
    "../secret",
    "d/../a",
];

#[derive(Debug, Clone)]
enum Member {
    File(usize),
    Dir(usize),
    Sym(usize, usize),
    Hard(usize, usize),
}

fn member() -> impl Strategy<Value = Member> {
    let n = 0..NAMES.len();
    let t = 0..TARGETS.len();
    prop_oneof![
        n.clone().prop_map(Member::File),
        n.clone().prop_map(Member::Dir),
        (n.clone(), t.clone()).prop_map(|(a, b)| Member::Sym(a, b)),
        (n, t).prop_map(|(a, b)| Member::Hard(a, b)),
    ]
}

/// Raw headers, so that any name and target goes in as written.
fn archive(members: &[Member]) -> Vec<u8> {
    let mut raw = Vec::new();
    for m in members {
        let (name, kind, link, data): (&str, tar::EntryType, Option<&str>, &[u8]) = match m {
            Member::File(n) => (NAMES[*n], tar::EntryType::Regular, None, b"xy"),
            Member::Dir(n) => (NAMES[*n], tar::EntryType::Directory, None, b""),
            Member::Sym(n, t) => (NAMES[*n], tar::EntryType::Symlink, Some(TARGETS[*t]), b""),
            Member::Hard(n, t) => (NAMES[*n], tar::EntryType::Link, Some(TARGETS[*t]), b""),
        };
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(data);
        raw.resize(raw.len().div_ceil(512) * 512, 0);
    }
    raw.extend_from_slice(&[0u8; 1024]);
    raw
}

fn all_links(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            out.push(p);
        } else if m.is_dir() {
            all_links(&p, out);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn member_paths_never_panic_and_stay_relative(raw in "\\PC{0,40}") {
        if let Ok(p) = safe_member_path(&raw) {
            prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))), "{p:?}");
        }
    }

    #[test]
    fn link_checks_never_panic_and_agree_with_the_text(
        link in "[a-z./]{0,12}[a-z]",
        target in "[a-z./]{0,16}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let Ok(rel) = safe_member_path(&link) else { return Ok(()) };
        let ok = check_symlink(dir.path(), &rel, Path::new(&target)).is_ok();
        let inside = lexical_join(rel.parent().unwrap_or(Path::new("")), Path::new(&target));
        // With no link on disk, the check is the lexical one.
        prop_assert_eq!(ok, inside.is_some());
    }

    #[test]
    fn any_member_sequence_is_refused_or_unpacks_only_inside(
        members in proptest::collection::vec(member(), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"outside").unwrap();
        let ar = dir.path().join("a.tar");
        fs::write(&ar, archive(&members)).unwrap();
        let out = dir.path().join("out");
        let r = extract(&ar, ArchiveFormat::Tar, &out, LIMITS_FOR_PROPS);
        // Nothing outside the target gained a name or changed.
        prop_assert_eq!(fs::read(&secret).unwrap(), b"outside");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            prop_assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
        }
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        match r {
            Err(ExtractError::Refused { .. }) => prop_assert_eq!(names, ["a.tar", "secret"]),
            Err(e) => prop_assert!(false, "{e}"),
            Ok(_) => {
                prop_assert_eq!(names, ["a.tar", "out", "secret"]);
                prop_assert!(check_tree(&out).is_ok(), "{:?}", check_tree(&out));
                // Every link the kernel can follow ends inside the tree.
                let root = fs::canonicalize(&out).unwrap();
                let mut links = Vec::new();
                all_links(&out, &mut links);
                for l in links {
                    if let Ok(real) = fs::canonicalize(&l) {
                        prop_assert!(real.starts_with(&root), "{l:?} -> {real:?}");
                    }
                }
            }
        }
    }
}

const LIMITS_FOR_PROPS: Limits = Limits {
    max_member_bytes: 1 << 10,
    max_total_bytes: 1 << 12,
};

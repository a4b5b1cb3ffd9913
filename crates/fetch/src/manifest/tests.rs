use super::*;

const GOOD: &str = r#"
schema = 1

[[artifact]]
name = "demo"
kind = "dataset"
licence = "MIT"
source_page = "https://example.org/demo"
profiles = ["smoke"]

[[artifact.file]]
path = "sub/a.bin"
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
urls = ["https://example.org/a.bin"]

[[artifact.file]]
path = "b.tar.gz"
sha256 = "unpinned"
md5 = "900150983cd24fb0d6963f7d28e17f72"

[artifact.extract]
file = "b.tar.gz"
format = "tar.gz"
into = "b"
max_member_bytes = 10
max_total_bytes = 100
"#;

fn err_of(text: &str) -> String {
    Manifest::parse(text).unwrap_err().to_string()
}

#[test]
fn parses_a_valid_manifest() {
    let m = Manifest::parse(GOOD).unwrap();
    let a = m.get("demo").unwrap();
    assert_eq!(a.kind, Kind::Dataset);
    assert_eq!(a.files.len(), 2);
    assert!(a.files[0].sha256.is_some());
    assert_eq!(a.files[1].sha256, None);
    assert_eq!(a.extract.as_ref().unwrap().format, ArchiveFormat::TarGz);
    assert_eq!(m.select(&[], Some("smoke")).unwrap().len(), 1);
    assert!(m.select(&[], Some("paper")).unwrap().is_empty());
    assert!(m
        .select(&[], Some("nightly"))
        .unwrap_err()
        .to_string()
        .contains("unknown profile"));
    assert!(m.get("nope").unwrap_err().to_string().contains("demo"));
}

#[test]
fn malformed_hash_names_the_entry() {
    let e = err_of(&GOOD.replace("ba7816bf8f01", "BA7816BF8F01"));
    assert!(
        e.contains("`demo`") && e.contains("malformed sha256") && e.contains("sub/a.bin"),
        "{e}"
    );
    let e = err_of(&GOOD.replace("900150983cd24fb0d6963f7d28e17f72", "9001"));
    assert!(e.contains("`demo`") && e.contains("malformed md5"), "{e}");
}

#[test]
fn unknown_kind_names_the_entry_and_lists_kinds() {
    let e = err_of(&GOOD.replace("kind = \"dataset\"", "kind = \"model\""));
    assert!(
        e.contains("`demo`") && e.contains("unknown kind `model`") && e.contains("source-image"),
        "{e}"
    );
}

#[test]
fn duplicate_names_and_unknown_fields_are_refused() {
    let twice = format!("{GOOD}{}", &GOOD[GOOD.find("[[artifact]]").unwrap()..]);
    let e = err_of(&twice);
    assert!(e.contains("`demo`") && e.contains("duplicate"), "{e}");
    let e = err_of(&GOOD.replace("licence = \"MIT\"", "licence = \"MIT\"\nlicense = \"MIT\""));
    assert!(e.contains("`demo`") && e.contains("license"), "{e}");
}

#[test]
fn unsafe_paths_and_bad_extract_rules_are_refused() {
    let e = err_of(&GOOD.replace("path = \"sub/a.bin\"", "path = \"../a.bin\""));
    assert!(e.contains("must be relative"), "{e}");
    let e = err_of(&GOOD.replace("path = \"sub/a.bin\"", "path = \"/etc/a.bin\""));
    assert!(e.contains("must be relative"), "{e}");
    let e = err_of(&GOOD.replace("file = \"b.tar.gz\"", "file = \"c.tar.gz\""));
    assert!(e.contains("extract") && e.contains("c.tar.gz"), "{e}");
    let e = err_of(&GOOD.replace("format = \"tar.gz\"", "format = \"zip\""));
    assert!(e.contains("unknown format `zip`"), "{e}");
    let e = err_of(&GOOD.replace("https://example.org/a.bin", "ftp://example.org/a.bin"));
    assert!(e.contains("https://"), "{e}");
}

#[test]
fn schema_and_top_level_are_checked() {
    assert!(err_of(&GOOD.replace("schema = 1", "schema = 2")).contains("schema = 1"));
    assert!(err_of(&format!("extra = 1\n{GOOD}")).contains("unknown top-level key `extra`"));
    assert!(err_of("schema = 1\n[[artifact]]\nkind = \"dataset\"\n").contains("#1 (no name)"));
}

#[test]
fn relative_system_paths_are_beside_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "profiles = [\"smoke\"]",
        "profiles = [\"smoke\"]\nsystem_paths = [\"models/demo\", \"/usr/share/demo\"]",
    );
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    let m = Manifest::load(&path).unwrap();
    assert_eq!(
        m.get("demo").unwrap().system_paths,
        vec![
            dir.path().join("models/demo"),
            PathBuf::from("/usr/share/demo")
        ]
    );
}

//! Bounded property tests of the manifest parser: arbitrary text, and manifests whose fields take
//! arbitrary values, never panic; whatever parses has safe file paths and well-formed hashes.
use super::*;
use proptest::prelude::*;

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[a-f0-9]{64}",
        "[a-f0-9]{32}",
        Just("unpinned".to_string()),
        "(\\.\\./|/|\\./)?[a-z]{1,4}(/[a-z.]{1,4}){0,2}",
        "https?://[a-z]{1,8}\\.org/[a-z/]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Manifest::parse(&text);
    }

    #[test]
    fn arbitrary_field_values_never_panic_and_what_parses_is_safe(
        name in field(),
        kind in prop_oneof![Just("dataset".to_string()), field()],
        path in field(),
        sha in field(),
        md5 in proptest::option::of(field()),
        url in field(),
        into in field(),
    ) {
        let md5 = md5.map(|m| format!("md5 = {m:?}\n")).unwrap_or_default();
        let text = format!(
            "schema = 1\n[[artifact]]\nname = {name:?}\nkind = {kind:?}\nlicence = \"x\"\n\
             source_page = \"https://example.org\"\n[[artifact.file]]\npath = {path:?}\n\
             sha256 = {sha:?}\n{md5}urls = [{url:?}]\n[artifact.extract]\nfile = {path:?}\n\
             format = \"tar\"\ninto = {into:?}\nmax_member_bytes = 1\nmax_total_bytes = 1\n"
        );
        if let Ok(m) = Manifest::parse(&text) {
            for a in &m.artifacts {
                for f in &a.files {
                    prop_assert!(is_safe_relative(&f.path), "{}", f.path);
                    prop_assert!(f.sha256.as_deref().is_none_or(|s| is_hex(s, 64)));
                }
                if let Some(x) = &a.extract {
                    prop_assert!(is_safe_relative(&x.into), "{}", x.into);
                }
            }
        }
    }
}

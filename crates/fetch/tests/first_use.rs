//! Trust on first use, held to what can be known: a file that nothing checks (no sha256, md5, prefix
//! or size) is cached and locked only after a transfer known to be whole, and the lock records the
//! URL that served it.
mod common;

use std::time::Duration;

use common::{bytes, count_files, entry, names, opts, sha256, Env, Route, Server};
use fetch::{fetch, FetchOptions, Outcome};

/// The lock file of a fresh manifest, holding one earlier record that must survive a failed fetch.
fn seed_lock(env: &Env) -> std::path::PathBuf {
    let p = env.dir.path().join("manifest.lock");
    std::fs::write(
        &p,
        format!(
            "[[file]]\nartifact = \"older\"\npath = \"o.bin\"\nsha256 = \"{}\"\nsize = 3\n\
             source = \"http://127.0.0.1:9/o.bin\"\nupstream_checked = false\n",
            sha256(b"abc")
        ),
    )
    .unwrap();
    p
}

fn errors_of(r: &fetch::FetchReport) -> String {
    match &r.files[0].outcome {
        Outcome::Failed { errors } => errors.join("\n"),
        other => panic!("expected a failure, got {other:?}\n{r}"),
    }
}

/// Nothing of the file is kept anywhere in the cache, and the lock file is byte for byte as before.
fn assert_nothing_kept(env: &Env, lock: &std::path::Path, before: &[u8]) {
    assert_eq!(env.objects(), 0, "nothing enters the object store");
    assert_eq!(
        count_files(&env.cache.root().join("partial")),
        0,
        "no partial file of an unchecked download is kept"
    );
    assert_eq!(
        std::fs::read(lock).unwrap(),
        before,
        "the lock file is unchanged"
    );
}

#[test]
fn content_length_larger_than_the_body_is_refused_with_both_counts() {
    let srv = Server::start();
    let body = bytes(300_000, 21);
    let url = srv.route("/short.bin", Route::DropAfter(body, 120_000));
    let env = Env::new();
    let lock = seed_lock(&env);
    let before = std::fs::read(&lock).unwrap();
    let m = env.manifest(&entry("s", "s.bin", "unpinned", std::slice::from_ref(&url)));
    let r = fetch(&m, &env.cache, &names("s"), None, &opts()).unwrap();
    let e = errors_of(&r);
    assert!(
        e.contains(&url) && e.contains("120000 of 300000 bytes"),
        "the error names the URL and both byte counts: {e}"
    );
    assert!(r.lock_updates.is_empty() && !r.files[0].newly_locked);
    assert!(env.cache.path_of("s").is_err());
    assert_nothing_kept(&env, &lock, &before);
}

#[test]
fn a_partial_answer_to_a_request_for_the_whole_file_is_refused() {
    let srv = Server::start();
    let url = srv.route("/part.bin", Route::Partial(bytes(10_000, 26), 4_000));
    let env = Env::new();
    let lock = seed_lock(&env);
    let before = std::fs::read(&lock).unwrap();
    let m = env.manifest(&entry("q", "q.bin", "unpinned", std::slice::from_ref(&url)));
    let r = fetch(&m, &env.cache, &names("q"), None, &opts()).unwrap();
    let e = errors_of(&r);
    assert!(
        e.contains(&url) && e.contains("bytes 0-3999/10000") && e.contains("asked from byte 0"),
        "{e}"
    );
    assert_nothing_kept(&env, &lock, &before);
}

#[test]
fn a_body_without_content_length_cut_short_is_refused() {
    let srv = Server::start();
    let body = bytes(50_000, 22);
    let chunked = srv.route("/chunked.bin", Route::Chunked(body.clone(), Some(20_000)));
    let close = srv.route("/close.bin", Route::NoLength(body.clone(), Some(20_000)));
    for url in [chunked, close] {
        let env = Env::new();
        let lock = seed_lock(&env);
        let before = std::fs::read(&lock).unwrap();
        let m = env.manifest(&entry("n", "n.bin", "unpinned", std::slice::from_ref(&url)));
        let r = fetch(&m, &env.cache, &names("n"), None, &opts()).unwrap();
        let e = errors_of(&r);
        assert!(
            e.contains(&url) && e.contains("no Content-Length"),
            "the error names the URL and the missing length: {e}"
        );
        assert!(r.lock_updates.is_empty());
        assert_nothing_kept(&env, &lock, &before);
    }
}

#[test]
fn a_checked_file_may_come_without_content_length() {
    // The hash decides for a pinned file, so a whole chunked body is fine and a cut one is refused
    // by its sha256.
    let srv = Server::start();
    let body = bytes(50_000, 23);
    let whole = srv.route("/whole.bin", Route::Chunked(body.clone(), None));
    let env = Env::new();
    let m = env.manifest(&entry(
        "p",
        "p.bin",
        &sha256(&body),
        std::slice::from_ref(&whole),
    ));
    let r = fetch(&m, &env.cache, &names("p"), None, &opts()).unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(
        std::fs::read(env.cache.path_of("p").unwrap().join("p.bin")).unwrap(),
        body
    );

    let cut = srv.route("/cut.bin", Route::Chunked(body.clone(), Some(10_000)));
    let env = Env::new();
    let m = env.manifest(&entry("p", "p.bin", &sha256(&body), &[cut]));
    let r = fetch(&m, &env.cache, &names("p"), None, &opts()).unwrap();
    assert!(errors_of(&r).contains("sha256 mismatch"), "{r}");
    assert_eq!(env.objects(), 0);
}

#[test]
fn an_unchecked_file_is_downloaded_again_from_the_start_not_resumed() {
    // Two halves could come from two versions of the file; with nothing to check the result
    // against, a retry starts over.
    let srv = Server::start();
    let body = bytes(100_000, 24);
    let url = srv.route("/again.bin", Route::DropAfter(body.clone(), 40_000));
    let env = Env::new();
    let m = env.manifest(&entry("a", "a.bin", "unpinned", &[url]));
    let o = FetchOptions {
        retries: 1,
        backoff: Duration::from_millis(10),
        ..opts()
    };
    let r = fetch(&m, &env.cache, &names("a"), None, &o).unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(srv.hits("/again.bin"), 2);
    assert_eq!(
        srv.ranges(),
        vec![],
        "no Range request for an unchecked file"
    );
    assert_eq!(r.lock_updates[0].sha256, sha256(&body));
}

#[test]
fn the_lock_records_the_url_that_served_the_bytes_after_a_redirect() {
    let srv = Server::start();
    let body = bytes(4_000, 25);
    let target = srv.route("/real/r.bin", Route::Body(body.clone()));
    let asked = srv.route("/moved/r.bin", Route::Redirect("/real/r.bin".into()));
    let env = Env::new();
    let m = env.manifest(&entry(
        "r",
        "r.bin",
        "unpinned",
        std::slice::from_ref(&asked),
    ));
    let r = fetch(&m, &env.cache, &names("r"), None, &opts()).unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(srv.hits("/real/r.bin"), 1);
    let text = std::fs::read_to_string(m.lock_path.as_ref().unwrap()).unwrap();
    let lock: toml::Table = text.parse().unwrap();
    let rec = &lock["file"].as_array().unwrap()[0];
    assert_eq!(rec["source"].as_str(), Some(asked.as_str()), "{text}");
    assert_eq!(rec["final_url"].as_str(), Some(target.as_str()), "{text}");
    assert_eq!(rec["sha256"].as_str(), Some(sha256(&body).as_str()));
}

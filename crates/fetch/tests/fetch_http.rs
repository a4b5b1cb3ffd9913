//! Fetching against a real HTTP server on 127.0.0.1: verification, caching, resume, failures and
//! mirrors, offline mode, first-use locking, archives, concurrency and `verify`.
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{archive_entry, bytes, count_files, entry, md5, names, opts, sha256, tar_gz, Env};
use common::{Route, Server};
use fetch::{fetch, FetchOptions, Mirror, Outcome, Trust};

#[test]
fn correct_file_is_fetched_verified_cached_and_refetch_is_a_no_op() {
    let srv = Server::start();
    let body = bytes(200_000, 1);
    let url = srv.route("/w.bin", Route::Body(body.clone()));
    let env = Env::new();
    let m = env.manifest(&entry(
        "w",
        "sub/w.bin",
        &sha256(&body),
        std::slice::from_ref(&url),
    ));

    let r = fetch(&m, &env.cache, &names("w"), None, &opts()).unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(r.files[0].outcome, Outcome::Fetched { source: url });
    assert_eq!(r.files[0].trust, Trust::Pinned);
    assert!(env.cache.has_object(&sha256(&body)));
    let dir = env.cache.path_of("w").unwrap();
    assert_eq!(std::fs::read(dir.join("sub/w.bin")).unwrap(), body);

    let again = fetch(&m, &env.cache, &names("w"), None, &opts()).unwrap();
    assert_eq!(again.files[0].outcome, Outcome::Cached);
    assert_eq!(
        srv.hits("/w.bin"),
        1,
        "the second fetch must not touch the network"
    );
    assert_eq!(env.objects(), 1);
}

#[test]
fn tampered_bytes_are_rejected_with_both_hashes_and_nothing_is_cached() {
    let srv = Server::start();
    let good = bytes(10_000, 2);
    let mut bad = good.clone();
    bad[5000] ^= 0xff;
    let url = srv.route("/t.bin", Route::Body(bad.clone()));
    let env = Env::new();
    let m = env.manifest(&entry("t", "t.bin", &sha256(&good), &[url]));

    let r = fetch(&m, &env.cache, &names("t"), None, &opts()).unwrap();
    assert!(!r.is_complete());
    let Outcome::Failed { errors } = &r.files[0].outcome else {
        panic!("{r}")
    };
    let e = errors.join("\n");
    assert!(
        e.contains(&format!("expected {}", sha256(&good)))
            && e.contains(&format!("got {}", sha256(&bad))),
        "{e}"
    );
    assert_eq!(env.objects(), 0);
    assert_eq!(
        count_files(&env.cache.root().join("partial")),
        0,
        "the bad download is discarded"
    );
    assert!(env.cache.path_of("t").is_err());
    assert_eq!(r.missing(), vec!["t/t.bin".to_string()]);
}

#[test]
fn dropped_connection_is_resumed_by_the_next_fetch() {
    let srv = Server::start();
    let body = bytes(300_000, 3);
    let url = srv.route("/r.bin", Route::DropAfter(body.clone(), 120_000));
    let env = Env::new();
    let m = env.manifest(&entry("r", "r.bin", &sha256(&body), &[url]));

    let first = fetch(&m, &env.cache, &names("r"), None, &opts()).unwrap();
    let Outcome::Failed { errors } = &first.files[0].outcome else {
        panic!("{first}")
    };
    assert!(errors.join(" ").contains("120000"), "{errors:?}");
    let part = env
        .cache
        .root()
        .join("partial")
        .join(format!("{}.part", sha256(&body)));
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        120_000,
        "the partial download is kept"
    );

    let second = fetch(&m, &env.cache, &names("r"), None, &opts()).unwrap();
    assert!(second.is_complete(), "{second}");
    assert_eq!(
        srv.ranges(),
        vec![("/r.bin".to_string(), "bytes=120000-".to_string())]
    );
    let dir = env.cache.path_of("r").unwrap();
    assert_eq!(std::fs::read(dir.join("r.bin")).unwrap(), body);
}

#[test]
fn retries_resume_within_one_fetch() {
    let srv = Server::start();
    let body = bytes(100_000, 4);
    let url = srv.route("/x.bin", Route::DropAfter(body.clone(), 40_000));
    let env = Env::new();
    let m = env.manifest(&entry("x", "x.bin", &sha256(&body), &[url]));
    let r = fetch(
        &m,
        &env.cache,
        &names("x"),
        None,
        &FetchOptions {
            retries: 2,
            ..opts()
        },
    )
    .unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(srv.hits("/x.bin"), 2);
    assert_eq!(srv.ranges().len(), 1);
}

#[test]
fn http_errors_and_timeouts_are_clear_and_the_next_source_is_tried() {
    let srv = Server::start();
    let body = bytes(5_000, 5);
    let u404 = srv.route("/missing", Route::Status(404));
    let u500 = srv.route("/broken", Route::Status(500));
    let uhang = srv.route("/slow", Route::Hang(Duration::from_secs(5)));
    let env = Env::new();
    let bad = vec![u404.clone(), u500.clone(), uhang.clone()];
    let m = env.manifest(&entry("e", "e.bin", &sha256(&body), &bad));

    let r = fetch(
        &m,
        &env.cache,
        &names("e"),
        None,
        &FetchOptions {
            retries: 1,
            ..opts()
        },
    )
    .unwrap();
    let Outcome::Failed { errors } = &r.files[0].outcome else {
        panic!("{r}")
    };
    let e = errors.join("\n");
    assert!(e.contains(&format!("{u404}: HTTP 404")), "{e}");
    assert!(
        e.contains(&format!("{u500}: HTTP 500")) && e.contains("attempt 2 of 2"),
        "{e}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with(&uhang) && l.to_lowercase().contains("timed out")),
        "{e}"
    );
    assert_eq!(srv.hits("/missing"), 1, "a 404 is not retried");
    assert_eq!(srv.hits("/broken"), 2, "a 500 is retried");

    // The same sources followed by a URL mirror that has the file: the mirror wins, upstream is untouched.
    srv.route("/mirror/e/e.bin", Route::Body(body.clone()));
    let mirrors = vec![
        Mirror::parse(&format!("{}/nothing-here", srv.base)),
        Mirror::parse(&format!("{}/mirror/", srv.base)),
    ];
    let r = fetch(
        &m,
        &env.cache,
        &names("e"),
        None,
        &FetchOptions { mirrors, ..opts() },
    )
    .unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(
        r.files[0].outcome,
        Outcome::Fetched {
            source: format!("{}/mirror/e/e.bin", srv.base)
        }
    );
    assert_eq!(srv.hits("/missing"), 1);

    // And when only upstream has it, after the failing ones.
    let env2 = Env::new();
    let good = srv.route("/good", Route::Body(body.clone()));
    let m2 = env2.manifest(&entry(
        "e",
        "e.bin",
        &sha256(&body),
        &[u404, u500, uhang, good.clone()],
    ));
    let r = fetch(&m2, &env2.cache, &names("e"), None, &opts()).unwrap();
    assert_eq!(r.files[0].outcome, Outcome::Fetched { source: good });
}

#[test]
fn local_directory_mirror_and_system_copy_are_used_when_hashes_match() {
    let body = bytes(7_000, 6);
    let env = Env::new();
    let mirror = env.dir.path().join("aec-copy");
    std::fs::create_dir_all(mirror.join("l")).unwrap();
    std::fs::write(mirror.join("l/l.bin"), &body).unwrap();
    // A dead port: any network use would fail.
    let m = env.manifest(&entry(
        "l",
        "l.bin",
        &sha256(&body),
        &["http://127.0.0.1:9/l.bin".to_string()],
    ));
    let o = FetchOptions {
        mirrors: vec![Mirror::parse(mirror.to_str().unwrap())],
        ..opts()
    };
    let r = fetch(&m, &env.cache, &names("l"), None, &o).unwrap();
    assert_eq!(
        r.files[0].outcome,
        Outcome::Fetched {
            source: mirror.join("l/l.bin").display().to_string()
        }
    );

    // A system copy with the wrong bytes is passed over, with the reason; the right one is used.
    let env = Env::new();
    let sys_bad = env.dir.path().join("sys-bad");
    let sys_good = env.dir.path().join("sys-good");
    for (d, b) in [(&sys_bad, bytes(7_000, 9)), (&sys_good, body.clone())] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("l.bin"), b).unwrap();
    }
    let text = entry("l", "l.bin", &sha256(&body), &[]).replace(
        "[[artifact.file]]",
        &format!(
            "system_paths = [{:?}, {:?}]\n[[artifact.file]]",
            sys_bad, sys_good
        ),
    );
    let m = env.manifest(&text);
    let r = fetch(
        &m,
        &env.cache,
        &names("l"),
        None,
        &FetchOptions {
            offline: true,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(
        r.files[0].outcome,
        Outcome::Fetched {
            source: sys_good.join("l.bin").display().to_string()
        }
    );
    let r = fetch(
        &m,
        &env.cache,
        &names("l"),
        None,
        &FetchOptions {
            system_copies: false,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(r.files[0].outcome, Outcome::Cached);
}

#[test]
fn offline_never_touches_the_network_and_lists_what_is_missing() {
    let srv = Server::start();
    let body = bytes(1_000, 7);
    let url = srv.route("/o.bin", Route::Body(body.clone()));
    let env = Env::new();
    let m = env.manifest(&format!(
        "{}{}",
        entry("o", "o.bin", &sha256(&body), std::slice::from_ref(&url)),
        entry("p", "p.bin", &sha256(b"p"), std::slice::from_ref(&url))
    ));
    let r = fetch(
        &m,
        &env.cache,
        &[],
        None,
        &FetchOptions {
            offline: true,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(srv.total_hits(), 0);
    assert_eq!(
        r.missing(),
        vec!["o/o.bin".to_string(), "p/p.bin".to_string()]
    );
    let Outcome::Missing { tried } = &r.files[0].outcome else {
        panic!("{r}")
    };
    assert!(
        tried.contains(&format!("{url} (skipped: offline)")),
        "{tried:?}"
    );
    assert!(
        r.to_string()
            .contains("2 file(s) missing: o/o.bin, p/p.bin"),
        "{r}"
    );
}

#[test]
fn unpinned_files_are_locked_on_first_use_and_checked_against_upstream_md5() {
    let srv = Server::start();
    let body = bytes(3_000, 8);
    let url = srv.route("/u.bin", Route::Body(body.clone()));
    let env = Env::new();
    let text = entry("u", "u.bin", "unpinned", std::slice::from_ref(&url)).replace(
        "sha256 = \"unpinned\"",
        &format!("sha256 = \"unpinned\"\nmd5 = \"{}\"", md5(&body)),
    );
    let m = env.manifest(&text);
    let r = fetch(&m, &env.cache, &names("u"), None, &opts()).unwrap();
    assert!(r.is_complete(), "{r}");
    assert_eq!(r.files[0].trust, Trust::UpstreamChecked);
    let lock = fetch::lockfile::LockFile::load(m.lock_path.as_ref().unwrap()).unwrap();
    let rec = lock.get("u", "u.bin").unwrap();
    assert_eq!(
        (rec.sha256.as_str(), rec.size, rec.source.as_str()),
        (sha256(&body).as_str(), 3_000, url.as_str())
    );
    let again = fetch(&m, &env.cache, &names("u"), None, &opts()).unwrap();
    assert_eq!(again.files[0].outcome, Outcome::Cached);
    assert_eq!(srv.hits("/u.bin"), 1);

    // Upstream changes the file: the locked hash refuses it.
    let env2 = Env::new();
    std::fs::copy(
        m.lock_path.as_ref().unwrap(),
        env2.dir.path().join("manifest.lock"),
    )
    .unwrap();
    let m2 = env2.manifest(&text);
    srv.route("/u.bin", Route::Body(bytes(3_000, 99)));
    let r = fetch(&m2, &env2.cache, &names("u"), None, &opts()).unwrap();
    assert!(
        r.to_string()
            .contains(&format!("expected {}", sha256(&body))),
        "{r}"
    );

    // Without a lock, a wrong md5 is refused and nothing is recorded.
    let env3 = Env::new();
    let m3 = env3.manifest(&text);
    let r = fetch(&m3, &env3.cache, &names("u"), None, &opts()).unwrap();
    assert!(r.to_string().contains("md5 mismatch"), "{r}");
    assert!(!m3.lock_path.as_ref().unwrap().exists());
}

#[test]
fn archives_are_unpacked_and_malicious_ones_refused() {
    let srv = Server::start();
    let good = tar_gz(&[("d/x.txt", b"hello")]);
    let url = srv.route("/good.tar.gz", Route::Body(good.clone()));
    let env = Env::new();
    let m = env.manifest(&archive_entry("arc", &sha256(&good), &url));
    let r = fetch(&m, &env.cache, &names("arc"), None, &opts()).unwrap();
    assert!(r.is_complete(), "{r}");
    let dir: PathBuf = env.cache.path_of("arc").unwrap();
    assert_eq!(std::fs::read(dir.join("data/d/x.txt")).unwrap(), b"hello");

    // A traversal member, written by hand (tar::Builder refuses to make one).
    let mut raw = tar::Header::new_old();
    raw.as_old_mut().name[..9].copy_from_slice(b"../escape");
    raw.set_size(1);
    raw.set_cksum();
    let mut evil = raw.as_bytes().to_vec();
    evil.extend_from_slice(b"x");
    evil.resize(512 * 2 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &evil).unwrap();
    let evil = gz.finish().unwrap();
    let url = srv.route("/evil.tar.gz", Route::Body(evil.clone()));
    let m = env.manifest(&archive_entry("evil", &sha256(&evil), &url));
    let r = fetch(&m, &env.cache, &names("evil"), None, &opts()).unwrap();
    assert!(!r.is_complete());
    assert!(
        r.to_string()
            .contains("`../escape` refused: path contains `..`"),
        "{r}"
    );
    assert!(env.cache.path_of("evil").is_err());
    assert!(
        !env.cache.root().join("extracted/escape").exists()
            && !env.cache.root().join("escape").exists()
    );
}

#[test]
fn concurrent_fetches_of_one_file_download_it_once() {
    let srv = Server::start();
    let body = bytes(2_000_000, 10);
    let url = srv.route("/c.bin", Route::Body(body.clone()));
    let env = Env::new();
    let m = env.manifest(&entry("c", "c.bin", &sha256(&body), &[url]));
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| fetch(&m, &env.cache, &names("c"), None, &opts()).unwrap()))
            .collect();
        for h in hs {
            assert!(h.join().unwrap().is_complete());
        }
    });
    assert_eq!(srv.hits("/c.bin"), 1);
    assert_eq!(env.objects(), 1);
}

#[test]
fn verify_quarantines_a_corrupted_entry_which_is_then_fetched_again() {
    let srv = Server::start();
    let body = bytes(9_000, 11);
    let url = srv.route("/v.bin", Route::Body(body.clone()));
    let env = Env::new();
    let m = env.manifest(&entry("v", "v.bin", &sha256(&body), &[url]));
    fetch(&m, &env.cache, &names("v"), None, &opts()).unwrap();
    let clean = env.cache.verify().unwrap();
    assert_eq!((clean.checked, clean.quarantined.len()), (1, 0));

    let obj = env.cache.object_path(&sha256(&body));
    let mut perm = std::fs::metadata(&obj).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&obj, perm).unwrap();
    std::fs::write(&obj, b"bit rot").unwrap();

    let rep = env.cache.verify().unwrap();
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    assert!(rep.quarantined[0]
        .1
        .starts_with(env.cache.root().join("quarantine")));
    assert!(!obj.exists());
    assert!(
        env.cache.path_of("v").is_err(),
        "a quarantined entry is never used"
    );

    let r = fetch(&m, &env.cache, &names("v"), None, &opts()).unwrap();
    assert!(matches!(r.files[0].outcome, Outcome::Fetched { .. }), "{r}");
    assert_eq!(
        std::fs::read(env.cache.path_of("v").unwrap().join("v.bin")).unwrap(),
        body
    );
}

/// Without network a host's name does not resolve: said once, not retried, and the host's other
/// files are skipped instead of each waiting out its own retries.
#[test]
fn a_host_that_does_not_resolve_is_not_retried_nor_tried_again() {
    let env = Env::new();
    let body = bytes(1_000, 9);
    let m = env.manifest(&format!(
        "{}{}",
        entry(
            "a",
            "a.bin",
            &sha256(&body),
            &["http://nowhere.invalid/a.bin".into()]
        ),
        entry(
            "b",
            "b.bin",
            &sha256(&body),
            &["http://nowhere.invalid:8080/b.bin".into()]
        )
    ));
    let o = FetchOptions {
        retries: 3,
        jobs: 1,
        ..opts()
    };
    let r = fetch(&m, &env.cache, &[], None, &o).unwrap();
    let errors = |i: usize| match &r.files[i].outcome {
        Outcome::Failed { errors } => errors.join("\n"),
        other => panic!("{other:?}"),
    };
    let (a, b) = (errors(0), errors(1));
    assert!(
        a.contains("does not resolve") && !a.contains("attempt"),
        "{a}"
    );
    assert!(
        b.contains("skipped (nowhere.invalid did not resolve"),
        "{b}"
    );
}

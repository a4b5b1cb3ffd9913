//! `verify` checks the links of unpacked archives as well as their bytes: a member replaced by a
//! link, a link that leads out of the tree, or a hard link shared with a file outside is reported,
//! the tree quarantined, and the next fetch unpacks it again.
mod common;

use std::path::{Path, PathBuf};

use common::{archive_entry, names, opts, sha256, tar_gz, Env, Route, Server};
use fetch::fetch;

struct Fixture {
    _srv: Server,
    env: Env,
    m: fetch::Manifest,
    tree: PathBuf,
}

fn fixture() -> Fixture {
    let srv = Server::start();
    let ar = tar_gz(&[("d/x.txt", b"hello"), ("d/y.txt", b"world")]);
    let url = srv.route("/t.tar.gz", Route::Body(ar.clone()));
    let env = Env::new();
    let m = env.manifest(&archive_entry("arc", &sha256(&ar), &url));
    let tree = env.cache.root().join("extracted").join(sha256(&ar));
    Fixture {
        _srv: srv,
        env,
        m,
        tree,
    }
}

impl Fixture {
    fn fetch_ok(&self) {
        let r = fetch(&self.m, &self.env.cache, &names("arc"), None, &opts()).unwrap();
        assert!(r.is_complete(), "{r}");
        let clean = self.env.cache.verify().unwrap();
        assert!(clean.quarantined.is_empty(), "{clean:?}");
    }

    /// `verify` reports the tree (with `why` in its reason) and the artifact is no longer usable.
    fn assert_reported(&self, why: &str) {
        let rep = self.env.cache.verify().unwrap();
        assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
        let (what, to) = &rep.quarantined[0];
        assert!(
            what.contains("extracted tree") && what.contains(why),
            "{what}"
        );
        assert!(to.starts_with(self.env.cache.root().join("quarantine")));
        assert!(!self.tree.exists());
        assert!(self.env.cache.path_of("arc").is_err());
    }

    fn outside(&self, name: &str) -> PathBuf {
        self.env.dir.path().join(name)
    }
}

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[cfg(unix)]
#[test]
fn a_member_replaced_by_a_link_to_identical_bytes_is_reported() {
    let f = fixture();
    f.fetch_ok();
    let outside = f.outside("x.txt");
    std::fs::write(&outside, b"hello").unwrap();
    let member = f.tree.join("d/x.txt");
    std::fs::remove_file(&member).unwrap();
    symlink(&outside, &member);
    f.assert_reported("now a link");

    // A directory on the way replaced by a link to a copy outside is reported too.
    f.fetch_ok();
    let copy = f.outside("dcopy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("x.txt"), b"hello").unwrap();
    std::fs::write(copy.join("y.txt"), b"world").unwrap();
    std::fs::remove_dir_all(f.tree.join("d")).unwrap();
    symlink(&copy, &f.tree.join("d"));
    f.assert_reported("passes through `d`");

    // And the next fetch unpacks a good tree again.
    f.fetch_ok();
    assert_eq!(
        std::fs::read(f.env.cache.path_of("arc").unwrap().join("data/d/x.txt")).unwrap(),
        b"hello"
    );
}

#[cfg(unix)]
#[test]
fn a_link_leading_out_of_the_tree_is_reported_also_through_a_chain() {
    let f = fixture();
    f.fetch_ok();
    symlink("../..", &f.tree.join("d/up"));
    f.assert_reported("outside the target directory");

    // Each link alone stays inside by its text; followed, the chain leaves the tree.
    f.fetch_ok();
    symlink(".", &f.tree.join("a"));
    symlink("a/..", &f.tree.join("b"));
    symlink("b/..", &f.tree.join("c"));
    f.assert_reported("passes through `");
}

#[cfg(unix)]
#[test]
fn a_hard_link_shared_with_a_file_outside_is_reported() {
    let f = fixture();
    f.fetch_ok();
    std::fs::hard_link(f.tree.join("d/y.txt"), f.outside("y.txt")).unwrap();
    f.assert_reported("outside");
}

#[cfg(unix)]
#[test]
fn an_index_entry_pointing_outside_the_cache_is_reported() {
    let f = fixture();
    f.fetch_ok();
    let copy = f.outside("datacopy");
    std::fs::create_dir_all(copy.join("d")).unwrap();
    std::fs::write(copy.join("d/x.txt"), b"hello").unwrap();
    let entry = f.env.cache.root().join("by-name/arc/data");
    std::fs::remove_file(&entry).unwrap();
    symlink(&copy, &entry);
    let rep = f.env.cache.verify().unwrap();
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    assert!(
        rep.quarantined[0].0.contains("index entry")
            && rep.quarantined[0].0.contains("outside the cache"),
        "{rep:?}"
    );
    assert!(f.env.cache.path_of("arc").is_err());
    f.fetch_ok();
    assert_eq!(std::fs::read_link(&entry).unwrap(), f.tree);
}

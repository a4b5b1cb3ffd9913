//! Whether the network can bring what a fetch left missing, asked of the system's resolver alone
//! (no HTTP client). `cargo xtask`, which is built without the client, asks before it builds the
//! downloader: a machine with no network and no mirror learns in seconds what is missing.
use std::collections::BTreeSet;
use std::net::ToSocketAddrs;

use crate::fetch::{host_of, url_candidates, Mirror};
use crate::manifest::Manifest;
use crate::report::FetchReport;

/// The hosts of every URL (URL mirrors first, then upstream) that could bring a required file
/// `report` lists as missing.
pub fn hosts_for_missing(
    manifest: &Manifest,
    report: &FetchReport,
    mirrors: &[Mirror],
) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    for r in report
        .files
        .iter()
        .filter(|r| !r.optional && !r.outcome.is_present())
    {
        let Ok(a) = manifest.get(&r.artifact) else {
            continue;
        };
        for f in a.files.iter().filter(|f| f.path == r.path) {
            for url in url_candidates(mirrors, a, f) {
                hosts.insert(host_of(&url).to_string());
            }
        }
    }
    hosts
}

/// Whether the system's resolver finds an address for `host` (an IP address always does).
pub fn resolves(host: &str) -> bool {
    (host, 443)
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_resolves_and_a_reserved_invalid_name_does_not() {
        assert!(resolves("127.0.0.1"));
        // RFC 6761: names under .invalid never resolve, with or without network.
        assert!(!resolves("nothing.invalid"));
    }
}

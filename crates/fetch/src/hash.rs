//! Streaming digests: every byte that enters the cache is hashed on its way in.
use std::io::{self, Read, Write};
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

/// sha256 and md5 of one stream, as lower-case hex, and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
    pub size: u64,
}

#[derive(Default)]
pub(crate) struct Hasher {
    sha: Sha256,
    md5: Md5,
    size: u64,
}

impl Hasher {
    pub fn update(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.md5.update(b);
        self.size += b.len() as u64;
    }
    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex(&self.sha.finalize()),
            md5: hex(&self.md5.finalize()),
            size: self.size,
        }
    }
}

/// Lower-case hex of bytes (the one spelling of a digest in the workspace).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Lower-case hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hashes a reader to its end.
pub fn digest_reader(mut r: impl Read) -> io::Result<Digests> {
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

pub fn digest_file(path: &Path) -> io::Result<Digests> {
    digest_reader(std::fs::File::open(path)?)
}

/// Copies `src` to `dst` and hashes the bytes written (what enters the cache is what was hashed).
pub(crate) fn copy_hashing(src: &Path, dst: &Path) -> io::Result<Digests> {
    let mut r = std::fs::File::open(src)?;
    let mut w = std::fs::File::create(dst)?;
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    w.sync_all()?;
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_abc() {
        let d = digest_reader(&b"abc"[..]).unwrap();
        // FIPS 180-2 and RFC 1321 test vectors.
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(d.size, 3);
    }
}

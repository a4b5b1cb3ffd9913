//! A small HTTP/1.1 server on 127.0.0.1 for the fetch tests: honours `Range`, and can answer with
//! an error status, a redirect, a chunked or length-less body, hang, or drop the connection part-way
//! through a body. Also the cache and manifest helpers the test files share.
#![allow(dead_code)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fetch::{Cache, FetchOptions, Manifest};

#[derive(Clone)]
pub enum Route {
    Body(Vec<u8>),
    Status(u16),
    /// Reads the request, then says nothing for this long.
    Hang(Duration),
    /// Sends the full Content-Length but only the first `n` bytes, then closes; once. Later
    /// requests get the whole body (with Range honoured).
    DropAfter(Vec<u8>, usize),
    /// `302 Found` to this path on the same server.
    Redirect(String),
    /// `Transfer-Encoding: chunked`, one chunk; with `Some(n)` only the first `n` bytes of the chunk
    /// are sent and the connection closes before the terminator.
    Chunked(Vec<u8>, Option<usize>),
    /// No Content-Length and no chunking: the body ends when the connection closes, after the
    /// first `n` bytes with `Some(n)`.
    NoLength(Vec<u8>, Option<usize>),
    /// `206 Partial Content` with the first `n` bytes, whatever was asked for.
    Partial(Vec<u8>, usize),
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    hits: HashMap<String, usize>,
    ranges: Vec<(String, String)>,
    dropped: HashMap<String, bool>,
}

#[derive(Clone)]
pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || handle(conn, st));
            }
        });
        Server { base, state }
    }

    pub fn route(&self, path: &str, r: Route) -> String {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), r);
        format!("{}{path}", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.state.lock().unwrap().hits.values().sum()
    }

    /// `Range` headers received, as (path, value).
    pub fn ranges(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().ranges.clone()
    }
}

fn handle(conn: TcpStream, st: Arc<Mutex<State>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range: Option<u64> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h
            .strip_prefix("Range: ")
            .or_else(|| h.strip_prefix("range: "))
        {
            let v = v.trim().to_string();
            range = v
                .strip_prefix("bytes=")
                .and_then(|r| r.trim_end_matches('-').parse().ok());
            st.lock().unwrap().ranges.push((path.clone(), v));
        }
    }
    let route = {
        let mut s = st.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        s.routes.get(&path).cloned()
    };
    let mut w = conn;
    match route {
        None => respond(&mut w, 404, &[], b"not found"),
        Some(Route::Status(code)) => respond(&mut w, code, &[], b"error"),
        Some(Route::Hang(d)) => std::thread::sleep(d),
        Some(Route::Body(body)) => serve(&mut w, &body, range, None),
        Some(Route::Redirect(to)) => respond(&mut w, 302, &[format!("Location: {to}")], b""),
        Some(Route::Chunked(body, cut)) => {
            let n = cut.unwrap_or(body.len());
            let mut out = format!(
                "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body[..n]);
            if cut.is_none() {
                out.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            send_and_close(&mut w, &out);
        }
        Some(Route::Partial(body, n)) => {
            let cr = format!("Content-Range: bytes 0-{}/{}", n - 1, body.len());
            respond(&mut w, 206, &[cr], &body[..n]);
        }
        Some(Route::NoLength(body, cut)) => {
            let mut out = b"HTTP/1.1 200 X\r\nConnection: close\r\n\r\n".to_vec();
            out.extend_from_slice(&body[..cut.unwrap_or(body.len())]);
            send_and_close(&mut w, &out);
        }
        Some(Route::DropAfter(body, n)) => {
            let first = !st
                .lock()
                .unwrap()
                .dropped
                .insert(path.clone(), true)
                .unwrap_or(false);
            serve(&mut w, &body, range, first.then_some(n));
        }
    }
}

fn serve(w: &mut TcpStream, body: &[u8], range: Option<u64>, cut: Option<usize>) {
    let (status, part, extra) = match range {
        Some(from) if from as usize >= body.len() => {
            return respond(
                w,
                416,
                &[format!("Content-Range: bytes */{}", body.len())],
                b"",
            );
        }
        Some(from) => {
            let cr = format!(
                "Content-Range: bytes {from}-{}/{}",
                body.len() - 1,
                body.len()
            );
            (206, &body[from as usize..], vec![cr])
        }
        None => (200, body, vec![]),
    };
    match cut {
        None => respond(w, status, &extra, part),
        Some(n) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                part.len()
            );
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&part[..n]);
            let _ = w.flush();
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn send_and_close(w: &mut TcpStream, bytes: &[u8]) {
    let _ = w.write_all(bytes);
    let _ = w.flush();
    let _ = w.shutdown(std::net::Shutdown::Both);
}

fn respond(w: &mut TcpStream, status: u16, extra: &[String], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for e in extra {
        head.push_str(e);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = w.write_all(head.as_bytes());
    let _ = w.write_all(body);
    let _ = w.flush();
}

pub fn sha256(b: &[u8]) -> String {
    fetch::hash::digest_reader(b).unwrap().sha256
}

pub fn md5(b: &[u8]) -> String {
    fetch::hash::digest_reader(b).unwrap().md5
}

/// Deterministic test bytes.
pub fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub cache: Cache,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        Env { dir, cache }
    }

    pub fn manifest(&self, text: &str) -> Manifest {
        let p = self.dir.path().join("manifest.toml");
        std::fs::write(&p, format!("schema = 1\n{text}")).unwrap();
        Manifest::load(&p).unwrap()
    }

    pub fn objects(&self) -> usize {
        count_files(&self.cache.root().join("objects"))
    }
}

pub fn count_files(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn opts() -> FetchOptions {
    FetchOptions {
        retries: 0,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        progress: false,
        ..FetchOptions::default()
    }
}

pub fn entry(name: &str, path: &str, sha: &str, urls: &[String]) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[[artifact]]\nname = \"{name}\"\nkind = \"weights\"\nlicence = \"test\"\nsource_page = \"https://example.org\"\n\
         [[artifact.file]]\npath = \"{path}\"\nsha256 = \"{sha}\"\nurls = [{}]\n",
        urls.join(", ")
    )
}

pub fn names(n: &str) -> Vec<String> {
    vec![n.to_string()]
}

pub fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

pub fn archive_entry(name: &str, sha: &str, url: &str) -> String {
    format!(
        "{}[artifact.extract]\nfile = \"a.tar.gz\"\nformat = \"tar.gz\"\ninto = \"data\"\nmax_member_bytes = 1000\nmax_total_bytes = 10000\n",
        entry(name, "a.tar.gz", sha, &[url.to_string()])
    )
}

//! A small HTTP/1.1 server on 127.0.0.1 for the fetch tests: honours `Range`, and can answer with
//! an error status, hang, or drop the connection part-way through a body.
#![allow(dead_code)]
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub enum Route {
    Body(Vec<u8>),
    Status(u16),
    /// Reads the request, then says nothing for this long.
    Hang(Duration),
    /// Sends the full Content-Length but only the first `n` bytes, then closes; once. Later
    /// requests get the whole body (with Range honoured).
    DropAfter(Vec<u8>, usize),
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

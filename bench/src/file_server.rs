//! A static file server on 127.0.0.1 for binary caches (and anything else the scenarios serve).
//!
//! It must never be the bottleneck of what it measures, so: HTTP/1.1 keep-alive (both Nix's
//! curl and nixlet's reqwest reuse connections), one thread per connection (Nix opens many at
//! once), `TCP_NODELAY` for the small narinfo answers, and file bodies copied with
//! `std::io::copy`, which Linux turns into `sendfile` from the page cache. It counts what it
//! serves, so that a scenario can compare bytes downloaded with the size of a closure.
//!
//! It can also answer every request after a fixed delay ([`FileServer::start_with_latency`]):
//! a cache one network round trip away, where what a client pays per request is the round trip
//! rather than CPU. Only the answer is delayed, not the bytes after it, so this models latency
//! and not a bandwidth limit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// What the server has sent so far.
#[derive(Debug, Default)]
struct Counters {
    body_bytes: AtomicU64,
    requests: AtomicU64,
    /// GET requests with a 200 answer, per request path.
    per_path: Mutex<BTreeMap<String, u32>>,
}

pub struct FileServer {
    addr: SocketAddr,
    root: PathBuf,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    /// Serves the files below `root`.
    pub fn start(root: &Path) -> Result<Self> {
        Self::start_with_latency(root, Duration::ZERO)
    }

    /// Serves the files below `root`, answering each request `latency` after it arrived.
    pub fn start_with_latency(root: &Path, latency: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let served = root.to_path_buf();
        let (root, thread_counters, thread_stop) =
            (root.to_path_buf(), Arc::clone(&counters), Arc::clone(&stop));
        thread::Builder::new()
            .name("file-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if thread_stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (root, counters) = (root.clone(), Arc::clone(&thread_counters));
                    thread::spawn(move || {
                        let _ = serve_connection(stream, &root, &counters, latency);
                    });
                }
            })?;
        Ok(Self {
            addr,
            root: served,
            counters,
            stop,
        })
    }

    /// The directory it serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Body bytes sent since start or the last [`Self::reset`].
    pub fn body_bytes(&self) -> u64 {
        self.counters.body_bytes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Successful GETs per path since start or the last reset.
    pub fn gets_per_path(&self) -> BTreeMap<String, u32> {
        self.counters.per_path.lock().expect("poisoned").clone()
    }

    pub fn reset(&self) {
        self.counters.body_bytes.store(0, Ordering::SeqCst);
        self.counters.requests.store(0, Ordering::SeqCst);
        self.counters.per_path.lock().expect("poisoned").clear();
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag; open connections end with their
        // clients.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers requests on one connection until the client closes it or asks to.
fn serve_connection(
    stream: TcpStream,
    root: &Path,
    counters: &Counters,
    latency: Duration,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    // A client that keeps an idle connection open must not pin a thread for ever.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some(request) = read_request(&mut reader)? else {
            return Ok(());
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let keep_alive = request.keep_alive;
        if !latency.is_zero() {
            thread::sleep(latency);
        }
        respond(&mut writer, root, &request, counters)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

struct Request {
    method: String,
    path: String,
    keep_alive: bool,
}

/// Reads a request head; `None` when the client closed the connection. Bodies are not
/// expected (only GET and HEAD are served).
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or("/");
    let version = parts.next().unwrap_or("HTTP/1.0");
    let mut keep_alive = version == "HTTP/1.1";
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("connection") {
                let value = value.trim().to_ascii_lowercase();
                keep_alive = value != "close" && (keep_alive || value == "keep-alive");
            }
        }
    }
    let path = target.split('?').next().unwrap_or("/").to_owned();
    Ok(Some(Request {
        method,
        path,
        keep_alive,
    }))
}

fn respond(
    out: &mut TcpStream,
    root: &Path,
    request: &Request,
    counters: &Counters,
) -> io::Result<()> {
    let connection = if request.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    let file = resolve(root, &request.path).and_then(|p| File::open(p).ok());
    let (file, len) = match file.map(|f| (f.metadata().map(|m| (m.is_file(), m.len())), f)) {
        Some((Ok((true, len)), f)) if matches!(request.method.as_str(), "GET" | "HEAD") => (f, len),
        _ => {
            let body = b"not found\n";
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
            return out.flush();
        }
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: {connection}\r\n\r\n"
    )?;
    if request.method == "GET" {
        let sent = io::copy(&mut &file, out)?;
        counters.body_bytes.fetch_add(sent, Ordering::Relaxed);
        *counters
            .per_path
            .lock()
            .expect("poisoned")
            .entry(request.path.clone())
            .or_default() += 1;
    }
    out.flush()
}

/// The file below `root` a request path names; `None` for anything that would leave `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(stream: &mut TcpStream, path: &str) -> String {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        format!(
            "{}|{}",
            head.lines().next().unwrap(),
            String::from_utf8(body).unwrap()
        )
    }

    #[test]
    fn serves_files_on_one_kept_alive_connection_and_counts_them() {
        let dir = std::env::temp_dir().join(format!("nixlet-bench-fs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nar")).unwrap();
        std::fs::write(dir.join("nar/a.nar"), b"hello").unwrap();
        let server = FileServer::start(&dir).unwrap();
        let mut stream = TcpStream::connect(server.addr).unwrap();
        assert_eq!(get(&mut stream, "/nar/a.nar"), "HTTP/1.1 200 OK|hello");
        assert_eq!(get(&mut stream, "/nar/a.nar"), "HTTP/1.1 200 OK|hello");
        assert_eq!(
            get(&mut stream, "/../etc/passwd"),
            "HTTP/1.1 404 Not Found|not found\n"
        );
        assert_eq!(server.body_bytes(), 10);
        assert_eq!(server.gets_per_path()["/nar/a.nar"], 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn answers_after_the_latency_it_was_given() {
        let dir = std::env::temp_dir().join(format!("nixlet-bench-fsl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), b"x").unwrap();
        let server = FileServer::start_with_latency(&dir, Duration::from_millis(50)).unwrap();
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(get(&mut stream, "/a"), "HTTP/1.1 200 OK|x");
        assert_eq!(
            get(&mut stream, "/missing"),
            "HTTP/1.1 404 Not Found|not found\n"
        );
        // Each of the two answers waited at least the latency.
        assert!(started.elapsed() >= Duration::from_millis(100));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

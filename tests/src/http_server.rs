//! A static file server on 127.0.0.1 for the tests: serves a directory (a binary cache made by
//! `nix copy --to file://…`, or an `http` environment source), counts requests per path, records
//! the `Authorization` headers it gets, and can require a bearer token (401 otherwise).
//!
//! One thread per connection, `Connection: close`, GET only: enough for nixlet's clients.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

#[derive(Default)]
struct State {
    counts: HashMap<String, u32>,
    authorizations: Vec<String>,
}

pub struct StaticServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl StaticServer {
    /// Serves `root` to anyone.
    pub fn start(root: &Path) -> Result<Self> {
        Self::start_with(root, None)
    }

    /// Serves `root`; with `token`, only to requests carrying `Authorization: Bearer <token>`.
    pub fn start_with(root: &Path, token: Option<&str>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, token) = (root.to_path_buf(), token.map(str::to_owned));
        let (thread_state, thread_stop) = (Arc::clone(&state), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, token, state) = (root.clone(), token.clone(), Arc::clone(&thread_state));
                thread::spawn(move || {
                    let _ = serve(stream, &root, token.as_deref(), &state);
                });
            }
        });
        Ok(Self { addr, state, stop })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far for exactly `path` (e.g. `/nar/<hash>.nar.xz`).
    pub fn count(&self, path: &str) -> u32 {
        let state = self.state.lock().expect("server state poisoned");
        state.counts.get(path).copied().unwrap_or(0)
    }

    /// Requests so far per path.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.state
            .lock()
            .expect("server state poisoned")
            .counts
            .clone()
    }

    /// `Authorization` header values received so far, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("server state poisoned")
            .authorizations
            .clone()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, root: &Path, token: Option<&str>, state: &Mutex<State>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    {
        let mut state = state.lock().expect("server state poisoned");
        *state.counts.entry(path.clone()).or_default() += 1;
        state.authorizations.extend(authorization.clone());
    }
    let mut stream = stream;
    if let Some(token) = token {
        if authorization.as_deref() != Some(&format!("Bearer {token}")) {
            return respond(&mut stream, "401 Unauthorized", b"unauthorized\n");
        }
    }
    match file_below(root, &path).and_then(|file| std::fs::read(file).ok()) {
        Some(body) => respond(&mut stream, "200 OK", &body),
        None => respond(&mut stream, "404 Not Found", b"not found\n"),
    }
}

/// The file `path` names below `root`; nothing for `..` or a query.
fn file_below(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") || relative.contains('?') {
        return None;
    }
    Some(root.join(relative)).filter(|file| file.is_file())
}

fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) -> Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

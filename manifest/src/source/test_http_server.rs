//! A small HTTP/1.1 file server on 127.0.0.1 for the `http` source's tests: serves a fixed
//! set of paths, can demand a bearer token or basic credentials, fail a path with 500 a
//! number of times, or hold a path without answering.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Default)]
pub(crate) struct ServerConfig {
    /// Path (with leading '/') → body.
    pub files: HashMap<String, Vec<u8>>,
    /// The exact `Authorization` header every request must carry, else 401.
    pub authorization: Option<String>,
    /// Path → how many requests for it answer 500 before it is served.
    pub failures: HashMap<String, usize>,
    /// Paths whose requests are read and never answered.
    pub hang: Vec<String>,
    /// Path → status line answered for it every time, e.g. "403 Forbidden".
    pub statuses: HashMap<String, &'static str>,
}

/// One request as received: path and `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub path: String,
    pub authorization: Option<String>,
}

pub(crate) struct TestServer {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(config));
        {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let seen = Arc::clone(&seen);
                    let state = Arc::clone(&state);
                    thread::spawn(move || serve(stream, &state, &seen));
                }
            });
        }
        TestServer {
            address,
            seen,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|seen| seen.path).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

fn serve(stream: TcpStream, state: &Mutex<ServerConfig>, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        authorization: authorization.clone(),
    });

    let (status, body) = {
        let mut config = state.lock().unwrap();
        if config.hang.contains(&path) {
            drop(config);
            thread::sleep(Duration::from_secs(5));
            return;
        }
        if let Some(status) = config.statuses.get(&path) {
            (*status, Vec::new())
        } else if config.authorization.is_some() && config.authorization != authorization {
            ("401 Unauthorized", b"unauthorized".to_vec())
        } else if let Some(remaining) = config.failures.get_mut(&path).filter(|n| **n > 0) {
            *remaining -= 1;
            ("500 Internal Server Error", b"try again".to_vec())
        } else {
            match config.files.get(&path) {
                Some(body) => ("200 OK", body.clone()),
                None => ("404 Not Found", b"not found".to_vec()),
            }
        }
    };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

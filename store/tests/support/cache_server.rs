//! A binary cache on 127.0.0.1: serves the files of a `nix copy --to file://…` directory over
//! HTTP/1.1, counts requests per path, and misbehaves on request (status codes, truncated or
//! replaced bodies, delays, stalls).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Announce the full length, send half of the body, close the connection.
    Truncate,
    /// Wait this long before answering.
    Delay(Duration),
    /// Send this many body bytes, then stall for the duration (then close).
    Stall { after: usize, duration: Duration },
    /// Serve these bytes instead of the file.
    Body(Vec<u8>),
    /// Send the body one byte per interval (a hostile or overloaded server), for at most
    /// `limit`, then close.
    Trickle { interval: Duration, limit: Duration },
}

#[derive(Debug, Clone)]
struct Rule {
    /// Matches request paths containing this.
    pattern: String,
    fault: Fault,
    /// How many more requests this rule applies to; `None` for all.
    remaining: Option<u32>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    counts: HashMap<String, u32>,
    /// `Authorization` header values received, in order.
    authorizations: Vec<String>,
}

pub struct CacheServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl CacheServer {
    /// Serves `root` (a directory with `nix-cache-info`, `*.narinfo`, `nar/`).
    pub fn start(root: PathBuf) -> CacheServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stop) = (Arc::clone(&state), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, state) = (root.clone(), Arc::clone(&thread_state));
                thread::spawn(move || {
                    let _ = serve(stream, &root, &state);
                });
            }
        });
        CacheServer { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `times` requests whose path contains `pattern` (all of them
    /// for `None`). Earlier rules win.
    pub fn inject(&self, pattern: &str, fault: Fault, times: Option<u32>) {
        self.state.lock().unwrap().rules.push(Rule {
            pattern: pattern.to_string(),
            fault,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Requests so far whose path contains `pattern`.
    pub fn count(&self, pattern: &str) -> u32 {
        let state = self.state.lock().unwrap();
        state
            .counts
            .iter()
            .filter(|(path, _)| path.contains(pattern))
            .map(|(_, n)| n)
            .sum()
    }

    /// `Authorization` headers received so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }

    /// Request counts per path.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().counts.clone()
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, root: &std::path::Path, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let fault = {
        let mut state = state.lock().unwrap();
        *state.counts.entry(path.clone()).or_default() += 1;
        if let Some(authorization) = authorization {
            state.authorizations.push(authorization);
        }
        let rule = state
            .rules
            .iter_mut()
            .find(|rule| path.contains(&rule.pattern) && !matches!(rule.remaining, Some(0)));
        rule.map(|rule| {
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            rule.fault.clone()
        })
    };
    let mut stream = stream;
    let relative = path.trim_start_matches('/');
    let file = root.join(relative);
    let body = if relative.contains("..") {
        None
    } else {
        std::fs::read(&file).ok()
    };
    match (fault, body) {
        (Some(Fault::Status(status)), _) => respond(&mut stream, status, b"", None),
        (Some(Fault::Delay(delay)), body) => {
            thread::sleep(delay);
            match body {
                Some(body) => respond(&mut stream, 200, &body, None),
                None => respond(&mut stream, 404, b"", None),
            }
        }
        (Some(Fault::Body(body)), _) => respond(&mut stream, 200, &body, None),
        (Some(Fault::Truncate), Some(body)) => respond(
            &mut stream,
            200,
            &body,
            Some((body.len() / 2, Duration::ZERO)),
        ),
        (Some(Fault::Stall { after, duration }), Some(body)) => respond(
            &mut stream,
            200,
            &body,
            Some((after.min(body.len()), duration)),
        ),
        (Some(Fault::Trickle { interval, limit }), Some(body)) => {
            trickle(&mut stream, &body, interval, limit)
        }
        (_, Some(body)) => respond(&mut stream, 200, &body, None),
        (_, None) => respond(&mut stream, 404, b"not found", None),
    }
}

/// Announces the whole body and sends it a byte per `interval` until `limit` has passed or the
/// client went away.
fn trickle(
    stream: &mut TcpStream,
    body: &[u8],
    interval: Duration,
    limit: Duration,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    let started = std::time::Instant::now();
    for byte in body {
        if started.elapsed() > limit {
            break;
        }
        stream.write_all(std::slice::from_ref(byte))?;
        stream.flush()?;
        thread::sleep(interval);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Writes a response announcing `body.len()` bytes; with `cut`, sends only that many, waits,
/// and closes.
fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    cut: Option<(usize, Duration)>,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    match cut {
        None => stream.write_all(body)?,
        Some((sent, wait)) => {
            stream.write_all(&body[..sent])?;
            stream.flush()?;
            thread::sleep(wait);
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

//! The harness's HTTP server on 127.0.0.1: serves a directory (a binary cache written by
//! `nix copy --to file://…`, or an `http` environment source), can require a bearer token (401
//! otherwise) and records the `Authorization` headers it gets, and misbehaves on request: the
//! requests a rule matches get a fault instead of the file (an HTTP status, a connection reset
//! or a clean close partway through the body, more bytes than announced, no answer at all, one
//! byte at a time, a redirect to itself, or a pause partway through that the test ends).
//!
//! Every request and every byte it sends is recorded, so a test can wait until a client is
//! exactly where it wants it (the first half of a NAR received, a request for `current` made)
//! and measure what the client did (how many tries, how long it waited).
//!
//! One thread per connection, `Connection: close`, GET only. Held and stalled connections end
//! when [`HttpServer::release`] is called or the server is dropped, so no thread outlives it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a faulty answer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status (a 5xx burst when repeated) with a short body.
    Status(u16),
    /// Announces the whole body, sends this many bytes of it, then resets the connection (RST).
    ResetAfter(u64),
    /// Announces the whole body, sends this many bytes of it, then closes cleanly (FIN).
    Truncate(u64),
    /// Announces and sends the whole file followed by this many extra bytes.
    Overlong(u64),
    /// Reads the request and never answers (until released or dropped).
    Stall,
    /// Sends the head, then the body one byte per interval.
    Trickle(Duration),
    /// Answers `302 Found` with the request's own path as the location.
    RedirectLoop,
    /// Sends this many bytes of the body, then waits until released, then the rest.
    HoldAfter(u64),
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Request paths starting with `/nar/`.
    Nar,
    /// Request paths ending in `.narinfo`.
    NarInfo,
    /// Exactly this request path.
    Path(String),
    /// Request paths ending with this.
    Suffix(String),
    /// Every request.
    Any,
}

impl Match {
    fn matches(&self, path: &str) -> bool {
        match self {
            Match::Nar => path.starts_with("/nar/"),
            Match::NarInfo => path.ends_with(".narinfo"),
            Match::Path(p) => path == p,
            Match::Suffix(s) => path.ends_with(s.as_str()),
            Match::Any => true,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Match,
    fault: Fault,
    /// Matching requests it still applies to; `None`: all of them.
    remaining: Option<u32>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Served {
    pub path: String,
    /// Since the server started.
    pub at: Duration,
    /// The fault it got, if any.
    pub fault: Option<Fault>,
    /// Body bytes sent so far.
    pub body_bytes: u64,
    /// The server is holding it (a [`Fault::HoldAfter`] reached its pause, or a stall).
    pub held: bool,
    /// The server is done with it.
    pub finished: bool,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    served: Vec<Served>,
    /// `Authorization` header values received, in order.
    authorizations: Vec<String>,
    /// Bumped by [`HttpServer::release`]: held connections whose generation is older go on.
    generation: u64,
}

struct Shared {
    root: PathBuf,
    /// When set, only requests with `Authorization: Bearer <token>` are served.
    token: Option<String>,
    started: Instant,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl HttpServer {
    /// Serves `root` to anyone on a free loopback port, with no faults yet.
    pub fn start(root: &Path) -> Result<Self> {
        Self::start_with(root, None)
    }

    /// Serves `root`; with `token`, only to requests carrying `Authorization: Bearer <token>`.
    pub fn start_with(root: &Path, token: Option<&str>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            token: token.map(str::to_owned),
            started: Instant::now(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        thread::Builder::new()
            .name("fault-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accepting.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accepting);
                    thread::spawn(move || {
                        let _ = serve(stream, &shared);
                    });
                }
            })?;
        Ok(Self { addr, shared })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers the next `times` requests `matcher` selects (all of them with `None`) with
    /// `fault`. Rules are tried in the order they were added.
    pub fn fail(&self, matcher: Match, fault: Fault, times: Option<u32>) {
        self.shared.lock().rules.push(Rule {
            matcher,
            fault,
            remaining: times,
        });
    }

    /// Drops every rule: from now on requests are served normally. Held connections stay held
    /// until [`Self::release`].
    pub fn clear(&self) {
        self.shared.lock().rules.clear();
    }

    /// Lets every held or stalled connection go on (a held one sends the rest of its body, a
    /// stalled one closes without an answer).
    pub fn release(&self) {
        self.shared.lock().generation += 1;
        self.shared.changed.notify_all();
    }

    /// Every request so far, in arrival order.
    pub fn served(&self) -> Vec<Served> {
        self.shared.lock().served.clone()
    }

    /// Requests so far for exactly `path` (e.g. `/nar/<hash>.nar.xz`).
    pub fn count(&self, path: &str) -> u32 {
        self.count_matching(&Match::Path(path.to_owned())) as u32
    }

    /// Requests so far per path.
    pub fn counts(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        for served in &self.shared.lock().served {
            *counts.entry(served.path.clone()).or_default() += 1;
        }
        counts
    }

    /// `Authorization` header values received so far, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.lock().authorizations.clone()
    }

    /// Requests so far whose path `matcher` selects.
    pub fn count_matching(&self, matcher: &Match) -> usize {
        self.shared
            .lock()
            .served
            .iter()
            .filter(|s| matcher.matches(&s.path))
            .count()
    }

    /// Waits until some request satisfies `wanted`; returns it.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Served) -> bool,
    ) -> Result<Served> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = state.served.iter().find(|s| wanted(s)) {
                return Ok(found.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until a request `matcher` selects is held (see [`Served::held`]).
    pub fn wait_held(&self, matcher: &Match, timeout: Duration) -> Result<Served> {
        self.wait_for(&format!("a held request for {matcher:?}"), timeout, |s| {
            s.held && !s.finished && matcher.matches(&s.path)
        })
    }

    /// Waits until a request `matcher` selects has arrived.
    pub fn wait_request(&self, matcher: &Match, timeout: Duration) -> Result<Served> {
        self.wait_for(&format!("a request for {matcher:?}"), timeout, |s| {
            matcher.matches(&s.path)
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wakes the accept loop so that it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Records a change to request `index` and wakes waiters.
fn update(shared: &Shared, index: usize, change: impl FnOnce(&mut Served)) {
    let mut state = shared.lock();
    if let Some(served) = state.served.get_mut(index) {
        change(served);
    }
    drop(state);
    shared.changed.notify_all();
}

fn serve(stream: TcpStream, shared: &Shared) -> Result<()> {
    stream.set_nodelay(true)?;
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
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let (index, fault, generation) = {
        let mut state = shared.lock();
        let fault = state
            .rules
            .iter_mut()
            .find(|r| r.matcher.matches(&path) && r.remaining != Some(0))
            .map(|rule| {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                rule.fault.clone()
            });
        state.authorizations.extend(authorization.clone());
        state.served.push(Served {
            path: path.clone(),
            at: shared.started.elapsed(),
            fault: fault.clone(),
            body_bytes: 0,
            held: false,
            finished: false,
        });
        (state.served.len() - 1, fault, state.generation)
    };
    shared.changed.notify_all();
    if let Some(token) = &shared.token {
        if authorization.as_deref() != Some(&format!("Bearer {token}")) {
            let mut stream = stream;
            let body = b"unauthorized\n";
            respond_head(&mut stream, 401, body, None)?;
            stream.write_all(body)?;
            update(shared, index, |s| s.finished = true);
            return Ok(());
        }
    }
    let outcome = answer(stream, shared, index, &path, fault, generation);
    update(shared, index, |s| s.finished = true);
    outcome
}

fn answer(
    mut stream: TcpStream,
    shared: &Shared,
    index: usize,
    path: &str,
    fault: Option<Fault>,
    generation: u64,
) -> Result<()> {
    match fault {
        Some(Fault::Status(status)) => {
            let body = b"injected fault\n";
            respond_head(&mut stream, status, body, None)?;
            stream.write_all(body)?;
            return Ok(());
        }
        Some(Fault::RedirectLoop) => {
            write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(Fault::Stall) => {
            update(shared, index, |s| s.held = true);
            wait_released(shared, generation);
            return Ok(());
        }
        _ => {}
    }
    let Some(body) = file_below(&shared.root, path).and_then(|f| std::fs::read(f).ok()) else {
        let body = b"not found\n";
        respond_head(&mut stream, 404, body, None)?;
        stream.write_all(body)?;
        return Ok(());
    };
    let sent = |n: u64| update(shared, index, |s| s.body_bytes += n);
    match fault {
        None => {
            respond_head(&mut stream, 200, &body, None)?;
            stream.write_all(&body)?;
            sent(body.len() as u64);
        }
        Some(Fault::ResetAfter(n)) | Some(Fault::Truncate(n)) => {
            let n = (n as usize).min(body.len());
            respond_head(&mut stream, 200, &body, None)?;
            stream.write_all(&body[..n])?;
            stream.flush()?;
            sent(n as u64);
            if matches!(fault, Some(Fault::ResetAfter(_))) {
                // SO_LINGER 0 makes close() send RST instead of FIN.
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                drop(stream);
                return Ok(());
            }
        }
        Some(Fault::Overlong(extra)) => {
            let total = body.len() as u64 + extra;
            respond_head(&mut stream, 200, &body, Some(total))?;
            stream.write_all(&body)?;
            stream.write_all(&vec![0x5a; extra as usize])?;
            sent(total);
        }
        Some(Fault::Trickle(interval)) => {
            respond_head(&mut stream, 200, &body, None)?;
            for byte in &body {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                stream.write_all(std::slice::from_ref(byte))?;
                stream.flush()?;
                sent(1);
                thread::sleep(interval);
            }
        }
        Some(Fault::HoldAfter(n)) => {
            let n = (n as usize).min(body.len());
            respond_head(&mut stream, 200, &body, None)?;
            stream.write_all(&body[..n])?;
            stream.flush()?;
            sent(n as u64);
            update(shared, index, |s| s.held = true);
            wait_released(shared, generation);
            update(shared, index, |s| s.held = false);
            if !shared.stop.load(Ordering::SeqCst) {
                stream.write_all(&body[n..])?;
                sent((body.len() - n) as u64);
            }
        }
        Some(Fault::Status(_)) | Some(Fault::RedirectLoop) | Some(Fault::Stall) => {
            unreachable!("answered above")
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// Blocks until [`HttpServer::release`] was called after `generation` was current, or the
/// server stops.
fn wait_released(shared: &Shared, generation: u64) {
    let mut state = shared.lock();
    while state.generation == generation && !shared.stop.load(Ordering::SeqCst) {
        state = shared
            .changed
            .wait_timeout(state, Duration::from_millis(200))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn respond_head(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    length: Option<u64>,
) -> Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        length.unwrap_or(body.len() as u64)
    )?;
    Ok(())
}

/// The file `path` names below `root`; nothing for a path that would leave it.
fn file_below(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(relative))
        .filter(|file| file.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(server: &HttpServer, path: &str) -> (String, Vec<u8>) {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(answer.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        (head, answer[split..].to_vec())
    }

    fn served_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nixlet-fault-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nar")).unwrap();
        std::fs::write(dir.join("nar/a.nar"), b"0123456789").unwrap();
        dir
    }

    #[test]
    fn serves_normally_until_a_rule_matches_then_counts_down() {
        let dir = served_dir("count");
        let server = HttpServer::start(&dir).unwrap();
        server.fail(Match::Nar, Fault::Status(503), Some(2));
        for _ in 0..2 {
            assert!(get(&server, "/nar/a.nar").0.starts_with("HTTP/1.1 503"));
        }
        let (head, body) = get(&server, "/nar/a.nar");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"0123456789");
        assert_eq!(server.count_matching(&Match::Nar), 3);
        assert_eq!(server.count("/nar/a.nar"), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncates_overlongs_and_redirects() {
        let dir = served_dir("shapes");
        let server = HttpServer::start(&dir).unwrap();
        server.fail(Match::Nar, Fault::Truncate(4), Some(1));
        server.fail(Match::Nar, Fault::Overlong(3), Some(1));
        server.fail(Match::Nar, Fault::RedirectLoop, Some(1));
        let (head, body) = get(&server, "/nar/a.nar");
        assert!(head.contains("Content-Length: 10"), "{head}");
        assert_eq!(body, b"0123");
        let (head, body) = get(&server, "/nar/a.nar");
        assert!(head.contains("Content-Length: 13"), "{head}");
        assert_eq!(body.len(), 13);
        let (head, _) = get(&server, "/nar/a.nar");
        assert!(
            head.starts_with("HTTP/1.1 302") && head.contains("Location: /nar/a.nar"),
            "{head}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_held_answer_goes_on_when_released() {
        let dir = served_dir("hold");
        let server = Arc::new(HttpServer::start(&dir).unwrap());
        server.fail(Match::Nar, Fault::HoldAfter(5), None);
        let client = {
            let server = Arc::clone(&server);
            thread::spawn(move || get(&server, "/nar/a.nar"))
        };
        let held = server
            .wait_held(&Match::Nar, Duration::from_secs(5))
            .unwrap();
        assert_eq!(held.body_bytes, 5);
        server.release();
        let (_, body) = client.join().unwrap();
        assert_eq!(body, b"0123456789");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_token_is_required_when_set_and_recorded() {
        let dir = std::env::temp_dir().join(format!("nixlet-http-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), b"x").unwrap();
        let server = HttpServer::start_with(&dir, Some("s3cret")).unwrap();
        let ask = |auth: &str| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            write!(stream, "GET /a HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer.lines().next().unwrap_or_default().to_owned()
        };
        assert!(ask("").starts_with("HTTP/1.1 401"));
        assert!(ask("Authorization: Bearer s3cret\r\n").starts_with("HTTP/1.1 200"));
        assert_eq!(server.authorizations(), vec!["Bearer s3cret".to_owned()]);
        assert_eq!(server.counts()["/a"], 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

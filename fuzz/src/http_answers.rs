//! What an `http` environment source's server answers: statuses, bodies and broken framing
//! for `current`, `manifest.toml` and `manifest.lock`, served by a real HTTP server on
//! 127.0.0.1 in the order nixlet asks, then the loaded generation resolved.
//!
//! Input: byte 0 picks the reference (latest, generation 2, or a digest pin on the last
//! answer's body), then answers separated by 0xFF (never in UTF-8 text): each is a status
//! byte, a framing byte, and the body.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

use nixlet_manifest::{
    resolve_loaded, EnvRef, EnvironmentSource, HttpSource, HttpSourceOptions, Selector,
};
use sha2::{Digest, Sha256};

const STATUSES: [&str; 10] = [
    "200 OK",
    "404 Not Found",
    "500 Internal Server Error",
    "401 Unauthorized",
    "403 Forbidden",
    "429 Too Many Requests",
    "302 Found",
    "204 No Content",
    "418 I'm a teapot",
    "503 Service Unavailable",
];

/// Where the environment lives below the server; every request must stay inside it.
const ENVIRONMENT_PATH: &str = "/envs/acme/web/";
/// Where a 302 answer points: the same server, so it answers with the next queued answer.
const REDIRECT_PATH: &str = "/redirected";

#[derive(Clone, Copy)]
enum Framing {
    ContentLength,
    /// Content-Length says more than is sent before the connection closes.
    Truncated,
    /// No Content-Length: the body ends when the connection closes.
    UntilClose,
}

struct Answer {
    status: &'static str,
    framing: Framing,
    body: Vec<u8>,
}

#[derive(Default)]
struct Exchange {
    answers: VecDeque<Answer>,
    requested: Vec<String>,
}

struct Server {
    address: SocketAddr,
    exchange: Arc<Mutex<Exchange>>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let address = listener.local_addr().expect("local address");
        let exchange = Arc::new(Mutex::new(Exchange::default()));
        let shared = Arc::clone(&exchange);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // One at a time: the source asks one thing at a time, in order.
                answer(stream, &shared);
            }
        });
        Server { address, exchange }
    })
}

fn lock(exchange: &Mutex<Exchange>) -> MutexGuard<'_, Exchange> {
    exchange
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn answer(mut stream: TcpStream, exchange: &Mutex<Exchange>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
    let next = {
        let mut exchange = lock(exchange);
        exchange.requested.push(path);
        exchange.answers.pop_front()
    };
    let Answer {
        status,
        framing,
        body,
    } = next.unwrap_or(Answer {
        status: "404 Not Found",
        framing: Framing::ContentLength,
        body: Vec::new(),
    });
    let mut response = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if status.starts_with("302") {
        response.push_str(&format!("Location: {REDIRECT_PATH}\r\n"));
    }
    match framing {
        Framing::ContentLength => response.push_str(&format!("Content-Length: {}\r\n", body.len())),
        Framing::Truncated => response.push_str(&format!("Content-Length: {}\r\n", body.len() + 7)),
        Framing::UntilClose => {}
    }
    response.push_str("\r\n");
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.write_all(&body);
}

/// One source per number of attempts, built once: each builds a client with its own thread.
fn source(attempts: u32) -> &'static HttpSource {
    static SOURCES: OnceLock<[HttpSource; 2]> = OnceLock::new();
    let sources = SOURCES.get_or_init(|| {
        let url = format!("http://{}/envs", server().address);
        let options = |attempts| HttpSourceOptions {
            timeout: Duration::from_secs(5),
            attempts,
            retry_delay: Duration::ZERO,
            ..HttpSourceOptions::default()
        };
        [
            HttpSource::new(url.clone(), options(1)),
            HttpSource::new(url, options(2)),
        ]
    });
    &sources[usize::from(attempts > 1)]
}

pub fn http_source(data: &[u8]) {
    let [choice, rest @ ..] = data else {
        return;
    };
    let answers: Vec<Answer> = rest
        .split(|&byte| byte == 0xff)
        .filter_map(|chunk| match chunk {
            [status, framing, body @ ..] => Some(Answer {
                status: STATUSES[usize::from(*status) % STATUSES.len()],
                framing: match framing % 3 {
                    0 => Framing::ContentLength,
                    1 => Framing::Truncated,
                    _ => Framing::UntilClose,
                },
                body: body.to_vec(),
            }),
            _ => None,
        })
        .collect();
    let selector = match choice % 3 {
        0 => Selector::Latest,
        1 => Selector::Generation(2),
        _ => {
            Selector::Digest(Sha256::digest(answers.last().map_or(&[][..], |a| &a.body[..])).into())
        }
    };
    let reference = EnvRef {
        owner: "acme".to_string(),
        name: "web".to_string(),
        selector,
    };
    let server = server();
    // Serialised: the replay test runs inputs from several threads, one server for all.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    {
        let mut exchange = lock(&server.exchange);
        exchange.answers = answers.into();
        exchange.requested.clear();
    }
    let loaded = source(1 + u32::from(choice & 0x80 != 0)).load(&reference);
    let requested = std::mem::take(&mut lock(&server.exchange).requested);
    for path in &requested {
        assert!(
            path.starts_with(ENVIRONMENT_PATH) || path == REDIRECT_PATH,
            "asked the server for {path:?}, outside the environment"
        );
    }
    match loaded {
        Ok(Some(loaded)) => {
            assert_eq!(loaded.reference, reference);
            assert!(loaded.generation >= 1);
            match reference.selector {
                Selector::Generation(generation) => assert_eq!(loaded.generation, generation),
                Selector::Digest(digest) => {
                    let lock = loaded.manifest_lock.as_deref().expect("a pinned lock");
                    assert_eq!(<[u8; 32]>::from(Sha256::digest(lock)), digest);
                }
                Selector::Latest => {}
            }
            if let Err(error) = resolve_loaded(loaded, "x86_64-linux") {
                let _ = error.to_string();
            }
        }
        Ok(None) => {}
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

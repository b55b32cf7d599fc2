//! echoserver: answers `GET /` with `{"hostname": …, "message": …}` on port 8080.
//!
//! It is the program nixlet's examples run from a Nix store path on an empty image, so it has
//! no runtime dependencies: built statically, it is one file in one store path.

use std::env;

use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tiny_http::{Header, Method, Response, Server};

const DEFAULT_PORT: &str = "8080";
const DEFAULT_MESSAGE: &str = "hello from nix";

fn main() {
    let port = env::var("PORT").unwrap_or_else(|_| DEFAULT_PORT.to_string());
    let message = env::var("MESSAGE").unwrap_or_else(|_| DEFAULT_MESSAGE.to_string());
    let address = format!("0.0.0.0:{port}");
    let server = match Server::http(&address) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("echoserver: listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    println!("echoserver listening on {address}");
    exit_on_termination();

    for request in server.incoming_requests() {
        let response = if *request.method() == Method::Get && request.url() == "/" {
            let body = json!({ "hostname": hostname(), "message": message }).to_string();
            Response::from_string(body).with_header(
                "Content-Type: application/json"
                    .parse::<Header>()
                    .expect("static header is valid"),
            )
        } else {
            Response::from_string("not found\n").with_status_code(404)
        };
        if let Err(error) = request.respond(response) {
            eprintln!("echoserver: respond: {error}");
        }
    }
}

/// As a container's first process, echoserver is PID 1 of its namespace, where the kernel
/// ignores signals without a handler: without this, `kubectl delete` would wait out the whole
/// grace period and end in SIGKILL. It keeps no state, so it stops at once.
fn exit_on_termination() {
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("echoserver: cannot handle SIGTERM: {error}");
            std::process::exit(1);
        }
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            println!("echoserver: signal {signal}, stopping");
            std::process::exit(0);
        }
    });
}

/// The kernel's hostname (the pod's, in a UTS namespace); `HOSTNAME` is not always set in a
/// container without a shell.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .or_else(|_| env::var("HOSTNAME"))
        .unwrap_or_default()
}

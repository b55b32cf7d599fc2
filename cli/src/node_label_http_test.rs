//! The HTTP side of the ready label (`node_label::set_ready`, which `nixlet node run` calls with
//! `true` and `nixlet node uninstall` with `false`) against a loopback server that records the
//! requests. There is no kube-apiserver on the test machines: the server stands in for the API
//! server's HTTP contract for `PATCH /api/v1/nodes/{name}` with a JSON merge patch and a bearer
//! token, and answers what the API server answers (200 with the node, 403 when RBAC refuses).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use crate::node_label::{set_ready, InCluster, READY_LABEL};

/// Never used for TLS (the loopback server speaks plain HTTP), but `set_ready` insists on
/// reading and parsing the cluster CA as in a pod. Self-signed, P-256, valid until 2126.
const UNUSED_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUcq4b4Oz9qQyvA6sRtDDZBIrBab8wCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVbml4bGV0LXRlc3QtdW51c2VkLWNhMCAXDTI2MTEyNDE5MzA1
NFoYDzIxMjYxMDMxMTkzMDU0WjAgMR4wHAYDVQQDDBVuaXhsZXQtdGVzdC11bnVz
ZWQtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR2qOZ84kOFpaR0wkV+nSHT
cbcXAz5s25XhIImTQtt9nKAfOdW3ZzAqu5t8ecjmAv5YFjnLcg30Ero7yHc1Yzqr
o1MwUTAdBgNVHQ4EFgQUQqjCmi4CyG3KclTX8VcKaGRmzG0wHwYDVR0jBBgwFoAU
QqjCmi4CyG3KclTX8VcKaGRmzG0wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiEA92HiZGgnxeRoT0rzlrFzE7h716j7xk5oIzZunwJBtU4CIHHOR65t
ZLBAcTVgpjiFeeSOPu1a6A6XJU2UJD7T+tIO
-----END CERTIFICATE-----
";

/// One request as the server saw it.
#[derive(Debug)]
struct Recorded {
    method: String,
    path: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one request with `status` and `body`, hands it to the returned receiver.
fn serve_once(status: &'static str, body: &'static str) -> (String, mpsc::Receiver<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut bytes = vec![0; length];
        reader.read_exact(&mut bytes).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        sender
            .send(Recorded {
                method,
                path,
                headers,
                body: String::from_utf8(bytes).unwrap(),
            })
            .unwrap();
    });
    (base_url, receiver)
}

/// A service account as mounted into the DaemonSet's pod, below `dir`.
fn cluster(dir: &Path, base_url: String) -> InCluster {
    std::fs::write(dir.join("token"), "sa-token\n").unwrap();
    std::fs::write(dir.join("ca.crt"), UNUSED_CA_PEM).unwrap();
    InCluster {
        base_url,
        token_file: dir.join("token"),
        ca_file: dir.join("ca.crt"),
    }
}

fn patch_of(ready: bool) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    let (base_url, requests) = serve_once("200 OK", r#"{"kind":"Node"}"#);
    set_ready(&cluster(dir.path(), base_url), "node-a", ready).unwrap();
    requests.recv().unwrap()
}

#[test]
fn ready_is_a_merge_patch_of_the_label_on_this_node_with_the_service_account_token() {
    let request = patch_of(true);
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, "/api/v1/nodes/node-a");
    // The token file's trailing newline is not part of the token.
    assert_eq!(request.header("authorization"), Some("Bearer sa-token"));
    assert_eq!(
        request.header("content-type"),
        Some("application/merge-patch+json")
    );
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "metadata": { "labels": { READY_LABEL: "true" } } })
    );
}

#[test]
fn not_ready_removes_the_label_with_a_null() {
    let request = patch_of(false);
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, "/api/v1/nodes/node-a");
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "metadata": { "labels": { READY_LABEL: null } } })
    );
}

#[test]
fn a_refusal_is_an_error_naming_the_url_and_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let (base_url, requests) = serve_once(
        "403 Forbidden",
        r#"{"kind":"Status","reason":"Forbidden","code":403}"#,
    );
    let url = format!("{base_url}/api/v1/nodes/node-a");
    let error = set_ready(&cluster(dir.path(), base_url), "node-a", true).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("403"), "{message}");
    assert_eq!(requests.recv().unwrap().method, "PATCH");
}

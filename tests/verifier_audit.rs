//! The audit log, in process: the fields of a line, no token anywhere in it, the query only when
//! asked for, escaping, and a stalled writer that drops and counts lines while requests are answered.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use keyward::token::Token;
use keyward::verifier::audit::{Settings, Target};
use serde_json::Value;

/// Forward-auth on `keys`, with an audit log to `target`.
fn config(keys: &KubeletDir, target: Target, query: bool, buffer: usize) -> keyward::verifier::Config {
    let mut config = forward_auth_config(keys);
    config.audit = Some(Settings { target, query, forwarded_for: false, buffer });
    config
}

async fn wait_ready(running: &keyward::verifier::Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if running.store.is_ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no key set loaded within a minute");
}

/// A forward-auth request for `method uri` with these extra headers; the status.
async fn verify(front: &Front, method: &str, uri: &str, mut headers: Vec<(&str, String)>) -> u16 {
    headers.push(("x-forwarded-method", method.to_owned()));
    headers.push(("x-forwarded-uri", uri.to_owned()));
    front.send("GET", "/verify", headers).await.unwrap().0.status.as_u16()
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}"))).collect()
}

fn by_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines.iter().find(|l| l["request_id"] == id).unwrap_or_else(|| panic!("no line with request id {id}"))
}

/// Asserts that no part of `token` that could identify it is in `text`.
fn assert_no_token(text: &str, token: &Token) {
    let secret = token.expose().rsplit_once('_').unwrap().1;
    assert!(!text.contains(secret), "the token reached the audit log:\n{text}");
    // Nor a long piece of it.
    for piece in secret.as_bytes().windows(16) {
        assert!(
            !text.contains(std::str::from_utf8(piece).unwrap()),
            "part of the token reached the audit log:\n{text}"
        );
    }
    assert!(!text.contains("Bearer"), "an Authorization value reached the audit log:\n{text}");
}

/// `text` with every letter and digit percent-encoded.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { format!("%{b:02X}") } else { char::from(b).to_string() })
        .collect()
}

struct Scene {
    _dir: tempfile::TempDir,
    log: PathBuf,
    keys: KubeletDir,
    token: Token,
}

fn scene() -> Scene {
    let token = token(1);
    let mut keys = KubeletDir::new();
    keys.publish_set("default", 1, &[record(&token, &["leads:read"])]);
    let dir = tempfile::tempdir().unwrap();
    Scene { log: dir.path().join("audit.jsonl"), _dir: dir, keys, token }
}

/// The verifier of `s`, logging to `s.log` (with the query when `query`), once its key set loaded.
async fn started(s: &Scene, query: bool) -> (keyward::verifier::Running, Front) {
    let running = keyward::verifier::start(config(&s.keys, Target::File(s.log.clone()), query, 1024)).await.unwrap();
    wait_ready(&running).await;
    let front = Front::new(running.addr);
    (running, front)
}

#[tokio::test]
async fn lines_name_the_key_and_request_and_never_hold_the_token_or_the_query() {
    let s = scene();
    let (running, front) = started(&s, false).await;
    let bearer = bearer(&s.token);
    let secret = s.token.expose();
    let auth = |id: &str| vec![("authorization", bearer.clone()), ("x-request-id", id.to_owned())];

    assert_eq!(verify(&front, "GET", &format!("/leads/1?email=a@example.com&t={secret}"), auth("ok-1")).await, 200);
    // The token in the path, plain and percent-encoded, and as the method.
    verify(&front, "GET", &format!("/leads/{secret}/x"), auth("in-path")).await;
    verify(&front, "GET", &format!("/leads/{}", percent_encoded(secret)), auth("encoded")).await;
    verify(&front, secret, "/leads/1", auth("as-method")).await;
    // The token as the request id: taken (it is well formed) but redacted.
    verify(&front, "GET", "/leads/1", vec![("authorization", bearer.clone()), ("x-request-id", secret.to_owned())])
        .await;
    // No token; a malformed request id and a path full of characters JSON must escape.
    let odd = "/leads/\"q\"\\b\tc{}</script>";
    assert_eq!(verify(&front, "GET", odd, vec![("x-request-id", "bad\"id".into())]).await, 401);
    // Not a forward-auth path at all.
    assert_eq!(front.send("GET", "/elsewhere?x=1", auth("not-found")).await.unwrap().0.status, 404);
    let written = running.metrics.audit.written.clone();
    running.shutdown().await;

    let text = std::fs::read_to_string(&s.log).unwrap();
    assert_no_token(&text, &s.token);
    assert!(!text.contains("email") && !text.contains("x=1"), "a query reached the log:\n{text}");
    let lines = lines(&s.log);
    assert_eq!(lines.len(), 7, "{text}");

    let ok = by_id(&lines, "ok-1");
    let key_id = s.token.hash().key_id().to_string();
    assert_eq!(ok["key_id"], key_id.as_str());
    assert_eq!((ok["namespace"].as_str(), ok["name"].as_str()), (Some("team-a"), Some("crm")));
    assert_eq!((ok["method"].as_str(), ok["path"].as_str()), (Some("GET"), Some("/leads/1")));
    assert_eq!((ok["status"].as_u64(), ok["reason"].as_str()), (Some(200), Some("allowed")));
    assert!(ok.get("query").is_none(), "{ok}");
    assert!(ok["latency_us"].is_u64(), "{ok}");
    assert!(ok["time"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{ok}");
    let client: std::net::SocketAddr = ok["client"].as_str().unwrap().parse().unwrap();
    assert!(client.ip().is_loopback());
    assert_eq!(by_id(&lines, "in-path")["path"], "/leads/kw_[redacted]/x");
    assert_eq!(by_id(&lines, "encoded")["path"], "/leads/%6B%77_[redacted]");
    assert_eq!(by_id(&lines, "as-method")["method"], "kw_[redacted]");
    assert!(lines.iter().any(|l| l["request_id"] == "kw_[redacted]"));
    let not_found = by_id(&lines, "not-found");
    assert_eq!((not_found["status"].as_u64(), not_found["reason"].as_str()), (Some(404), Some("not_found")));
    assert_eq!(not_found["path"], "/elsewhere");

    // Escaped, not echoed: the odd path reads back exactly; the bad id was replaced by a generated one.
    let odd_line = lines.iter().find(|l| l["reason"] == "missing").unwrap();
    assert_eq!(odd_line["path"], odd);
    assert!(odd_line["key_id"].is_null() && odd_line["namespace"].is_null(), "{odd_line}");
    let generated = odd_line["request_id"].as_str().unwrap();
    assert!(generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");
    assert!(!text.contains("bad\\\"id"), "a malformed request id was logged:\n{text}");
    assert!(!text.contains('\t'), "{text}");
    assert_eq!(written.get(), 7);
}

#[tokio::test]
async fn with_the_query_enabled_it_is_logged_and_a_token_in_it_still_is_not() {
    let s = scene();
    let (running, front) = started(&s, true).await;
    let auth = vec![("authorization", bearer(&s.token)), ("x-request-id", "q-1".to_owned())];
    let uri = format!("/leads/1?email=a@example.com&t={}", s.token.expose());
    assert_eq!(verify(&front, "GET", &uri, auth).await, 200);
    let written = running.metrics.audit.written.clone();
    running.shutdown().await;

    let text = std::fs::read_to_string(&s.log).unwrap();
    assert_no_token(&text, &s.token);
    let lines = lines(&s.log);
    let line = by_id(&lines, "q-1");
    assert_eq!(line["path"], "/leads/1");
    assert_eq!(line["query"], "email=a@example.com&t=kw_[redacted]");
    assert_eq!(written.get(), 1);
}

#[tokio::test]
async fn proxy_mode_logs_the_upstream_status_and_forwarded_for_only_when_asked() {
    let s = scene();
    let app = upstream(Duration::ZERO).await;
    for forwarded_for in [false, true] {
        let log = s.log.with_extension(forwarded_for.to_string());
        let mut config = config(&s.keys, Target::File(log.clone()), false, 1024);
        config.upstream = Some(format!("http://{}", app.addr));
        config.audit.as_mut().unwrap().forwarded_for = forwarded_for;
        let running = keyward::verifier::start(config).await.unwrap();
        wait_ready(&running).await;
        let front = Front::new(running.addr);
        let headers = vec![
            ("authorization", bearer(&s.token)),
            ("x-request-id", "p-1".to_owned()),
            ("x-forwarded-for", "203.0.113.7".to_owned()),
        ];
        let (parts, _) = front.send("GET", "/leads/1?secret=yes", headers).await.unwrap();
        assert_eq!(parts.status, 200);
        running.shutdown().await;

        let text = std::fs::read_to_string(&log).unwrap();
        assert_no_token(&text, &s.token);
        let lines = lines(&log);
        let line = by_id(&lines, "p-1");
        assert_eq!((line["path"].as_str(), line["status"].as_u64()), (Some("/leads/1"), Some(200)));
        assert_eq!(line["name"], "crm");
        assert!(!text.contains("secret=yes"));
        if forwarded_for {
            assert_eq!(line["forwarded_for"], "203.0.113.7");
        } else {
            assert!(line.get("forwarded_for").is_none() && !text.contains("203.0.113.7"), "{text}");
        }
    }
}

/// A FIFO that this test holds open for reading but does not read until told: a stalled disk.
struct StalledReader {
    go: std::sync::mpsc::Sender<()>,
    read: std::sync::mpsc::Receiver<Vec<u8>>,
}

fn stalled_fifo(path: &Path) -> StalledReader {
    let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    let (go, wait) = std::sync::mpsc::channel();
    let (done, read) = std::sync::mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        // Opening for reading waits for the verifier to open for writing, and the other way round.
        let mut fifo = std::fs::File::open(&path).unwrap();
        let _ = wait.recv();
        let mut bytes = Vec::new();
        let _ = fifo.read_to_end(&mut bytes);
        let _ = done.send(bytes);
    });
    StalledReader { go, read }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_drops_and_counts_lines_while_every_request_is_answered() {
    let s = scene();
    let fifo = s.log.with_extension("fifo");
    let reader = stalled_fifo(&fifo);
    let running = keyward::verifier::start(config(&s.keys, Target::File(fifo), false, 8)).await.unwrap();
    wait_ready(&running).await;
    let front = Front::new(running.addr);
    // Long paths (about 3 KiB each): the pipe (64 KiB) and the writer's batch fill after a few dozen lines.
    let long = format!("/leads/{}", "a-".repeat(1500));
    let requests = 400;
    for i in 0..requests {
        let headers = vec![("authorization", bearer(&s.token)), ("x-request-id", format!("s-{i}"))];
        assert_eq!(verify(&front, "GET", &long, headers).await, 200, "request {i}");
    }
    let (written, dropped) = (running.metrics.audit.written.get(), running.metrics.audit.dropped.get());
    assert!(dropped > 0, "no line dropped behind a stalled reader ({written} written)");
    assert!(written + dropped <= requests, "{written} written + {dropped} dropped > {requests}");
    let metrics = running.metrics.encode();
    assert!(metrics.contains(&format!("keyward_verifier_audit_lines_dropped_total {dropped}")), "{metrics}");

    // Unstalled, the writer finishes; what it wrote is whole lines of JSON.
    reader.go.send(()).unwrap();
    running.shutdown().await;
    let bytes = reader.read.recv_timeout(Duration::from_secs(30)).expect("the writer closed the FIFO");
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["status"], 200);
    }
    assert_no_token(&text, &s.token);
}

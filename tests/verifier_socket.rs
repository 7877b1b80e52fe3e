//! The verifier over real loopback sockets, in both modes, with real key-set directories.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyward::verifier::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(dir: &KubeletDir, upstream: Option<String>) -> Config {
    Config {
        keyset_dirs: vec![dir.path.clone()],
        watch_keyset: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        upstream,
        routes: None,
        poll_interval: Duration::from_millis(200),
        header_read_timeout: Duration::from_secs(10),
        upstream_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(5),
        workers: 2,
        hardening: keyward::verifier::Hardening::default(),
        usage: None,
        audit: None,
    }
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

async fn call(client: &TestClient, request: Request<Full<Bytes>>) -> Reply {
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

async fn get(client: &TestClient, url: String) -> Reply {
    call(client, Request::get(url).body(Full::default()).unwrap()).await
}

async fn wait_ready(client: &TestClient, running: &Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if get(client, format!("http://{}/readyz", running.admin_addr)).await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("verifier not ready within a minute");
}

fn verify_request(addr: SocketAddr, method: &str, uri: &str, auth: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::get(format!("http://{addr}/verify"))
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri);
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    builder.body(Full::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_over_a_real_socket_and_the_admin_listener_reports_readiness() {
    let (reader, stranger) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    std::fs::create_dir_all(&dir.path).unwrap();
    let running = keyward::verifier::start(config(&dir, None)).await.unwrap();
    let c = client();
    let admin = running.admin_addr;
    assert_eq!(get(&c, format!("http://{admin}/healthz")).await.status, StatusCode::OK);
    assert_eq!(get(&c, format!("http://{admin}/readyz")).await.status, StatusCode::SERVICE_UNAVAILABLE);
    let early = call(&c, verify_request(running.addr, "GET", "/leads", Some(&bearer(&reader)))).await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE, "no key set yet: refuse, never allow");

    dir.publish_set("default", 3, &[record(&reader, &["leads:read"])]);
    wait_ready(&c, &running).await;
    let cases = [
        ("GET", Some(bearer(&reader)), StatusCode::OK),
        ("POST", Some(bearer(&reader)), StatusCode::FORBIDDEN),
        ("GET", Some(bearer(&stranger)), StatusCode::UNAUTHORIZED),
        ("GET", None, StatusCode::UNAUTHORIZED),
    ];
    for (method, auth, status) in cases {
        let reply = call(&c, verify_request(running.addr, method, "/leads/1", auth.as_deref())).await;
        assert_eq!(reply.status, status, "{method} {auth:?}");
    }
    let ok = call(&c, verify_request(running.addr, "GET", "/leads/1", Some(&bearer(&reader)))).await;
    assert_eq!(ok.headers["x-keyward-key-id"], reader.hash().key_id().as_str());

    let metrics = String::from_utf8(get(&c, format!("http://{admin}/metrics")).await.body.to_vec()).unwrap();
    for line in [
        r#"keyward_verifier_decisions_total{outcome="allowed"} 2"#,
        r#"keyward_verifier_decisions_total{outcome="not_ready"} 1"#,
        r#"keyward_verifier_keyset_generation{keyset="team-a/default"} 3"#,
        "keyward_verifier_keys_loaded 1",
        "keyward_verifier_seconds_since_last_reload ",
        "keyward_verifier_reload_failures_total ",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    running.shutdown().await;
}

fn seen(reply: &Reply) -> Seen {
    serde_json::from_str(reply.headers["x-seen"].to_str().unwrap()).unwrap()
}

fn header<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_allowed_requests_without_the_token_and_with_the_key_headers() {
    let writer = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&writer, &["leads:read", "leads:write"])]);
    let app = upstream(Duration::ZERO).await;
    let running = keyward::verifier::start(config(&dir, Some(format!("http://{}", app.addr)))).await.unwrap();
    let c = client();
    wait_ready(&c, &running).await;

    let request = Request::post(format!("http://{}/leads/7?x=1&y=2", running.addr))
        .header("authorization", bearer(&writer))
        .header("host", "crm.example")
        .header("x-keyward-key-id", "spoofed")
        .header("x-keyward-scopes", "*:admin")
        .header("connection", "x-private")
        .header("x-private", "hop")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let reply = call(&c, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.headers["x-app"], "yes", "the app's answer comes back");
    assert_eq!(reply.body, "hello");
    let s = seen(&reply);
    assert_eq!((s.method.as_str(), s.uri.as_str()), ("POST", "/leads/7?x=1&y=2"));
    assert!(header(&s, "authorization").is_empty(), "the token must not reach the app: {s:?}");
    assert_eq!(header(&s, "x-keyward-key-id"), [writer.hash().key_id().as_str()], "{s:?}");
    assert_eq!(header(&s, "x-keyward-scopes"), ["leads:read,leads:write"], "{s:?}");
    assert_eq!(header(&s, "host"), ["crm.example"]);
    assert_eq!(header(&s, "x-custom"), ["kept"]);
    assert!(header(&s, "x-private").is_empty(), "headers named in Connection are hop-by-hop: {s:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_requests_never_reach_the_upstream() {
    let reader = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&reader, &["leads:read"])]);
    let app = upstream(Duration::ZERO).await;
    let running = keyward::verifier::start(config(&dir, Some(format!("http://{}", app.addr)))).await.unwrap();
    let c = client();
    wait_ready(&c, &running).await;
    let cases = [
        (
            Request::delete(format!("http://{}/leads/1", running.addr)).header("authorization", bearer(&reader)),
            StatusCode::FORBIDDEN,
        ),
        (Request::get(format!("http://{}/leads/1", running.addr)), StatusCode::UNAUTHORIZED),
        (
            Request::get(format!("http://{}/leads/1", running.addr)).header("authorization", bearer(&token(9))),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (builder, status) in cases {
        let reply = call(&c, builder.body(Full::default()).unwrap()).await;
        assert_eq!(reply.status, status);
        assert!(reply.headers.contains_key("www-authenticate"));
    }
    assert_eq!(app.requests.load(Ordering::SeqCst), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_streams_large_bodies_and_keeps_connections_alive_both_ways() {
    let writer = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&writer, &["files:write"])]);
    let app = upstream(Duration::ZERO).await;
    let running = keyward::verifier::start(config(&dir, Some(format!("http://{}", app.addr)))).await.unwrap();
    wait_ready(&client(), &running).await;

    // One client connection for every request: the proxy must keep it open.
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let big: Bytes = (0..4 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>().into();
    let rounds = 5;
    for _ in 0..rounds {
        sender.ready().await.unwrap();
        let request = Request::put("/files/blob")
            .header("host", "app")
            .header("authorization", bearer(&writer))
            .body(Full::new(big.clone()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body == big, "body changed on the way ({} bytes back)", body.len());
    }
    let upstream_connections = app.connections.load(Ordering::SeqCst);
    assert!(
        upstream_connections < rounds,
        "upstream connections are reused: {upstream_connections} for {rounds} requests"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_gives_502_and_one_that_hangs_gives_504() {
    let writer = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&writer, &["leads:read"])]);
    let c = client();

    let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let down = keyward::verifier::start(config(&dir, Some(format!("http://{free}")))).await.unwrap();
    wait_ready(&c, &down).await;
    let request = Request::get(format!("http://{}/leads", down.addr)).header("authorization", bearer(&writer));
    let reply = call(&c, request.body(Full::default()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["reason"], "bad_gateway");
    down.shutdown().await;

    // Accepts connections, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut cfg = config(&dir, Some(format!("http://{silent_addr}")));
    cfg.upstream_timeout = Duration::from_millis(300);
    let hung = keyward::verifier::start(cfg).await.unwrap();
    wait_ready(&c, &hung).await;
    let request = Request::get(format!("http://{}/leads", hung.addr)).header("authorization", bearer(&writer));
    let reply = call(&c, request.body(Full::default()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["reason"], "gateway_timeout");
    hung.shutdown().await;
    holder.abort();
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_oversized_requests_get_defined_answers() {
    let reader = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&reader, &["leads:read"])]);
    let mut cfg = config(&dir, None);
    cfg.header_read_timeout = Duration::from_millis(300);
    let running = keyward::verifier::start(cfg).await.unwrap();
    wait_ready(&client(), &running).await;

    // A head that never ends: the connection is closed, not held forever.
    let mut slow = TcpStream::connect(running.addr).await.unwrap();
    slow.write_all(b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: GET\r\n").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), read_all(&mut slow)).await;
    assert!(closed.is_ok(), "slow client still connected after 10 s");

    // Headers beyond the head limit.
    let mut big = TcpStream::connect(running.addr).await.unwrap();
    let filler = "a".repeat(20 * 1024);
    big.write_all(format!("GET /verify HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n").as_bytes()).await.unwrap();
    let answer = read_all(&mut big).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "oversized head: {answer:?}");

    // An original URI longer than the verifier decides on, within the head limit.
    let long_uri = format!("/leads/{}", "a".repeat(9 * 1024));
    let reply = call(&client(), verify_request(running.addr, "GET", &long_uri, Some(&bearer(&reader)))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["reason"], "invalid_request");

    // A forward-auth request with a body: decided on the headers alone.
    let request = Request::post(format!("http://{}/verify", running.addr))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/leads")
        .header("authorization", bearer(&reader))
        .body(Full::new(Bytes::from(vec![b'x'; 100_000])))
        .unwrap();
    assert_eq!(call(&client(), request).await.status, StatusCode::OK);

    // Non-ASCII bytes in the Authorization header.
    let mut odd = TcpStream::connect(running.addr).await.unwrap();
    odd.write_all(b"GET /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /leads\r\nAuthorization: Bearer \xc3\xa9\xff\r\n\r\n").await.unwrap();
    let answer = read_all(&mut odd).await;
    assert!(answer.starts_with("HTTP/1.1 401") && answer.contains("malformed"), "non-ASCII header: {answer:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_data_under_load_loses_no_request_and_a_removed_key_stops_working() {
    let (steady, doomed) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    let set = |generation: u64, with_doomed: bool| {
        let mut records = vec![record(&steady, &["leads:read"])];
        // Churn: other keys come and go with every generation.
        records.extend((0..50).map(|i| record(&token(1000 + generation * 100 + i), &["other:read"])));
        if with_doomed {
            records.push(record(&doomed, &["leads:read"]));
        }
        records
    };
    dir.publish_set("default", 1, &set(1, true));
    let running = keyward::verifier::start(config(&dir, None)).await.unwrap();
    let c = client();
    wait_ready(&c, &running).await;

    let addr = running.addr;
    let auth = bearer(&steady);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (c, auth) = (c.clone(), auth.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..300 {
                    let reply = call(&c, verify_request(addr, "GET", "/leads", Some(&auth))).await;
                    if reply.status != StatusCode::OK {
                        failures.push(reply.status);
                    }
                }
                failures
            })
        })
        .collect();
    for generation in 2..=40 {
        dir.publish_set("default", generation, &set(generation, true));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for worker in workers {
        let failures = worker.await.unwrap();
        assert!(failures.is_empty(), "requests failed during reloads: {failures:?}");
    }

    dir.publish_set("default", 41, &set(41, false));
    let mut revoked = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let reply = call(&c, verify_request(addr, "GET", "/leads", Some(&bearer(&doomed)))).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_eq!(reply.json()["reason"], "unknown");
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(revoked, "the removed key still worked after a minute");
    assert_eq!(call(&c, verify_request(addr, "GET", "/leads", Some(&auth))).await.status, StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let writer = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&writer, &["leads:read"])]);
    let app = upstream(Duration::from_millis(300)).await;
    let running = keyward::verifier::start(config(&dir, Some(format!("http://{}", app.addr)))).await.unwrap();
    let c = client();
    wait_ready(&c, &running).await;
    let request = Request::get(format!("http://{}/leads", running.addr)).header("authorization", bearer(&writer));
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { call(&c, request.body(Full::default()).unwrap()).await.status }
    });
    while app.requests.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = running.addr;
    running.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_from_the_client_is_a_client_error_not_an_upstream_failure() {
    let writer = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&writer, &["leads:write"])]);
    let app = upstream(Duration::ZERO).await;
    let running = keyward::verifier::start(config(&dir, Some(format!("http://{}", app.addr)))).await.unwrap();
    let c = client();
    wait_ready(&c, &running).await;

    let mut raw = TcpStream::connect(running.addr).await.unwrap();
    let head = format!(
        "POST /leads HTTP/1.1\r\nHost: app\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n",
        bearer(&writer)
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    let answer = read_all(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "a broken chunk is the client's fault: {answer:?}");
    assert!(answer.contains("bad_request") && !answer.contains(writer.expose()), "{answer:?}");

    let metrics =
        String::from_utf8(get(&c, format!("http://{}/metrics", running.admin_addr)).await.body.to_vec()).unwrap();
    assert!(metrics.contains(r#"keyward_verifier_client_errors_total{kind="body"} 1"#), "{metrics}");
    assert!(!metrics.contains("keyward_verifier_upstream_errors_total{"), "no upstream fault: {metrics}");
    running.shutdown().await;
}

/// Whether `/readyz` answers `status` within a minute.
async fn readyz_turns(c: &TestClient, admin: SocketAddr, status: StatusCode) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if get(c, format!("http://{admin}/readyz")).await.status == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_connections_make_room_for_new_clients_and_readiness_says_so() {
    let reader = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&reader, &["leads:read"])]);
    let mut cfg = config(&dir, None);
    cfg.hardening.max_connections = Some(4);
    let running = keyward::verifier::start(cfg).await.unwrap();
    let c = client();
    wait_ready(&c, &running).await;
    let admin = running.admin_addr;

    // One client holds every connection the cap allows and sends nothing.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(running.addr).await.unwrap());
    }
    let saturated = readyz_turns(&c, admin, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(saturated, "/readyz stayed 200 at the connection cap");

    // Another client is served at once, not after the 10 s header window.
    let request = format!(
        "GET /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /leads\r\nAuthorization: {}\r\n\r\n",
        bearer(&reader)
    );
    let mut fresh = TcpStream::connect(running.addr).await.unwrap();
    fresh.write_all(request.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), read_all(&mut fresh)).await.expect("served in time");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // ... in the place of the oldest idle connection, which is closed.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(3), idle[0].read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "the oldest idle connection is still open: {closed:?}");

    let metrics =
        String::from_utf8(get(&c, format!("http://{}/metrics", running.admin_addr)).await.body.to_vec()).unwrap();
    for line in ["keyward_verifier_connections_max 4", "keyward_verifier_connections_evicted_total 1"] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    drop(idle);
    let ready = readyz_turns(&c, admin, StatusCode::OK).await;
    assert!(ready, "/readyz did not recover once the connections closed");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_http_1_0_upstream_http_1_1_clients_keep_http_1_1_and_their_connection() {
    let reader = token(1);
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&reader, &["leads:read"])]);
    // An HTTP/1.0 app: one answer per connection, then it closes.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        while let Ok((mut stream, _)) = app.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            });
        }
    });
    let running = keyward::verifier::start(config(&dir, Some(format!("http://{app_addr}")))).await.unwrap();
    wait_ready(&client(), &running).await;

    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let request = format!("GET /leads HTTP/1.1\r\nHost: app\r\nAuthorization: {}\r\n\r\n", bearer(&reader));
    for round in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\nok") {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Ok(1))),
                "round {round}: connection ended after {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text}");
        assert!(!text.to_ascii_lowercase().contains("connection: close"), "round {round}: {text}");
    }
    running.shutdown().await;
    serving.abort();
}

//! keyward's forward-auth behind a real Caddy (`forward_auth`), in front of a small upstream.
//!
//! The Caddyfile here is the one `docs/verifier.md` documents. Caddy's `forward_auth` sends the
//! original method and URI as `X-Forwarded-Method` and `X-Forwarded-Uri` (set by Caddy, so a
//! client cannot supply them) and passes every other request header on, `Authorization` included.
//! The test needs the `caddy` binary (Debian package `caddy`); without it the test reports a
//! skip, except under CI (`CI` set), where a missing Caddy is a failure, as for nginx.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::StatusCode;
use keyward_contract::token::Token;

/// The Caddyfile documented in docs/verifier.md, with test addresses.
fn caddyfile(listen: SocketAddr, verifier: SocketAddr, app: SocketAddr) -> String {
    let port = listen.port();
    format!(
        r"{{
  admin off
  auto_https off
}}

http://:{port} {{
  bind 127.0.0.1
  # In this order: `route` keeps Caddy from sorting the directives itself.
  route {{
    # The app trusts these two headers: a client's own values never reach it.
    request_header -X-Keyward-Key-Id
    request_header -X-Keyward-Scopes
    # Any non-2xx answer of the verifier (401, 403, 429, 400, 503) goes back to the client as is.
    forward_auth {verifier} {{
      uri /verify
      copy_headers X-Keyward-Key-Id X-Keyward-Scopes
    }}
    reverse_proxy {app} {{
      header_up -Authorization
    }}
  }}
}}
"
    )
}

/// The caddy binary: on PATH, or where Debian puts it.
fn caddy_binary() -> Option<&'static str> {
    ["caddy", "/usr/bin/caddy"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()))
}

fn start_caddy(caddy: &str, dir: &Path, config: &Path) -> KillOnDrop {
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    KillOnDrop(
        Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(config)
            // Caddy keeps its state (autosaved config, certificates) under these; keep it in the test's directory.
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The requests after the first allowed one, and Caddy's answers: every decision of the verifier.
fn decisions<'a>(reader: &Token, limited: &Token, stranger: &Token) -> Vec<Case<'a>> {
    vec![
        ("GET", "/leads", vec![], StatusCode::UNAUTHORIZED),
        ("GET", "/leads", vec![("authorization", bearer(stranger))], StatusCode::UNAUTHORIZED),
        ("GET", "/leads", vec![("authorization", "Bearer kw_nonsense".into())], StatusCode::UNAUTHORIZED),
        ("POST", "/leads", vec![("authorization", bearer(reader))], StatusCode::FORBIDDEN),
        ("DELETE", "/leads/1", vec![("authorization", bearer(reader))], StatusCode::FORBIDDEN),
        ("GET", "/contacts", vec![("authorization", bearer(reader))], StatusCode::FORBIDDEN),
        ("GET", "/leads/%2e%2e/contacts", vec![("authorization", bearer(reader))], StatusCode::BAD_REQUEST),
        // Caddy sets X-Forwarded-Method and X-Forwarded-Uri itself: a client's values are replaced.
        (
            "GET",
            "/contacts",
            vec![("authorization", bearer(reader)), ("x-forwarded-uri", "/leads".into())],
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/leads",
            vec![("authorization", bearer(reader)), ("x-forwarded-method", "GET".into())],
            StatusCode::FORBIDDEN,
        ),
        // nginx's headers pass through Caddy as the client sent them: a disagreement is refused.
        (
            "GET",
            "/contacts",
            vec![("authorization", bearer(reader)), ("x-original-uri", "/leads".into())],
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/leads", vec![("authorization", bearer(limited))], StatusCode::OK),
        ("GET", "/leads", vec![("authorization", bearer(limited))], StatusCode::TOO_MANY_REQUESTS),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_in_front_of_an_app_enforces_every_decision() {
    let Some(caddy) = caddy_binary() else {
        assert!(std::env::var_os("CI").is_none(), "caddy is required under CI (apt-get install caddy)");
        eprintln!("SKIPPED: caddy not installed");
        return;
    };
    let (reader, limited, stranger) = (token(1), token(2), token(3));
    let mut keys = KubeletDir::new();
    let records = [record(&reader, &["leads:read"]), with_limit(record(&limited, &["leads:read"]), "1/1h/1")];
    keys.publish_set("default", 1, &records);
    let app = upstream(Duration::ZERO).await;
    let verifier = keyward::verifier::start(forward_auth_config(&keys)).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = work.path().join("Caddyfile");
    std::fs::write(&config, caddyfile(listen, verifier.addr, app.addr)).unwrap();
    let _caddy = start_caddy(caddy, work.path(), &config);

    let front = Front::new(listen);
    // Wait (bounded) until both Caddy and the verifier answer.
    let up = front.wait_for_ok("/leads", &[("authorization", bearer(&reader))]).await;
    let caddy_log = || std::fs::read_to_string(work.path().join("caddy.log")).unwrap_or_default();
    assert!(up, "caddy + verifier not answering within 10 s; caddy log:\n{}", caddy_log());

    // Allowed: the app sees the URI as sent, the key's id and scopes (not the client's), and no token.
    let (parts, _) = front
        .send(
            "GET",
            "/leads/1?page=2",
            vec![
                ("authorization", bearer(&reader)),
                ("x-keyward-key-id", "spoofed".into()),
                ("x-keyward-scopes", "*:admin".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(parts.status, StatusCode::OK, "caddy log:\n{}", caddy_log());
    let seen: Seen = serde_json::from_str(parts.headers["x-seen"].to_str().unwrap()).unwrap();
    let header =
        |name: &str| seen.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/leads/1?page=2");
    assert_eq!(header("x-keyward-key-id"), [reader.hash().key_id().to_string()], "{seen:?}");
    assert_eq!(header("x-keyward-scopes"), ["leads:read"], "{seen:?}");
    assert!(header("authorization").is_empty(), "the token reached the app: {seen:?}");
    let token_text = bearer(&reader);
    let token_text = token_text.trim_start_matches("Bearer ");
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains(token_text)),
        "the token reached the app in some header: {seen:?}"
    );

    let cases = decisions(&reader, &limited, &stranger);
    let before = app.requests.load(std::sync::atomic::Ordering::SeqCst);
    for (method, path, headers, status) in cases {
        let (parts, body) = front.send(method, path, headers.clone()).await.unwrap();
        assert_eq!(parts.status, status, "{method} {path} {headers:?}; caddy log:\n{}", caddy_log());
        let body = String::from_utf8_lossy(&body);
        // Caddy hands the verifier's whole answer back: status, challenge, Retry-After and JSON body.
        match status {
            StatusCode::UNAUTHORIZED => {
                assert_eq!(parts.headers["www-authenticate"], r#"Bearer realm="keyward", error="invalid_token""#);
                assert!(body.contains(r#""error":"invalid_token""#), "{body}");
            }
            StatusCode::FORBIDDEN => {
                let challenge = parts.headers["www-authenticate"].to_str().unwrap();
                assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
                assert!(body.contains(r#""error":"insufficient_scope""#), "{body}");
            }
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(parts.headers["retry-after"], "3600"),
            StatusCode::BAD_REQUEST => assert!(body.contains("invalid_request"), "{body}"),
            _ => {}
        }
    }
    let reached = app.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(reached, 1, "only the one allowed request reaches the app");

    // Revoked: the operator removes the key's hash from the key set; the next set in force refuses it.
    keys.publish_set("default", 2, &records[1..]);
    let mut status = StatusCode::OK;
    for _ in 0..500 {
        let (parts, _) = front.send("GET", "/leads", vec![("authorization", bearer(&reader))]).await.unwrap();
        status = parts.status;
        if status != StatusCode::OK {
            assert_eq!(parts.headers["www-authenticate"], r#"Bearer realm="keyward", error="invalid_token""#);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a key removed from the key set is refused within 10 s");
    let reached = app.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    let (parts, _) = front.send("GET", "/leads", vec![("authorization", bearer(&reader))]).await.unwrap();
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.requests.load(std::sync::atomic::Ordering::SeqCst) - before,
        reached,
        "a revoked key's request never reaches the app"
    );
    verifier.shutdown().await;
}

//! One end-to-end table for a real forward-auth proxy (Caddy `forward_auth`, Traefik
//! ForwardAuth) in front of the verifier and the test upstream: the proxy under test
//! differs only in how it is configured and started.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use keyward_contract::token::Token;

use super::*;

/// Where a proxy under test listens and whom it asks and forwards to.
pub struct Wiring<'a> {
    /// The test's own directory (configuration files, logs, the proxy's state).
    pub dir: &'a Path,
    pub listen: SocketAddr,
    pub verifier: SocketAddr,
    pub app: SocketAddr,
}

/// The requests after the first allowed one, and the proxy's answers: every decision of the verifier.
fn decisions<'a>(reader: &Token, limited: &Token, stranger: &Token, dot_segments: StatusCode) -> Vec<Case<'a>> {
    vec![
        ("GET", "/leads", vec![], StatusCode::UNAUTHORIZED),
        ("GET", "/leads", vec![("authorization", bearer(stranger))], StatusCode::UNAUTHORIZED),
        ("GET", "/leads", vec![("authorization", "Bearer kw_nonsense".into())], StatusCode::UNAUTHORIZED),
        ("POST", "/leads", vec![("authorization", bearer(reader))], StatusCode::FORBIDDEN),
        ("DELETE", "/leads/1", vec![("authorization", bearer(reader))], StatusCode::FORBIDDEN),
        ("GET", "/contacts", vec![("authorization", bearer(reader))], StatusCode::FORBIDDEN),
        ("GET", "/leads/%2e%2e/contacts", vec![("authorization", bearer(reader))], dot_segments),
        // The proxy sets X-Forwarded-Method and X-Forwarded-Uri itself: a client's values are replaced.
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
        // nginx's headers pass through the proxy as the client sent them: a disagreement is refused.
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

/// Starts the verifier, the upstream and the proxy (`start`, which writes its configuration
/// into `Wiring::dir` and logs to `log` there), then checks every decision through the proxy:
/// allowed (the app sees the URI as sent, the key's id and scopes and never the token),
/// missing, unknown and malformed tokens, wrong scope, a client's forged forwarding headers,
/// rate limiting, and a revoked key refused within 10 s without reaching the app.
///
/// `dot_segments` is the answer to `/leads/%2e%2e/contacts` with a `leads:read` key: 400 from
/// the verifier when the proxy passes the path on as sent (Caddy), 403 when the proxy resolves
/// the dot segments itself (Traefik) and so asks about, and would forward, `/contacts`.
pub async fn proxy_enforces_every_decision(
    proxy: &str,
    log: &str,
    dot_segments: StatusCode,
    start: impl FnOnce(&Wiring) -> KillOnDrop,
) {
    let (reader, limited, stranger) = (token(1), token(2), token(3));
    let mut keys = KubeletDir::new();
    let records = [record(&reader, &["leads:read"]), with_limit(record(&limited, &["leads:read"]), "1/1h/1")];
    keys.publish_set("default", 1, &records);
    let app = upstream(Duration::ZERO).await;
    let verifier = keyward::verifier::start(forward_auth_config(&keys)).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _proxy = start(&Wiring { dir: work.path(), listen, verifier: verifier.addr, app: app.addr });

    let front = Front::new(listen);
    // Wait (bounded) until both the proxy and the verifier answer.
    let up = front.wait_for_ok("/leads", &[("authorization", bearer(&reader))]).await;
    let proxy_log = || std::fs::read_to_string(work.path().join(log)).unwrap_or_default();
    assert!(up, "{proxy} + verifier not answering within 10 s; {proxy} log:\n{}", proxy_log());

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
    assert_eq!(parts.status, StatusCode::OK, "{proxy} log:\n{}", proxy_log());
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

    let cases = decisions(&reader, &limited, &stranger, dot_segments);
    let before = app.requests.load(Ordering::SeqCst);
    for (method, path, headers, status) in cases {
        let (parts, body) = front.send(method, path, headers.clone()).await.unwrap();
        assert_eq!(parts.status, status, "{method} {path} {headers:?}; {proxy} log:\n{}", proxy_log());
        let body = String::from_utf8_lossy(&body);
        // The proxy hands the verifier's whole answer back: status, challenge, Retry-After and JSON body.
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
    let reached = app.requests.load(Ordering::SeqCst) - before;
    assert_eq!(reached, 1, "only the one allowed request reaches the app");

    // Revoked: the operator removes the key's hash from the key set; the next set in force refuses it.
    keys.publish_set("default", 2, &records[1..]);
    let mut status = StatusCode::OK;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let (parts, _) = front.send("GET", "/leads", vec![("authorization", bearer(&reader))]).await.unwrap();
        status = parts.status;
        if status != StatusCode::OK {
            assert_eq!(parts.headers["www-authenticate"], r#"Bearer realm="keyward", error="invalid_token""#);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a key removed from the key set is refused within a minute");
    let reached = app.requests.load(Ordering::SeqCst) - before;
    let (parts, _) = front.send("GET", "/leads", vec![("authorization", bearer(&reader))]).await.unwrap();
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.requests.load(Ordering::SeqCst) - before, reached, "a revoked key's request never reaches the app");
    verifier.shutdown().await;
}

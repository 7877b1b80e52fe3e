//! keyward's forward-auth behind a real nginx (`auth_request`), in front of a small upstream.
//!
//! The nginx configuration here is the one `docs/verifier.md` documents. The
//! test needs the `nginx` binary (Debian package `nginx-light` or `nginx`);
//! without it the test reports a skip, except under CI (`CI` set), where a
//! missing nginx is a failure.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::StatusCode;

/// The nginx configuration documented in docs/verifier.md, with test addresses and paths.
fn nginx_conf(dir: &Path, listen: SocketAddr, verifier: SocketAddr, app: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;

  upstream keyward {{ server {verifier}; keepalive 16; }}

  server {{
    listen {listen};

    location / {{
      auth_request /_keyward;
      # Pass the verifier's answer on: key id and scopes to the app, the challenge to the client.
      auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
      auth_request_set $keyward_scopes $upstream_http_x_keyward_scopes;
      auth_request_set $keyward_challenge $upstream_http_www_authenticate;
      auth_request_set $keyward_status $upstream_status;
      auth_request_set $keyward_retry_after $upstream_http_retry_after;
      add_header WWW-Authenticate $keyward_challenge always;
      # auth_request turns any answer other than 2xx, 401 and 403 into 500; give 429, 400 and 503 back.
      error_page 500 = @keyward_error;

      proxy_set_header Authorization "";
      proxy_set_header X-Keyward-Key-Id $keyward_key_id;
      proxy_set_header X-Keyward-Scopes $keyward_scopes;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://{app};
    }}

    location = /_keyward {{
      internal;
      proxy_pass http://keyward/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}

    location @keyward_error {{
      if ($keyward_status = 429) {{
        add_header Retry-After $keyward_retry_after always;
        return 429;
      }}
      if ($keyward_status = 400) {{ return 400; }}
      if ($keyward_status = 503) {{ return 503; }}
      return 500;
    }}
  }}
}}
"#
    )
}

/// The nginx binary: on PATH, or where Debian puts it (`/usr/sbin` is not on every user's PATH).
fn nginx_binary() -> Option<&'static str> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("-v").stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_an_app_enforces_every_decision() {
    let Some(nginx) = nginx_binary() else {
        assert!(std::env::var_os("CI").is_none(), "nginx is required under CI (apt-get install nginx-light)");
        eprintln!("SKIPPED: nginx not installed");
        return;
    };
    let (reader, limited, stranger) = (token(1), token(2), token(3));
    let mut keys = KubeletDir::new();
    keys.publish_set(
        "default",
        1,
        &[record(&reader, &["leads:read"]), with_limit(record(&limited, &["leads:read"]), "1/1h/1")],
    );
    let app = upstream(Duration::ZERO).await;
    let verifier = keyward::verifier::start(forward_auth_config(&keys)).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let conf = work.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(work.path(), listen, verifier.addr, app.addr)).unwrap();
    let _nginx = KillOnDrop(
        Command::new(nginx).arg("-p").arg(work.path()).arg("-c").arg(&conf).stderr(Stdio::null()).spawn().unwrap(),
    );

    let front = Front::new(listen);
    // Wait (bounded) until both nginx and the verifier answer.
    let up = front.wait_for_ok("/leads", &[("authorization", bearer(&reader))]).await;
    let error_log = || std::fs::read_to_string(work.path().join("error.log")).unwrap_or_default();
    assert!(up, "nginx + verifier not answering within 10 s; nginx error log:\n{}", error_log());

    let (parts, _) = front
        .send(
            "GET",
            "/leads/1?page=2",
            vec![("authorization", bearer(&reader)), ("x-keyward-key-id", "spoofed".into())],
        )
        .await
        .unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    let seen: Seen = serde_json::from_str(parts.headers["x-seen"].to_str().unwrap()).unwrap();
    let header =
        |name: &str| seen.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(seen.uri, "/leads/1?page=2");
    assert_eq!(header("x-keyward-key-id"), [reader.hash().key_id().to_string()], "{seen:?}");
    assert_eq!(header("x-keyward-scopes"), ["leads:read"], "{seen:?}");
    assert!(header("authorization").is_empty(), "the token reached the app: {seen:?}");

    let cases: Vec<Case> = vec![
        ("GET", "/leads", vec![], StatusCode::UNAUTHORIZED),
        ("GET", "/leads", vec![("authorization", bearer(&stranger))], StatusCode::UNAUTHORIZED),
        ("GET", "/leads", vec![("authorization", "Bearer kw_nonsense".into())], StatusCode::UNAUTHORIZED),
        ("POST", "/leads", vec![("authorization", bearer(&reader))], StatusCode::FORBIDDEN),
        ("GET", "/contacts", vec![("authorization", bearer(&reader))], StatusCode::FORBIDDEN),
        ("GET", "/leads/%2e%2e/contacts", vec![("authorization", bearer(&reader))], StatusCode::BAD_REQUEST),
        (
            "GET",
            "/contacts",
            vec![("authorization", bearer(&reader)), ("x-forwarded-uri", "/leads".into())],
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/leads", vec![("authorization", bearer(&limited))], StatusCode::OK),
        ("GET", "/leads", vec![("authorization", bearer(&limited))], StatusCode::TOO_MANY_REQUESTS),
    ];
    let before = app.requests.load(std::sync::atomic::Ordering::SeqCst);
    for (method, path, headers, status) in cases {
        let (parts, _) = front.send(method, path, headers).await.unwrap();
        assert_eq!(parts.status, status, "{method} {path}; nginx error log:\n{}", error_log());
        match status {
            StatusCode::UNAUTHORIZED => {
                assert_eq!(parts.headers["www-authenticate"], r#"Bearer realm="keyward", error="invalid_token""#);
            }
            StatusCode::FORBIDDEN => {
                let challenge = parts.headers["www-authenticate"].to_str().unwrap();
                assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
            }
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(parts.headers["retry-after"], "3600"),
            _ => {}
        }
    }
    let reached = app.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(reached, 1, "only the one allowed request reaches the app");
    verifier.shutdown().await;
}

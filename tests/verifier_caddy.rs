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

use common::KillOnDrop;
use common::forward_auth::proxy_enforces_every_decision;
use http::StatusCode;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_in_front_of_an_app_enforces_every_decision() {
    let Some(caddy) = caddy_binary() else {
        assert!(std::env::var_os("CI").is_none(), "caddy is required under CI (apt-get install caddy)");
        eprintln!("SKIPPED: caddy not installed");
        return;
    };
    proxy_enforces_every_decision("caddy", "caddy.log", StatusCode::BAD_REQUEST, |wiring| {
        let config = wiring.dir.join("Caddyfile");
        std::fs::write(&config, caddyfile(wiring.listen, wiring.verifier, wiring.app)).unwrap();
        start_caddy(caddy, wiring.dir, &config)
    })
    .await;
}

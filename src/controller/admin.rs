//! What the operator tells its admin listener ([`crate::runtime::admin`]): its metrics, and ready once it can reconcile.

use std::sync::Arc;

use crate::runtime::admin::Report;

use super::{Health, Metrics};

/// What the operator's admin listener reads.
#[derive(Clone)]
pub struct Admin {
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
}

impl Report for Admin {
    fn readiness(&self) -> Result<(), &'static str> {
        if self.health.ready() { Ok(()) } else { Err("not ready\n") }
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Method, Response, StatusCode, header};
    use http_body_util::{BodyExt, Full};
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    use kube::api::PostParams;

    use tokio::net::TcpListener;

    use super::*;
    use crate::api::{ApiKey, KeyState};
    use crate::controller::{Options, run};
    use crate::plan::DATA_TOKEN;
    use crate::runtime::admin::{OPENMETRICS, respond, serve};

    fn admin() -> Admin {
        Admin { metrics: Arc::new(Metrics::new()), health: Arc::new(Health::default()) }
    }

    async fn body(response: Response<Full<Bytes>>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readiness_waits_for_the_crd_check_and_a_leaders_cache() {
        let admin = admin();
        let ready = |admin: &Admin| respond(admin, &Method::GET, "/readyz").status();
        assert_eq!(respond(&admin, &Method::GET, "/healthz").status(), StatusCode::OK, "alive from the start");
        assert_eq!(ready(&admin), StatusCode::SERVICE_UNAVAILABLE, "before the CRD check");
        admin.health.crd_checked();
        assert_eq!(ready(&admin), StatusCode::OK, "a follower is ready");
        admin.health.set_leading(true);
        assert_eq!(ready(&admin), StatusCode::SERVICE_UNAVAILABLE, "a new leader's cache is empty");
        admin.health.synced();
        assert_eq!(ready(&admin), StatusCode::OK);
        assert_eq!(respond(&admin, &Method::GET, "/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&admin, &Method::POST, "/metrics").status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_count_reconciles_states_and_key_sets_and_hold_no_token() {
        let client = keyward_testkit::fakeapi::client().await.unwrap();
        let admin = admin();
        // A short propagation delay: keys turn Ready once published plus this delay.
        let settings = crate::plan::Settings {
            propagation_delay: jiff::SignedDuration::from_millis(200),
            publish_poll: jiff::SignedDuration::from_millis(200),
            ..crate::plan::Settings::default()
        };
        // Paused tokio time drives the operator's clock too, so its deadlines pass as the test sleeps.
        let start = tokio::time::Instant::now();
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock: crate::controller::Clock = std::sync::Arc::new(move || {
            t0.checked_add(jiff::SignedDuration::try_from(tokio::time::Instant::now() - start).unwrap()).unwrap()
        });
        let options = Options {
            metrics: admin.metrics.clone(),
            health: admin.health.clone(),
            settings,
            clock,
            ..Options::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(run(client.clone(), options, async move {
            let _ = stopped.await;
        }));
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), "team-a");
        for name in ["a", "b", "c"] {
            let key: ApiKey = serde_yaml::from_str(&format!(
                "{{apiVersion: keyward.dev/v1alpha1, kind: ApiKey, metadata: {{name: {name}, namespace: team-a}}, spec: {{scopes: [\"orders:read\"]}}}}"
            ))
            .unwrap();
            keys.create(&PostParams::default(), &key).await.unwrap();
        }
        let expected = "keyward_keyset_records{namespace=\"team-a\",keyset=\"default\"} 3";
        for _ in 0..60 {
            let all = keys.list(&kube::api::ListParams::default()).await.unwrap().items;
            let active = all.iter().filter(|k| k.status.as_ref().and_then(|s| s.state) == Some(KeyState::Active));
            if active.count() == 3 && admin.metrics.encode().contains(expected) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        admin.health.crd_checked();
        assert_eq!(respond(&admin, &Method::GET, "/readyz").status(), StatusCode::OK, "leader with a synced cache");

        let response = respond(&admin, &Method::GET, "/metrics");
        assert_eq!(response.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let text = body(response).await;
        for line in [
            expected,
            "keyward_keyset_shards{namespace=\"team-a\",keyset=\"default\"} 1",
            "keyward_keys{state=\"Active\"} 3",
            "keyward_keys{state=\"Revoked\"} 0",
            "\nkeyward_leader 0\n",
            "# TYPE keyward_reconcile_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let count = |prefix: &str| -> f64 {
            text.lines().find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).unwrap_or_default()
        };
        assert!(count("keyward_reconciles_total ") >= 3.0, "{text}");
        assert!(admin.metrics.keyset_writes_total() >= 1, "{text}");
        assert!(!text.contains("keyward_reconcile_failures_total{"), "no failures expected:\n{text}");

        let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
        for name in ["a", "b", "c"] {
            let secret = secrets.get(&format!("{name}-apikey")).await.unwrap();
            let token = String::from_utf8(secret.data.unwrap()[DATA_TOKEN].0.clone()).unwrap();
            assert!(!text.contains(&token), "a token leaked into /metrics");
            assert!(!text.contains(&token[token.len() - 16..]), "part of a token leaked into /metrics");
        }
        stop.send(()).unwrap();
        operator.await.unwrap();
        assert!(admin.metrics.encode().contains("keyward_keys{state=\"Active\"} 0"), "a stopped leader counts nothing");
    }

    #[tokio::test]
    async fn the_listener_serves_metrics_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(admin()), async move {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut reply = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\nkeyward_leader 0\n"), "{reply}");
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}

//! No token reaches any log line, at any level: decisions of every kind, and key-set load failures.
//!
//! In a file of its own so that the process-wide subscriber sees every event
//! (tracing caches per-callsite interest across threads, which makes a
//! thread-local subscriber miss events while other tests run).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Empty;
use keyward::keyset;
use keyward::verifier::clock::ManualClock;
use keyward::verifier::index::KeyIndex;
use keyward::verifier::loader::{KeyStore, Loader};
use keyward::verifier::metrics::Metrics;
use keyward::verifier::routes::Routes;
use keyward::verifier::service::Verifier;

/// A writer that keeps everything logged, for checking what logs hold.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_log_line_at_any_level_contains_a_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let tokens: Vec<_> = (1..=4).map(token).collect();
    let records = vec![
        record(&tokens[0], &["leads:read"]),
        with_state(record(&tokens[1], &["leads:read"]), keyset::RecordState::Revoked),
        with_limit(record(&tokens[2], &["leads:read"]), "1/1h/1"),
    ];
    let store = Arc::new(KeyStore::default());
    let set = keyset::KeySet {
        id: keyset::KeySetId { namespace: "team-a".into(), name: "default".into() },
        generation: 1,
        access: keyset::Access::Enabled,
        records: records.clone(),
    };
    store.install(KeyIndex::build(vec![set], None).unwrap());
    let verifier =
        Verifier::new(store, Routes::default(), Arc::new(Metrics::new()), Arc::new(ManualClock::new(now())), None);
    for t in &tokens {
        for auth in [bearer(t), format!("Bearer {}", &t.expose()[1..]), format!("Basic {}", t.expose())] {
            for method in ["GET", "POST"] {
                let request = Request::builder()
                    .uri("/verify")
                    .header("authorization", &auth)
                    .header("x-forwarded-method", method)
                    .header("x-forwarded-uri", format!("/leads?token={}", t.expose()))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let _ = verifier.handle(request).await;
            }
        }
    }
    // Loading and failing to load log too: a shard with a token where a hash belongs.
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &records);
    let mut loader = Loader::new(vec![dir.path.clone()], Arc::new(KeyStore::default()), Arc::new(Metrics::new()));
    loader.reload().unwrap();
    let mut bad = shard_files("default", 2, &records, keyset::DEFAULT_MAX_SHARD_BYTES);
    bad[0].1 = bad[0].1.replacen("sha256:", &format!("{} sha256:", tokens[0].expose()), 1);
    dir.publish(&bad);
    assert!(loader.reload().is_err());

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("decision") && logs.contains("reload failed"), "the test must see logs:\n{logs}");
    for t in &tokens {
        assert!(!logs.contains(&t.expose()[3..30]), "a token reached the logs:\n{logs}");
    }
}

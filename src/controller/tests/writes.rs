//! How writes are made: merge patches and Event notes, and that no token is ever written where it must not be.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;

use crate::plan::Settings;

use super::examples::ROTATING;
use super::harness::{LogWriter, NS, harness};

#[test]
fn merge_diff_nulls_cleared_fields_and_keeps_unchanged_ones_out() {
    let old = json!({ "a": 1, "b": { "c": 2, "d": 3 }, "e": [1] });
    let new = json!({ "a": 1, "b": { "c": 2 }, "e": [2], "f": "x" });
    assert_eq!(crate::controller::apply::merge_diff(&old, &new), json!({ "b": { "d": null }, "e": [2], "f": "x" }));
    let _ = BTreeMap::<String, String>::new();
}

#[test]
fn event_notes_are_cut_under_one_kib_at_a_character_boundary() {
    let short = "Token abc written";
    assert_eq!(crate::controller::apply::truncate_note(short), short);
    let long = "é".repeat(800);
    let cut = crate::controller::apply::truncate_note(&long);
    assert!(cut.len() < 1024, "{} bytes", cut.len());
    assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
}

/// Every log line of this thread, at every level, without colours, until the guard drops.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = logs.clone();
        move || LogWriter(logs.clone())
    };
    let subscriber =
        tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_max_level(tracing::Level::TRACE).finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn no_token_appears_in_any_write_event_status_or_log_line() {
    let (logs, _guard) = capture_logs();

    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle("crm").await;
    h.advance(SignedDuration::from_hours(24 * 30));
    h.settle("crm").await;
    h.advance(SignedDuration::from_hours(2));
    h.settle("crm").await;
    Api::<Secret>::namespaced(h.client.clone(), NS)
        .delete("crm-apikey", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    h.settle("crm").await;
    h.patch_spec("crm", json!({ "revoked": true })).await;
    h.settle("crm").await;

    let tokens = h.minted.lock().unwrap().clone();
    assert!(tokens.len() >= 3, "the scenario minted tokens: {}", tokens.len());
    let mut haystack = String::new();
    for (target, body) in h.tap.writes.lock().unwrap().iter() {
        let mut body = body.clone();
        // The Secret's data is the one place a token may be written.
        if target.contains("Secret")
            && let Some(map) = body.as_object_mut()
        {
            map.remove("data");
        }
        haystack.push_str(&body.to_string());
    }
    haystack.push_str(&serde_json::to_string(&h.events().await).unwrap());
    haystack.push_str(&serde_json::to_string(&h.get("crm").await).unwrap());
    haystack.push_str(&String::from_utf8(logs.lock().unwrap().clone()).unwrap());
    assert!(haystack.len() > 1000, "the scan saw the suite's output");
    for token in &tokens {
        let body = token.rsplit_once('_').unwrap().1;
        assert!(!haystack.contains(body), "a token leaked");
    }
}

#[tokio::test]
async fn the_created_log_line_names_the_new_key_id() {
    let (logs, _guard) = capture_logs();

    let h = harness(Settings::default()).await;
    h.create(ROTATING).await;
    h.settle_ready("crm").await;
    let key = h.get("crm").await;
    let key_id = key.status.unwrap().current_key.expect("a current key once Ready").key_id;
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let created = logged
        .lines()
        .find(|l| l.contains("lifecycle step") && l.contains("reason=\"Created\""))
        .unwrap_or_else(|| panic!("a Created lifecycle step is logged:\n{logged}"));
    assert!(created.contains(&format!("key_id=\"{key_id}\"")), "the line names key id {key_id}: {created}");
}

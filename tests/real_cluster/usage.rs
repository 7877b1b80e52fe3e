//! Usage on a real API server: a `--watch-keyset` verifier as the example ServiceAccount writes
//! its report (owned by its Pod), the shared operator adds it up into the ApiKey's status (and its ledger),
//! and the garbage collector removes the report with the Pod. A 403 anywhere fails the test.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use keyward::api::ApiKey;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::lifecycle::{assert_operator_log_clean, ready_partner, setup};
use super::support::{eventually, start_watch_verifier_with, verify};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_verifiers_report_reaches_the_apikey_status_and_goes_with_its_pod() {
    let ns = "usage-report";
    let (plane, client) = setup(ns).await;
    let token = ready_partner(plane, &client, ns).await;

    // A Pod object to own the report (nothing runs it: the harness has no kubelet).
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-0"},
        "spec": {"containers": [{"name": "verifier", "image": "keyward:dev"}]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    // Read before the verifier counts anything: the usage write comes after it.
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    let before_usage = keys.get("partner").await.unwrap().metadata.resource_version;
    let (verifier, addr) = start_watch_verifier_with(
        plane,
        ns,
        &["--usage-report-interval", "1s"],
        &[("POD_NAME", Path::new("api-0")), ("POD_UID", Path::new(&uid)), ("POD_NAMESPACE", Path::new(ns))],
    );
    eventually("the verifier to allow the key", MINUTE, || async {
        (verify(addr, &token).await == Some(200)).then_some(())
    })
    .await;
    for _ in 0..2 {
        assert_eq!(verify(addr, &token).await, Some(200));
    }

    let status = eventually("three allowed requests in status.usage", MINUTE, || async {
        let status = keys.get("partner").await.unwrap().status?;
        (status.usage.as_ref()?.last24h.allowed == 3).then_some(status)
    })
    .await;
    // What the operator's usage writes rely on: a status merge patch carrying the
    // resourceVersion of an older read is refused (409), so a fold from a stale read never lands.
    let stale = json!({
        "metadata": {"resourceVersion": before_usage},
        "status": {"usage": {"last24h": {"allowed": 999, "denied": 0}}},
    });
    let refused = keys.patch_status("partner", &PatchParams::default(), &Patch::Merge(stale)).await;
    assert!(matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409), "{refused:?}");
    let last_used = status.last_used_at.as_ref().expect("lastUsedAt set").0;
    assert_eq!(last_used.as_second() % 3600, 0, "lastUsedAt to the hour: {last_used}");

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let report = configmaps.get("keyward-usage-api-0").await.unwrap();
    let owner = &report.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pod", uid.as_str()));
    let ledger = status.usage_ledger.as_ref().expect("the key's usage ledger");
    let watermarks: Vec<&String> = ledger.folded.keys().collect();
    assert!(watermarks.len() == 1 && watermarks[0].starts_with("api-0/"), "one watermark, api-0's: {ledger:?}");
    assert!(configmaps.get_opt("keyward-usage.default").await.unwrap().is_none(), "no per-key-set aggregate");
    for text in [json!(report).to_string(), json!(status).to_string()] {
        assert!(!text.contains(token.expose()), "a token in a report or status");
    }
    let log = verifier.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "the verifier's RBAC suffices:\n{log}");
    assert!(!log.contains(token.expose()), "no token in the verifier's log");
    assert_operator_log_clean(&[&token]);

    // The verifier stops (writing a last report), then its Pod goes: the garbage collector removes the report.
    drop(verifier);
    pods.delete("api-0", &DeleteParams::default()).await.unwrap();
    eventually("the report removed with its Pod", MINUTE, || async {
        configmaps.get_opt("keyward-usage-api-0").await.unwrap().is_none().then_some(())
    })
    .await;
    // Its counts stay.
    let after = keys.get("partner").await.unwrap().status.unwrap().usage.unwrap();
    assert_eq!(after.last24h.allowed, 3);
}

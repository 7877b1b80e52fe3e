//! ClusterApiKey usage on a real API server: admission takes `expireAfterUnused` on a cluster
//! key, `--watch-keyset` verifiers of two selected namespaces (each Pod named `api-0`) report its
//! requests, and the shared operator, as its ServiceAccount with the shipped RBAC, writes their
//! sum into the key's `clusterapikeys/status`; a report of an unselected namespace changes
//! nothing. A 403 anywhere fails the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use keyward::api::ClusterApiKey;
use keyward::token::Token;
use keyward::usage::{Counts, LABEL_USAGE_REPORT, REPORT_KEY, Report, report_name};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::lifecycle::{assert_operator_log_clean, setup};
use super::support::{eventually, install_crd, run_ok, start_watch_verifier_with, verify};

const MINUTE: Duration = Duration::from_secs(60);

/// A Pod object to own a verifier's report (nothing runs it: the harness has no kubelet); its uid.
async fn pod(client: &kube::Client, namespace: &str, name: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "verifier", "image": "keyward:dev"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), namespace).create(&PostParams::default(), &pod).await.unwrap();
    pod.metadata.uid.unwrap()
}

/// A report in `namespace` (not selected) claiming `allowed` requests with key id `key_id`, as
/// a verifier there would write it.
async fn foreign_report(client: &kube::Client, namespace: &str, key_id: &str, allowed: u64) {
    let report = Report {
        pod: "api-0".into(),
        pod_uid: "uid-foreign".into(),
        epoch: "00000000000000ff".into(),
        at: keyward::runtime::clock::now().as_second(),
        key_sets: vec![format!("{namespace}/default")],
        keys: BTreeMap::from([(key_id.parse().unwrap(), Counts { allowed, ..Counts::default() })]),
    };
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": report_name("api-0"), "labels": {LABEL_USAGE_REPORT: "true"}},
        "data": {REPORT_KEY: report.encode()},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), namespace).create(&PostParams::default(), &cm).await.unwrap();
}

#[tokio::test]
async fn the_operator_adds_up_a_cluster_keys_requests_from_verifiers_in_two_namespaces() {
    let (plane, client) = setup("caku-platform").await;
    install_crd(plane, "crds/clusterapikey.yaml", "clusterapikeys.keyward.dev");
    for (ns, label) in [("caku-a", "agency=usage"), ("caku-b", "agency=usage"), ("caku-c", "agency=other")] {
        run_ok(plane.kubectl().args(["create", "namespace", ns]));
        run_ok(plane.kubectl().args(["label", "namespace", ns, label]));
    }
    let keys: Api<ClusterApiKey> = Api::all(client.clone());
    // Admission takes expireAfterUnused on a cluster key now that its usage is counted.
    let key: ClusterApiKey = serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1",
        "kind": "ClusterApiKey", "metadata": {"name": "usage-agency"},
        "spec": {"scopes": ["orders:read"], "secretNamespace": "caku-platform", "expireAfterUnused": "30d",
            "namespaceSelector": {"matchLabels": {"agency": "usage"}}}}))
    .unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();
    let ready = eventually("the ClusterApiKey Ready", MINUTE, || async {
        keys.get("usage-agency").await.unwrap().status.filter(|s| {
            s.key.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") && s.namespaces.len() == 2
        })
    })
    .await;
    let key_id = ready.key.current_key.as_ref().unwrap().key_id.clone();
    let secret = Api::<Secret>::namespaced(client.clone(), "caku-platform").get("usage-agency-apikey").await.unwrap();
    let raw = secret.data.unwrap().remove("token").unwrap().0;
    let token = Token::parse(std::str::from_utf8(&raw).unwrap()).unwrap();
    // caku-c is not selected: whatever its reports claim for the key does not count.
    foreign_report(&client, "caku-c", &key_id, 1000).await;
    let before_usage = keys.get("usage-agency").await.unwrap().metadata.resource_version;

    let mut verifiers = Vec::new();
    for (ns, requests) in [("caku-a", 2), ("caku-b", 3)] {
        let uid = pod(&client, ns, "api-0").await;
        let env = [("POD_NAME", Path::new("api-0")), ("POD_UID", Path::new(&uid)), ("POD_NAMESPACE", Path::new(ns))];
        let (verifier, addr) = start_watch_verifier_with(plane, ns, &["--usage-report-interval", "1s"], &env);
        eventually(&format!("{ns}'s verifier to allow the key"), MINUTE, || async {
            (verify(addr, &token).await == Some(200)).then_some(())
        })
        .await;
        for _ in 1..requests {
            assert_eq!(verify(addr, &token).await, Some(200), "{ns}");
        }
        verifiers.push(verifier);
    }

    let status = eventually("2 + 3 allowed requests in the cluster key's status.usage", MINUTE, || async {
        let status = keys.get("usage-agency").await.unwrap().status?;
        (status.key.usage.as_ref()?.last24h.allowed == 5).then_some(status)
    })
    .await;
    let last_used = status.key.last_used_at.as_ref().expect("lastUsedAt set").0;
    assert_eq!(last_used.as_second() % 3600, 0, "lastUsedAt to the hour: {last_used}");
    let ledger = status.key.usage_ledger.as_ref().expect("the key's usage ledger");
    let sources: Vec<&String> = ledger.folded.keys().collect();
    assert!(
        sources.len() == 2 && sources[0].starts_with("caku-a/api-0/") && sources[1].starts_with("caku-b/api-0/"),
        "one namespace-qualified watermark per verifier: {sources:?}"
    );
    // The write it relies on: a status merge patch from an older read is refused (409).
    let stale = json!({"metadata": {"resourceVersion": before_usage},
        "status": {"usage": {"last24h": {"allowed": 999, "denied": 0}}}});
    let refused = keys.patch_status("usage-agency", &PatchParams::default(), &Patch::Merge(stale)).await;
    assert!(matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409), "{refused:?}");
    assert!(!json!(status).to_string().contains(token.expose()), "a token in status");
    for verifier in &verifiers {
        let log = verifier.log_text();
        assert!(!log.to_lowercase().contains("forbidden"), "the verifier's RBAC suffices:\n{log}");
    }
    assert_operator_log_clean(&[&token]);

    drop(verifiers);
    keys.delete("usage-agency", &DeleteParams::default()).await.unwrap();
    eventually("the key gone", MINUTE, || async {
        keys.get_opt("usage-agency").await.unwrap().is_none().then_some(())
    })
    .await;
}

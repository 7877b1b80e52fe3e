//! `examples/policies/verifier-usage-policy.yaml` on a real API server: a verifier's
//! ServiceAccount, with the token kubelet would mount into its Pod, writes its own Pod's usage
//! report through the verifier's own write path, and is refused (with the message a user
//! sees) another Pod's report, a report owned by another Pod, a key-set shard and any other
//! ConfigMap; a token bound to no Pod writes nothing. Other users are not affected.
//!
//! The policy is applied as shipped; only its binding is narrowed to this test's namespace
//! (`matchResources.namespaceSelector`), because the control plane is shared with tests whose
//! verifiers use tokens bound to no Pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use keyward::verifier::api_report::{self, PodRef, Reporter};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use super::control_plane::client_from;
use super::support::{apply, cluster, describe, eventually, repo, run_ok};

const NS: &str = "usage-policy";
const POLICY: &str = "keyward-verifier-usage-reports";

/// The shipped policy, and its binding limited to `namespace`.
fn policy_for(namespace: &str) -> String {
    let text = std::fs::read_to_string(repo("examples/policies/verifier-usage-policy.yaml")).unwrap();
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let mut value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
        if value["kind"] == "ValidatingAdmissionPolicyBinding" {
            value["spec"]["matchResources"] =
                json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}});
        }
        documents.push(serde_yaml::to_string(&value).unwrap());
    }
    assert_eq!(documents.len(), 2, "the example holds the policy and its binding");
    documents.join("---\n")
}

async fn pod(client: &Client, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"serviceAccountName": "keyward-verifier", "containers": [{"name": "verifier", "image": "keyward:dev"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap().metadata.uid.unwrap()
}

/// The report ConfigMap the verifier of `pod` writes (no keys loaded yet).
fn report_of(pod: &PodRef) -> ConfigMap {
    let mut reporter = Reporter::new(pod.clone(), "0123456789abcdef".to_owned());
    let report = reporter.report(None, keyward::runtime::clock::now());
    reporter.configmap(&report)
}

/// Write `configmap` the way the verifier does; the refusal's HTTP code and message, if refused.
async fn write(client: &Client, configmap: &ConfigMap) -> Result<(), (u16, String)> {
    api_report::write(client, configmap).await.map_err(|e| match e {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("not an API refusal: {other}"),
    })
}

fn configmap(name: &str, labels: &serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "data": {"x": "y"}
    }))
    .unwrap()
}

#[tokio::test]
async fn the_verifier_usage_policy_lets_a_verifier_write_only_its_own_pods_report() {
    let plane = cluster();
    run_ok(plane.kubectl().args(["create", "namespace", NS]));
    run_ok(plane.kubectl().args(["apply", "-n", NS, "-f"]).arg(repo("examples/workloads/verifier-watch-rbac.yaml")));
    let applied = apply(plane, NS, &policy_for(NS));
    assert!(applied.status.success(), "the API server accepts the policy: {}", describe(&applied));
    let admin = client_from(plane.kubeconfig()).await;
    let own = PodRef { namespace: NS.to_owned(), name: "api-0".to_owned(), uid: pod(&admin, "api-0").await };
    let other = PodRef { namespace: NS.to_owned(), name: "api-1".to_owned(), uid: pod(&admin, "api-1").await };
    let verifier =
        client_from(&plane.pod_service_account_kubeconfig(NS, "keyward-verifier", (&own.name, &own.uid))).await;
    let unbound = client_from(&plane.service_account_kubeconfig(NS, "keyward-verifier")).await;

    // A new policy takes a moment to be in force: until the first refusal (of a probe object
    // that may be written before, and is removed then).
    let probe = configmap("policy-probe", &json!({}));
    let (code, message) = eventually("the policy to refuse a ConfigMap", Duration::from_secs(60), || async {
        write(&verifier, &probe).await.err()
    })
    .await;
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let _ = configmaps.delete("policy-probe", &kube::api::DeleteParams::default()).await;
    // What a user sees, in full, as docs/security.md quotes it.
    let prefix = format!("ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: ");
    let not_a_report =
        "a keyward verifier may write only its usage report (keyward-usage-<pod>, labelled keyward.dev/usage-report)";
    assert_eq!(
        (code, message.as_str()),
        (422, format!("configmaps \"policy-probe\" is forbidden: {prefix}{not_a_report}").as_str())
    );

    write(&verifier, &report_of(&own)).await.expect("a verifier writes its own Pod's report");
    write(&verifier, &report_of(&own)).await.expect("and updates it (server-side apply, as every interval)");

    let cases = [
        ("a key-set shard", configmap("keyset-default-1", &json!({"keyward.dev/keyset": "default"})), not_a_report),
        (
            "another Pod's report",
            report_of(&other),
            "a keyward verifier may write only its own Pod's usage report, keyward-usage-api-0",
        ),
        (
            "its own report owned by another Pod",
            {
                let mut report = report_of(&own);
                report.metadata.owner_references = report_of(&other).metadata.owner_references;
                report
            },
            "a keyward verifier's usage report must be owned by its own Pod only (api-0)",
        ),
        (
            "a ConfigMap named like an old operator's usage aggregate",
            configmap("keyward-usage.default", &json!({"keyward.dev/usage-aggregate": "default"})),
            not_a_report,
        ),
        (
            "a key-set shard dressed as a report",
            configmap(
                "keyward-usage-api-0",
                &json!({"keyward.dev/usage-report": "true", "keyward.dev/keyset": "default"}),
            ),
            not_a_report,
        ),
    ];
    for (what, configmap, expected) in &cases {
        let refused = write(&verifier, configmap).await;
        assert!(
            refused.as_ref().is_err_and(|(code, m)| *code == 422 && m.ends_with(&format!("{prefix}{expected}"))),
            "{what}: expected 422 {expected:?}, got {refused:?}"
        );
    }
    let refused = write(&unbound, &report_of(&own)).await;
    let expected = "a keyward verifier writes its usage report with its Pod's ServiceAccount token; these credentials are bound to no Pod";
    assert!(
        refused.as_ref().is_err_and(|(_, m)| m.ends_with(&format!("{prefix}{expected}"))),
        "a token bound to no Pod: {refused:?}"
    );

    // The shard and the other Pod's report were never written; the own report was.
    assert!(configmaps.get_opt("keyset-default-1").await.unwrap().is_none());
    assert!(configmaps.get_opt("keyward-usage-api-1").await.unwrap().is_none());
    let stored = configmaps.get("keyward-usage-api-0").await.unwrap();
    assert_eq!(stored.metadata.owner_references.unwrap()[0].uid, own.uid);
    // Anyone else (here the admin) is not matched by the policy.
    write(&admin, &report_of(&other)).await.expect("the policy binds only keyward-verifier accounts");
}

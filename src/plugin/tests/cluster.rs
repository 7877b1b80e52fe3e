//! ClusterApiKeys (`cak/NAME`): the name forms, what `status` shows, the errors' wording for a
//! cluster-scoped object, and the commands run against the in-memory API.

use k8s_openapi::api::core::v1::Secret;
use keyward_testkit::fakeapi::FakeCluster;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::api::ClusterApiKey;
use crate::plugin::status::{Events, render_cluster};
use crate::plugin::{Access, PluginError, Session, Target, change, token};
use crate::token::Token;

use super::fixtures::now;

/// Ready, published in two namespaces, its Secret in `platform`.
const AGENCY: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ClusterApiKey
metadata: {name: agency, generation: 1, uid: u-cak}
spec:
  scopes: [contacts:read]
  secretNamespace: platform
  namespaceSelector: {matchLabels: {agency: acme}}
status:
  observedGeneration: 1
  state: Active
  secretName: agency-apikey
  keySet: default
  currentKey: {keyId: 1111aaaa2222, notBefore: '2026-12-01T11:30:00Z'}
  namespaces: [loc-a, loc-b]
  namespaceCount: 2
  conditions:
  - {type: Ready, status: 'True', reason: Active, message: works, lastTransitionTime: '2026-12-01T11:30:00Z', observedGeneration: 1}
  - {type: Published, status: 'True', reason: Published, message: In key set default of 2 namespace(s), lastTransitionTime: '2026-12-01T11:30:00Z', observedGeneration: 1}
";

pub(super) fn agency() -> ClusterApiKey {
    serde_yaml::from_str(AGENCY).expect("fixture YAML is a ClusterApiKey")
}

#[test]
fn names_take_kubectls_type_slash_name_forms() {
    for arg in ["agency", "apikey/agency", "ak/agency", "apikeys.keyward.dev/agency"] {
        assert_eq!(Target::parse(arg).unwrap(), Target::ApiKey("agency".into()), "{arg}");
    }
    for arg in ["cak/agency", "clusterapikey/agency", "ClusterApiKey/agency", "clusterapikeys.keyward.dev/agency"] {
        assert_eq!(Target::parse(arg).unwrap(), Target::Cluster("agency".into()), "{arg}");
    }
    let refused = Target::parse("secret/agency").unwrap_err().to_string();
    assert!(
        refused.contains("secret is not a kind kubectl keyward acts on") && refused.contains("cak/NAME"),
        "{refused}"
    );
    assert!(Target::parse("cak/").is_err());
    assert_eq!(Target::Cluster("agency".into()).noun(), "clusterapikey.keyward.dev/agency");
}

#[test]
fn status_names_a_cluster_key_with_its_secret_namespace_and_namespaces() {
    let text = render_cluster(&agency(), &Events::Listed(Vec::new()), now());
    for wanted in [
        "Name:          agency (ClusterApiKey)\n",
        "Secret:        platform/agency-apikey\n",
        "Namespaces:    loc-a, loc-b\n",
        "State:         Active\n",
        "Published",
    ] {
        assert!(text.contains(wanted), "missing {wanted:?} in:\n{text}");
    }
    assert!(!text.contains("cluster/agency"), "the view's owner text is not a namespace:\n{text}");
    let mut nowhere = agency();
    nowhere.status.as_mut().unwrap().namespaces.clear();
    let text = render_cluster(&nowhere, &Events::Listed(Vec::new()), now());
    assert!(text.contains("Namespaces:    none (spec.namespaceSelector selects no namespace)"), "{text}");
}

fn api_error(code: u16) -> kube::Error {
    kube::Error::Api(kube::core::Status::failure("refused by the test", "Forbidden").with_code(code).boxed())
}

#[test]
fn errors_about_a_cluster_key_name_no_namespace_and_ask_for_a_cluster_role() {
    let access = |verb| Access {
        verb,
        resource: "clusterapikeys.keyward.dev",
        kind: "ClusterApiKey",
        namespace: None,
        name: Some("agency"),
    };
    assert_eq!(access("get").fail(api_error(404)).to_string(), "ClusterApiKey agency not found");
    let forbidden = access("patch").fail(api_error(403)).to_string();
    assert_eq!(
        forbidden,
        "forbidden: you may not patch clusterapikeys.keyward.dev cluster-wide. Ask your cluster admin for a \
         ClusterRole (bound with a ClusterRoleBinding) granting verb \"patch\" on \"clusterapikeys.keyward.dev\" \
         (check with `kubectl auth can-i patch clusterapikeys.keyward.dev`). The API server said: refused by the test"
    );
    // An ApiKey's wording is unchanged.
    let namespaced = Access { namespace: Some("team-a"), resource: "apikeys.keyward.dev", ..access("patch") };
    assert_eq!(
        namespaced.fail(api_error(403)).to_string(),
        "forbidden: you may not patch apikeys.keyward.dev in namespace team-a. Ask your cluster admin for a Role \
         granting verb \"patch\" on \"apikeys.keyward.dev\" there (check with `kubectl auth can-i patch \
         apikeys.keyward.dev -n team-a`). The API server said: refused by the test"
    );
    let missing = Access { namespace: Some("team-a"), kind: "ApiKey", ..access("get") };
    assert_eq!(missing.fail(api_error(404)).to_string(), "ApiKey agency not found in namespace team-a");
}

/// The in-memory API with the ClusterApiKey CRD, `agency` stored with its status, and a session
/// in namespace `elsewhere` (a cluster key does not care which).
async fn stored() -> (Client, Session) {
    let client = FakeCluster::new()
        .with_crd()
        .with_object(crate::api::cluster_crd())
        .client()
        .await
        .expect("the in-memory API starts");
    let keys: Api<ClusterApiKey> = Api::all(client.clone());
    let key = agency();
    keys.create(&PostParams::default(), &key).await.unwrap();
    let status = json!({ "status": key.status });
    keys.patch_status("agency", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    (client.clone(), Session::new(client, "elsewhere"))
}

async fn cluster_key(client: &Client) -> ClusterApiKey {
    Api::<ClusterApiKey>::all(client.clone()).get("agency").await.unwrap()
}

#[tokio::test]
async fn disable_enable_rotate_and_revoke_patch_the_cluster_key_as_kubectl_keyward() {
    let (client, session) = stored().await;
    let target = Target::Cluster("agency".into());

    change::set_active(&session, &target, false).await.unwrap();
    assert!(!cluster_key(&client).await.spec.key.active);
    change::set_active(&session, &target, true).await.unwrap();
    assert!(cluster_key(&client).await.spec.key.active);

    change::rotate(&session, &target, now()).await.unwrap();
    let annotations = cluster_key(&client).await.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get(crate::api::ROTATE_ANNOTATION).map(String::as_str), Some("2026-12-01T12:00:00Z"));

    change::revoke(&session, &target, true).await.unwrap();
    assert!(cluster_key(&client).await.spec.key.revoked);

    // The same names as ApiKeys find nothing: the namespaced key does not exist.
    let missing = change::set_active(&session, &Target::ApiKey("agency".into()), false).await.unwrap_err();
    assert_eq!(missing.to_string(), "ApiKey agency not found in namespace elsewhere");
    let missing = change::rotate(&session, &Target::Cluster("nope".into()), now()).await.unwrap_err();
    assert_eq!(missing.to_string(), "ClusterApiKey nope not found");
}

#[tokio::test]
async fn token_reads_the_secret_of_the_secret_namespace_and_refuses_a_revoked_key() {
    let (client, session) = stored().await;
    let target = Target::Cluster("agency".into());
    // No Secret yet: the error names it, and points at `status cak/agency`.
    let missing = token::run(&session, &target).await.unwrap_err();
    assert!(matches!(&missing, PluginError::NotFound { kind: "Secret", .. }), "{missing}");
    assert!(missing.to_string().contains("agency-apikey not found in namespace platform"), "{missing}");

    let token = Token::generate(&crate::token::Prefix::default(), &mut rand::rng());
    let mut secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "agency-apikey", "namespace": "platform"}})).unwrap();
    let data = k8s_openapi::ByteString(token.expose().as_bytes().to_vec());
    secret.data = Some([(crate::plan::DATA_TOKEN.to_owned(), data)].into());
    Api::<Secret>::namespaced(client.clone(), "platform").create(&PostParams::default(), &secret).await.unwrap();
    token::run(&session, &target).await.expect("the token of platform/agency-apikey is printed");

    change::revoke(&session, &target, true).await.unwrap();
    let refused = token::run(&session, &target).await.unwrap_err().to_string();
    assert_eq!(refused, "clusterapikey.keyward.dev/agency is revoked: its token is gone");
}

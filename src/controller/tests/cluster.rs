//! Organisation-wide keys (ClusterApiKey) on the in-memory API: published as `cluster/<name>` to
//! the key sets of the selected namespaces and only those, following namespace labels at once,
//! through rotation with grace, revocation and deletion; a selector that selects nothing says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use keyward_testkit::fakeapi::FakeCluster;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rand::SeedableRng;
use serde_json::json;

use crate::api::{ClusterApiKey, ClusterApiKeyStatus};
use crate::keyset::{KeySetId, Record, decode_shard};
use crate::plan::{DATA_TOKEN, Settings};
use crate::token::Token;

use super::super::cluster::reconcile;
use super::super::{Context, Publisher};
use super::harness::{T0, hash_of};

mod usage;

/// Where the token lives.
const PLATFORM: &str = "platform";

const AGENCY: &str = r#"
apiVersion: keyward.dev/v1alpha1
kind: ClusterApiKey
metadata: {name: agency}
spec:
  displayName: Agency key
  scopes: ["contacts:read", "leads:write"]
  secretNamespace: platform
  namespaceSelector: {matchLabels: {agency: acme}}
  rotation: {every: 30d, gracePeriod: 2h}
"#;

struct Cluster {
    client: Client,
    ctx: Arc<Context>,
    clock: Arc<Mutex<Timestamp>>,
    minted: Arc<Mutex<Vec<String>>>,
    /// Every request the operator's client made: (method, path and query).
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

/// `client`, with every request it sends recorded in `requests` first.
fn counting(client: Client, requests: Arc<Mutex<Vec<(String, String)>>>) -> Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let target = request.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
        requests.lock().unwrap().push((request.method().to_string(), target));
        let client = client.clone();
        async move { client.send(request).await }
    });
    Client::new(service, "default")
}

async fn cluster() -> Cluster {
    let client = FakeCluster::new()
        .with_crd()
        .with_object(crate::api::cluster_crd())
        .client()
        .await
        .expect("the in-memory API starts");
    let requests: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // The operator's requests are counted; the test's own (through `c.client`) are not.
    let operator_client = counting(client.clone(), requests.clone());
    let clock = Arc::new(Mutex::new(T0.parse::<Timestamp>().unwrap()));
    let minted: Arc<Mutex<Vec<String>>> = Arc::default();
    let clock_fn: super::super::Clock = {
        let clock = clock.clone();
        Arc::new(move || *clock.lock().unwrap())
    };
    let mint_fn: super::super::Minter = {
        let minted = minted.clone();
        let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(7));
        Arc::new(move |prefix: &crate::token::Prefix| {
            let token = Token::generate(prefix, &mut *rng.lock().unwrap());
            minted.lock().unwrap().push(token.expose().to_owned());
            token
        })
    };
    let publisher = Arc::new(Publisher::new(operator_client.clone(), clock_fn.clone(), Duration::from_millis(10)));
    let ctx = Arc::new(Context::with(operator_client, Settings::default(), publisher, clock_fn, mint_fn));
    let c = Cluster { client, ctx, clock, minted, requests };
    for (name, agency) in [(PLATFORM, None), ("loc-a", Some("acme")), ("loc-b", Some("acme")), ("loc-c", None)] {
        c.create_namespace(name, agency).await;
    }
    c
}

impl Cluster {
    /// How many requests the operator made so far.
    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Requests made since `from` (a [`Cluster::request_count`]).
    fn requests_since(&self, from: usize) -> Vec<(String, String)> {
        self.requests.lock().unwrap()[from..].to_vec()
    }

    async fn create_namespace(&self, name: &str, agency: Option<&str>) {
        let labels = agency.map_or_else(|| json!({}), |a| json!({ "agency": a }));
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    }

    async fn label(&self, namespace: &str, agency: Option<&str>) {
        let patch = json!({ "metadata": { "labels": { "agency": agency } } });
        Api::<Namespace>::all(self.client.clone())
            .patch(namespace, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    fn keys(&self) -> Api<ClusterApiKey> {
        Api::all(self.client.clone())
    }

    async fn create(&self, yaml: &str) {
        let key: ClusterApiKey = serde_yaml::from_str(yaml).unwrap();
        self.keys().create(&PostParams::default(), &key).await.unwrap();
    }

    async fn status(&self, name: &str) -> ClusterApiKeyStatus {
        self.keys().get(name).await.unwrap().status.unwrap_or_default()
    }

    /// One reconcile (retried as the runtime would) and the publisher's flush.
    async fn settle(&self, name: &str) {
        for attempt in 0.. {
            let key = Arc::new(self.keys().get(name).await.unwrap());
            match reconcile(key, self.ctx.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < 5 => eprintln!("retrying after {e}"),
                Err(e) => panic!("reconcile of {name} failed: {e}"),
            }
        }
        self.ctx.publisher.flush().await;
    }

    /// Settle until Ready: published everywhere, seen on the next look, then the propagation delay.
    async fn settle_ready(&self, name: &str) {
        self.settle(name).await;
        self.advance(self.ctx.settings.publish_poll);
        self.settle(name).await;
        self.advance(self.ctx.settings.propagation_delay);
        self.settle(name).await;
    }

    fn advance(&self, d: SignedDuration) {
        let mut now = self.clock.lock().unwrap();
        *now = now.checked_add(d).unwrap();
    }

    /// The records in `namespace`'s key set `default`, as stored.
    async fn published(&self, namespace: &str) -> Vec<Record> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let list = cms.list(&ListParams::default().labels("keyward.dev/keyset=default")).await.unwrap();
        list.items
            .iter()
            .flat_map(|cm| cm.data.clone().unwrap_or_default().into_values())
            .flat_map(|text| decode_shard(text.as_bytes()).expect("shards decode").records)
            .collect()
    }

    /// The hashes of `cluster/<name>` in `namespace`'s key set.
    async fn cluster_hashes(&self, namespace: &str, name: &str) -> Vec<String> {
        let mut hashes: Vec<String> = self
            .published(namespace)
            .await
            .into_iter()
            .filter(|r| r.namespace == "cluster" && r.name == name)
            .map(|r| r.hash.to_string())
            .collect();
        hashes.sort();
        hashes
    }

    async fn token(&self, name: &str) -> Option<String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), PLATFORM).get_opt(name).await.unwrap()?;
        Some(String::from_utf8(secret.data?.get(DATA_TOKEN)?.0.clone()).unwrap())
    }

    /// Every Event about ClusterApiKeys, wherever it was written: `(reason, note)`.
    async fn events(&self) -> Vec<(String, String)> {
        let events = Api::<K8sEvent>::all(self.client.clone()).list(&ListParams::default()).await.unwrap();
        events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ClusterApiKey"))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// No minted token appears in any ConfigMap, Event or ClusterApiKey.
    async fn assert_no_token_leaks(&self) {
        let mut seen = String::new();
        let cms = Api::<ConfigMap>::all(self.client.clone()).list(&ListParams::default()).await.unwrap();
        seen.push_str(&serde_json::to_string(&cms.items).unwrap());
        let events = Api::<K8sEvent>::all(self.client.clone()).list(&ListParams::default()).await.unwrap();
        seen.push_str(&serde_json::to_string(&events.items).unwrap());
        let keys = self.keys().list(&ListParams::default()).await.unwrap();
        seen.push_str(&serde_json::to_string(&keys.items).unwrap());
        for token in self.minted.lock().unwrap().iter() {
            assert!(!seen.contains(token.as_str()), "a token leaked into ConfigMaps, Events or status");
        }
    }
}

fn ready(status: &ClusterApiKeyStatus) -> (String, String) {
    let c = status.key.conditions.first().expect("a Ready condition");
    assert_eq!(c.type_, "Ready");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn cluster_key_is_published_to_selected_namespaces_only_and_follows_their_labels() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;

    let token = c.token("agency-apikey").await.expect("the token is in the Secret of secretNamespace");
    let hash = hash_of(&token).to_string();
    assert_eq!(c.cluster_hashes("loc-a", "agency").await, [hash.as_str()]);
    assert_eq!(c.cluster_hashes("loc-b", "agency").await, [hash.as_str()]);
    assert_eq!(c.cluster_hashes("loc-c", "agency").await, Vec::<String>::new(), "loc-c is not selected");
    assert_eq!(c.cluster_hashes(PLATFORM, "agency").await, Vec::<String>::new(), "nor is the Secret's namespace");
    let status = c.status("agency").await;
    assert_eq!(ready(&status), ("True".to_owned(), "Active".to_owned()), "{status:?}");
    assert_eq!(status.namespaces, ["loc-a", "loc-b"]);
    assert_eq!(status.namespace_count, Some(2));
    let record = c.published("loc-a").await.into_iter().find(|r| r.name == "agency").unwrap();
    assert_eq!(record.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(), ["contacts:read", "leads:write"]);

    // loc-b leaves the agency: its key set loses the key in the reconcile itself, before any flush.
    c.label("loc-b", None).await;
    let key = Arc::new(c.keys().get("agency").await.unwrap());
    reconcile(key, c.ctx.clone()).await.unwrap();
    assert_eq!(c.cluster_hashes("loc-b", "agency").await, Vec::<String>::new(), "loc-b lost the key at once");
    assert_eq!(c.cluster_hashes("loc-a", "agency").await, [hash.as_str()]);
    assert_eq!(c.status("agency").await.namespaces, ["loc-a"]);

    // loc-c joins: it gains the key.
    c.label("loc-c", Some("acme")).await;
    c.settle("agency").await;
    assert_eq!(c.cluster_hashes("loc-c", "agency").await, [hash.as_str()]);
    assert_eq!(c.status("agency").await.namespace_count, Some(2));
    c.assert_no_token_leaks().await;
}

#[tokio::test]
async fn cluster_key_rotates_with_grace_in_every_namespace_and_revocation_removes_it_everywhere() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    let first = hash_of(&c.token("agency-apikey").await.unwrap()).to_string();

    c.advance(SignedDuration::from_hours(30 * 24));
    // Rotation: the next token is published in both namespaces before the Secret is swapped.
    c.settle("agency").await;
    c.advance(c.ctx.settings.publish_poll);
    c.settle("agency").await;
    c.advance(c.ctx.settings.propagation_delay);
    c.settle("agency").await;
    let second = hash_of(&c.token("agency-apikey").await.unwrap()).to_string();
    assert_ne!(first, second, "the Secret holds the new token after the swap");
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    for ns in ["loc-a", "loc-b"] {
        assert_eq!(c.cluster_hashes(ns, "agency").await, both, "{ns}: both tokens work during the grace period");
    }
    let status = c.status("agency").await;
    assert_eq!(status.key.previous_key.as_ref().map(|k| k.key_id.as_str()), Some(&first[7..19]));

    // After the grace period only the new token is left, everywhere.
    c.advance(SignedDuration::from_hours(2));
    c.settle("agency").await;
    for ns in ["loc-a", "loc-b"] {
        assert_eq!(c.cluster_hashes(ns, "agency").await, [second.as_str()], "{ns}: the previous token retired");
    }

    // Revoked: gone from every key set at once, the token destroyed.
    c.keys().patch("agency", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}}))).await.unwrap();
    let key = Arc::new(c.keys().get("agency").await.unwrap());
    reconcile(key, c.ctx.clone()).await.unwrap();
    for ns in ["loc-a", "loc-b"] {
        assert_eq!(c.cluster_hashes(ns, "agency").await, Vec::<String>::new(), "{ns}: revoked at once");
    }
    assert_eq!(c.token("agency-apikey").await, None, "the revoked token left the Secret");
    assert_eq!(ready(&c.status("agency").await), ("False".to_owned(), "Revoked".to_owned()));
    c.assert_no_token_leaks().await;
}

#[tokio::test]
async fn a_selector_that_selects_nothing_publishes_nowhere_and_says_so() {
    let c = cluster().await;
    c.create(&AGENCY.replace("agency: acme", "agency: nobody")).await;
    c.settle_ready("agency").await;
    c.settle("agency").await;

    for ns in ["loc-a", "loc-b", "loc-c", PLATFORM] {
        assert_eq!(c.cluster_hashes(ns, "agency").await, Vec::<String>::new(), "{ns}");
    }
    let status = c.status("agency").await;
    let published = status.key.conditions.iter().find(|c| c.type_ == "Published").expect("a Published condition");
    assert_eq!((published.status.as_str(), published.reason.as_str()), ("False", "NoNamespaces"));
    assert!(published.message.contains("spec.namespaceSelector"), "{}", published.message);
    assert_eq!(status.namespace_count, Some(0));
    assert_ne!(ready(&status).0, "True", "a key published nowhere is not Ready: {status:?}");
    let warnings: Vec<_> = c.events().await.into_iter().filter(|(reason, _)| reason == "NoNamespaces").collect();
    assert_eq!(warnings.len(), 1, "one Warning Event, not one per reconcile: {warnings:?}");

    // A namespace that starts matching gets the key and the key becomes Ready.
    c.label("loc-c", Some("nobody")).await;
    c.settle_ready("agency").await;
    c.settle("agency").await;
    let token = c.token("agency-apikey").await.unwrap();
    assert_eq!(c.cluster_hashes("loc-c", "agency").await, [hash_of(&token).to_string()]);
    assert_eq!(ready(&c.status("agency").await).0, "True");
    c.assert_no_token_leaks().await;
}

#[tokio::test]
async fn a_deleted_cluster_key_leaves_every_key_set_before_it_goes() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    assert_eq!(c.cluster_hashes("loc-a", "agency").await.len(), 1);
    let finalizers = c.keys().get("agency").await.unwrap().metadata.finalizers.unwrap_or_default();
    assert_eq!(finalizers, ["keyward.dev/unpublish"]);

    c.keys().delete("agency", &DeleteParams::default()).await.unwrap();
    c.settle("agency").await;
    for ns in ["loc-a", "loc-b"] {
        assert_eq!(c.cluster_hashes(ns, "agency").await, Vec::<String>::new(), "{ns}");
    }
    assert!(c.keys().get_opt("agency").await.unwrap().is_none(), "the finalizer was released");
    let id = KeySetId { namespace: "loc-a".into(), name: "default".into() };
    assert!(c.ctx.publisher.published(&id).await.unwrap().iter().all(|r| r.namespace != "cluster"));
}

/// What a verifier of `namespace`'s key set `default` answers for `token` on `GET /contacts/1`,
/// from the stored shards read as a verifier reads them (an absent set is an empty one).
async fn verifier_answer(c: &Cluster, namespace: &str, token: &str) -> crate::verifier::decision::Outcome {
    use crate::verifier::decision::{Now, Request, decide};
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), namespace);
    let list = cms.list(&ListParams::default().labels("keyward.dev/keyset=default")).await.unwrap();
    let sets = if list.items.is_empty() {
        Vec::new()
    } else {
        crate::keyset::assemble(crate::configmap::read_shards(&list.items).unwrap()).unwrap()
    };
    let index = crate::verifier::index::KeyIndex::build(sets, None).unwrap();
    let bearer = format!("Bearer {token}");
    let request = Request { method: "GET", uri: "/contacts/1", authorization: [bearer.as_bytes()].into_iter() };
    let now = Now { wall: *c.clock.lock().unwrap(), monotonic: Duration::from_secs(1) };
    decide(&index, &crate::verifier::routes::Routes::default(), request, now).outcome
}

#[tokio::test]
async fn verifiers_of_the_selected_namespaces_allow_the_token_and_a_third_does_not_know_it() {
    use crate::verifier::decision::Outcome;
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    let token = c.token("agency-apikey").await.unwrap();
    assert_eq!(verifier_answer(&c, "loc-a", &token).await, Outcome::Allowed);
    assert_eq!(verifier_answer(&c, "loc-b", &token).await, Outcome::Allowed);
    assert_eq!(verifier_answer(&c, "loc-c", &token).await, Outcome::Unknown, "401 in an unselected namespace");

    // A gated key set gates the cluster key there, and only there.
    let gate: crate::api::KeySet = serde_json::from_value(json!({"apiVersion": "keyward.dev/v1alpha1",
        "kind": "KeySet", "metadata": {"name": "default", "namespace": "loc-b"}, "spec": {"access": "PaymentRequired"}}))
    .unwrap();
    Api::<crate::api::KeySet>::namespaced(c.client.clone(), "loc-b")
        .create(&PostParams::default(), &gate)
        .await
        .unwrap();
    c.ctx.publisher.publish_now(&KeySetId { namespace: "loc-b".into(), name: "default".into() }).await.unwrap();
    assert_eq!(verifier_answer(&c, "loc-b", &token).await, Outcome::PaymentRequired);
    assert_eq!(verifier_answer(&c, "loc-a", &token).await, Outcome::Allowed);
}

/// A Deployment in `namespace` that names `keys` in its restart annotation.
fn deployment(namespace: &str, name: &str, keys: &str) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": namespace,
                      "annotations": { crate::plan::restarts::RESTART_ANNOTATION: keys } },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } },
                          "spec": { "containers": [{ "name": "app", "image": "app" }] } },
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_rotation_restarts_the_workloads_of_the_secret_namespace_that_name_cluster_slash_key() {
    use crate::plan::restarts::RESTARTED_AT_ANNOTATION;
    use k8s_openapi::api::apps::v1::Deployment;
    let c = cluster().await;
    for (ns, name, keys) in [
        (PLATFORM, "agent", "cluster/agency"),
        (PLATFORM, "namesake", "agency"), // an ApiKey `agency` of the namespace, not the cluster key
        ("loc-a", "elsewhere", "cluster/agency"), // carries the hash, holds no token
    ] {
        let api: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
        api.create(&PostParams::default(), &deployment(ns, name, keys)).await.unwrap();
    }
    let stamp = |ns: &'static str, name: &'static str| {
        let api: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
        async move {
            let d = api.get(name).await.unwrap();
            d.spec?.template.metadata?.annotations?.get(RESTARTED_AT_ANNOTATION).cloned()
        }
    };
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    assert_eq!(stamp(PLATFORM, "agent").await, None, "creating a key restarts nothing");

    // The 30-day rotation: published everywhere, then swapped.
    c.advance(SignedDuration::from_hours(30 * 24));
    c.settle("agency").await;
    c.advance(c.ctx.settings.publish_poll);
    c.settle("agency").await;
    c.advance(c.ctx.settings.propagation_delay);
    c.settle("agency").await;
    assert!(c.status("agency").await.key.previous_key.is_some(), "swapped, in its grace period");
    assert_eq!(stamp(PLATFORM, "agent").await, None, "not before the restart delay");
    c.advance(c.ctx.restart_delay);
    c.settle("agency").await;

    let first = stamp(PLATFORM, "agent").await.expect("restarted after the delay");
    assert_eq!(stamp(PLATFORM, "namesake").await, None);
    assert_eq!(stamp("loc-a", "elsewhere").await, None);
    let restarted: Vec<_> = c.events().await.into_iter().filter(|(r, _)| r == "WorkloadRestarted").collect();
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert!(restarted[0].1.contains("Deployment agent restarted"), "{restarted:?}");
    c.advance(SignedDuration::from_mins(5));
    c.settle("agency").await;
    assert_eq!(stamp(PLATFORM, "agent").await, Some(first), "once per rotation");
}

#[tokio::test]
async fn a_deleted_secret_of_a_cluster_key_comes_back_at_once_through_the_secret_watch() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    let first = c.token("agency-apikey").await.expect("the token is in the Secret");

    // The controller loop, as the operator runs it: the key is Active, its next look hours away.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(super::super::cluster::run(c.ctx.clone(), async move {
        let _ = stopped.await;
    }));
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), PLATFORM);
    // The loop's start-up reconcile would repair the Secret by itself: delete it only once that
    // reconcile has read the key and the operator has gone quiet (no request for half a second).
    let wait = Duration::from_secs(60);
    keyward_testkit::wait::eventually("the controller's start-up reconcile", wait, || async {
        let before = c.request_count();
        let read = c.requests_since(0).iter().any(|(m, p)| m == "GET" && p.ends_with("/clusterapikeys/agency"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        (read && c.request_count() == before).then_some(())
    })
    .await;
    let quiet = c.request_count();
    secrets.delete("agency-apikey", &DeleteParams::default()).await.unwrap();
    let back = keyward_testkit::wait::eventually("the Secret written again", wait, || async {
        c.token("agency-apikey").await
    })
    .await;
    let reread = c.requests_since(quiet);
    assert!(
        reread.iter().any(|(m, p)| m == "GET" && p.ends_with("/clusterapikeys/agency")),
        "a reconcile of the owner ran after the deletion: {reread:?}"
    );
    assert!(Token::parse(&back).is_ok(), "a well-formed token");
    let events = c.events().await;
    assert!(
        events.iter().any(|(reason, _)| reason == "SecretRepaired" || reason == "TokenReissued"),
        "the repair is an Event: {events:?}"
    );
    let _ = first;
    stop.send(()).unwrap();
    running.await.unwrap();
    c.assert_no_token_leaks().await;
}

#[test]
fn a_secret_is_mapped_to_the_cluster_key_that_owns_it_and_no_other() {
    use kube::core::PartialObjectMeta;
    let meta = |owners: serde_json::Value| -> PartialObjectMeta<Secret> {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "platform", "ownerReferences": owners}}))
        .unwrap()
    };
    let owner = |api_version: &str, kind: &str| json!([{"apiVersion": api_version, "kind": kind, "name": "agency", "uid": "u"}]);
    let found = super::super::cluster::owning_key(&meta(owner("keyward.dev/v1alpha1", "ClusterApiKey")));
    assert_eq!(found.map(|r| (r.name, r.namespace)), Some(("agency".to_owned(), None)), "cluster-scoped");
    assert!(super::super::cluster::owning_key(&meta(owner("keyward.dev/v1alpha1", "ApiKey"))).is_none());
    assert!(super::super::cluster::owning_key(&meta(owner("example.com/v1", "ClusterApiKey"))).is_none());
    assert!(super::super::cluster::owning_key(&meta(json!(null))).is_none());
}

/// One rebuild of `namespace`'s key set `default`: (requests made, of which reads of cluster
/// keys: GETs of the Namespace and LISTs of ClusterApiKeys).
async fn one_rebuild(c: &Cluster, namespace: &str) -> (usize, usize) {
    let from = c.request_count();
    c.ctx.publisher.publish_now(&KeySetId { namespace: namespace.into(), name: "default".into() }).await.unwrap();
    let made = c.requests_since(from);
    let own = format!("/api/v1/namespaces/{namespace}");
    let cluster_reads = made.iter().filter(|(m, p)| m == "GET" && (*p == own || p.contains("/clusterapikeys"))).count();
    (made.len(), cluster_reads)
}

#[tokio::test]
async fn with_the_controllers_caches_a_rebuild_of_an_unselected_namespace_reads_no_cluster_keys() {
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    // Without caches (as before): each rebuild GETs the Namespace (twice: once for classes) and
    // LISTs cluster keys. loc-c's first rebuild writes its (empty) key set; measure the next one.
    one_rebuild(&c, "loc-c").await;
    let (before_c, reads_c) = one_rebuild(&c, "loc-c").await;
    let (before_a, reads_a) = one_rebuild(&c, "loc-a").await;
    assert_eq!((reads_c, reads_a), (3, 3), "the classes' Namespace GET, then the cluster keys' GET and LIST");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(super::super::cluster::run(c.ctx.clone(), async move {
        let _ = stopped.await;
    }));
    let (after_c, reads) = keyward_testkit::wait::eventually("the caches in use", Duration::from_secs(60), || async {
        Some(one_rebuild(&c, "loc-c").await).filter(|(_, reads)| *reads == 1)
    })
    .await;
    assert_eq!((after_c, reads), (before_c - 2, 1), "loc-c: only the classes' Namespace GET is left");
    let (after_a, reads) = one_rebuild(&c, "loc-a").await;
    assert_eq!((after_a, reads), (before_a, 3), "a selected namespace is read afresh, as before");
    let token = c.token("agency-apikey").await.unwrap();
    assert_eq!(c.cluster_hashes("loc-a", "agency").await, [hash_of(&token).to_string()]);
    eprintln!("requests per rebuild: unselected {before_c} -> {after_c}, selected {before_a} -> {after_a}");
    stop.send(()).unwrap();
    running.await.unwrap();
}

#[tokio::test]
async fn a_stale_cache_never_keeps_a_key_in_a_namespace_that_left_the_selector() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::core::PartialObjectMeta;
    use kube::runtime::{reflector, watcher};
    let c = cluster().await;
    c.create(AGENCY).await;
    c.settle_ready("agency").await;
    assert_eq!(c.cluster_hashes("loc-b", "agency").await.len(), 1);

    // Caches taken now, never updated again: they will say loc-b is still in the agency.
    let (keys, mut key_writer) = reflector::store::<ClusterApiKey>();
    let (namespaces, mut namespace_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    for key in c.keys().list(&ListParams::default()).await.unwrap() {
        key_writer.apply_watcher_event(&watcher::Event::Apply(key));
    }
    for ns in Api::<Namespace>::all(c.client.clone()).list_metadata(&ListParams::default()).await.unwrap() {
        namespace_writer.apply_watcher_event(&watcher::Event::Apply(ns));
    }
    let filled = || Arc::new(std::sync::atomic::AtomicBool::new(true));
    c.ctx.publisher.use_cluster_caches(keys, namespaces, [filled(), filled()]);

    // loc-b leaves: the stale cache says "maybe", the fresh read says no.
    c.label("loc-b", None).await;
    one_rebuild(&c, "loc-b").await;
    assert_eq!(c.cluster_hashes("loc-b", "agency").await, Vec::<String>::new(), "gone on the next rebuild");
    // And the other way round: a namespace the stale cache does not know to be selected is
    // left out (never widened), until the caches catch up or the key's reconcile adds it.
    c.label("loc-c", Some("acme")).await;
    one_rebuild(&c, "loc-c").await;
    assert_eq!(c.cluster_hashes("loc-c", "agency").await, Vec::<String>::new(), "a stale cache only leaves out");
    assert_eq!(c.cluster_hashes("loc-a", "agency").await.len(), 1, "loc-a keeps it");
}

//! The scenarios the in-memory API is held to: each drives a `kube::Client` the way keyward
//! and its users do and writes down what it observed, as lines of a transcript.
//!
//! `tests/fake_vs_real.rs` runs them on the in-memory API; `tests/real_cluster/fake_vs_real.rs`
//! runs each on the real control plane and on the in-memory API and fails when the two
//! transcripts differ. Each scenario also asserts what the real API server does, so that a
//! change of the fake shows up without a control plane too. Where the fake and the real server
//! disagree, the real one is right.

// Shared by two test binaries, each using a part.
#![allow(dead_code)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as NewEvent;
use keyward::api::ApiKey;
use keyward::keyset::decode_shard;
use keyward::token::Token;
use keyward_testkit::fakeapi::admission::field_path;
use keyward_testkit::wait::eventually;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// One `#[tokio::test]` per scenario, each handed to `$run(namespace, needs an operator,
/// scenario)`; the caller has `scenarios` in scope.
macro_rules! scenario_tests {
    ($run:ident) => {
        #[tokio::test]
        async fn finalizers_hold_a_deleted_object() {
            $run("fin", false, async |c, ns| scenarios::finalizers_hold_a_deleted_object(c, &ns).await).await;
        }

        #[tokio::test]
        async fn owned_objects_go_with_their_owner() {
            $run("gc", false, async |c, ns| scenarios::owned_objects_go_with_their_owner(c, &ns).await).await;
        }

        #[tokio::test]
        async fn apply_removes_what_a_manager_stops_applying() {
            $run("apply", false, async |c, ns| scenarios::apply_removes_what_a_manager_stops_applying(c, &ns).await)
                .await;
        }

        #[tokio::test]
        async fn dry_run_never_persists() {
            $run("dry", false, async |c, ns| scenarios::dry_run_never_persists(c, &ns).await).await;
        }

        #[tokio::test]
        async fn a_watch_from_nothing_lists_first() {
            $run("watch", false, async |c, ns| scenarios::a_watch_from_nothing_lists_first(c, &ns).await).await;
        }

        #[tokio::test]
        async fn generation_follows_the_spec_only() {
            $run("gen", false, async |c, ns| scenarios::generation_follows_the_spec_only(c, &ns).await).await;
        }

        #[tokio::test]
        async fn events_are_one_resource_under_two_apis() {
            $run("events", false, async |c, ns| scenarios::events_are_one_resource_under_two_apis(c, &ns).await).await;
        }

        #[tokio::test]
        async fn invalid_api_keys_are_refused() {
            $run("invalid", false, async |c, ns| scenarios::invalid_api_keys_are_refused(c, &ns).await).await;
        }

        #[tokio::test]
        async fn cluster_scoped_keys_are_served_without_a_namespace() {
            $run("cak", false, async |c, ns| {
                scenarios::cluster_scoped_keys_are_served_without_a_namespace(c, &ns).await
            })
            .await;
        }

        #[tokio::test]
        async fn a_webhooks_pending_notices_are_replaced_and_removed_by_merge_patches() {
            $run("pending", false, async |c, ns| {
                scenarios::a_webhooks_pending_notices_are_replaced_and_removed_by_merge_patches(c, &ns).await
            })
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_operator_carries_a_key_from_create_to_delete() {
            $run("operator", true, async |c, ns| {
                scenarios::the_operator_carries_a_key_from_create_to_delete(c, &ns).await
            })
            .await;
        }
    };
}
pub(crate) use scenario_tests;

/// A ClusterApiKey is served at paths without a namespace and comes back without one, from a
/// create, a get, a list and a watch. Its selector selects nothing, so an operator running
/// meanwhile (the real cluster's shared one) publishes it nowhere; the watch is read as "first"
/// and "last" events because that operator may write the key (finalizer, status) in between.
pub async fn cluster_scoped_keys_are_served_without_a_namespace(client: Client, ns: &str) -> Transcript {
    use keyward::api::ClusterApiKey;
    let keys: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<ClusterApiKey>(&()));
    let mut t = Transcript::new();
    let name = format!("{ns}-agency");
    let key: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterApiKey",
        "metadata": {"name": name, "labels": {"scenario": ns}},
        "spec": {"scopes": ["orders:read"], "secretNamespace": ns,
            "namespaceSelector": {"matchLabels": {"keyward.dev/scenario-selects": "nothing"}}},
    }))
    .unwrap();
    let selector = format!("scenario={ns}");
    let mut events = keys.watch(&WatchParams::default().labels(&selector), "0").await.unwrap().boxed();
    let created = keys.create(&PostParams::default(), &key).await.unwrap();
    t.push(format!("created: namespace {:?}", created.metadata.namespace));
    let read = keys.get(&name).await.unwrap();
    t.push(format!(
        "get: namespace {:?}, spec.secretNamespace {}",
        read.metadata.namespace, read.data["spec"]["secretNamespace"]
    ));
    let listed = keys.list(&ListParams::default().labels(&selector)).await.unwrap();
    let namespaces: Vec<_> = listed.items.iter().map(|k| k.metadata.namespace.clone()).collect();
    t.push(format!("list: {namespaces:?}"));
    keys.delete(&name, &DeleteParams::default()).await.unwrap();
    let first = next_events(&mut events, 1).await;
    t.push(format!("watch begins with: {}", first.join(", ")));
    let mut last = String::new();
    while !last.starts_with("DELETED") {
        last = next_events(&mut events, 1).await.remove(0);
    }
    t.push(format!("watch ends with: {last}"));
    assert_eq!(read.metadata.namespace, None, "a cluster-scoped object has no namespace");
    assert_eq!(first, [format!("ADDED {name}")]);
    t
}

/// What a scenario observed, one fact per line.
pub type Transcript = Vec<String>;

/// How long a scenario waits for something that must happen (never a timing claim).
const PATIENCE: Duration = Duration::from_secs(60);

/// A finalizer of the scenarios' own, which no controller removes.
const HOLD: &str = "scenarios.keyward.dev/hold";

/// Create `ns` (the in-memory API needs none, the real one does; creating it works on both).
pub async fn namespace(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&PostParams::default(), &object).await.expect("create the scenario's namespace");
}

fn config_map(name: &str, finalizers: &[&str]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"scenario": "yes"}, "finalizers": finalizers},
        "data": {"a": "1"},
    }))
    .unwrap()
}

/// An ApiKey with `spec`, as an untyped object.
pub fn api_key(name: &str, spec: &Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// ApiKeys as untyped objects, so that a scenario can send what the Rust type could not hold.
pub fn api_keys(client: &Client, ns: &str) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("keyward.dev", "v1alpha1", "ApiKey"), "apikeys");
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// An ApiKeyWebhook's `status.pending` as the operator writes it (controller/webhooks/tracker.rs):
/// a JSON merge patch on the status subresource replaces the whole list, a patch of other status
/// fields leaves it as it is, `null` removes it, and none of it moves the generation.
pub async fn a_webhooks_pending_notices_are_replaced_and_removed_by_merge_patches(
    client: Client,
    ns: &str,
) -> Transcript {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keyward.dev", "v1alpha1", "ApiKeyWebhook"),
        "apikeywebhooks",
    );
    let hooks: Api<DynamicObject> = Api::namespaced_with(client, ns, &resource);
    let hook: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyWebhook", "metadata": {"name": "alerts"},
        "spec": {"url": "https://hooks.example.com/keyward", "secretRef": {"name": "hook-signing"}},
    }))
    .unwrap();
    hooks.create(&PostParams::default(), &hook).await.unwrap();
    let entry = |id: &str, attempts: u32| {
        json!({"id": id, "type": "Revoked", "body": "{\"type\":\"apikey.revoked\"}", "attempts": attempts,
               "nextAttemptAt": "2026-12-01T05:00:00Z"})
    };
    let steps = [
        ("two pending", json!({"pending": [entry("msg_a", 1), entry("msg_b", 0)]})),
        ("the first delivered, the second retried", json!({"pending": [entry("msg_b", 2)]})),
        ("other fields only", json!({"consecutiveFailures": 1})),
        ("none left", json!({"pending": null})),
    ];
    let mut t = Transcript::new();
    for (step, status) in steps {
        hooks.patch_status("alerts", &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await.unwrap();
        let stored = hooks.get("alerts").await.unwrap();
        let pending = stored.data["status"].get("pending").map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|e| format!("{}x{}", e["id"].as_str().unwrap(), e["attempts"]))
                .collect::<Vec<_>>()
        });
        t.push(format!("{step}: pending {pending:?}, generation {:?}", stored.metadata.generation));
    }
    assert_eq!(
        t,
        [
            r#"two pending: pending Some(["msg_ax1", "msg_bx0"]), generation Some(1)"#,
            r#"the first delivered, the second retried: pending Some(["msg_bx2"]), generation Some(1)"#,
            r#"other fields only: pending Some(["msg_bx2"]), generation Some(1)"#,
            "none left: pending None, generation Some(1)",
        ]
    );
    t
}

/// The HTTP status of a failed call, or `ok`.
fn outcome<T>(result: &Result<T, kube::Error>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(kube::Error::Api(e)) => format!("{} {}", e.code, e.reason),
        Err(e) => format!("error {e}"),
    }
}

/// The next `n` watch events as `TYPE name`, failing on an error event or a closed stream.
async fn next_events<K, S>(stream: &mut S, n: usize) -> Vec<String>
where
    K: kube::Resource,
    S: futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    let mut seen = Vec::new();
    while seen.len() < n {
        let event = tokio::time::timeout(PATIENCE, stream.try_next())
            .await
            .expect("a watch event in time")
            .expect("the watch stream works")
            .expect("the watch stream stays open");
        match event {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.name_any())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    seen
}

/// DELETE of an object with finalizers marks it (deletionTimestamp) and keeps it until the
/// finalizers are gone; then it goes, and watchers see DELETED.
pub async fn finalizers_hold_a_deleted_object(client: Client, ns: &str) -> Transcript {
    let maps: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut t = Transcript::new();
    maps.create(&PostParams::default(), &config_map("held", &[HOLD])).await.unwrap();
    let watch_from = maps.get("held").await.unwrap().resource_version().unwrap();
    let mut events =
        maps.watch(&WatchParams::default().fields("metadata.name=held"), &watch_from).await.unwrap().boxed();

    let answer = maps.delete("held", &DeleteParams::default()).await.unwrap();
    t.push(format!("delete answers {}", if answer.is_left() { "the object, still there" } else { "a Status" }));
    let marked = maps.get("held").await.expect("still there after delete");
    t.push(format!(
        "after delete: deletionTimestamp {}, finalizers {:?}",
        if marked.metadata.deletion_timestamp.is_some() { "set" } else { "unset" },
        marked.finalizers()
    ));
    assert!(marked.metadata.deletion_timestamp.is_some(), "delete marks an object with finalizers");

    // Deleting again changes nothing.
    let again = maps.delete("held", &DeleteParams::default()).await;
    t.push(format!("second delete: {}", outcome(&again)));
    let same = maps.get("held").await.unwrap();
    t.push(format!(
        "second delete keeps the deletionTimestamp: {}",
        same.metadata.deletion_timestamp == marked.metadata.deletion_timestamp
    ));

    // A marked object still takes writes; a create of its name is refused.
    let patched =
        maps.patch("held", &PatchParams::default(), &Patch::Merge(json!({"data": {"b": "2"}}))).await.map(drop);
    t.push(format!("data patch while deleting: {}", outcome(&patched)));
    let recreate = maps.create(&PostParams::default(), &config_map("held", &[])).await;
    t.push(format!("create of the same name while deleting: {}", outcome(&recreate)));
    let new_finalizer = maps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [HOLD, "scenarios.keyward.dev/late"]}})),
        )
        .await;
    t.push(format!("adding a finalizer while deleting: {}", outcome(&new_finalizer)));

    let released =
        maps.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await;
    t.push(format!("releasing the last finalizer: {}", outcome(&released)));
    let gone = maps.get_opt("held").await.unwrap();
    t.push(format!("after release: {}", if gone.is_some() { "still there" } else { "gone" }));
    assert!(gone.is_none(), "the object goes with its last finalizer");
    let seen = next_events(&mut events, 3).await;
    t.push(format!("watch saw: {}", seen.join(", ")));
    assert_eq!(seen.last().map(String::as_str), Some("DELETED held"), "watchers see the deletion: {seen:?}");

    // Without finalizers a delete is immediate and answers a Status.
    maps.create(&PostParams::default(), &config_map("free", &[])).await.unwrap();
    let answer = maps.delete("free", &DeleteParams::default()).await.unwrap();
    t.push(format!("delete without finalizers answers {}", if answer.is_left() { "the object" } else { "a Status" }));
    t.push(format!("then: {}", if maps.get_opt("free").await.unwrap().is_some() { "still there" } else { "gone" }));
    t
}

/// A Secret owned by an object goes when its owner is deleted (the garbage collector), and
/// watchers of Secrets see it go.
pub async fn owned_objects_go_with_their_owner(client: Client, ns: &str) -> Transcript {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client, ns);
    let mut t = Transcript::new();
    let parent = maps.create(&PostParams::default(), &config_map("owner", &[])).await.unwrap();
    let child: Secret = serde_json::from_value(json!({
        "metadata": {"name": "owned", "labels": {"scenario": "yes"}, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": parent.uid().unwrap(),
        }]},
        "stringData": {"a": "1"},
    }))
    .unwrap();
    let child = secrets.create(&PostParams::default(), &child).await.unwrap();
    let from = child.resource_version().unwrap();
    let mut events = secrets.watch(&WatchParams::default().labels("scenario=yes"), &from).await.unwrap().boxed();
    maps.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the owned Secret gone", PATIENCE, || async {
        secrets.get_opt("owned").await.unwrap().is_none().then_some(())
    })
    .await;
    t.push("the owned Secret goes with its owner".to_owned());
    let seen = next_events(&mut events, 1).await;
    t.push(format!("a watch on Secrets saw: {}", seen.join(", ")));
    assert_eq!(seen, ["DELETED owned"]);
    t
}

/// Server-side apply removes what the same manager applied before and leaves out now, and
/// keeps what another manager applied too.
pub async fn apply_removes_what_a_manager_stops_applying(client: Client, ns: &str) -> Transcript {
    let maps: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut t = Transcript::new();
    let apply = |manager: &'static str, labels: Value, data: Value| {
        let maps = maps.clone();
        async move {
            let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "applied", "labels": labels}, "data": data});
            maps.patch("applied", &PatchParams::apply(manager).force(), &Patch::Apply(config)).await.unwrap()
        }
    };
    apply("scenarios", json!({"a": "1", "b": "2"}), json!({"x": "1", "y": "2"})).await;
    apply("other", json!({"c": "3"}), json!({"y": "2"})).await;
    let after = apply("scenarios", json!({"a": "1"}), json!({"x": "1"})).await;
    let keys = |map: Option<&std::collections::BTreeMap<String, String>>| {
        map.map(|m| m.keys().cloned().collect::<Vec<_>>().join(",")).unwrap_or_default()
    };
    t.push(format!("labels after the second apply: {}", keys(after.metadata.labels.as_ref())));
    t.push(format!("data after the second apply: {}", keys(after.data.as_ref())));
    assert_eq!(keys(after.metadata.labels.as_ref()), "a,c", "b went, c is another manager's");
    assert_eq!(keys(after.data.as_ref()), "x,y", "y is another manager's too");
    t
}

/// `?dryRun=All` answers as the write would, and stores nothing.
pub async fn dry_run_never_persists(client: Client, ns: &str) -> Transcript {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    let dry_patch = PatchParams { dry_run: true, ..PatchParams::default() };
    let mut t = Transcript::new();

    let created = maps.create(&dry, &config_map("dry", &[])).await;
    t.push(format!("dry-run create: {}", outcome(&created)));
    t.push(format!(
        "dry-run create answers data a={:?}",
        created.as_ref().ok().and_then(|c| c.data.as_ref()?.get("a").cloned())
    ));
    t.push(format!("after dry-run create: {:?}", maps.get_opt("dry").await.unwrap().map(|m| m.name_any())));

    let stored = maps.create(&PostParams::default(), &config_map("kept", &[])).await.unwrap();
    let mut changed = stored.clone();
    changed.data = Some([("a".to_owned(), "replaced".to_owned())].into());
    let replaced = maps.replace("kept", &dry, &changed).await;
    t.push(format!(
        "dry-run replace: {}, answers a={:?}",
        outcome(&replaced),
        replaced.as_ref().ok().and_then(|c| c.data.as_ref()?.get("a").cloned())
    ));
    let patched = maps.patch("kept", &dry_patch, &Patch::Merge(json!({"data": {"a": "patched"}}))).await;
    t.push(format!(
        "dry-run merge patch: {}, answers a={:?}",
        outcome(&patched),
        patched.as_ref().ok().and_then(|c| c.data.as_ref()?.get("a").cloned())
    ));
    let applied = maps
        .patch(
            "kept",
            &PatchParams { dry_run: true, ..PatchParams::apply("scenarios").force() },
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "applied"}})),
        )
        .await;
    t.push(format!("dry-run apply: {}", outcome(&applied)));
    let deleted = maps.delete("kept", &DeleteParams { dry_run: true, ..DeleteParams::default() }).await;
    t.push(format!("dry-run delete: {}", outcome(&deleted)));
    let after = maps.get("kept").await.expect("still stored after a dry-run delete");
    t.push(format!(
        "after dry-runs: a={:?}, resourceVersion unchanged: {}",
        after.data.as_ref().and_then(|d| d.get("a")),
        after.resource_version() == stored.resource_version()
    ));
    assert_eq!(after.resource_version(), stored.resource_version(), "no dry run wrote anything");

    // An ApiKey dry run is validated like a real one and stored never.
    let keys = api_keys(&client, ns);
    let valid = keys.create(&dry, &api_key("dry-key", &json!({"scopes": ["orders:read"]}))).await;
    t.push(format!("dry-run create of a valid ApiKey: {}", outcome(&valid)));
    let invalid = keys.create(&dry, &api_key("dry-bad", &json!({"scopes": []}))).await;
    t.push(format!("dry-run create of an invalid ApiKey: {}", outcome(&invalid)));
    t.push(format!("ApiKeys stored: {}", keys.list(&ListParams::default()).await.unwrap().items.len()));
    t
}

/// A watch without a resourceVersion (or with "0") first sends ADDED for what exists.
pub async fn a_watch_from_nothing_lists_first(client: Client, ns: &str) -> Transcript {
    let maps: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut t = Transcript::new();
    for name in ["one", "two"] {
        maps.create(&PostParams::default(), &config_map(name, &[])).await.unwrap();
    }
    for version in ["0", ""] {
        let mut events = maps.watch(&WatchParams::default().labels("scenario=yes"), version).await.unwrap().boxed();
        let mut initial = next_events(&mut events, 2).await;
        initial.sort();
        t.push(format!("watch from {version:?} starts with: {}", initial.join(", ")));
        assert_eq!(initial, ["ADDED one", "ADDED two"], "a watch from {version:?} lists first");
    }
    let mut events = maps.watch(&WatchParams::default().labels("scenario=yes"), "0").await.unwrap().boxed();
    next_events(&mut events, 2).await;
    maps.create(&PostParams::default(), &config_map("three", &[])).await.unwrap();
    maps.patch("three", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await.unwrap();
    maps.delete("three", &DeleteParams::default()).await.unwrap();
    let seen = next_events(&mut events, 3).await;
    t.push(format!("then: {}", seen.join(", ")));
    assert_eq!(seen, ["ADDED three", "MODIFIED three", "DELETED three"]);
    t
}

/// `metadata.generation` of an ApiKey moves with its spec only: not with labels,
/// annotations, finalizers or status.
pub async fn generation_follows_the_spec_only(client: Client, ns: &str) -> Transcript {
    let keys = api_keys(&client, ns);
    let mut t = Transcript::new();
    keys.create(&PostParams::default(), &api_key("gen", &json!({"scopes": ["orders:read"]}))).await.unwrap();
    t.push(generation(&keys, "created").await);
    merge(&keys, json!({"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}})).await;
    t.push(generation(&keys, "labels and annotations").await);
    merge(&keys, json!({"metadata": {"finalizers": [HOLD]}})).await;
    t.push(generation(&keys, "a finalizer").await);
    keys.patch_status("gen", &PatchParams::default(), &Patch::Merge(json!({"status": {"state": "Active"}})))
        .await
        .unwrap();
    t.push(generation(&keys, "status").await);
    merge(&keys, json!({"spec": {"scopes": ["orders:read"]}})).await;
    t.push(generation(&keys, "the same spec again").await);
    merge(&keys, json!({"spec": {"scopes": ["orders:write"]}})).await;
    t.push(generation(&keys, "a new scope").await);
    keys.delete("gen", &DeleteParams::default()).await.unwrap();
    t.push(generation(&keys, "delete (held by a finalizer)").await);
    merge(&keys, json!({"metadata": {"finalizers": null}})).await;
    let maps: Api<ConfigMap> = Api::namespaced(client, ns);
    maps.create(&PostParams::default(), &config_map("plain", &[])).await.unwrap();
    maps.patch("plain", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await.unwrap();
    t.push(format!("a ConfigMap, changed: generation {:?}", maps.get("plain").await.unwrap().metadata.generation));
    assert_eq!(
        t[..6],
        [
            "created: generation Some(1)",
            "labels and annotations: generation Some(1)",
            "a finalizer: generation Some(1)",
            "status: generation Some(1)",
            "the same spec again: generation Some(1)",
            "a new scope: generation Some(2)",
        ]
    );
    t
}

async fn generation(keys: &Api<DynamicObject>, step: &str) -> String {
    format!("{step}: generation {:?}", keys.get("gen").await.unwrap().metadata.generation)
}

async fn merge(keys: &Api<DynamicObject>, patch: Value) {
    keys.patch("gen", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
}

/// Events written through either API (core/v1, as `kubectl` and older clients do, or
/// events.k8s.io/v1, as keyward does) are accepted and seen through both.
pub async fn events_are_one_resource_under_two_apis(client: Client, ns: &str) -> Transcript {
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let new: Api<NewEvent> = Api::namespaced(client.clone(), ns);
    let mut t = Transcript::new();
    let regarding = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "namespace": ns});
    let old_style: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "core-event"}, "involvedObject": regarding, "reason": "FromCore",
        "message": "written through core/v1", "type": "Normal", "source": {"component": "scenarios"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1,
    }))
    .unwrap();
    t.push(format!("core/v1 create: {}", outcome(&core.create(&PostParams::default(), &old_style).await)));
    let new_style: NewEvent = serde_json::from_value(json!({
        "metadata": {"name": "new-event"}, "regarding": regarding, "reason": "FromEvents", "note": "written through events.k8s.io",
        "type": "Normal", "action": "Test", "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "scenarios.keyward.dev/test", "reportingInstance": "scenarios",
    }))
    .unwrap();
    t.push(format!("events.k8s.io create: {}", outcome(&new.create(&PostParams::default(), &new_style).await)));

    let through_core =
        sorted(core.list(&ListParams::default()).await.unwrap().items.iter().map(|e| (&e.reason, &e.message)));
    t.push(format!("core/v1 lists (reason/message): {through_core}"));
    let through_new =
        sorted(new.list(&ListParams::default()).await.unwrap().items.iter().map(|e| (&e.reason, &e.note)));
    t.push(format!("events.k8s.io lists (reason/note): {through_new}"));
    let selected = core.list(&ListParams::default().fields("reason=FromEvents")).await.unwrap().items;
    let selected = sorted(selected.iter().map(|e| (&e.reason, &e.message)));
    t.push(format!("core/v1 lists with fieldSelector reason=FromEvents: {selected}"));
    let one = core.get("new-event").await.map(|e| e.involved_object.name.unwrap_or_default());
    t.push(format!("core/v1 get of the events.k8s.io Event: involvedObject {one:?}", one = one.ok()));
    let regarding_name = new.get("core-event").await.ok().and_then(|e| e.regarding?.name);
    t.push(format!("events.k8s.io get of the core/v1 Event: regarding {regarding_name:?}"));
    let both = "FromCore/written through core/v1, FromEvents/written through events.k8s.io";
    assert_eq!(through_core, both, "both Events through core/v1");
    assert_eq!(through_new, both, "both Events through events.k8s.io");
    t
}

/// `reason/text` of each Event, sorted, as one line.
fn sorted<'a>(events: impl Iterator<Item = (&'a Option<String>, &'a Option<String>)>) -> String {
    let mut lines: Vec<String> = events
        .map(|(reason, text)| format!("{}/{}", reason.as_deref().unwrap_or(""), text.as_deref().unwrap_or("")))
        .collect();
    lines.sort();
    lines.join(", ")
}

/// One case of `tests/admission/cases.yaml`: a spec (and for updates the stored old one), and
/// what admission says of it.
#[derive(serde::Deserialize)]
pub struct Case {
    pub name: String,
    pub spec: Value,
    #[serde(default)]
    pub old: Option<Value>,
    #[serde(default)]
    pub refused: Vec<String>,
}

/// The shared admission table.
pub fn cases() -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admission/cases.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("tests/admission/cases.yaml parses")
}

/// The server's verdict on a case: `Ok`, or the message of its 422 (dry-run create, or a
/// stored old object and a dry-run update).
pub async fn verdict(keys: &Api<DynamicObject>, index: usize, case: &Case) -> Result<(), String> {
    let name = format!("case-{index}");
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let result = match &case.old {
        None => keys.create(&dry_run, &api_key(&name, &case.spec)).await.map(drop),
        Some(old) => {
            let stored =
                keys.create(&PostParams::default(), &api_key(&name, old)).await.expect("the old spec is stored");
            let mut new = api_key(&name, &case.spec);
            new.metadata.resource_version = stored.metadata.resource_version;
            keys.replace(&name, &dry_run, &new).await.map(drop)
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 422 && e.reason == "Invalid" => Err(e.message),
        Err(e) => panic!("case {}: unexpected answer {e}", case.name),
    }
}

/// Whether a refusal names what the table expects: a schema error by its field path, a CEL
/// rule by its message.
pub fn names_expected(message: &str, expected: &str) -> bool {
    let wanted = match expected.split_once(": ") {
        Some((pointer, _keyword)) if pointer.starts_with('/') => field_path(pointer),
        _ => expected.to_owned(),
    };
    message.contains(&wanted)
}

/// Every case of the admission table: accepted or refused with 422 Invalid naming the field
/// or rule; and an invalid ApiKey written for real is refused and not stored.
pub async fn invalid_api_keys_are_refused(client: Client, ns: &str) -> Transcript {
    let keys = api_keys(&client, ns);
    let mut t = Transcript::new();
    for (index, case) in cases().iter().enumerate() {
        let line = match verdict(&keys, index, case).await {
            Ok(()) => "accepted".to_owned(),
            Err(message) => {
                let missing: Vec<&String> = case.refused.iter().filter(|e| !names_expected(&message, e)).collect();
                if missing.is_empty() { "refused as expected".to_owned() } else { format!("refused: {message}") }
            }
        };
        let expected = if case.refused.is_empty() { "accepted" } else { "refused as expected" };
        assert_eq!(line, expected, "case {}", case.name);
        t.push(format!("{}: {line}", case.name));
    }
    let refused = keys.create(&PostParams::default(), &api_key("bad", &json!({"scopes": ["not a scope"]}))).await;
    let status = match &refused {
        Err(kube::Error::Api(e)) => format!("{} {} {:?}", e.code, e.reason, e.status),
        other => format!("{:?}", other.as_ref().map(|_| "stored")),
    };
    t.push(format!("create of an invalid ApiKey: {status}"));
    t.push(format!("stored: {}", keys.get_opt("bad").await.unwrap().is_some()));
    t
}

/// With an operator running on the cluster: a new key becomes Ready with its token in an
/// owned Secret and only its hash published; deleting it unpublishes the hash, releases the
/// finalizer, and the Secret goes with its owner.
pub async fn the_operator_carries_a_key_from_create_to_delete(client: Client, ns: &str) -> Transcript {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut t = Transcript::new();
    let key: ApiKey = serde_yaml::from_str(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read]}\n",
    )
    .unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();
    let ready = eventually("the ApiKey Ready", PATIENCE, || async {
        let key = keys.get("crm").await.unwrap();
        let status = key.status.clone()?;
        let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && status.observed_generation == key.metadata.generation).then_some(key)
    })
    .await;
    t.push(format!("ready: state {:?}, finalizers {:?}", ready.status.as_ref().unwrap().state, ready.finalizers()));
    let token = eventually("the token in the Secret", PATIENCE, || async {
        let raw = secrets.get_opt("crm-apikey").await.unwrap()?.data?.remove("token")?.0;
        Token::parse(std::str::from_utf8(&raw).ok()?).ok()
    })
    .await;
    let secret = secrets.get("crm-apikey").await.unwrap();
    let owners: Vec<String> = secret.owner_references().iter().map(|o| format!("{} {}", o.kind, o.name)).collect();
    t.push(format!("Secret owned by {owners:?}"));
    let published = |maps: Api<ConfigMap>| async move {
        let shards = maps.list(&ListParams::default().labels("keyward.dev/keyset=default")).await.unwrap();
        let mut hashes = Vec::new();
        for map in shards.items {
            for text in map.data.unwrap_or_default().into_values() {
                hashes.extend(decode_shard(text.as_bytes()).unwrap().records.into_iter().map(|r| r.hash.to_string()));
            }
        }
        hashes
    };
    let hashes = eventually("the hash published", PATIENCE, || async {
        let hashes = published(maps.clone()).await;
        (!hashes.is_empty()).then_some(hashes)
    })
    .await;
    t.push(format!("published exactly the Secret's token's hash: {}", hashes == [token.hash().to_string()]));

    keys.delete("crm", &DeleteParams::default()).await.unwrap();
    eventually("the ApiKey gone", PATIENCE, || async { keys.get_opt("crm").await.unwrap().is_none().then_some(()) })
        .await;
    t.push("ApiKey gone after delete".to_owned());
    t.push(format!("hashes published after delete: {}", published(maps.clone()).await.len()));
    eventually("the Secret gone with its owner", PATIENCE, || async {
        secrets.get_opt("crm-apikey").await.unwrap().is_none().then_some(())
    })
    .await;
    t.push("Secret gone with its owner".to_owned());
    t
}

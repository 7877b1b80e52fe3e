//! The demo's key classes: the three ApiKeyClasses of `examples/classes`, one key of each,
//! what each key's scopes allow, and keys that break their class.
//!
//! The classes are the examples' own, renamed `demo-client`, `demo-partner` and
//! `demo-internal` (they are cluster-wide: a demo on a real cluster must not overwrite
//! classes of the same name) and selecting the namespace `demo` by its
//! `kubernetes.io/metadata.name` label instead of `keyward.dev/tenant`, since the demo
//! runs in one namespace. On an API server with the class ValidatingAdmissionPolicy
//! installed (`manifests/classes/`) a key breaking its class is refused at admission; without
//! it (the in-memory API, or a cluster without the policy) the operator's own check holds
//! it back. The step shows whichever happened.

use anyhow::Context as _;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;

use super::super::client::Credential;
use super::super::{Demo, NAMESPACE};
use super::{Checks, MissingContext, eventually, heading};
use crate::api::{ApiKey, ApiKeyClass, KeyState, NamespaceSelector};
use crate::token::Token;

const CLASSES: &str = include_str!("../../../examples/classes/classes.yaml");
const KEYS: &str = include_str!("../../../examples/classes/keys.yaml");
const CLIENT_KEY: &str = include_str!("../../../examples/classes/client-key.yaml");

/// The label every namespace carries with its own name (set by the API server).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The key set the demo publishes every class key to: its verifier serves the example key
/// sets, and a verifier is not ready until every key set it mounts has loaded once.
const KEY_SET: &str = "default";

/// The demo's name of example class `name`.
fn demo_class(name: &str) -> String {
    format!("demo-{name}")
}

/// Every document of a multi-document YAML text.
fn documents<T: for<'de> Deserialize<'de>>(text: &str) -> anyhow::Result<Vec<T>> {
    serde_yaml::Deserializer::from_str(text).map(|doc| T::deserialize(doc).map_err(anyhow::Error::from)).collect()
}

/// The example classes as the demo applies them.
fn classes() -> anyhow::Result<Vec<ApiKeyClass>> {
    let mut classes: Vec<ApiKeyClass> = documents(CLASSES)?;
    for class in &mut classes {
        class.metadata.name = class.metadata.name.as_deref().map(demo_class);
        let mut selector = NamespaceSelector::default();
        selector.match_labels.insert(NAME_LABEL.to_owned(), NAMESPACE.to_owned());
        class.spec.namespace_selector = Some(selector);
        if let Some(sets) = class.spec.allowed_key_sets.as_mut().filter(|s| !s.iter().any(|s| s == KEY_SET)) {
            sets.push(KEY_SET.to_owned());
        }
    }
    Ok(classes)
}

/// The example keys, one per class, in the demo namespace; the client key expires 60 days
/// from now (its class allows at most 90 days from creation, which the API server stamps).
fn keys(now: Timestamp) -> anyhow::Result<Vec<ApiKey>> {
    let mut keys: Vec<ApiKey> = documents(KEYS)?;
    let expires = now.checked_add(SignedDuration::from_hours(60 * 24))?;
    keys.extend(documents::<ApiKey>(&CLIENT_KEY.replace("EXPIRES_AT", &expires.to_string()))?);
    for key in &mut keys {
        key.metadata.namespace = Some(NAMESPACE.to_owned());
        key.spec.class_name = key.spec.class_name.as_deref().map(demo_class);
        KEY_SET.clone_into(&mut key.spec.key_set);
    }
    keys.sort_by_key(|k| k.spec.class_name.clone());
    Ok(keys)
}

/// The namespace carries its name label (the real API server sets it; the in-memory one is told).
async fn label_namespace(demo: &Demo) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(demo.client.clone());
    let labels = json!({"metadata": {"labels": {NAME_LABEL: NAMESPACE}}});
    if namespaces.get_opt(NAMESPACE).await?.is_some() {
        namespaces.patch(NAMESPACE, &PatchParams::default(), &Patch::Merge(labels)).await?;
    } else {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": NAMESPACE, "labels": {NAME_LABEL: NAMESPACE}}}))?;
        namespaces.create(&PostParams::default(), &namespace).await?;
    }
    Ok(())
}

/// Create the classes, or replace them (a second demo on the same cluster).
async fn apply_classes(demo: &Demo) -> anyhow::Result<Vec<String>> {
    let api: Api<ApiKeyClass> = Api::all(demo.client.clone());
    let mut names = Vec::new();
    for mut class in classes()? {
        let name = class.metadata.name.clone().context_missing("an example class's name")?;
        match api.get_opt(&name).await? {
            Some(existing) => {
                class.metadata.resource_version = existing.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &class).await
            }
            None => api.create(&PostParams::default(), &class).await,
        }
        .with_context(|| format!("writing ApiKeyClass {name}"))?;
        names.push(name);
    }
    Ok(names)
}

/// Wait until the verifier knows `token` (anything but 401): a new key's hash reaches it
/// with the next volume sync.
async fn until_known(demo: &Demo, token: &Token) -> bool {
    eventually(|| async {
        let answer = demo.caller.send("GET", "/", &Credential::Bearer(token)).await.ok()?;
        (answer.status != 401).then_some(())
    })
    .await
    .is_some()
}

/// The Ready condition's (status, reason, message), once it has `reason`.
async fn ready_with(demo: &Demo, name: &str, reason: &str) -> Option<(String, String, String)> {
    eventually(|| async {
        let ready = demo.key(name).await?.status?.conditions.into_iter().next()?;
        (ready.reason == reason).then_some((ready.status, ready.reason, ready.message))
    })
    .await
}

/// Key classes: the three classes, a key of each, and a key that breaks its class.
pub(super) async fn classes_step(demo: &Demo, number: usize, checks: &mut Checks) -> anyhow::Result<()> {
    heading(number, "Key classes: client, partner and internal keys, each bounded by its ApiKeyClass");
    label_namespace(demo).await?;
    let names = apply_classes(demo).await?;
    println!("    $ kubectl apply -f examples/classes/classes.yaml    # as {}", names.join(", "));
    println!("      (namespaceSelector: the namespace {NAMESPACE}, instead of the label keyward.dev/tenant;");
    println!("       every key in key set {KEY_SET}, which each class allows here: the demo's verifier serves it)");
    let keys = keys(crate::runtime::clock::now().max(demo.now()))?;
    let api = demo.apikeys();
    for key in &keys {
        api.create(&PostParams::default(), key).await.context("creating an example class key")?;
    }
    let mut tokens: Vec<(String, Token)> = Vec::new();
    for key in &keys {
        let name = key.metadata.name.clone().unwrap_or_default();
        let class = key.spec.class_name.clone().unwrap_or_default();
        let active = demo.wait_state(&name, KeyState::Active).await;
        let held = demo.key(&name).await.and_then(|k| k.status).and_then(|s| s.class_name);
        checks.check(active && held.as_deref() == Some(class.as_str()), &format!("{name} is Active, of class {class}"));
        if let Some(token) = demo.token(&name).await {
            tokens.push((name, token));
        }
    }
    demo.print_table().await;
    class_requests(demo, &tokens, checks).await?;
    refused_new_key(demo, checks).await?;
    narrowed_key(demo, &tokens, checks).await?;
    // The steps that follow leap the clock over months: they walk the first examples only.
    let mut names: Vec<String> = keys.iter().filter_map(|k| k.metadata.name.clone()).collect();
    names.push(WRITER.to_owned());
    println!("    $ kubectl delete apikeys {}    # the steps that follow walk the first examples", names.join(" "));
    for name in &names {
        if let Err(e) = api.delete(name, &kube::api::DeleteParams::default()).await {
            anyhow::ensure!(matches!(&e, kube::Error::Api(r) if r.code == 404), "deleting {name}: {e}");
        }
    }
    let gone = eventually(|| async {
        let left = api.list(&kube::api::ListParams::default()).await.ok()?.items;
        (!left.iter().any(|k| k.metadata.name.as_ref().is_some_and(|n| names.contains(n)))).then_some(())
    })
    .await;
    checks.check(gone.is_some(), "the class keys are deleted (their hashes left the key set first)");
    Ok(())
}

/// One request or two per class key: what its scopes allow, and what they do not.
async fn class_requests(demo: &Demo, tokens: &[(String, Token)], checks: &mut Checks) -> anyhow::Result<()> {
    println!("    each key may do what its scopes say, within its class:");
    let expected: [(&str, &str, &str, u16, &str); 5] = [
        ("customer-dashboard", "GET", "/analytics", 200, "client: analytics:read allows GET /analytics"),
        ("customer-dashboard", "POST", "/orders", 403, "client: no orders:write (the class allows orders read only)"),
        ("partner-orders-sync", "POST", "/orders", 200, "partner: orders:write allows POST /orders"),
        ("partner-orders-sync", "DELETE", "/leads/7", 403, "partner: *:read does not allow DELETE /leads/7"),
        ("platform-automation", "DELETE", "/leads/7", 200, "internal: *:admin allows anything"),
    ];
    for (name, method, path, status, what) in expected {
        let token = tokens.iter().find(|(n, _)| n == name).map(|(_, t)| t).context_missing(name)?;
        checks.check(until_known(demo, token).await, &format!("the verifier knows {name}"));
        let answer = demo.call(method, path, &Credential::Bearer(token), name).await;
        checks.check(answer.status == status, what);
    }
    Ok(())
}

/// The name of the client key asking for what its class cannot grant.
const WRITER: &str = "customer-analytics-writer";

/// A new client key asking for write on analytics, which the client class cannot grant.
async fn refused_new_key(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    const NAME: &str = WRITER;
    let mut key = keys(crate::runtime::clock::now().max(demo.now()))?
        .into_iter()
        .find(|k| k.metadata.name.as_deref() == Some("customer-dashboard"))
        .context_missing("the client example key")?;
    key.metadata.name = Some(NAME.to_owned());
    key.spec.scopes = vec!["analytics:write".to_owned()];
    key.spec.secret_name = None;
    println!("    a client key asking for analytics:write (the client class allows analytics read only):");
    match demo.apikeys().create(&PostParams::default(), &key).await {
        Err(kube::Error::Api(refusal)) => {
            println!("    admission refused it: {}", refusal.message);
            checks.check(
                refusal.message.contains("allowedScopes"),
                "the ValidatingAdmissionPolicy refuses it, naming the rule",
            );
        }
        Err(other) => return Err(other.into()),
        Ok(_) => {
            let ready = ready_with(demo, NAME, "ClassViolation").await;
            if let Some((status, reason, message)) = &ready {
                println!("    {NAME}: Ready={status} ({reason}): {message}");
            }
            checks.check(
                ready.as_ref().is_some_and(|(_, _, m)| m.contains("ApiKeyClass demo-client (allowedScopes)")),
                "no admission policy here: the operator holds it back, Ready=False naming the class and rule",
            );
            checks.check(demo.state(NAME).await == Some(KeyState::Error), "its state is Error");
            checks.check(demo.token(NAME).await.is_none(), "no token is issued for it: nothing to publish");
        }
    }
    Ok(())
}

/// A working client key edited to break its class: unpublished (401), then fixed (200, same token).
async fn narrowed_key(demo: &Demo, tokens: &[(String, Token)], checks: &mut Checks) -> anyhow::Result<()> {
    const NAME: &str = "customer-dashboard";
    let token = tokens.iter().find(|(n, _)| n == NAME).map(|(_, t)| t).context_missing(NAME)?;
    let scopes = demo.key(NAME).await.map(|k| k.spec.scopes).context_missing(NAME)?;
    let mut wider = scopes.clone();
    wider.push("analytics:write".to_owned());
    println!("    {NAME} edited to add analytics:write:");
    if let Err(refused) = demo.patch(NAME, json!({"spec": {"scopes": wider}})).await {
        println!("    admission refused the edit: {refused}");
        checks.check(refused.to_string().contains("allowedScopes"), "the policy refuses the edit, naming the rule");
        return Ok(());
    }
    let ready = ready_with(demo, NAME, "ClassViolation").await;
    if let Some((status, reason, message)) = &ready {
        println!("    {NAME}: Ready={status} ({reason}): {message}");
    }
    checks.check(ready.is_some(), "the operator holds the key back: Ready=False (ClassViolation)");
    checks.check(demo.until_status(token, "/analytics", 401).await, "its hash left the key set: 401");
    demo.call("GET", "/analytics", &Credential::Bearer(token), NAME).await;
    demo.patch(NAME, json!({"spec": {"scopes": scopes}})).await?;
    println!("    ... the edit reverted:");
    checks.check(demo.until_status(token, "/analytics", 200).await, "it keeps its class again: the same token works");
    demo.call("GET", "/analytics", &Credential::Bearer(token), NAME).await;
    let satisfied = eventually(|| async {
        let events = demo.events_of(NAME, "ClassSatisfied").await;
        (!events.is_empty()).then_some(())
    })
    .await;
    checks.check(satisfied.is_some(), "with a ClassSatisfied Event (an Enabled notice for webhooks)");
    Ok(())
}

impl Demo {
    /// The notes of the key's Events of `reason`.
    async fn events_of(&self, name: &str, reason: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = events.list(&kube::api::ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        list.into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .filter_map(|e| e.note)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    #[test]
    fn the_demo_uses_the_example_classes_renamed_and_one_key_of_each() {
        let classes = classes().unwrap();
        let names: Vec<_> = classes.iter().filter_map(|c| c.metadata.name.clone()).collect();
        assert_eq!(names, ["demo-client", "demo-partner", "demo-internal"]);
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let keys = keys(now).unwrap();
        let of: Vec<_> =
            keys.iter().map(|k| (k.metadata.name.clone().unwrap(), k.spec.class_name.clone().unwrap())).collect();
        assert_eq!(
            of,
            [
                ("customer-dashboard".to_owned(), "demo-client".to_owned()),
                ("platform-automation".to_owned(), "demo-internal".to_owned()),
                ("partner-orders-sync".to_owned(), "demo-partner".to_owned()),
            ]
        );
        assert_eq!(keys[0].spec.expires_at, Some(Time("2027-01-30T00:00:00Z".parse().unwrap())));
        assert!(keys.iter().all(|k| k.spec.key_set == KEY_SET), "the demo's verifier serves {KEY_SET}");
        let partner = classes.iter().find(|c| c.metadata.name.as_deref() == Some("demo-partner")).unwrap();
        assert_eq!(partner.spec.allowed_key_sets.as_deref(), Some(&["partners".to_owned(), KEY_SET.to_owned()][..]));
    }
}

//! The organisation-wide key step: a ClusterApiKey selecting two of three labelled
//! location namespaces works with each selected namespace's verifier and is unknown to the
//! third's (docs/cluster-keys.md).
//!
//! The demo runs one verifier, for namespace `demo`. A location's verifier is stood for by
//! the index a verifier builds from that namespace's published key-set ConfigMaps, decided on
//! by the verifier's own [`decide`] and answered with its HTTP status.

use std::time::Duration;

use anyhow::Context;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use super::{Checks, MissingContext, eventually, heading};
use crate::api::{ClusterApiKey, KeyState};
use crate::demo::Demo;
use crate::plan::DATA_TOKEN;
use crate::token::Token;
use crate::verifier::decision::{Now, Outcome, Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::routes::Routes;

/// The ClusterApiKey the step creates.
const KEY: &str = "acme-agency";
/// The label that selects the agency's locations.
const AGENCY_LABEL: (&str, &str) = ("crm.example.com/agency", "acme");
/// The locations: the first two belong to the agency (the first holds the token's Secret).
const LOCATIONS: [(&str, bool); 3] = [("location-north", true), ("location-south", true), ("location-west", false)];
/// The request each location's verifier decides on (the key has `contacts:read`).
const PATH: &str = "/contacts/1";

/// Step `number`: create the locations and the agency key, wait until it is published, and
/// have each location's verifier decide on a request carrying its token.
pub(super) async fn cluster_key(demo: &Demo, number: usize, checks: &mut Checks) -> anyhow::Result<()> {
    heading(number, "An agency key (ClusterApiKey): one token, valid in two namespaces, unknown in a third");
    create_locations(demo).await?;
    let keys: Api<ClusterApiKey> = Api::all(demo.client.clone());
    anyhow::ensure!(
        keys.get_opt(KEY).await.context("reading ClusterApiKeys (is crds/clusterapikey.yaml installed?)")?.is_none(),
        "ClusterApiKey {KEY} already exists (an earlier run?): `kubectl delete clusterapikey {KEY}` first"
    );
    let key: ClusterApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterApiKey",
        "metadata": {"name": KEY},
        "spec": {
            "displayName": "Acme agency key",
            "scopes": ["contacts:read", "leads:read"],
            "secretNamespace": LOCATIONS[0].0,
            "namespaceSelector": {"matchLabels": {AGENCY_LABEL.0: AGENCY_LABEL.1}},
        },
    }))?;
    keys.create(&PostParams::default(), &key).await?;
    println!("    $ kubectl apply -f acme-agency.yaml    # namespaceSelector: {}={}", AGENCY_LABEL.0, AGENCY_LABEL.1);

    let selected: Vec<String> = LOCATIONS.iter().filter(|(_, s)| *s).map(|(n, _)| (*n).to_owned()).collect();
    let ready = eventually(|| async {
        let key = keys.get_opt(KEY).await.ok()??;
        let status = key.status.clone()?;
        (status.key.state == Some(KeyState::Active) && status.namespaces == selected).then_some(key)
    })
    .await;
    checks.check(ready.is_some(), &format!("{KEY} is Active and published in {}", selected.join(", ")));
    let Some(key) = ready else { return Ok(()) };
    let status = key.status.clone().unwrap_or_default();
    println!("\n  $ kubectl get clusterapikey {KEY}");
    println!("  {:<13} {:<8} {:<14} {:<36} SECRET NAMESPACE", "NAME", "STATE", "PREFIX", "NAMESPACES");
    println!(
        "  {KEY:<13} {:<8} {:<14} {:<36} {}",
        "Active",
        status.key.prefix.as_deref().unwrap_or("-"),
        status.namespaces.join(","),
        key.spec.secret_namespace
    );

    let token = cluster_token(demo, &key).await.context_missing("the agency key's token")?;
    for (namespace, selected) in LOCATIONS {
        let expected = if selected { 200 } else { 401 };
        let answer = eventually(|| async {
            let answer = location_answer(demo, namespace, &token).await.ok()?;
            (answer.0 == expected).then_some(answer)
        })
        .await;
        let (status, reason) = answer.unwrap_or((0, "no such answer in time"));
        println!("    GET    {PATH:<16} {:<24} -> {status} {reason}", format!("verifier of {namespace}"));
        let what = if selected {
            format!("{namespace} is selected: its verifier allows the agency key (200)")
        } else {
            format!("{namespace} is not selected: its verifier does not know the agency key (401)")
        };
        checks.check(status == expected, &what);
    }
    Ok(())
}

/// Create the three location namespaces (the first two labelled), keeping any that exist.
async fn create_locations(demo: &Demo) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(demo.client.clone());
    for (name, selected) in LOCATIONS {
        let labels = if selected { json!({AGENCY_LABEL.0: AGENCY_LABEL.1}) } else { json!({}) };
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels},
        }))?;
        if namespaces.get_opt(name).await?.is_none() {
            namespaces.create(&PostParams::default(), &namespace).await?;
        }
        let shown =
            if selected { format!("{}={}", AGENCY_LABEL.0, AGENCY_LABEL.1) } else { "(no agency label)".into() };
        println!("    namespace {name:<16} {shown}");
    }
    Ok(())
}

/// The token a workload of the Secret's namespace would read now.
async fn cluster_token(demo: &Demo, key: &ClusterApiKey) -> Option<Token> {
    let name = crate::plan::secret_name(&crate::plan::cluster::view(key));
    let secrets: Api<Secret> = Api::namespaced(demo.client.clone(), &key.spec.secret_namespace);
    let data = secrets.get_opt(&name).await.ok().flatten()?.data?;
    Token::parse(std::str::from_utf8(&data.get(DATA_TOKEN)?.0).ok()?).ok()
}

/// What a verifier of `namespace`'s key set `default` answers to `GET` [`PATH`] with `token`:
/// its HTTP status and reason. Its index is built from the namespace's published key-set
/// ConfigMaps (none: an empty key set, as a verifier of an unselected namespace has).
async fn location_answer(demo: &Demo, namespace: &str, token: &Token) -> anyhow::Result<(u16, &'static str)> {
    let configmaps: Api<ConfigMap> = Api::namespaced(demo.client.clone(), namespace);
    let list = configmaps.list(&ListParams::default().labels(&crate::configmap::label_selector("default"))).await?;
    let sets = if list.items.is_empty() {
        Vec::new()
    } else {
        crate::keyset::assemble(crate::configmap::read_shards(&list.items)?)?
    };
    let index = KeyIndex::build(sets, None)?;
    let bearer = format!("Bearer {}", token.expose());
    let request = Request { method: "GET", uri: PATH, authorization: [bearer.as_bytes()].into_iter() };
    let now = Now { wall: demo.now(), monotonic: Duration::from_secs(1) };
    let decision = decide(&index, &Routes::default(), request, now);
    let status = match decision.outcome {
        Outcome::Allowed => 200,
        _ => crate::verifier::respond::denied(&decision).status().as_u16(),
    };
    Ok((status, decision.outcome.as_str()))
}

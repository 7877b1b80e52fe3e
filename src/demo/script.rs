//! The walkthrough: each step changes something the way a user would, waits
//! for the operator and the verifier to act, and checks what they did.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use jiff::SignedDuration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use super::client::{Answer, Credential};
use super::{Demo, NAMESPACE, VERIFIER_POD, apikeys_table};
use crate::api::{ApiKey, KeySet, KeyState, ROTATE_ANNOTATION};
use crate::configmap::any_keyset_selector;
use crate::keyset::RecordState;
use crate::plan::{DATA_TOKEN, secret_name};
use crate::token::{Prefix, Token};
use crate::verifier::Running;

mod cluster;

/// How long any one expectation may take to come true, in real time.
const PATIENCE: Duration = Duration::from_secs(60);

/// Checks made so far.
struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            println!("    ok    {what}");
        } else {
            self.failed.push(what.to_owned());
            println!("    FAIL  {what}");
        }
    }
}

fn heading(number: usize, title: &str) {
    println!("\n== {number}. {title}");
}

/// Poll `probe` until it returns `Some`, or give up after [`PATIENCE`].
async fn eventually<T, F, Fut>(mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Demo {
    fn apikeys(&self) -> Api<ApiKey> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn key(&self, name: &str) -> Option<ApiKey> {
        self.apikeys().get_opt(name).await.ok().flatten()
    }

    async fn state(&self, name: &str) -> Option<KeyState> {
        self.key(name).await.and_then(|k| k.status).and_then(|s| s.state)
    }

    /// The token a workload mounting the key's Secret would read now.
    async fn token(&self, name: &str) -> Option<Token> {
        let key = self.key(name).await?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        let data = secrets.get_opt(&secret_name(&key)).await.ok().flatten()?.data?;
        let text = String::from_utf8(data.get(DATA_TOKEN)?.0.clone()).ok()?;
        Token::parse(&text).ok()
    }

    async fn wait_state(&self, name: &str, state: KeyState) -> bool {
        eventually(|| async { (self.state(name).await == Some(state)).then_some(()) }).await.is_some()
    }

    async fn patch(&self, name: &str, patch: serde_json::Value) -> anyhow::Result<()> {
        self.apikeys().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        Ok(())
    }

    async fn call(&self, method: &str, path: &str, credential: &Credential<'_>, label: &str) -> Answer {
        let answer = self.caller.send(method, path, credential).await.unwrap_or_else(|e| Answer {
            status: 0,
            reason: format!("request failed: {e}"),
            upstream_key_id: None,
            upstream_saw_authorization: false,
            retry_after: None,
        });
        let via = answer.upstream_key_id.as_deref().map(|id| format!(" (API saw key {id})")).unwrap_or_default();
        println!("    {method:<6} {path:<16} {label:<24} -> {} {}{via}", answer.status, answer.reason);
        answer
    }

    /// Wait until the verifier answers `status` for this token, as it will once its key set has caught up.
    async fn until_status(&self, token: &Token, path: &str, status: u16) -> bool {
        eventually(|| async {
            let answer = self.caller.send("GET", path, &Credential::Bearer(token)).await.ok()?;
            (answer.status == status).then_some(())
        })
        .await
        .is_some()
    }

    async fn print_table(&self) {
        let mut keys = self.apikeys().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        keys.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        println!(
            "\n  $ kubectl get apikeys -n {NAMESPACE}    # demo time {}",
            self.now().strftime("%Y-%m-%d %H:%M:%S UTC")
        );
        for line in apikeys_table(&keys).lines() {
            println!("  {line}");
        }
    }
}

pub(super) mod classes;

/// Run every step; `Ok(true)` when all checks passed.
pub(super) async fn walk(demo: &Demo, verifier: &Running) -> anyhow::Result<bool> {
    let mut checks = Checks { failed: Vec::new(), passed: 0 };
    create(demo, verifier, &mut checks).await?;
    requests(demo, &mut checks).await?;
    disable_and_enable(demo, &mut checks).await?;
    gate(demo, &mut checks).await?;
    classes::classes_step(demo, 5, &mut checks).await?;
    revoke(demo, &mut checks).await?;
    unused(demo, &mut checks).await?;
    expire(demo, &mut checks).await?;
    rotate(demo, &mut checks).await?;
    cluster::cluster_key(demo, 10, &mut checks).await?;
    demo.print_table().await;
    println!("\n{} passed, {} failed", checks.passed, checks.failed.len());
    for failure in &checks.failed {
        println!("  failed: {failure}");
    }
    Ok(checks.failed.is_empty())
}

async fn create(demo: &Demo, verifier: &Running, checks: &mut Checks) -> anyhow::Result<()> {
    heading(1, "Create: the operator mints tokens into Secrets and publishes their hashes");
    for name in &demo.names {
        let active = demo.wait_state(name, KeyState::Active).await;
        checks.check(active, &format!("{name} is Active"));
    }
    demo.print_table().await;

    let secrets: Api<Secret> = Api::namespaced(demo.client.clone(), NAMESPACE);
    let configmaps: Api<ConfigMap> = Api::namespaced(demo.client.clone(), NAMESPACE);
    println!("\n  Secrets (tokens live only here):");
    for name in &demo.names {
        let Some(key) = demo.key(name).await else { continue };
        let secret = secrets.get_opt(&secret_name(&key)).await?;
        let keys: Vec<String> = secret.and_then(|s| s.data).map(|d| d.into_keys().collect()).unwrap_or_default();
        println!("    {:<28} data: {}", secret_name(&key), keys.join(", "));
        checks.check(keys == [DATA_TOKEN], &format!("{name}'s Secret holds its token under `{DATA_TOKEN}`"));
    }
    println!("\n  Key-set ConfigMaps (hashes only):");
    let shards = configmaps.list(&ListParams::default().labels(&any_keyset_selector())).await?;
    for cm in &shards.items {
        let texts: Vec<String> = cm.data.clone().unwrap_or_default().into_values().collect();
        let records: usize = texts.iter().map(|t| t.lines().count().saturating_sub(1)).sum();
        println!("    {:<28} {records} records", cm.metadata.name.clone().unwrap_or_default());
        let mut leaked = false;
        for name in &demo.names {
            if let Some(token) = demo.token(name).await {
                leaked |= texts.iter().any(|t| t.contains(token.expose()));
            }
        }
        checks
            .check(!leaked, &format!("{} holds hashes, none of the tokens", cm.metadata.name.as_deref().unwrap_or("")));
    }
    // Active means published, not yet synced into the verifier's volumes: wait until the
    // verifier holds every key, so that the requests of step 2 meet the key sets in force.
    let mut tokens = Vec::new();
    for name in &demo.names {
        tokens.extend(demo.token(name).await);
    }
    let ready = eventually(|| async {
        let index = verifier.store.current()?;
        tokens.iter().all(|t| index.get(&t.hash()).is_some_and(|e| e.state == RecordState::Active)).then_some(())
    })
    .await
    .is_some();
    checks.check(ready, "the verifier loaded the key sets, with every key, and is ready");
    Ok(())
}

async fn requests(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    heading(2, "Requests through the verifier, proxying to a demo API");
    let crm = demo.token("crm-integration").await.context_missing("crm-integration's token")?;
    let analytics = demo.token("analytics-readonly").await.context_missing("analytics-readonly's token")?;
    let admin = demo.token("internal-admin").await.context_missing("internal-admin's token")?;
    let partner = demo.token("partner-orders").await.context_missing("partner-orders' token")?;
    let crm_id = crm.hash().key_id().to_string();
    let stranger = Token::generate(&Prefix::default(), &mut crate::token::os_rng());

    let a = demo.call("GET", "/leads", &Credential::Bearer(&crm), "crm-integration").await;
    checks.check(
        a.status == 200 && a.upstream_key_id.as_deref() == Some(crm_id.as_str()),
        "leads:read allows GET /leads; the API is told the key id",
    );
    checks.check(!a.upstream_saw_authorization, "the token does not reach the API (Authorization stripped)");
    let a = demo.call("POST", "/contacts", &Credential::Bearer(&crm), "crm-integration").await;
    checks.check(a.status == 200, "contacts:write allows POST /contacts");
    let a = demo.call("GET", "/orders", &Credential::Bearer(&crm), "crm-integration").await;
    checks.check(a.status == 403 && a.reason == "insufficient_scope", "no orders scope: 403 insufficient_scope");
    let a = demo.call("GET", "/analytics", &Credential::Bearer(&analytics), "analytics-readonly").await;
    checks.check(a.status == 200, "a key from the second key set (reporting) works too");
    let a = demo.call("POST", "/analytics", &Credential::Bearer(&analytics), "analytics-readonly").await;
    checks.check(a.status == 403, "read-only key: POST refused with 403");
    let a = demo.call("DELETE", "/orders/42", &Credential::Bearer(&admin), "internal-admin").await;
    checks.check(a.status == 200, "*:admin allows anything");
    let a = demo.call("GET", "/leads", &Credential::None, "(no Authorization)").await;
    checks.check(a.status == 401 && a.reason == "missing", "no token: 401 missing");
    let a = demo.call("GET", "/leads", &Credential::Raw("Bearer not-a-keyward-token"), "(malformed)").await;
    checks.check(a.status == 401 && a.reason == "malformed", "malformed token: 401 malformed");
    let a = demo.call("GET", "/leads", &Credential::Bearer(&stranger), "(well-formed, unknown)").await;
    checks.check(a.status == 401 && a.reason == "unknown", "unknown token: 401 unknown");

    println!("    ... partner-orders allows 600 requests a minute with bursts of 100; sending 150 at once");
    // At once, not one after another: the bucket refills 10 a second, and on a loaded machine
    // 150 requests in sequence can take long enough for the refill to cover them.
    let credential = Credential::Bearer(&partner);
    let answers: Vec<anyhow::Result<Answer>> = futures::stream::iter(0..150)
        .map(|_| demo.caller.send("GET", "/orders", &credential))
        .buffer_unordered(50)
        .collect()
        .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for answer in answers {
        let answer = answer?;
        if answer.status == 429 {
            retry_after = retry_after.or(answer.retry_after);
        }
        statuses.push(answer.status);
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "    {allowed} allowed, {limited} refused with 429 (Retry-After: {})",
        retry_after.as_deref().unwrap_or("-")
    );
    checks.check(
        allowed >= 100 && limited > 0 && retry_after.is_some(),
        "the burst is honoured, then 429 with Retry-After",
    );

    println!("    ... the verifier reports its counts (keyward-usage-{VERIFIER_POD}); the operator adds them up");
    let expected =
        [("crm-integration", 2), ("analytics-readonly", 1), ("internal-admin", 1), ("partner-orders", allowed)];
    for (name, count) in expected {
        let reached = eventually(|| async {
            let status = demo.key(name).await?.status?;
            let counted = status.usage.as_ref()?.last24h.allowed == u64::try_from(count).ok()?;
            (counted && status.last_used_at.is_some()).then_some(())
        })
        .await;
        checks.check(reached.is_some(), &format!("{name}: {count} allowed in status.usage.last24h, lastUsedAt set"));
    }
    demo.print_table().await;
    Ok(())
}

async fn disable_and_enable(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    heading(3, "Disable and re-enable (spec.active)");
    let crm = demo.token("crm-integration").await.context_missing("crm-integration's token")?;
    demo.patch("crm-integration", json!({"spec": {"active": false}})).await?;
    checks.check(demo.wait_state("crm-integration", KeyState::Inactive).await, "crm-integration is Inactive");
    checks.check(demo.until_status(&crm, "/leads", 401).await, "the verifier refuses it");
    demo.call("GET", "/leads", &Credential::Bearer(&crm), "crm-integration").await;
    demo.patch("crm-integration", json!({"spec": {"active": true}})).await?;
    checks.check(demo.wait_state("crm-integration", KeyState::Active).await, "crm-integration is Active again");
    checks.check(demo.until_status(&crm, "/leads", 200).await, "the same token works again");
    let same = demo.token("crm-integration").await.is_some_and(|t| t == crm);
    checks.check(same, "re-enabling kept the token (no new mint)");

    println!("    re-applying the same rotate annotation value does nothing; a new value rotates");
    let before = demo.key("crm-integration").await.and_then(|k| k.metadata.annotations).unwrap_or_default();
    let current = before.get(ROTATE_ANNOTATION).cloned().unwrap_or_default();
    demo.patch("crm-integration", json!({"metadata": {"annotations": {ROTATE_ANNOTATION: current}}})).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    checks.check(demo.token("crm-integration").await.is_some_and(|t| t == crm), "same annotation value: same token");
    demo.patch("crm-integration", json!({"metadata": {"annotations": {ROTATE_ANNOTATION: "demo-rotation-1"}}})).await?;
    let rotated = eventually(|| async { demo.token("crm-integration").await.filter(|t| *t != crm) }).await;
    checks.check(rotated.is_some(), "a new annotation value rotated the token");
    if let Some(new) = rotated {
        checks.check(demo.until_status(&new, "/leads", 200).await, "the new token works");
        checks.check(demo.until_status(&crm, "/leads", 200).await, "the old token still works during the grace period");
    }
    Ok(())
}

/// Plan gating: the platform team switches key set `default` to PaymentRequired and back.
async fn gate(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    heading(4, "Plan gating: a KeySet switches key set `default` to PaymentRequired, then back");
    let crm = demo.token("crm-integration").await.context_missing("crm-integration's token")?;
    let stranger = Token::generate(&Prefix::default(), &mut crate::token::os_rng());
    let sets: Api<KeySet> = Api::namespaced(demo.client.clone(), NAMESPACE);
    let set: KeySet = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "KeySet",
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {"access": "PaymentRequired"},
    }))?;
    sets.create(&kube::api::PostParams::default(), &set).await?;
    println!("    $ kubectl apply -f keyset-default.yaml    # access: PaymentRequired");
    checks.check(demo.until_status(&crm, "/leads", 402).await, "every key of the gated set gets 402");
    let a = demo.call("GET", "/leads", &Credential::Bearer(&crm), "crm-integration").await;
    checks.check(a.status == 402 && a.reason == "payment_required", "402 with reason payment_required");
    let a = demo.call("GET", "/leads", &Credential::Bearer(&stranger), "(well-formed, unknown)").await;
    checks.check(a.status == 401 && a.reason == "unknown", "an unknown token still gets 401: the 402 reveals nothing");
    let published = eventually(|| async {
        let status = sets.get_opt("default").await.ok().flatten()?.status?;
        (status.published_access.as_deref() == Some("PaymentRequired")).then_some(())
    })
    .await;
    checks.check(published.is_some(), "the KeySet reports publishedAccess PaymentRequired");
    sets.patch("default", &PatchParams::default(), &Patch::Merge(json!({"spec": {"access": "Enabled"}}))).await?;
    println!("    $ kubectl patch keyset default --type merge -p '{{\"spec\":{{\"access\":\"Enabled\"}}}}'");
    checks.check(demo.until_status(&crm, "/leads", 200).await, "lifting the gate: 200 again");
    demo.call("GET", "/leads", &Credential::Bearer(&crm), "crm-integration").await;
    let same = demo.token("crm-integration").await.is_some_and(|t| t == crm);
    checks.check(same, "the same token: gating never touched the key");
    Ok(())
}

async fn revoke(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    heading(6, "Revoke (spec.revoked: permanent)");
    let admin = demo.token("internal-admin").await.context_missing("internal-admin's token")?;
    demo.patch("internal-admin", json!({"spec": {"revoked": true}})).await?;
    checks.check(demo.wait_state("internal-admin", KeyState::Revoked).await, "internal-admin is Revoked");
    checks.check(demo.until_status(&admin, "/orders", 401).await, "the verifier refuses the revoked token");
    demo.call("GET", "/orders", &Credential::Bearer(&admin), "internal-admin").await;
    checks.check(demo.token("internal-admin").await.is_none(), "the token is gone from the Secret");
    checks.check(demo.key("internal-admin").await.is_some(), "the ApiKey stays as an audit record");
    Ok(())
}

/// The notes of the key's `ExpiringSoon` Events, oldest first.
async fn expiring_soon_notes(demo: &Demo, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(demo.client.clone(), NAMESPACE);
    let mut found: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ExpiringSoon")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect();
    found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    found.into_iter().filter_map(|e| e.note).collect()
}

async fn unused(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    const NAME: &str = "analytics-readonly";
    let key = demo.key(NAME).await.context_missing("the analytics-readonly ApiKey")?;
    let after = key.spec.expire_after_unused.clone().context_missing("analytics-readonly's expireAfterUnused")?;
    heading(7, &format!("Unused keys expire, with notices first ({NAME}: expireAfterUnused {after})"));
    let token = demo.token(NAME).await.context_missing("analytics-readonly's token")?;
    let status = key.status.clone().unwrap_or_default();
    let last_used = status.last_used_at.context_missing("analytics-readonly's lastUsedAt")?.0;
    let span = after.parse::<crate::duration::KeyDuration>().map_err(anyhow::Error::from)?.get();
    let deadline = last_used.checked_add(SignedDuration::try_from(span)?)?;
    println!("    {NAME} was last used at {last_used} (step 2: lastUsedAt, to the hour) and nobody uses it again:");
    println!("    it expires at {deadline}. The operator warns 15, 7 and 1 day before (--expiry-notices;");
    println!("    a key's spec.expiryNotices sets its own), with a Warning Event and the ExpiringSoon condition.");
    for (days, point) in [(15, "15d"), (7, "7d"), (1, "1d")] {
        let due = deadline.checked_sub(SignedDuration::from_hours(days * 24))?;
        let gap = demo.now().duration_until(due).checked_add(SignedDuration::from_mins(1)).unwrap_or_default();
        println!("    ... the clock leaps {} to {point} before", friendly(gap));
        demo.leap(gap);
        let wanted = format!("notice {point} before");
        let note =
            eventually(|| async { expiring_soon_notes(demo, NAME).await.into_iter().find(|n| n.contains(&wanted)) })
                .await;
        if let Some(note) = &note {
            println!("    Warning  ExpiringSoon  apikey/{NAME}  {note}");
        }
        checks.check(note.is_some(), &format!("ExpiringSoon Event {point} before expiry"));
    }
    let condition = demo
        .key(NAME)
        .await
        .and_then(|k| k.status)
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "ExpiringSoon").map(|c| (c.status, c.reason)));
    checks.check(condition == Some(("True".to_owned(), "ExpiringSoon".to_owned())), "condition ExpiringSoon is True");
    let gap = demo.now().duration_until(deadline).checked_add(SignedDuration::from_mins(1)).unwrap_or_default();
    println!("    ... the clock leaps {} to just past {deadline}", friendly(gap));
    demo.leap(gap);
    checks.check(demo.wait_state(NAME, KeyState::Expired).await, "the operator marks it Expired");
    let ready = demo.key(NAME).await.and_then(|k| k.status).and_then(|s| s.conditions.into_iter().next());
    if let Some(ready) = &ready {
        println!("    Ready={} ({}): {}", ready.status, ready.reason, ready.message);
    }
    checks.check(ready.is_some_and(|c| c.reason == "Unused"), "with reason Unused");
    checks.check(
        demo.until_status(&token, "/analytics", 401).await,
        "its hash left the key set: the verifier refuses it",
    );
    demo.call("GET", "/analytics", &Credential::Bearer(&token), NAME).await;
    let notes = expiring_soon_notes(demo, NAME).await;
    checks.check(notes.len() == 3, &format!("each notice was sent once ({} ExpiringSoon Events)", notes.len()));
    demo.print_table().await;
    Ok(())
}

async fn expire(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    heading(8, "Expire (spec.expiresAt) and retention (spec.retainExpiredFor)");
    let key = demo.key("migration-script").await.context_missing("the migration-script ApiKey")?;
    let token = demo.token("migration-script").await.context_missing("migration-script's token")?;
    let expires = key.spec.expires_at.clone().context_missing("migration-script's expiresAt")?.0;
    let a = demo.call("GET", "/appointments", &Credential::Bearer(&token), "migration-script").await;
    checks.check(a.status == 200, "before expiry the key works");
    let gap = demo.now().duration_until(expires).checked_add(SignedDuration::from_mins(1)).unwrap_or_default();
    println!("    ... the clock leaps {} to just past {expires}", friendly(gap));
    demo.clock.advance(gap);
    let a = demo.call("GET", "/appointments", &Credential::Bearer(&token), "migration-script").await;
    checks.check(
        a.status == 401 && a.reason == "expired",
        "the verifier refuses it by its own clock, before the operator acts",
    );
    demo.leap(SignedDuration::ZERO);
    checks.check(demo.wait_state("migration-script", KeyState::Expired).await, "the operator marks it Expired");
    checks.check(demo.token("migration-script").await.is_none(), "and removes the token from the Secret");
    demo.print_table().await;
    println!("    ... the clock leaps 7 days (retainExpiredFor: 7d)");
    demo.leap(SignedDuration::from_hours(7 * 24 + 1));
    let gone = eventually(|| async { demo.key("migration-script").await.is_none().then_some(()) }).await.is_some();
    checks.check(gone, "the expired ApiKey is deleted after its retention");
    Ok(())
}

async fn rotate(demo: &Demo, checks: &mut Checks) -> anyhow::Result<()> {
    heading(9, "Scheduled rotation with a grace period (partner-orders: every 90d, gracePeriod 1d)");
    let old = demo.token("partner-orders").await.context_missing("partner-orders' token")?;
    let due = demo
        .key("partner-orders")
        .await
        .and_then(|k| k.status)
        .and_then(|s| s.next_rotation_at)
        .context_missing("partner-orders' nextRotationAt")?
        .0;
    let gap = demo.now().duration_until(due).checked_add(SignedDuration::from_secs(30)).unwrap_or_default();
    println!("    ... the clock leaps {} to the rotation due at {due}", friendly(gap));
    demo.leap(gap);
    let new = eventually(|| async { demo.token("partner-orders").await.filter(|t| *t != old) }).await;
    checks.check(new.is_some(), "the operator minted, published, waited, then swapped the Secret");
    let Some(new) = new else { return Ok(()) };
    let a = demo.call("GET", "/orders", &Credential::Bearer(&new), "partner-orders (new)").await;
    checks.check(a.status == 200, "the new token works: it was published before the swap");
    let a = demo.call("GET", "/orders", &Credential::Bearer(&old), "partner-orders (old)").await;
    checks.check(a.status == 200, "the old token still works during the grace period");
    demo.print_table().await;
    println!("    ... the clock leaps 1 day and 1 minute (gracePeriod: 1d)");
    demo.leap(SignedDuration::from_mins(24 * 60 + 1));
    checks.check(demo.until_status(&old, "/orders", 401).await, "after the grace period the old token is refused");
    demo.call("GET", "/orders", &Credential::Bearer(&old), "partner-orders (old)").await;
    let a = demo.call("GET", "/orders", &Credential::Bearer(&new), "partner-orders (new)").await;
    checks.check(a.status == 200, "the new token keeps working");
    Ok(())
}

fn friendly(d: SignedDuration) -> String {
    let hours = d.as_hours();
    match (hours / 24, hours % 24) {
        (0 | 1, _) => format!("{hours} hours"),
        (days, 0) => format!("{days} days"),
        (days, hours) => format!("{days} days {hours} hours"),
    }
}

/// `Option` → `anyhow::Result` with what was missing.
trait MissingContext<T> {
    fn context_missing(self, what: &str) -> anyhow::Result<T>;
}

impl<T> MissingContext<T> for Option<T> {
    fn context_missing(self, what: &str) -> anyhow::Result<T> {
        self.ok_or_else(|| anyhow::anyhow!("{what} is missing"))
    }
}

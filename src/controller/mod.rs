//! The ApiKey controller: the only code holding a `kube::Client`.
//!
//! A reconcile is a script: `observe` (reads) →
//! [`plan`](crate::plan::plan()) (pure) → `apply` (writes,
//! status included). When the plan asks to go again at once (a token was just
//! minted, a repair was recorded) the script runs again in the same reconcile,
//! at most [`MAX_PASSES`] times. Otherwise the reconcile requeues at the plan's
//! next deadline (rotation, swap, retirement, expiry), never on a fixed poll.

mod admin;
mod apply;
mod classes;
pub mod cluster;
mod decode;
mod error;
pub(crate) mod events;
mod keysets;
mod lease;
mod metrics;
mod observe;
mod publisher;
mod restarts;
mod run;
pub mod usage;
pub mod webhooks;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use tracing::{instrument, warn};

use crate::api::ApiKey;
use crate::keyset::KeySetId;
use crate::plan::{Finalizer, Settings, plan};
use crate::token::{Prefix, Token};

pub use admin::Admin;
pub use error::{Error, retry_after};
pub use lease::{Elector, LeaseError, LeaseSettings, Standing, run_elected};
pub use metrics::{Health, Metrics};
pub use publisher::{Published, Publisher};
pub use run::{CRD_NAME, DEFAULT_CONCURRENCY, Options, StartError, check_crd, run};

/// The one field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "keyward";

/// Plan/apply passes in one reconcile: mint, adopt, plus a repair before them.
pub const MAX_PASSES: usize = 4;

/// The wall clock, injected so tests can hold time still.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Mints a token; production draws from the OS CSPRNG, tests from a seeded RNG.
pub type Minter = Arc<dyn Fn(&Prefix) -> Token + Send + Sync>;

/// The real clock, [`crate::runtime::clock::now`].
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(crate::runtime::clock::now)
}

/// The real minter, over [`crate::token::os_rng`].
#[must_use]
pub fn os_minter() -> Minter {
    Arc::new(|prefix| Token::generate(prefix, &mut crate::token::os_rng()))
}

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Lifecycle settings.
    pub settings: Settings,
    /// The clock.
    pub clock: Clock,
    /// The token minter.
    pub mint: Minter,
    /// Kubernetes Events (without kube's caching recorder: `events.rs`).
    pub recorder: events::Recorder,
    /// The key-set writer.
    pub publisher: Arc<Publisher>,
    /// How long after a rotation's swap opted-in workloads are restarted.
    pub restart_delay: jiff::SignedDuration,
    /// Where lifecycle notices for webhooks go (never waits).
    pub notifier: webhooks::Notifier,
}

impl Context {
    /// A context with the real clock and minter.
    #[must_use]
    pub fn new(client: Client, settings: Settings, publisher: Arc<Publisher>) -> Context {
        Context::with(client, settings, publisher, system_clock(), os_minter())
    }

    /// A context with an injected clock and minter.
    #[must_use]
    pub fn with(client: Client, settings: Settings, publisher: Arc<Publisher>, clock: Clock, mint: Minter) -> Context {
        let reporter = Reporter { controller: "keyward".to_owned(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: events::Recorder::new(client.clone(), reporter),
            client,
            settings,
            clock,
            mint,
            publisher,
            restart_delay: crate::plan::restarts::DEFAULT_RESTART_DELAY,
            notifier: webhooks::Notifier::disabled(),
        }
    }
}

/// Reconcile one ApiKey.
#[instrument(skip_all, fields(namespace = key.namespace().unwrap_or_default(), name = key.name_any(), generation = key.metadata.generation.unwrap_or_default()))]
pub async fn reconcile(key: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cached object may lag our own last status write; plan from the stored one.
    // Read raw and decoded here: an object the types refuse reports itself instead of failing every retry.
    let keys: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(ctx.client.clone(), namespace(&key)?, &decode::api_resource());
    let Some(object) = keys.get_opt(&key.name_any()).await.map_err(Error::kube("get ApiKey"))? else {
        ctx.publisher.metrics().key_expiry(namespace(&key)?, &key.name_any(), None);
        return Ok(Action::await_change());
    };
    let mut key = match decode::decode(&object) {
        Ok(key) => key,
        Err(_) if object.metadata.deletion_timestamp.is_some() => {
            decode::release(&ctx, &object).await?;
            return Ok(Action::await_change());
        }
        Err(why) => {
            decode::report(&ctx, &object, &why).await?;
            return Ok(Action::await_change());
        }
    };
    gauge_expiry(&ctx, &key);
    for _ in 0..MAX_PASSES {
        let now = (ctx.clock)();
        let seen = observe::observe(&ctx, &key).await?;
        let plan = plan(&key, &seen.observed, &ctx.settings, now);
        // Boxed: the writes' futures are large, and every caller of reconcile would carry them.
        key = Box::pin(apply::apply(&ctx, key, &seen, &plan)).await?;
        if plan.finalizer == Finalizer::Remove || plan.delete_apikey {
            return Ok(Action::await_change());
        }
        let restart_at = restarts::restart_workloads(&ctx, &key).await?;
        match earliest(plan.requeue_at, restart_at) {
            Some(at) if at <= now => {}
            Some(at) => return Ok(Action::requeue(until(now, at))),
            None => return Ok(Action::await_change()),
        }
    }
    warn!("plan did not settle; trying again shortly");
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// The earlier of two deadlines, either of which may be absent.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `keyward_apikey_expiry_timestamp_seconds` for `key` as stored: its coming expiry, if it is live and has one.
fn gauge_expiry(ctx: &Context, key: &ApiKey) {
    let status = key.status.as_ref();
    let over = key.metadata.deletion_timestamp.is_some()
        || key.spec.revoked
        || status.is_some_and(|s| s.expired_at.is_some() || s.revoked_at.is_some());
    let expiry = crate::plan::validate(&key.spec, ctx.settings.default_grace_period)
        .ok()
        .filter(|_| !over)
        .and_then(|spec| crate::plan::unused::expiry(&spec, status));
    let labelled = expiry
        .map(|(at, cause)| (at, if cause == crate::plan::unused::Cause::Unused { "Unused" } else { "ExpiresAt" }));
    if let Some(namespace) = key.metadata.namespace.as_deref() {
        ctx.publisher.metrics().key_expiry(namespace, &key.name_any(), labelled);
    }
}

/// What to do after a failed reconcile: every variant has its retry policy.
#[allow(clippy::needless_pass_by_value)] // kube-runtime's Controller::run fixes this signature.
pub fn error_policy(key: Arc<ApiKey>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(namespace = key.namespace().unwrap_or_default(), name = %key.name_any(), error = %crate::token::redact(&error.to_string()), kind = error.label(), "reconcile failed");
    retry_after(error)
}

/// Longest requeue: kube-runtime's scheduler (a timer wheel) cannot hold
/// deadlines years ahead, and an occasional look at a distant key is cheap
/// (converged keys plan no writes).
pub const MAX_REQUEUE: Duration = Duration::from_secs(6 * 3600);

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let secs = at.duration_since(now).as_secs_f64().max(0.0);
    // Deadlines are whole seconds; round up so a requeue never lands early.
    Duration::from_secs_f64(secs.ceil().min(MAX_REQUEUE.as_secs_f64()))
}

pub(crate) fn namespace(key: &ApiKey) -> Result<&str, Error> {
    key.metadata.namespace.as_deref().ok_or(Error::MissingField("metadata.namespace"))
}

pub(crate) fn key_set_id(key: &ApiKey) -> Result<KeySetId, Error> {
    Ok(KeySetId { namespace: namespace(key)?.to_owned(), name: key.spec.key_set.clone() })
}

//! Lifecycle notices to the teams' webhooks (`ApiKeyWebhook`), delivered off the reconcile path.
//!
//! ```text
//! reconcile ─ emit_events ─► Notifier ─(bounded queue, try_send)─► router ─► one task per
//!                                                                    │       (notice, webhook):
//!                                    ApiKeyWebhook cache (watch) ────┘       sign, POST, retry
//!                                                                                  │
//!                      status (rate-limited), Events, metrics ◄── Tracker ◄────────┘
//! ```
//!
//! A reconcile never waits on a webhook: [`Notifier::notify`] only tries to
//! queue, and a full queue drops the notice (counted, logged). The router
//! matches each notice with the cached webhooks of its namespace, and a task
//! per match signs (Standard Webhooks) and POSTs it with a per-attempt
//! timeout, retrying with exponential backoff ([`RetryPolicy`]) until it
//! is delivered or given up. Outcomes go to the [`Tracker`], which writes each
//! webhook's status at most once per `status_interval`, emits an Event when a
//! webhook starts or stops failing, and keeps the metrics.
//!
//! Delivery is at least once across restarts and leader changes: each
//! (notice, webhook) pair not yet delivered is kept in the webhook's
//! `status.pending` (the `pending` module; bounded, written with the rest of its
//! status), and a new leader resumes those with the backoff left and the same
//! message id ([`crate::notice::message_id`]), so receivers can drop repeats.
//! A step the next leader plans again gets that id too, and is not queued
//! twice while it is pending.

mod deliver;
mod pending;
mod tracker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::SelectorExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::api::{ApiKeyWebhook, NoticeType};
use crate::notice::{Notice, RetryPolicy};
use pending::Start;

use super::events::Recorder;
use super::{Clock, Metrics};

pub use tracker::Tracker;

/// The ApiKeyWebhook CRD's name; without it the operator runs without webhooks.
pub const WEBHOOK_CRD_NAME: &str = "apikeywebhooks.keyward.dev";

/// Undelivered notices one webhook keeps unless configured.
pub const DEFAULT_MAX_PENDING: usize = 50;

/// How notices are delivered.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Notices waiting for the router; more are dropped (and counted).
    pub queue: usize,
    /// Attempts and backoff of one notice to one webhook.
    pub retry: RetryPolicy,
    /// Per-attempt timeout of a webhook without `spec.timeoutSeconds`.
    pub default_timeout: Duration,
    /// A webhook's status is written at most this often.
    pub status_interval: Duration,
    /// HTTP requests in flight at once, over all webhooks.
    pub concurrency: usize,
    /// Undelivered notices one webhook keeps (in `status.pending`) at most; more drop the oldest.
    pub max_pending: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue: 1024,
            retry: RetryPolicy::default(),
            default_timeout: Duration::from_secs(10),
            status_interval: Duration::from_secs(10),
            concurrency: 16,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// The reconcile's end of the queue. Cloning is cheap; a disabled one drops every notice silently.
#[derive(Clone, Default)]
pub struct Notifier {
    queue: Option<(mpsc::Sender<Notice>, Arc<Metrics>)>,
}

impl Notifier {
    /// A notifier that sends nothing (webhooks off, or the CRD is not installed).
    #[must_use]
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Queue `notice` without waiting; a full queue drops it.
    pub fn notify(&self, notice: Notice) {
        let Some((queue, metrics)) = &self.queue else { return };
        match queue.try_send(notice) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(notice)) => {
                metrics.webhook_notice_dropped();
                warn!(namespace = %notice.namespace, message_id = %notice.id, "webhook queue full: notice dropped");
            }
        }
    }
}

/// Whether the ApiKeyWebhook CRD is installed (an operator upgraded before its CRDs runs without webhooks).
pub async fn installed(client: &Client) -> Result<bool, kube::Error> {
    Ok(Api::<CustomResourceDefinition>::all(client.clone()).get_opt(WEBHOOK_CRD_NAME).await?.is_some())
}

/// Everything the delivery tasks share.
struct Shared {
    client: Client,
    http: deliver::Http,
    options: WebhookOptions,
    clock: Clock,
    tracker: Tracker,
    in_flight: Semaphore,
}

/// Start delivering: the webhook watch, the router and the status writer, until `shutdown`.
/// Returns the reconcile's [`Notifier`] and the task to await after shutdown.
pub fn start(
    client: Client,
    options: WebhookOptions,
    clock: Clock,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Notifier, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(options.queue.max(1));
    let notifier = Notifier { queue: Some((sender, metrics.clone())) };
    let shared = Arc::new(Shared {
        http: deliver::client(),
        in_flight: Semaphore::new(options.concurrency.max(1)),
        tracker: Tracker::new(metrics, recorder, options.max_pending.clamp(1, crate::api::PENDING_MAX_ITEMS)),
        client,
        options,
        clock,
    });
    (notifier, tokio::spawn(run(shared, receiver, shutdown)))
}

async fn run(
    shared: Arc<Shared>,
    mut notices: mpsc::Receiver<Notice>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (store, writer) = reflector::store();
    // Its own task: the router waits for the cache to fill, which needs the watch polled meanwhile.
    let mut watch = tokio::spawn(
        watcher(Api::<ApiKeyWebhook>::all(shared.client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .try_for_each(|_| async { Ok(()) }),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = JoinSet::new();
    let mut flush = tokio::time::interval(shared.options.status_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!("webhook delivery started");
    // What a previous leader left pending is resumed first (the cache must be full to see it).
    tokio::select! {
        () = &mut shutdown => return watch.abort(),
        ready = store.wait_until_ready() => {
            if ready.is_ok() {
                resume(&shared, &store, &mut tasks);
            }
        }
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            result = &mut watch => {
                let error = result.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())).err();
                warn!(error = ?error, "ApiKeyWebhook watch ended; webhooks are not delivered until the operator restarts");
                break;
            }
            _ = flush.tick() => shared.tracker.flush(&shared.client, &store, (shared.clock)()).await,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            notice = notices.recv() => {
                let Some(notice) = notice else { break };
                route(&shared, &store, notice, &mut tasks).await;
            }
        }
    }
    tasks.abort_all();
    watch.abort();
    shared.tracker.flush(&shared.client, &store, (shared.clock)()).await;
}

/// Start one delivery task per cached webhook that wants `notice`, unless it is pending there already.
async fn route(shared: &Arc<Shared>, store: &Store<ApiKeyWebhook>, notice: Notice, tasks: &mut JoinSet<()>) {
    // Right after start-up the cache may still be filling; a notice waits for it rather than find no webhook.
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let notice = Arc::new(notice);
    let entry = pending::entry(&notice, (shared.clock)());
    if entry.is_none() {
        warn!(namespace = %notice.namespace, message_id = %notice.id, bytes = notice.body.len(), "notice too large to keep in status.pending: it is not resumed after a restart");
    }
    for hook in store.state().into_iter().filter(|hook| wants(hook, &notice)) {
        if let Some(entry) = entry.clone()
            && !shared.tracker.queued(&hook, entry)
        {
            continue;
        }
        spawn(shared, hook, notice.clone(), Start::NOW, tasks);
    }
}

/// Resume every delivery a previous leader left in the cached webhooks' `status.pending`. A webhook
/// deleted meanwhile is not in the cache, and its pending notices went with it.
fn resume(shared: &Arc<Shared>, store: &Store<ApiKeyWebhook>, tasks: &mut JoinSet<()>) {
    let now = (shared.clock)();
    let mut resumed = 0;
    for hook in store.state() {
        let namespace = hook.namespace().unwrap_or_default();
        for entry in shared.tracker.resume(&hook) {
            let start = pending::resume_at(&entry, now, shared.options.retry.cap);
            spawn(shared, hook.clone(), Arc::new(pending::notice(&entry, &namespace)), start, tasks);
            resumed += 1;
        }
    }
    if resumed > 0 {
        info!(resumed, "resumed the webhook deliveries a previous leader left pending");
    }
}

/// One task delivering `notice` to `hook` from `start`, known to the tracker so that dropping its entry stops it.
fn spawn(shared: &Arc<Shared>, hook: Arc<ApiKeyWebhook>, notice: Arc<Notice>, start: Start, tasks: &mut JoinSet<()>) {
    let (known, id, delivering) = (hook.clone(), notice.id.clone(), shared.clone());
    let task = tasks.spawn(async move { deliver::deliver(&delivering, &hook, &notice, start).await });
    shared.tracker.attach(&known, &id, task);
}

/// Whether `hook` receives `notice`: same namespace, a wanted kind, matching labels. A selector
/// that does not parse (admission cannot check operators) lets the notice through to the delivery
/// task, which refuses to send it and reports `InvalidSelector` in the webhook's status.
fn wants(hook: &ApiKeyWebhook, notice: &Notice) -> bool {
    let wanted = |kind: NoticeType| hook.spec.events.as_ref().is_none_or(|events| events.contains(&kind));
    let selected = match hook.spec.selector.clone().map(kube::core::Selector::try_from) {
        None | Some(Err(_)) => true,
        Some(Ok(selector)) => selector.matches(&notice.labels),
    };
    hook.namespace().as_deref() == Some(notice.namespace.as_str()) && wanted(notice.kind) && selected
}

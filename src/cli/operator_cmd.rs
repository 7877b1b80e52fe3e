//! `keyward operator`: run the ApiKey controller against the cluster.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::controller::usage::UsageOptions;
use crate::controller::webhooks::WebhookOptions;
use crate::controller::{Admin, Health, LeaseError, LeaseSettings, Metrics, Options, check_crd, run_elected};
use crate::notice::RetryPolicy;
use crate::plan::Settings;
use crate::plan::anomaly::Thresholds;
use crate::plan::usage::Budget;
use crate::runtime::{admin, kubeconfig, shutdown, telemetry};

/// Options of `keyward operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// How long a new hash is given to reach every verifier before the Secret is swapped.
    /// Cover kubelet's ConfigMap volume sync (about a minute of sync period plus a minute of cache).
    #[arg(long, env = "KEYWARD_PROPAGATION_DELAY", default_value = "2m", value_parser = humantime::parse_duration)]
    propagation_delay: Duration,

    /// How often a key waiting for its hash to be published looks again.
    #[arg(long, env = "KEYWARD_PUBLISH_POLL", default_value = "5s", value_parser = humantime::parse_duration)]
    publish_poll: Duration,

    /// Grace period of the previous token when an ApiKey sets none.
    #[arg(long, env = "KEYWARD_DEFAULT_GRACE_PERIOD", default_value = "1h", value_parser = humantime::parse_duration)]
    default_grace_period: Duration,

    /// How long after a rotation's swap the workloads that opted in (annotation
    /// `keyward.dev/restart-on-rotation`) are restarted; keys swapped within it restart a workload once.
    #[arg(long, env = "KEYWARD_RESTART_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    restart_delay: Duration,

    /// How long the key-set publisher gathers changes before one write.
    #[arg(long, env = "KEYWARD_COALESCE", default_value = "500ms", value_parser = humantime::parse_duration)]
    coalesce: Duration,

    /// ApiKeys reconciled at once (each uses one API connection while it runs).
    #[arg(long, env = "KEYWARD_CONCURRENCY", default_value_t = crate::controller::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// Runtime worker threads. The operator waits on the API, not the CPU; every thread
    /// also costs memory (glibc gives each its own malloc arena), so the default does not
    /// grow with the node's core count.
    #[arg(long, env = "KEYWARD_WORKER_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,

    /// Address of the admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "KEYWARD_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,

    /// Name of the leader-election Lease.
    #[arg(long, env = "KEYWARD_LEASE_NAME", default_value = "keyward-operator")]
    lease_name: String,

    /// Namespace of the leader-election Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "keyward-system")]
    lease_namespace: String,

    /// This replica's identity in the Lease (defaults to the host name, which is the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// How long a Lease its holder stops renewing stays held.
    #[arg(long, env = "KEYWARD_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,

    /// How long the leader keeps working without renewing; it then stops and exits.
    #[arg(long, env = "KEYWARD_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    renew_deadline: Duration,

    /// How often the leader renews and a follower tries to acquire.
    #[arg(long, env = "KEYWARD_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    retry_period: Duration,

    /// Advance notices before a key expires (Warning Event `ExpiringSoon` at each point), comma-separated.
    #[arg(long, env = "KEYWARD_EXPIRY_NOTICES", default_value = "15d,7d,1d", value_delimiter = ',',
          value_parser = parse_notice)]
    expiry_notices: Vec<Duration>,

    /// How often verifiers' usage reports are added up into ApiKeys' status; `0s` turns usage off.
    #[arg(long, env = "KEYWARD_USAGE_AGGREGATE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    usage_aggregate_interval: Duration,

    /// A key's usage counts are written to its status at most once per this long.
    #[arg(long, env = "KEYWARD_USAGE_STATUS_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    usage_status_interval: Duration,

    /// `status.lastUsedAt` is rounded down to this step, so it is written at most once per step per key.
    #[arg(long, env = "KEYWARD_USAGE_LAST_USED_STEP", default_value = "1h", value_parser = humantime::parse_duration)]
    usage_last_used_step: Duration,

    /// At most this many usage status writes a second, spread over each pass; keys left are written
    /// at a later pass (nothing is lost). 0: no limit.
    #[arg(long, env = "KEYWARD_USAGE_MAX_WRITES_PER_SECOND", default_value_t = crate::controller::usage::MAX_WRITES_PER_SECOND)]
    usage_max_writes_per_second: u32,

    /// Usage anomaly: the last 24 hours' allowed (or denied) requests above this many times the
    /// daily average of the days before; 0 turns spikes off.
    #[arg(long, env = "KEYWARD_USAGE_ANOMALY_FACTOR", default_value_t = 10)]
    usage_anomaly_factor: u32,

    /// Fewest requests (allowed, or denied) in the last 24 hours for a spike, so quiet keys do not alarm.
    #[arg(long, env = "KEYWARD_USAGE_ANOMALY_MIN_REQUESTS", default_value_t = 1000)]
    usage_anomaly_min_requests: u64,

    /// Fewest denied requests in the last 24 hours for a denial surge.
    #[arg(long, env = "KEYWARD_USAGE_ANOMALY_MIN_DENIED", default_value_t = 100)]
    usage_anomaly_min_denied: u64,

    /// Denial surge: denied requests at least this percentage of all in the last 24 hours; 0 turns surges off.
    #[arg(long, env = "KEYWARD_USAGE_ANOMALY_DENIED_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    usage_anomaly_denied_percent: u8,

    /// Check no usage for anomalies (no `UsageAnomaly` Events or notices).
    #[arg(long, env = "KEYWARD_DISABLE_USAGE_ANOMALIES")]
    disable_usage_anomalies: bool,

    /// Send no lifecycle notices to ApiKeyWebhooks (the watch on them is not started either).
    #[arg(long, env = "KEYWARD_DISABLE_WEBHOOKS")]
    disable_webhooks: bool,

    /// Attempts to deliver one notice to one webhook, the first included, before it is given up.
    #[arg(long, env = "KEYWARD_WEBHOOK_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    webhook_attempts: u32,

    /// Wait after a webhook's first failed attempt; doubled after each further one, up to --webhook-retry-cap.
    #[arg(long, env = "KEYWARD_WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = humantime::parse_duration)]
    webhook_retry_base: Duration,

    /// Longest wait between two attempts of one notice.
    #[arg(long, env = "KEYWARD_WEBHOOK_RETRY_CAP", default_value = "5m", value_parser = humantime::parse_duration)]
    webhook_retry_cap: Duration,

    /// Per-attempt timeout of a webhook without spec.timeoutSeconds.
    #[arg(long, env = "KEYWARD_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    webhook_timeout: Duration,

    /// A webhook's status (last delivery, failures, Ready) is written at most once per this long.
    #[arg(long, env = "KEYWARD_WEBHOOK_STATUS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    webhook_status_interval: Duration,

    /// Undelivered notices one webhook keeps (in its status.pending, resumed by the next leader) at
    /// most; a new notice over it drops the oldest (Warning Event PendingDropped, a metric).
    #[arg(long, env = "KEYWARD_WEBHOOK_MAX_PENDING", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=100))]
    webhook_max_pending: u16,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

/// A notice point: `15d` or a humantime duration.
fn parse_notice(text: &str) -> Result<Duration, String> {
    match text.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        Some(days) => Ok(Duration::from_secs(days * 86_400)),
        None => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

pub fn run_operator(args: &OperatorArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(telemetry::filter(&args.log)?, telemetry::Format::Json);
    let settings = Settings {
        propagation_delay: jiff::SignedDuration::try_from(args.propagation_delay)?,
        default_grace_period: jiff::SignedDuration::try_from(args.default_grace_period)?,
        publish_poll: jiff::SignedDuration::try_from(args.publish_poll)?,
        expiry_notices: args
            .expiry_notices
            .iter()
            .map(|d| jiff::SignedDuration::try_from(*d))
            .collect::<Result<_, _>>()?,
        anomalies: (!args.disable_usage_anomalies).then_some(Thresholds {
            factor: args.usage_anomaly_factor,
            min_requests: args.usage_anomaly_min_requests,
            min_denied: args.usage_anomaly_min_denied,
            denied_percent: args.usage_anomaly_denied_percent,
        }),
    };
    let admin = Admin { metrics: Arc::new(Metrics::new()), health: Arc::new(Health::default()) };
    let options = Options {
        settings,
        coalesce: args.coalesce,
        concurrency: args.concurrency,
        restart_delay: jiff::SignedDuration::try_from(args.restart_delay)?,
        metrics: admin.metrics.clone(),
        health: admin.health.clone(),
        usage: (!args.usage_aggregate_interval.is_zero())
            .then(|| -> anyhow::Result<UsageOptions> {
                Ok(UsageOptions {
                    interval: args.usage_aggregate_interval,
                    budget: Budget {
                        status_interval: jiff::SignedDuration::try_from(args.usage_status_interval)?,
                        last_used_step: jiff::SignedDuration::try_from(args.usage_last_used_step)?,
                    },
                    max_writes_per_second: args.usage_max_writes_per_second,
                })
            })
            .transpose()?,
        webhooks: (!args.disable_webhooks).then(|| WebhookOptions {
            retry: RetryPolicy {
                attempts: args.webhook_attempts,
                base: args.webhook_retry_base,
                cap: args.webhook_retry_cap,
            },
            default_timeout: args.webhook_timeout,
            status_interval: args.webhook_status_interval,
            max_pending: args.webhook_max_pending.into(),
            ..WebhookOptions::default()
        }),
        ..Options::default()
    };
    let lease = LeaseSettings {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
        ..LeaseSettings::new(&args.lease_name, &args.lease_namespace, &identity(args.identity.as_deref()))
    };
    // Refuse bad flags before touching the network.
    lease.check()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.worker_threads.into()).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(admin::serve(listener, Arc::new(admin.clone()), async move {
            let _ = admin_stopped.await;
        }));
        // The usual kubeconfig, or the in-cluster service account.
        let client = kubeconfig::client(&kubeconfig::Source::default()).await?;
        check_crd(&client).await?;
        admin.health.crd_checked();
        tracing::info!(identity = %lease.identity, lease = %lease.name, "keyward operator starting");
        let outcome = run_elected(client, options, lease, shutdown::signal()).await;
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        match outcome {
            Ok(()) => Ok(ExitCode::SUCCESS),
            // Exit so that Kubernetes restarts this replica as a follower with empty caches.
            Err(e @ (LeaseError::Lost(_) | LeaseError::ControllerStopped)) => {
                tracing::error!(error = %e, "exiting");
                Ok(ExitCode::FAILURE)
            }
            Err(e @ (LeaseError::Kube { .. } | LeaseError::Settings)) => Err(e.into()),
        }
    })
}

/// `--identity`, else the host name (a pod's name), else a name unique to this process.
fn identity(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("keyward-{}", std::process::id()))
}

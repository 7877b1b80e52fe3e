//! `keyward verifier`: run the sidecar that checks Bearer tokens against the published key set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::keyset::KeySetId;
use crate::runtime::{shutdown, telemetry};
use crate::usage::new_epoch;
use crate::verifier::api_report::{PodRef, Reporting};
use crate::verifier::audit::{self, Target as AuditTarget};
use crate::verifier::routes::PathPolicy;
use crate::verifier::{Config, Hardening};

fn parse_keyset_id(text: &str) -> Result<KeySetId, String> {
    text.parse().map_err(|e: crate::keyset::KeySetIdParseError| e.to_string())
}

/// Command-line flags of `keyward verifier`; see `docs/verifier.md`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("keyset_source").required(true).args(["keyset_dirs", "watch_keyset"])))]
pub(super) struct VerifierArgs {
    /// Directory of key-set shards (`*.keyset`), e.g. a mounted ConfigMap volume; repeat for several.
    /// It must exist (kubelet mounts the volume before the container starts); it may be empty.
    #[arg(long = "keyset-dir", value_name = "DIR")]
    keyset_dirs: Vec<PathBuf>,
    /// Read key set NAMESPACE/NAME from its ConfigMaps through the Kubernetes API (label-selected watch).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_keyset_id)]
    watch_keyset: Option<KeySetId>,
    /// Address of the main listener: forward-auth `/verify`, or the proxy with `--upstream`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the admin listener: `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Act as a reverse proxy to this `http://host:port` (the app in the same pod).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// YAML routes file mapping method + path prefix to the scope required.
    #[arg(long, value_name = "FILE")]
    routes: Option<PathBuf>,
    /// How often to look for key-set changes that inotify missed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// How long a client may take to send its request head.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// How long to wait for the upstream's response head before answering 504.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    upstream_timeout: Duration,
    /// How long in-flight requests may run on after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Threads serving the main listener, each on a runtime of its own [default: the CPUs available].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Connections the main listener keeps open at most; at the cap a new one replaces an idle one [default: from the fd limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Accept `;` path parameters (`/a;v=1/b`); rules then match the path without them, as servlet containers route it.
    #[arg(long)]
    allow_path_params: bool,
    /// Accept an encoded `%` (`%25`) in paths; unsafe in front of an app that decodes paths twice.
    #[arg(long)]
    allow_encoded_percent: bool,
    /// Disaster recovery only: load a key set older than the one in force (it can bring revoked keys back).
    #[arg(long)]
    allow_keyset_rollback: bool,
    /// How often to write this pod's usage report to the cluster; `0s` turns reports off. Reports are
    /// also off without `POD_NAME`, `POD_UID` and `POD_NAMESPACE` (downward API) or API access.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    usage_report_interval: Duration,
    #[command(flatten)]
    audit: AuditArgs,
}

/// The audit log's flags.
#[derive(Debug, Args)]
struct AuditArgs {
    /// Write one JSON line per answered request: `-` for stdout, or a file to append to (reopened on SIGHUP).
    /// Never the token or the Authorization header; see docs/verifier.md.
    #[arg(id = "audit_log", long = "audit-log", value_name = "-|PATH")]
    target: Option<String>,
    /// Include the query string in audit lines (it may hold personal data; tokens in it are still redacted).
    #[arg(long = "audit-log-query", requires = "audit_log")]
    query: bool,
    /// Include X-Forwarded-For in audit lines: only trustworthy behind a proxy that sets it, replacing the client's.
    #[arg(long = "audit-log-forwarded-for", requires = "audit_log")]
    forwarded_for: bool,
    /// Audit lines waiting for the writer at most; when full, further lines are dropped and counted.
    #[arg(long = "audit-log-buffer", value_name = "LINES", default_value_t = audit::DEFAULT_BUFFER,
          requires = "audit_log", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    buffer: u32,
}

impl AuditArgs {
    fn settings(self) -> anyhow::Result<Option<audit::Settings>> {
        let buffer = usize::try_from(self.buffer)?;
        Ok(self.target.map(|target| audit::Settings {
            target: if target == "-" { AuditTarget::Stdout } else { AuditTarget::File(target.into()) },
            query: self.query,
            forwarded_for: self.forwarded_for,
            buffer,
        }))
    }
}

/// Usage reporting, if the interval, the Pod's identity and API access allow it; the verifier serves either way.
async fn usage_reporting(interval: Duration) -> Option<Reporting> {
    if interval.is_zero() {
        return None;
    }
    let Some(pod) = PodRef::from_env() else {
        tracing::info!("usage reports off: POD_NAME, POD_UID and POD_NAMESPACE are not all set");
        return None;
    };
    match crate::runtime::kubeconfig::client(&crate::runtime::kubeconfig::Source::default()).await {
        Ok(client) => Some(Reporting { client, pod, interval, epoch: new_epoch(&mut rand::rng()) }),
        Err(err) => {
            tracing::warn!(error = %err, "usage reports off: no access to the Kubernetes API");
            None
        }
    }
}

pub(super) fn run(args: VerifierArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(telemetry::filter_from_env("info"), telemetry::Format::Json);
    // A missing directory is a mistake in the Pod spec, not a key set still on its
    // way: say so at once instead of answering 503 forever.
    for dir in &args.keyset_dirs {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => anyhow::bail!("--keyset-dir {}: not a directory", dir.display()),
            Err(e) => anyhow::bail!("--keyset-dir {}: {e}", dir.display()),
        }
    }
    // Requests are served on the workers' own runtimes; this one only accepts,
    // watches the key set, writes usage reports and serves the admin listener.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let usage = runtime.block_on(usage_reporting(args.usage_report_interval));
    let audit = args.audit.settings()?;
    let config = Config {
        keyset_dirs: args.keyset_dirs,
        watch_keyset: args.watch_keyset,
        listen: args.listen,
        admin_listen: args.admin_listen,
        upstream: args.upstream,
        routes: args.routes,
        poll_interval: args.poll_interval,
        header_read_timeout: args.header_read_timeout,
        upstream_timeout: args.upstream_timeout,
        shutdown_grace: args.shutdown_grace,
        workers: args
            .workers
            .map_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get), usize::from),
        hardening: Hardening {
            path_policy: PathPolicy {
                allow_path_params: args.allow_path_params,
                allow_encoded_percent: args.allow_encoded_percent,
            },
            allow_keyset_rollback: args.allow_keyset_rollback,
            max_connections: args.max_connections.and_then(|n| usize::try_from(n).ok()),
        },
        usage,
        audit,
    };
    runtime.block_on(crate::verifier::run(config, shutdown::signal()))?;
    Ok(ExitCode::SUCCESS)
}

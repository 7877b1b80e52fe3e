//! `keyward operator`: run the ApiKey controller against the cluster.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::controller::{Options, check_crd, run};
use crate::plan::Settings;

/// Options of `keyward operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// How long a new hash is given to reach every verifier before the Secret is swapped.
    /// Cover kubelet's ConfigMap volume sync (about a minute of sync period plus a minute of cache).
    #[arg(long, env = "KEYWARD_PROPAGATION_DELAY", default_value = "2m", value_parser = humantime::parse_duration)]
    propagation_delay: Duration,

    /// Grace period of the previous token when an ApiKey sets none.
    #[arg(long, env = "KEYWARD_DEFAULT_GRACE_PERIOD", default_value = "1h", value_parser = humantime::parse_duration)]
    default_grace_period: Duration,

    /// How long the key-set publisher gathers changes before one write.
    #[arg(long, env = "KEYWARD_COALESCE", default_value = "500ms", value_parser = humantime::parse_duration)]
    coalesce: Duration,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

pub fn run_operator(args: &OperatorArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_current_span(true)
        .init();
    let settings = Settings {
        propagation_delay: jiff::SignedDuration::try_from(args.propagation_delay)?,
        default_grace_period: jiff::SignedDuration::try_from(args.default_grace_period)?,
        ..Settings::default()
    };
    let options = Options { settings, coalesce: args.coalesce, ..Options::default() };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        // The usual kubeconfig, or the in-cluster service account.
        let client = kube::Client::try_default().await?;
        check_crd(&client).await?;
        tracing::info!("keyward operator starting");
        run(client, options, shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

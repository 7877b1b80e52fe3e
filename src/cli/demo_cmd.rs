//! `keyward demo`: the whole life of a key, on an in-memory cluster, in seconds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::runtime::telemetry;

/// Options of `keyward demo`.
#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// Directory of ApiKey YAML files to seed the in-memory cluster with.
    #[arg(short = 'f', long = "filename", default_value = "examples/apikeys", value_name = "DIR")]
    examples: PathBuf,
    /// Also write every object of the cluster at the end into DIR, one YAML file each.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,
    /// Run on the cluster of this kubeconfig instead of an in-memory one: the CRD must be
    /// installed, no other keyward operator running, and namespace `demo` free of ApiKeys.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

pub(super) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Logs of the operator and verifier would drown the walkthrough; errors still show
    // (RUST_LOG=info shows everything). The verifier warns until the first key set is
    // published, which is expected here.
    telemetry::init(telemetry::filter_from_env("error"), telemetry::Format::Text);
    let runtime = tokio::runtime::Runtime::new()?;
    let passed = runtime.block_on(crate::demo::run(crate::demo::DemoOptions {
        examples: args.examples,
        dump: args.dump,
        kubeconfig: args.kubeconfig,
    }))?;
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

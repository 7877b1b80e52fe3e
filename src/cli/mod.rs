//! The command line: one binary, one subcommand per job.

#[cfg(feature = "demo")]
mod demo_cmd;
#[cfg(feature = "demo")]
mod fake_apiserver_cmd;
mod keyset_cmd;
mod operator_cmd;
mod token_cmd;
mod verifier_cmd;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keyward: API keys as Kubernetes custom resources.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The CRDs `keyward crd` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    /// `apikeys.keyward.dev` (crds/apikey.yaml).
    #[value(name = "ApiKey")]
    ApiKey,
    /// `apikeywebhooks.keyward.dev` (crds/apikeywebhook.yaml).
    #[value(name = "ApiKeyWebhook")]
    ApiKeyWebhook,
    /// `apikeyclasses.keyward.dev` (crds/apikeyclass.yaml).
    #[value(name = "ApiKeyClass")]
    ApiKeyClass,
    /// `keysets.keyward.dev` (crds/keyset.yaml).
    #[value(name = "KeySet")]
    KeySet,
    /// `clusterapikeys.keyward.dev` (crds/clusterapikey.yaml).
    #[value(name = "ClusterApiKey")]
    ClusterApiKey,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a CustomResourceDefinition as YAML: ApiKey, or ApiKeyWebhook, ApiKeyClass, KeySet or ClusterApiKey with `--kind`.
    Crd {
        /// Which CRD to print.
        #[arg(long, value_enum, default_value = "ApiKey")]
        kind: CrdKind,
    },
    /// Mint, hash and check tokens outside the cluster.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Inspect and build key-set shards.
    #[command(subcommand)]
    Keyset(keyset_cmd::KeysetCommand),
    /// Run the operator: reconcile ApiKeys into Secrets and key sets until SIGTERM.
    Operator(operator_cmd::OperatorArgs),
    /// Run the sidecar that checks Bearer tokens against the key set (forward-auth or proxy).
    Verifier(verifier_cmd::VerifierArgs),
    /// The kubectl plugin: status, rotate, disable, enable, revoke, token, check. Installed as
    /// `kubectl-keyward` (a symlink or copy of this binary), it runs as `kubectl keyward ...`.
    Kubectl(crate::plugin::Args),
    /// Walk example keys through their whole life: operator and verifier on an in-memory cluster.
    #[cfg(feature = "demo")]
    Demo(demo_cmd::DemoArgs),
    /// Serve an in-memory Kubernetes API on loopback HTTP, to run the operator without a cluster.
    ///
    /// It starts empty with the ApiKey CRD installed, for trying `keyward operator`, tests and
    /// benchmarks. Nothing is persisted; no TLS and no authentication.
    #[cfg(feature = "demo")]
    #[command(name = "fake-apiserver")]
    FakeApiserver(fake_apiserver_cmd::FakeApiserverArgs),
}

impl Cli {
    /// The command line of this process. Run under the name `kubectl-keyward` (how kubectl
    /// calls a plugin, through a symlink or a copy of this binary), it is `kubectl keyward`'s.
    #[must_use]
    pub fn from_invocation() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        if args.first().is_some_and(|argv0| is_plugin_name(argv0)) {
            let plugin = crate::plugin::PluginCli::parse_from(args);
            return Cli { command: Command::Kubectl(plugin.args) };
        }
        Cli::parse_from(args)
    }
}

/// Whether the program was started as `kubectl-keyward` (`kubectl-keyward.exe` on Windows).
fn is_plugin_name(argv0: &OsStr) -> bool {
    Path::new(argv0).file_stem().is_some_and(|stem| stem == crate::plugin::PLUGIN_NAME)
}

/// Run a parsed command line; errors are printed to stderr.
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
    install_crypto_provider();
    let program = if matches!(cli.command, Command::Kubectl(_)) { "kubectl keyward" } else { "keyward" };
    let result = match cli.command {
        Command::Crd { kind: CrdKind::ApiKey } => print_stdout(&crate::api::crd_yaml()),
        Command::Crd { kind: CrdKind::ApiKeyWebhook } => print_stdout(&crate::api::webhook_crd_yaml()),
        Command::Crd { kind: CrdKind::ApiKeyClass } => print_stdout(&crate::api::class_crd_yaml()),
        Command::Crd { kind: CrdKind::KeySet } => print_stdout(&crate::api::keyset_crd_yaml()),
        Command::Crd { kind: CrdKind::ClusterApiKey } => print_stdout(&crate::api::cluster_crd_yaml()),
        Command::Token(cmd) => token_cmd::run(cmd),
        Command::Keyset(cmd) => keyset_cmd::run(cmd),
        Command::Operator(args) => operator_cmd::run_operator(&args),
        Command::Verifier(args) => verifier_cmd::run(args),
        Command::Kubectl(args) => crate::plugin::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo_cmd::run(args),
        #[cfg(feature = "demo")]
        Command::FakeApiserver(args) => fake_apiserver_cmd::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // The redaction is a safety net: messages are built never to hold tokens.
            eprintln!("{program}: {}", crate::token::redact(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Choose rustls's crypto provider for the process (ring, kube's default).
///
/// With the `demo` feature two providers are compiled in (kube's ring, and aws-lc-rs, which the
/// test kit's kube-fake-client enables through jsonschema), and rustls then refuses to pick one:
/// without this, building any `kube::Client` from a kubeconfig or the in-cluster config panics.
/// The production build (`--no-default-features`) has ring only, where this merely says so
/// explicitly; it stays so that no feature combination can bring the panic back. Calling it
/// again does nothing.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn print_stdout(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

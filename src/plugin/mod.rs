//! `kubectl keyward`: look at and act on ApiKeys from a terminal.
//!
//! The same binary as the operator: installed (copied or symlinked) as
//! `kubectl-keyward`, kubectl finds it as a plugin and the binary, seeing its
//! own name, runs this instead of the `keyward` commands (`cli::Cli::from_invocation`);
//! `keyward kubectl ...` runs the same thing without the name. Every command
//! acts through the ApiKey itself, exactly as a person with `kubectl patch`
//! would: the operator does the work, so the plugin needs no more rights than
//! the change it asks for (docs/kubectl-plugin.md lists them).
//!
//! Writes are JSON merge patches of the one field a command changes, under the
//! field manager [`FIELD_MANAGER`] (see `change.rs` for why not server-side apply).
//! No command prints a token except `token`, whose whole purpose it is.

mod change;
mod check;
mod error;
mod status;
mod target;
mod token;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use error::{Access, PluginError, Scope};
pub use target::{Subject, Target};

use crate::runtime::kubeconfig;

/// The field manager of every write the plugin makes: `managedFields` and
/// server-side apply conflicts then say a person changed the field with this tool.
pub const FIELD_MANAGER: &str = "kubectl-keyward";

/// The program name kubectl looks for on PATH to run `kubectl keyward`.
pub const PLUGIN_NAME: &str = "kubectl-keyward";

/// The command line when the binary runs as `kubectl-keyward`.
#[derive(Debug, Parser)]
#[command(name = "kubectl-keyward", bin_name = "kubectl keyward", version, about = ABOUT, long_about = None)]
pub struct PluginCli {
    #[command(flatten)]
    pub args: Args,
}

const ABOUT: &str = "Look at and act on keyward ApiKeys and ClusterApiKeys (cak/NAME): status, rotate, disable, enable, \
                     revoke, token, check.";

/// `kubectl keyward` (or `keyward kubectl`): the standard kubectl flags and one command.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Command,
}

/// The kubectl flags every command takes.
#[derive(Debug, clap::Args)]
struct Flags {
    /// Namespace of the ApiKey. Defaults to the namespace of the kubeconfig context.
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use instead of the current one.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The kubeconfig file to use (instead of KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a key: state, conditions, key ids and their windows, rotation, usage, Events, why it is not Ready.
    Status {
        /// The ApiKey's name (NAME or apikey/NAME), or a ClusterApiKey's (clusterapikey/NAME, cak/NAME).
        name: String,
    },
    /// Ask the operator to rotate the token now (sets the keyward.dev/rotate annotation).
    Rotate {
        /// The ApiKey's name (NAME or apikey/NAME), or a ClusterApiKey's (clusterapikey/NAME, cak/NAME).
        name: String,
    },
    /// Stop the key working without deleting anything (spec.active=false); `enable` undoes it.
    Disable {
        /// The ApiKey's name (NAME or apikey/NAME), or a ClusterApiKey's (clusterapikey/NAME, cak/NAME).
        name: String,
    },
    /// Make a disabled key work again with the same token (spec.active=true).
    Enable {
        /// The ApiKey's name (NAME or apikey/NAME), or a ClusterApiKey's (clusterapikey/NAME, cak/NAME).
        name: String,
    },
    /// Revoke the key for good (spec.revoked=true). Cannot be undone.
    Revoke {
        /// The ApiKey's name (NAME or apikey/NAME), or a ClusterApiKey's (clusterapikey/NAME, cak/NAME).
        name: String,
        /// Do not ask for confirmation. Required when standard input is not a terminal.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Print the key's token from its Secret, to hand to an external system.
    Token {
        /// The ApiKey's name (NAME or apikey/NAME), or a ClusterApiKey's (clusterapikey/NAME, cak/NAME).
        name: String,
    },
    /// Read a token on standard input and say which ApiKey it belongs to (by its hash; never printed).
    Check {
        /// Look in every namespace, not only the current one.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// A client and the namespace the command acts in.
pub(crate) struct Session {
    client: kube::Client,
    namespace: String,
}

/// Run a `kubectl keyward` command; its errors are the caller's to print.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(run_async(args))?)
}

async fn run_async(args: Args) -> Result<ExitCode, PluginError> {
    let now = crate::runtime::clock::now();
    let Args { flags, command } = args;
    match command {
        Command::Status { name } => status::run(&connect(flags).await?, &Target::parse(&name)?, now).await,
        Command::Rotate { name } => change::rotate(&connect(flags).await?, &Target::parse(&name)?, now).await,
        Command::Disable { name } => change::set_active(&connect(flags).await?, &Target::parse(&name)?, false).await,
        Command::Enable { name } => change::set_active(&connect(flags).await?, &Target::parse(&name)?, true).await,
        Command::Revoke { name, yes } => change::revoke(&connect(flags).await?, &Target::parse(&name)?, yes).await,
        Command::Token { name } => token::run(&connect(flags).await?, &Target::parse(&name)?).await,
        Command::Check { all_namespaces } => {
            // The token first: input that is no token is refused without a cluster, and the
            // token itself is wiped once hashed, before any request is made.
            let hash = check::read_hash()?;
            check::run(&connect(flags).await?, &hash, all_namespaces, now).await
        }
    }
}

async fn connect(flags: Flags) -> Result<Session, PluginError> {
    let source = kubeconfig::Source { kubeconfig: flags.kubeconfig, context: flags.context };
    let client = kubeconfig::client(&source).await?;
    let namespace = flags.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    Ok(Session { client, namespace })
}

impl Session {
    /// A session on `client`, acting in `namespace` (tests build one on the in-memory API).
    #[cfg(test)]
    #[must_use]
    pub fn new(client: kube::Client, namespace: &str) -> Session {
        Session { client, namespace: namespace.to_owned() }
    }

    /// The ApiKeys of the session's namespace.
    fn apikeys(&self) -> kube::Api<crate::api::ApiKey> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn cluster_keys(&self) -> kube::Api<crate::api::ClusterApiKey> {
        kube::Api::all(self.client.clone())
    }

    /// How a request about `target` is described in errors.
    fn access<'a>(&'a self, verb: &'static str, target: &'a Target) -> Access<'a> {
        Access {
            verb,
            resource: target.resource(),
            kind: target.kind(),
            namespace: (!target.is_cluster()).then_some(self.namespace.as_str()),
            name: Some(target.name()),
        }
    }

    /// `get` the key `target` names, with Forbidden and NotFound said plainly.
    async fn get(&self, target: &Target) -> Result<Subject, PluginError> {
        let fail = |e| self.access("get", target).fail(e);
        match target {
            Target::ApiKey(name) => self.apikeys().get(name).await.map(Subject::apikey).map_err(fail),
            Target::Cluster(name) => self.cluster_keys().get(name).await.map(Subject::cluster).map_err(fail),
        }
    }

    /// A JSON merge patch of the key `target` names, as [`FIELD_MANAGER`].
    async fn patch(&self, target: &Target, body: &serde_json::Value) -> Result<(), PluginError> {
        let params = kube::api::PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        let patch = kube::api::Patch::Merge(body);
        let result = match target {
            Target::ApiKey(name) => self.apikeys().patch(name, &params, &patch).await.map(drop),
            Target::Cluster(name) => self.cluster_keys().patch(name, &params, &patch).await.map(drop),
        };
        result.map_err(|e| self.access("patch", target).fail(e))
    }
}

/// Print `text` on stdout; a closed pipe (`| head`) is not an error worth a message.
fn print(text: &str) -> Result<(), PluginError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(PluginError::Io(e)),
        _ => Ok(()),
    }
}

//! Finding the cluster: a kubeconfig (flag, `KUBECONFIG`, `~/.kube/config`) or the Pod's service account.
//!
//! kube's `Config::infer` reports a failure as one error whose message, source
//! and source's source all repeat the same text, and quotes paths as `'"/x"'`;
//! printed as a chain it said the same thing three times. This module follows
//! the same order (kubeconfig first, then in-cluster) but says once, plainly,
//! which file it read and what was wrong with it. An explicitly named
//! kubeconfig (`--kubeconfig` or `KUBECONFIG`) that cannot be read is an error,
//! not a reason to fall back to the in-cluster account: a mistyped path should
//! not quietly talk to another cluster.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Where the user pointed us: the standard kubectl flags.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--kubeconfig`: this file only, ignoring `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: a context of the kubeconfig other than its current one.
    pub context: Option<String>,
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A kubeconfig file could not be read or parsed.
    #[error("cannot read kubeconfig {path} ({origin}): {reason}")]
    Read { path: PathBuf, origin: &'static str, reason: String },
    /// The kubeconfig was read but does not describe a usable cluster (a missing context, a bad certificate).
    #[error("kubeconfig {origin}: {reason}")]
    Invalid { origin: String, reason: String },
    /// No kubeconfig, and not inside a Pod either.
    #[error(
        "no kubeconfig found (KUBECONFIG is unset and {default} does not exist) and not running in a Pod: {reason}"
    )]
    Nowhere { default: String, reason: String },
    /// `--context` was given but the configuration comes from a Pod's service account.
    #[error("--context {0} needs a kubeconfig, but none was found (in-cluster service account in use)")]
    ContextInCluster(String),
    /// The configuration was read but the HTTP client could not be built from it.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
}

/// The client `source` describes; its `default_namespace` is the context's namespace (`default` when none).
pub async fn client(source: &Source) -> Result<kube::Client, ConfigError> {
    let config = config(source, std::env::var_os("KUBECONFIG"), std::env::home_dir()).await?;
    kube::Client::try_from(config).map_err(|e| ConfigError::Client(e.to_string()))
}

async fn config(source: &Source, env: Option<OsString>, home: Option<PathBuf>) -> Result<kube::Config, ConfigError> {
    let options = KubeConfigOptions { context: source.context.clone(), ..KubeConfigOptions::default() };
    let default_path = home.map(|h| h.join(".kube").join("config"));
    let (paths, origin): (Vec<PathBuf>, &'static str) = if let Some(path) = &source.kubeconfig {
        (vec![path.clone()], "--kubeconfig")
    } else if let Some(paths) = env.as_ref().map(non_empty_paths).filter(|p| !p.is_empty()) {
        (paths, "KUBECONFIG")
    } else if let Some(path) = default_path.as_ref().filter(|p| p.exists()) {
        (vec![path.clone()], "the default location")
    } else {
        if let Some(context) = &source.context
            && kube::Config::incluster().is_ok()
        {
            return Err(ConfigError::ContextInCluster(context.clone()));
        }
        return kube::Config::incluster().map_err(|e| ConfigError::Nowhere {
            default: default_path.map_or_else(|| "~/.kube/config".to_owned(), |p| p.display().to_string()),
            reason: e.to_string(),
        });
    };
    let mut merged = Kubeconfig::default();
    for path in &paths {
        let read = Kubeconfig::read_from(path).map_err(|e| read_error(path, origin, e))?;
        merged =
            merged.merge(read).map_err(|e| ConfigError::Invalid { origin: describe(&paths), reason: e.to_string() })?;
    }
    kube::Config::from_custom_kubeconfig(merged, &options)
        .await
        .map_err(|e| ConfigError::Invalid { origin: describe(&paths), reason: e.to_string() })
}

fn non_empty_paths(value: &OsString) -> Vec<PathBuf> {
    std::env::split_paths(value).filter(|p| !p.as_os_str().is_empty()).collect()
}

fn describe(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn read_error(path: &Path, origin: &'static str, error: KubeconfigError) -> ConfigError {
    let reason = match error {
        // The I/O error alone: kube's own text repeats the path in Debug quotes.
        KubeconfigError::ReadConfig(io, _) => io.to_string(),
        other => other.to_string(),
    };
    ConfigError::Read { path: path.to_owned(), origin, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn error_of(source: &Source, env: Option<&str>) -> String {
        let home = tempfile::tempdir().unwrap();
        config(source, env.map(OsString::from), Some(home.path().to_owned())).await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_in_kubeconfig_is_named_once_without_debug_quotes() {
        let message = error_of(&Source::default(), Some("/nonexistent")).await;
        assert_eq!(message, "cannot read kubeconfig /nonexistent (KUBECONFIG): No such file or directory (os error 2)");
    }

    #[tokio::test]
    async fn the_kubeconfig_flag_wins_over_the_environment() {
        let source = Source { kubeconfig: Some("/also/missing".into()), context: None };
        let message = error_of(&source, Some("/nonexistent")).await;
        assert!(message.starts_with("cannot read kubeconfig /also/missing (--kubeconfig):"), "{message}");
    }

    #[tokio::test]
    async fn an_unknown_context_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
             users:\n- name: u\n  user: {}\ncontexts:\n- name: here\n  context: {cluster: c, user: u}\ncurrent-context: here\n",
        )
        .unwrap();
        let source = Source { kubeconfig: Some(path.clone()), context: Some("elsewhere".into()) };
        let message = error_of(&source, None).await;
        assert!(message.starts_with(&format!("kubeconfig {}:", path.display())), "{message}");
        assert!(message.contains("elsewhere"), "{message}");
    }

    #[tokio::test]
    async fn nothing_at_all_says_where_it_looked() {
        let message = error_of(&Source::default(), None).await;
        assert!(message.starts_with("no kubeconfig found (KUBECONFIG is unset and "), "{message}");
        assert!(message.contains("not running in a Pod"), "{message}");
    }
}

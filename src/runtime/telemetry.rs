//! Logging for every subcommand: one subscriber, always on stderr.
//!
//! stderr, because stdout is the commands' output (`keyward crd`, `token`,
//! `keyset inspect`, the demo's walkthrough, the fake API server's address
//! line) and logs must never be mixed into it. Kubernetes collects both
//! streams alike, so the long-running processes lose nothing by it.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, with the current span's fields: for log collectors.
    Json,
    /// Plain text: for a person watching a terminal.
    Text,
}

/// The filter `directives` (in `RUST_LOG` syntax) describe.
pub fn filter(directives: &str) -> anyhow::Result<EnvFilter> {
    Ok(EnvFilter::try_new(directives)?)
}

/// The filter `RUST_LOG` describes, or `default` when it is unset or unreadable.
#[must_use]
pub fn filter_from_env(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Install the process's one subscriber.
pub fn init(filter: EnvFilter, format: Format) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        Format::Json => builder.json().with_current_span(true).init(),
        Format::Text => builder.init(),
    }
}

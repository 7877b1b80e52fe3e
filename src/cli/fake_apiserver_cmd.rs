//! `keyward fake-apiserver`: the in-memory Kubernetes API over loopback HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use keyward_testkit::fakeapi::server::{Writes, cluster, kubeconfig};

use crate::demo::apiserver::serve;
use crate::runtime::telemetry;

/// Options of `keyward fake-apiserver`.
#[derive(Debug, Args)]
pub(super) struct FakeApiserverArgs {
    /// Address to listen on, as HOST:PORT (`localhost:0`, `127.0.0.1:6443`); loopback only
    /// (a host name must resolve to loopback; port 0 picks a free port). Plain HTTP without
    /// authentication: anyone who can connect reads every Secret.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Write a kubeconfig pointing at the server to FILE (written once the server listens).
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    log: String,
}

pub(super) fn run(args: &FakeApiserverArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(telemetry::filter(&args.log)?, telemetry::Format::Text);
    let listen = loopback(&args.listen)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let api = cluster().await.context("starting the in-memory API")?;
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        if let Some(path) = &args.kubeconfig_out {
            write_atomically(path, &kubeconfig(addr))?;
        }
        // The one line on stdout, for scripts that asked for port 0.
        println!("keyward fake-apiserver listening on http://{addr}");
        serve(listener, api, Arc::new(Writes::default()), crate::runtime::shutdown::signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The loopback address `listen` (HOST:PORT) names: a literal address, or a host name that
/// resolves to one (IPv4 first). Anything else is refused: the in-memory API has no authentication.
fn loopback(listen: &str) -> anyhow::Result<SocketAddr> {
    let addresses: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .with_context(|| format!("--listen {listen}: expected HOST:PORT, such as localhost:0 or 127.0.0.1:6443"))?
        .collect();
    let loopback = |v4: bool| addresses.iter().copied().find(|a| a.ip().is_loopback() && a.is_ipv4() == v4);
    loopback(true).or_else(|| loopback(false)).with_context(|| {
        format!("--listen {listen} is not a loopback address: the in-memory API has no authentication")
    })
}

/// Write through a temporary file and a rename, so that whoever waits for the file reads it whole.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::loopback;

    #[test]
    fn host_names_resolving_to_loopback_are_accepted_and_others_refused() {
        assert!(loopback("localhost:0").unwrap().ip().is_loopback());
        assert_eq!(loopback("127.0.0.1:6443").unwrap().to_string(), "127.0.0.1:6443");
        assert_eq!(loopback("[::1]:0").unwrap().to_string(), "[::1]:0");
        let refused = loopback("0.0.0.0:6443").unwrap_err().to_string();
        assert!(refused.contains("not a loopback address"), "{refused}");
        assert!(loopback("localhost").is_err(), "a port is required");
    }
}

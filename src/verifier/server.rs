//! Listeners and lifecycle: the main and admin HTTP servers, the key-set watcher, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::audit::{self, Target as AuditTarget, Writer as AuditWriter};
use super::clock::{Clock, SystemClock};
use super::conns::{Gate, GateMetrics, Permit, REFUSED, default_max_connections};
use super::loader::{KeyStore, Loader, watch as watch_keyset};
use super::metrics::Metrics;
use super::respond::{self, Body};
use super::routes::{PathPolicy, Routes};
use super::service::{Upstream, Verifier};
use super::{api_report, api_source};
use crate::keyset::KeySetId;
use crate::runtime::admin;

/// Largest request head (request line plus headers) read; larger ones get `431`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Connections the admin listener keeps open at most: probes and scrapers need few.
const ADMIN_MAX_CONNECTIONS: usize = 32;

/// Hardening switches; every default is the safe choice (see `docs/verifier.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardening {
    /// Ambiguous path shapes to let through (`--allow-path-params`, `--allow-encoded-percent`).
    pub path_policy: PathPolicy,
    /// Load a key set older than the one in force (`--allow-keyset-rollback`, disaster recovery only).
    pub allow_keyset_rollback: bool,
    /// Connections the main listener keeps open at most (`--max-connections`); `None`: from the fd limit.
    pub max_connections: Option<usize>,
}

/// How the verifier runs; built from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directories holding key-set shards (`*.keyset`), plain or kubelet ConfigMap volumes.
    pub keyset_dirs: Vec<PathBuf>,
    /// Read this key set's ConfigMaps through the Kubernetes API instead of directories.
    pub watch_keyset: Option<KeySetId>,
    /// Address of the main listener (forward-auth or proxy).
    pub listen: SocketAddr,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Proxy to this `http://host:port` instead of answering forward-auth requests.
    pub upstream: Option<String>,
    /// Routes file; the default rule when absent.
    pub routes: Option<PathBuf>,
    /// How often to look for key-set changes that inotify missed.
    pub poll_interval: Duration,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long to wait for the upstream's response head.
    pub upstream_timeout: Duration,
    /// How long in-flight requests may run on after shutdown starts.
    pub shutdown_grace: Duration,
    /// Threads serving the main listener, each with a single-threaded runtime of
    /// its own; 0 serves it on the caller's runtime (tests, the demo).
    pub workers: usize,
    /// Path policy, key-set rollback and the connection cap.
    pub hardening: Hardening,
    /// Usage reports to the cluster; `None` for off.
    pub usage: Option<api_report::Reporting>,
    /// The audit log; `None` for off.
    pub audit: Option<audit::Settings>,
}

/// A started verifier: its bound addresses and a way to stop it.
#[derive(Debug)]
pub struct Running {
    /// The main listener's address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The key index in force.
    pub store: Arc<KeyStore>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    audit: Option<AuditWriter>,
    grace: Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (up to the grace period), and stop watching;
    /// then give the audit log writer up to the grace period to write what it holds.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some(writer) = self.audit {
            let deadline = tokio::time::Instant::now() + self.grace;
            while !writer.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Bind both listeners, start loading the key set and serving; returns once bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Arc::new(SystemClock::new())).await
}

/// [`start`] with an injected clock.
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    anyhow::ensure!(
        config.keyset_dirs.is_empty() != config.watch_keyset.is_none(),
        "give either --keyset-dir (one or more) or --watch-keyset, not both"
    );
    let client = match &config.watch_keyset {
        Some(_) => Some(
            crate::runtime::kubeconfig::client(&crate::runtime::kubeconfig::Source::default())
                .await
                .context("connecting to the Kubernetes API for --watch-keyset")?,
        ),
        None => None,
    };
    let routes = match &config.routes {
        Some(path) => Routes::load(path)?,
        None => Routes::default(),
    }
    .with_policy(config.hardening.path_policy);
    let upstream = config.upstream.as_deref().map(|url| Upstream::new(url, config.upstream_timeout)).transpose()?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let admin =
        TcpListener::bind(config.admin_listen).await.with_context(|| format!("binding {}", config.admin_listen))?;
    let (addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);

    let store = Arc::new(
        KeyStore::new(config.hardening.allow_keyset_rollback)
            .keeping_owners(config.audit.is_some())
            .discarding_usage(config.usage.is_none()),
    );
    let metrics = Arc::new(Metrics::new());
    let (audit_log, audit_writer) = match &config.audit {
        Some(settings) => {
            let (log, writer) = audit::start(settings, metrics.audit.clone())?;
            (Some(log), Some(writer))
        }
        None => (None, None),
    };
    let max_connections = config.hardening.max_connections.unwrap_or_else(default_max_connections);
    metrics.connections_max.set(i64::try_from(max_connections).unwrap_or(i64::MAX));
    let gate = Gate::new(max_connections, metrics.connections.clone());
    let admin_gate = Gate::new(ADMIN_MAX_CONNECTIONS, GateMetrics::default());
    let verifier = Arc::new(
        Verifier::new(Arc::clone(&store), routes, Arc::clone(&metrics), Arc::clone(&clock), upstream)
            .with_audit(audit_log),
    );
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if let (Some(writer), Some(audit::Settings { target: AuditTarget::File(_), .. })) = (&audit_writer, &config.audit) {
        tasks.spawn(reopen_on_hangup(writer.reopen_handle(), stopped.clone()));
    }

    let mut stop_watching = stopped.clone();
    let source: Pin<Box<dyn Future<Output = ()> + Send>> =
        if let (Some(client), Some(id)) = (client, config.watch_keyset.clone()) {
            Box::pin(api_source::watch(client, id, Arc::clone(&store), Arc::clone(&metrics)))
        } else {
            let loader = Loader::new(config.keyset_dirs.clone(), Arc::clone(&store), Arc::clone(&metrics));
            Box::pin(watch_keyset(loader, config.poll_interval))
        };
    tasks.spawn(async move {
        tokio::select! {
            () = source => {}
            _ = stop_watching.wait_for(|stop| *stop) => {}
        }
    });

    if let Some(reporting) = config.usage.clone() {
        tasks.spawn(api_report::run(reporting, Arc::clone(&store), clock, Arc::clone(&metrics), stopped.clone()));
    }

    let timeouts = Timeouts { header_read: config.header_read_timeout, grace: config.shutdown_grace };
    if config.workers == 0 {
        let handler = main_handler(Arc::clone(&verifier));
        tasks.spawn(serve(listener, handler, Arc::clone(&gate), timeouts, stopped.clone()));
    } else {
        let workers = start_workers(&verifier, config.workers, &gate, timeouts, &stopped)?;
        tasks.spawn(hand_out(listener, workers, Arc::clone(&gate), stopped.clone()));
    }

    let report = Arc::new(AdminReport { store: Arc::clone(&store), metrics: Arc::clone(&metrics), gate });
    let admin_handler = move |request: Request<Incoming>, _peer: Option<SocketAddr>| {
        let response = admin::respond(report.as_ref(), request.method(), request.uri().path());
        async move { Ok::<_, Infallible>(response.map(respond::full_body)) }
    };
    tasks.spawn(serve(admin, admin_handler, admin_gate, timeouts, stopped));

    tracing::info!(%addr, %admin_addr, max_connections, mode = if config.upstream.is_some() { "proxy" } else { "forward-auth" }, "verifier listening");
    Ok(Running { addr, admin_addr, store, metrics, stop, tasks, audit: audit_writer, grace: timeouts.grace })
}

/// Reopen the audit log file on every SIGHUP (log rotation), until told to stop.
async fn reopen_on_hangup(reopen: audit::Reopen, mut stop: watch::Receiver<bool>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "audit log: cannot listen for SIGHUP; the file will not be reopened");
            return;
        }
    };
    loop {
        tokio::select! {
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reopening the audit log file");
                reopen.request();
            }
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Run until `signal` completes, then shut down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// What the verifier tells its admin listener: ready once a valid key set has
/// loaded and while the main listener is below its connection cap.
struct AdminReport {
    store: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    gate: Arc<Gate>,
}

impl admin::Report for AdminReport {
    fn readiness(&self) -> Result<(), &'static str> {
        if !self.store.is_ready() {
            return Err("not ready: no valid key set has loaded\n");
        }
        // At the cap every new client costs an idle one its connection: send traffic elsewhere.
        if self.gate.saturated() {
            return Err("not ready: at the connection cap\n");
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        // The age is a gauge of now, not of the last reload: set it when it is read.
        if let Some(age) = self.store.since_last_load() {
            self.metrics.seconds_since_reload.set(age.as_secs_f64());
        }
        self.metrics.encode()
    }
}

/// How long clients may take: to send a request head, and to finish after shutdown starts.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    grace: Duration,
}

/// The main listener's answer to one request, boxed.
type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The main listener's request handler around one [`Verifier`].
fn main_handler(
    verifier: Arc<Verifier>,
) -> impl Fn(Request<Incoming>, Option<SocketAddr>) -> Answer + Clone + Send + Sync + 'static {
    move |request: Request<Incoming>, peer: Option<SocketAddr>| {
        let verifier = Arc::clone(&verifier);
        Box::pin(async move { Ok::<_, Infallible>(verifier.handle_from(request, peer).await) })
    }
}

/// The HTTP/1 settings of every listener.
fn http1_builder(timeouts: Timeouts) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
}

/// Accept connections until told to stop, then wait for open ones (up to the grace period).
async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    gate: Arc<Gate>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Option<SocketAddr>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let builder = http1_builder(timeouts);
    loop {
        let stream = tokio::select! {
            accepted = crate::net::accept(&listener, "verifier") => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(permit) = admit(&gate, &stream) else { continue };
        serve_connection(&builder, stream, handler.clone(), permit, stop.clone());
    }
    drop(listener);
    finish(&gate, timeouts.grace).await;
}

/// A place under the cap for a new connection; if there is none, answer it a fixed 503 (and it is closed).
fn admit(gate: &Arc<Gate>, stream: &TcpStream) -> Option<Permit> {
    let permit = gate.admit();
    if permit.is_none() {
        // Best effort: a new socket's send buffer takes these few bytes at once.
        let _ = stream.try_write(REFUSED);
    }
    permit
}

/// Serve one connection on the current runtime until it ends, the gate
/// chooses it to make room, or shutdown starts (then it finishes its request
/// in progress, if any, and closes).
fn serve_connection<H, F>(
    builder: &http1::Builder,
    stream: TcpStream,
    handler: H,
    permit: Permit,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Option<SocketAddr>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    // Once per connection, for the audit log.
    let peer = stream.peer_addr().ok();
    let tracker = permit.tracker();
    let service = service_fn(move |request| {
        let busy = tracker.busy();
        let answer = handler(request, peer);
        async move {
            let response = answer.await;
            drop(busy);
            response
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            result = connection.as_mut() => Some(result),
            () = permit.evicted() => None,
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let result = if let Some(result) = ended {
            result
        } else {
            // Closes an idle connection now; one with a request in progress after its answer.
            connection.as_mut().graceful_shutdown();
            connection.await
        };
        if let Err(err) = result {
            // hyper's messages name the failure (timeout, too large), never request contents.
            tracing::debug!(error = %err, "connection ended with an error");
        }
        drop(permit);
    });
}

/// Let open connections finish, for at most `grace`.
async fn finish(gate: &Gate, grace: Duration) {
    tokio::select! {
        () = gate.drained() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing open connections"),
    }
}

/// The serving threads of the main listener: where to send accepted connections, and the threads.
struct Workers {
    inboxes: Vec<mpsc::Sender<(std::net::TcpStream, Permit)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Start `count` threads, each serving connections it is handed on a
/// single-threaded runtime of its own, with its own [`Verifier`] (and so its
/// own upstream connection pool): a request and its upstream exchange never
/// leave one thread, so no wakeup crosses threads on the request path.
fn start_workers(
    verifier: &Verifier,
    count: usize,
    gate: &Arc<Gate>,
    timeouts: Timeouts,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Workers> {
    let mut workers = Workers { inboxes: Vec::with_capacity(count), threads: Vec::with_capacity(count) };
    for i in 0..count {
        let (inbox, mut streams) = mpsc::channel::<(std::net::TcpStream, Permit)>(1024);
        let gate = Arc::clone(gate);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handler = main_handler(Arc::new(verifier.for_worker()));
        let mut stop = stop.clone();
        let thread = std::thread::Builder::new().name(format!("keyward-worker-{i}")).spawn(move || {
            runtime.block_on(async move {
                let builder = http1_builder(timeouts);
                loop {
                    let (std_stream, permit) = tokio::select! {
                        received = streams.recv() => match received {
                            Some(received) => received,
                            None => break,
                        },
                        _ = stop.wait_for(|stop| *stop) => break,
                    };
                    match TcpStream::from_std(std_stream) {
                        Ok(stream) => serve_connection(&builder, stream, handler.clone(), permit, stop.clone()),
                        Err(err) => tracing::warn!(error = %err, "could not take over a connection"),
                    }
                }
                finish(&gate, timeouts.grace).await;
            });
        })?;
        workers.inboxes.push(inbox);
        workers.threads.push(thread);
    }
    Ok(workers)
}

/// Accept connections and hand them to the workers in turn; on stop, wait for the workers to finish.
async fn hand_out(listener: TcpListener, workers: Workers, gate: Arc<Gate>, mut stop: watch::Receiver<bool>) {
    let Workers { inboxes, threads } = workers;
    let mut next = 0;
    loop {
        let stream = tokio::select! {
            accepted = crate::net::accept(&listener, "verifier") => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(permit) = admit(&gate, &stream) else { continue };
        let Ok(stream) = stream.into_std() else { continue };
        // A worker that is gone (it only stops on shutdown) drops the connection.
        let _ = inboxes[next].send((stream, permit)).await;
        next = (next + 1) % inboxes.len();
    }
    drop(listener);
    drop(inboxes);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

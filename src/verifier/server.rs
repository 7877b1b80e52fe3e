//! Listeners and lifecycle: the main and admin HTTP servers, the key-set watcher, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::api_source;
use super::clock::{Clock, SystemClock};
use super::loader::{KeyStore, Loader, watch as watch_keyset};
use super::metrics::Metrics;
use super::respond::{self, Body};
use super::routes::Routes;
use super::service::{Upstream, Verifier};
use crate::keyset::KeySetId;

/// Largest request head (request line plus headers) read; larger ones get `431`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

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
}

impl Running {
    /// Stop accepting, let in-flight requests finish (up to the grace period), and stop watching.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
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
        Some(_) => {
            Some(kube::Client::try_default().await.context("connecting to the Kubernetes API for --watch-keyset")?)
        }
        None => None,
    };
    let routes = match &config.routes {
        Some(path) => Routes::load(path)?,
        None => Routes::default(),
    };
    let upstream = config.upstream.as_deref().map(|url| Upstream::new(url, config.upstream_timeout)).transpose()?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let admin =
        TcpListener::bind(config.admin_listen).await.with_context(|| format!("binding {}", config.admin_listen))?;
    let (addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);

    let store = Arc::new(KeyStore::default());
    let metrics = Arc::new(Metrics::new());
    let verifier = Arc::new(Verifier::new(Arc::clone(&store), routes, Arc::clone(&metrics), clock, upstream));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let mut stop_watching = stopped.clone();
    let source: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
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

    let main_handler = move |request: Request<Incoming>| {
        let verifier = Arc::clone(&verifier);
        async move { Ok::<_, Infallible>(verifier.handle(request).await) }
    };
    tasks.spawn(serve(listener, main_handler, config.header_read_timeout, config.shutdown_grace, stopped.clone()));

    let admin_state = (Arc::clone(&store), Arc::clone(&metrics));
    let admin_handler = move |request: Request<Incoming>| {
        let (store, metrics) = admin_state.clone();
        async move { Ok::<_, Infallible>(admin_answer(&store, &metrics, &request)) }
    };
    tasks.spawn(serve(admin, admin_handler, config.header_read_timeout, config.shutdown_grace, stopped));

    tracing::info!(%addr, %admin_addr, mode = if config.upstream.is_some() { "proxy" } else { "forward-auth" }, "verifier listening");
    Ok(Running { addr, admin_addr, store, metrics, stop, tasks })
}

/// Run until `signal` completes, then shut down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// The admin listener's answers.
fn admin_answer<B>(store: &KeyStore, metrics: &Metrics, request: &Request<B>) -> Response<Body> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(respond::full(body));
        *response.status_mut() = status;
        response
    };
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if store.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: no valid key set has loaded\n"),
        "/metrics" => {
            if let Some(age) = store.since_last_load() {
                metrics.seconds_since_reload.set(age.as_secs_f64());
            }
            let mut response = Response::new(respond::full(metrics.encode()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Accept connections until told to stop, then wait for open ones (up to `grace`).
async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    header_read_timeout: Duration,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service_fn(handler.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // hyper's messages name the failure (timeout, too large), never request contents.
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing open connections"),
    }
}

//! `keyward fake-apiserver`'s serving: the test kit's in-memory API behind keyward's one HTTP/1 serve loop.

use std::future::Future;
use std::sync::Arc;

use keyward_testkit::fakeapi::WatchService;
use keyward_testkit::fakeapi::server::{Writes, handler};
use tokio::net::TcpListener;

/// Serve `api` on `listener` until `shutdown` resolves, counting writes into `writes`.
pub async fn serve(listener: TcpListener, api: WatchService, writes: Arc<Writes>, shutdown: impl Future<Output = ()>) {
    crate::net::serve_http1(listener, "fake API server", handler(api, writes), shutdown).await;
}

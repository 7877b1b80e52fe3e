//! Why the operator keeps its own "listed everything" flags (`filled` in controller/cluster.rs)
//! and polls `Store::wait_until_ready` with a timeout (controller/run.rs).
//!
//! kube-runtime 4.2 signals a store's readiness through one shared `futures` oneshot
//! receiver (`utils::delayed_init`), and a oneshot receiver keeps a single waker: of two tasks
//! waiting on clones of one store, only the last one to poll is woken when the first list is
//! done. The Controller waits on the store it is given, so any other waiter on that store can
//! sleep forever. This test pins that behaviour down: when kube-runtime fixes it, it fails, and
//! the workarounds can go.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Wake, Waker};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{reflector, watcher};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Wakes {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn kube_runtime_wakes_only_the_last_of_two_tasks_waiting_for_one_store() {
    let (store, mut writer) = reflector::store::<ConfigMap>();
    let (first_waker, second_waker) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
    let (first_cx_waker, second_cx_waker) = (Waker::from(first_waker.clone()), Waker::from(second_waker.clone()));
    let mut first = std::pin::pin!(store.wait_until_ready());
    let mut second = std::pin::pin!(store.wait_until_ready());
    assert!(first.as_mut().poll(&mut Context::from_waker(&first_cx_waker)).is_pending());
    assert!(second.as_mut().poll(&mut Context::from_waker(&second_cx_waker)).is_pending());

    writer.apply_watcher_event(&watcher::Event::InitDone);

    assert_eq!(second_waker.count(), 1, "the last task to wait is woken");
    assert_eq!(
        first_waker.count(),
        0,
        "the first is not (kube-runtime keeps one waker); if this fails, kube-runtime fixed it: \
         drop the polling in controller/run.rs and the `filled` flags in controller/cluster.rs"
    );
    // Polled again for any other reason, the first one sees the store ready.
    assert!(first.as_mut().poll(&mut Context::from_waker(&first_cx_waker)).is_ready());
}

//! The connection cap of a listener: how many connections may be open, which one to close when a new one arrives at the cap.
//!
//! At the cap a new connection takes the place of an idle one, so that no
//! client can lock others out by holding connections open: first the oldest
//! connection that has not yet sent a request (slow or idle openers), then the
//! oldest keep-alive connection waiting between requests. A connection with a
//! request in progress is never chosen; when every connection is busy the new
//! one gets a fixed `503` and is closed. The chosen connection is closed with
//! hyper's graceful shutdown, which closes an idle connection at once and lets
//! a request in progress finish.
//!
//! The default cap comes from the file-descriptor limit ([`default_max_connections`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, watch};

/// File descriptors kept back from connections: key-set files, inotify, the admin listener, the Kubernetes client, stdio.
const RESERVED_FDS: u64 = 64;
/// The default cap never goes below this (a tiny fd limit still serves a few clients) ...
const MIN_DEFAULT: usize = 8;
/// ... nor above this (each open connection holds buffers; a huge fd limit is not a memory budget).
const MAX_DEFAULT: usize = 16 * 1024;
/// The cap when the fd limit cannot be read (or is unlimited).
const FALLBACK_DEFAULT: usize = 1024;

/// The default connection cap for a soft fd limit: half of what is left after
/// a reserve, since in proxy mode each client connection can hold an upstream
/// connection too.
#[must_use]
pub fn max_connections_for(fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let half = limit.saturating_sub(RESERVED_FDS) / 2;
            usize::try_from(half).unwrap_or(usize::MAX).clamp(MIN_DEFAULT, MAX_DEFAULT)
        }
        None => FALLBACK_DEFAULT,
    }
}

/// The default connection cap of this process, from its soft `RLIMIT_NOFILE` (read from `/proc/self/limits`).
#[must_use]
pub fn default_max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    max_connections_for(limits.as_deref().and_then(soft_fd_limit))
}

/// The soft "Max open files" limit in the text of `/proc/self/limits`; `None` if absent or unlimited.
#[must_use]
pub fn soft_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Counters and gauges a gate keeps up to date.
#[derive(Debug, Clone, Default)]
pub struct GateMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Idle connections closed to make room for a new one.
    pub evicted: Counter,
    /// New connections refused because every open one was busy.
    pub refused: Counter,
}

/// One open connection, as the gate sees it.
#[derive(Debug, Default)]
struct Slot {
    /// Requests in progress on it.
    busy: AtomicUsize,
    /// Whether it ever delivered a request head.
    served: AtomicBool,
    /// Set once chosen for closing; it no longer counts against the cap.
    evicting: AtomicBool,
    evict: Notify,
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    /// By age: ids only grow.
    open: BTreeMap<u64, Arc<Slot>>,
    /// Open and not being closed.
    live: usize,
}

/// The cap on one listener's connections.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    slots: Mutex<Slots>,
    /// How many connections are open (including those being closed), for draining on shutdown.
    count: watch::Sender<usize>,
    metrics: GateMetrics,
}

impl Gate {
    /// A gate letting at most `max` connections (at least one) be open at a time.
    #[must_use]
    pub fn new(max: usize, metrics: GateMetrics) -> Arc<Gate> {
        Arc::new(Gate { max: max.max(1), slots: Mutex::default(), count: watch::Sender::new(0), metrics })
    }

    /// The cap.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the listener is at its cap: the next client takes an idle client's place, or is refused.
    #[must_use]
    pub fn saturated(&self) -> bool {
        self.slots().live >= self.max
    }

    /// Let a new connection in, closing an idle one if at the cap; `None` if every open connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Permit> {
        let mut slots = self.slots();
        if slots.live >= self.max {
            let idle = |s: &&Arc<Slot>| s.busy.load(Ordering::Acquire) == 0 && !s.evicting.load(Ordering::Acquire);
            let victim = slots
                .open
                .values()
                .filter(idle)
                .find(|s| !s.served.load(Ordering::Acquire))
                .or_else(|| slots.open.values().find(idle))
                .cloned();
            let Some(victim) = victim else {
                self.metrics.refused.inc();
                return None;
            };
            victim.evicting.store(true, Ordering::Release);
            victim.evict.notify_one();
            slots.live -= 1;
            self.metrics.evicted.inc();
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let slot = Arc::new(Slot::default());
        slots.open.insert(id, Arc::clone(&slot));
        slots.live += 1;
        let open = slots.open.len();
        drop(slots);
        self.count.send_replace(open);
        self.metrics.open.set(i64::try_from(open).unwrap_or(i64::MAX));
        Some(Permit { gate: Arc::clone(self), id, slot })
    }

    /// Wait until every connection admitted has closed.
    pub async fn drained(&self) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|open| *open == 0).await;
    }
}

/// A connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    id: u64,
    slot: Arc<Slot>,
}

impl Permit {
    /// A handle that marks requests in progress, for the connection's request handler.
    #[must_use]
    pub fn tracker(&self) -> Tracker {
        Tracker(Arc::clone(&self.slot))
    }

    /// Completes when the gate chose this connection to make room for a new one.
    pub async fn evicted(&self) {
        self.slot.evict.notified().await;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut slots = self.gate.slots();
        if slots.open.remove(&self.id).is_some() && !self.slot.evicting.load(Ordering::Acquire) {
            slots.live -= 1;
        }
        let open = slots.open.len();
        drop(slots);
        self.gate.count.send_replace(open);
        self.gate.metrics.open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

/// Marks requests in progress on one connection (cloned into its request handler).
#[derive(Debug, Clone)]
pub struct Tracker(Arc<Slot>);

impl Tracker {
    /// Mark a request in progress until the guard is dropped; the connection is not chosen for closing meanwhile.
    #[must_use]
    pub fn busy(&self) -> BusyGuard {
        self.0.served.store(true, Ordering::Release);
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(Arc::clone(&self.0))
    }
}

/// A request in progress; see [`Tracker::busy`].
#[derive(Debug)]
pub struct BusyGuard(Arc<Slot>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The fixed answer to a connection refused at the cap, written before closing it.
pub const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_follows_the_fd_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            128                  4096                 files\n";
        assert_eq!(soft_fd_limit(limits), Some(128));
        assert_eq!(max_connections_for(Some(128)), 32, "(128 - 64) / 2");
        assert_eq!(max_connections_for(Some(1024)), 480);
        assert_eq!(max_connections_for(Some(20)), MIN_DEFAULT);
        assert_eq!(max_connections_for(Some(1 << 20)), MAX_DEFAULT);
        assert_eq!(soft_fd_limit("Max open files            unlimited            unlimited            files\n"), None);
        assert_eq!(max_connections_for(None), FALLBACK_DEFAULT);
    }

    #[test]
    fn at_the_cap_a_new_connection_replaces_the_oldest_idle_one_preferring_those_that_never_sent_a_request() {
        let gate = Gate::new(3, GateMetrics::default());
        let evicting = |p: &Permit| p.slot.evicting.load(Ordering::Acquire);
        let keep_alive = gate.admit().unwrap();
        drop(keep_alive.tracker().busy());
        let busy = gate.admit().unwrap();
        let _in_progress = busy.tracker().busy();
        let opener = gate.admit().unwrap();
        assert!(gate.saturated());

        let newcomer = gate.admit().expect("an idle connection makes room");
        assert!(evicting(&opener), "the one that never sent a request goes first");
        assert!(!evicting(&keep_alive));
        let _newcomer_request = newcomer.tracker().busy();
        let second = gate.admit().expect("then the idle keep-alive one");
        assert!(evicting(&keep_alive) && !evicting(&busy) && !evicting(&newcomer));
        let third = gate.admit().expect("the second newcomer has sent nothing yet");
        assert!(evicting(&second));
        let _third_request = third.tracker().busy();
        assert!(gate.admit().is_none(), "every connection is busy: refused");
        assert_eq!((gate.metrics.evicted.get(), gate.metrics.refused.get()), (3, 1));

        drop((opener, keep_alive, second));
        assert!(gate.saturated(), "closing the evicted ones frees nothing more");
        drop(third);
        assert!(!gate.saturated());
    }
}

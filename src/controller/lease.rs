//! Leader election on a coordination.k8s.io/v1 Lease: only the holder runs the controller.
//!
//! The rules are client-go's. A replica takes the Lease when it has no holder
//! or when it has not changed for `leaseDurationSeconds` as seen by this
//! replica's own clock (judging by the holder's `renewTime` would trust two
//! clocks to agree). Every write is a replace carrying the `resourceVersion`
//! just read, so when two replicas race for a free Lease the API server lets
//! one win and answers the other 409. The leader renews every retry period;
//! when it has not renewed for the renew deadline (shorter than the lease
//! duration, so it stops before anyone else may take over), or when it sees
//! another holder, it has lost: it stops the controller and [`run_elected`]
//! returns [`LeaseError::Lost`], on which `keyward operator` exits non-zero
//! and Kubernetes restarts it as a fresh follower. Exiting is simpler and
//! safer than resetting caches, the publisher and in-flight reconciles in
//! place. On graceful shutdown the leader releases the Lease so that the other
//! replica takes over without waiting for it to expire.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{error, info, warn};

use super::{Clock, Options, run};

/// Where the Lease is and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease nobody renews stays held.
    pub lease_duration: Duration,
    /// How long the leader keeps working without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower tries to acquire.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    #[must_use]
    pub fn new(name: &str, namespace: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The durations must nest: retry period < renew deadline < lease duration.
    pub fn check(&self) -> Result<(), LeaseError> {
        if self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration {
            Ok(())
        } else {
            Err(LeaseError::Settings)
        }
    }
}

/// Why leader election stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Reading or writing the Lease failed.
    #[error("{action} Lease: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// This replica led and lost the Lease.
    #[error("lost the leader Lease: {0}")]
    Lost(String),
    /// The controller ended while this replica still led (it only ends on shutdown).
    #[error("the controller stopped while leading")]
    ControllerStopped,
    /// The durations do not nest.
    #[error("the retry period must be shorter than the renew deadline, and that shorter than the lease duration")]
    Settings,
}

fn kube_error(action: &'static str) -> impl FnOnce(kube::Error) -> LeaseError {
    move |source| LeaseError::Kube { action, source: Box::new(source) }
}

/// The outcome of one attempt to acquire or renew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This replica holds the Lease (just acquired or renewed).
    Leading,
    /// Another replica holds it and has renewed it recently.
    HeldBy(String),
    /// The Lease changed between read and write (HTTP 409); try again next period.
    Contended,
}

/// One replica's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: Clock,
    /// The Lease's resourceVersion when last seen to change, and when that was by our clock.
    observed: Option<(Option<String>, Timestamp)>,
}

impl Elector {
    /// An elector for `settings` reading time from `clock`.
    #[must_use]
    pub fn new(client: Client, settings: LeaseSettings, clock: Clock) -> Elector {
        Elector { api: Api::namespaced(client, &settings.namespace), settings, clock, observed: None }
    }

    /// Acquire the Lease if it is free or expired, renew it if it is ours.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Standing, LeaseError> {
        let now = (self.clock)();
        let Some(lease) = self.api.get_opt(&self.settings.name).await.map_err(kube_error("read"))? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.held_spec(&LeaseSpec::default(), now, true)),
            };
            return self.written(self.api.create(&PostParams::default(), &lease).await, now, "create");
        };
        let version = lease.metadata.resource_version.clone();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != version) {
            self.observed = Some((version, now));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.settings.identity.as_str());
        if let Some(holder) = holder.filter(|_| !mine) {
            let duration = spec
                .lease_duration_seconds
                .map_or(self.settings.lease_duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            let unchanged_since = self.observed.as_ref().map_or(now, |(_, at)| *at);
            if now.duration_since(unchanged_since).as_secs_f64() < duration.as_secs_f64() {
                return Ok(Standing::HeldBy(holder));
            }
            info!(lease = %self.settings.name, previous = %holder, "leader Lease expired; taking it over");
        }
        let next = Lease { metadata: lease.metadata.clone(), spec: Some(self.held_spec(&spec, now, !mine)) };
        self.written(self.api.replace(&self.settings.name, &PostParams::default(), &next).await, now, "update")
    }

    /// Give the Lease up if this replica holds it, so that another takes over at once.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await.map_err(kube_error("read"))? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime((self.clock)()));
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(kube_error("release")(e)),
        }
    }

    fn held_spec(&self, previous: &LeaseSpec, now: Timestamp, acquiring: bool) -> LeaseSpec {
        let transitions = previous.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: if acquiring { Some(MicroTime(now)) } else { previous.acquire_time.clone() },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if acquiring && previous.holder_identity.is_some() {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..previous.clone()
        }
    }

    fn written(
        &mut self,
        result: Result<Lease, kube::Error>,
        now: Timestamp,
        action: &'static str,
    ) -> Result<Standing, LeaseError> {
        match result {
            Ok(lease) => {
                self.observed = Some((lease.metadata.resource_version, now));
                Ok(Standing::Leading)
            }
            // Another replica wrote first (an update raced, or a create found the Lease made).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Standing::Contended),
            Err(e) => Err(kube_error(action)(e)),
        }
    }
}

/// Follow until this replica holds the Lease, then run the operator until
/// `shutdown` (returns `Ok`, Lease released) or until the Lease is lost
/// (returns [`LeaseError::Lost`] once the controller has stopped).
pub async fn run_elected(
    client: Client,
    options: Options,
    settings: LeaseSettings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), LeaseError> {
    settings.check()?;
    let shutdown = shutdown.shared();
    let clock = options.clock.clone();
    let metrics = options.metrics.clone();
    let retry = settings.retry_period;
    let renew_deadline = settings.renew_deadline;
    // What is left of the lease duration once the renew deadline has passed: the old leader's time to stop.
    let stop_within = settings.lease_duration.saturating_sub(settings.renew_deadline);
    let mut elector = Elector::new(client.clone(), settings.clone(), clock.clone());

    let mut last_holder = None;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(Standing::Leading) => break,
            Ok(Standing::HeldBy(holder)) => {
                if last_holder.as_ref() != Some(&holder) {
                    info!(lease = %settings.name, leader = %holder, "following");
                    last_holder = Some(holder);
                }
            }
            Ok(Standing::Contended) => {}
            Err(e) => warn!(error = %e, "leader election attempt failed"),
        }
        tokio::select! {
            () = shutdown.clone() => return Ok(()),
            () = tokio::time::sleep(retry) => {}
        }
    }

    info!(lease = %settings.name, identity = %settings.identity, "became leader");
    metrics.set_leader(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut work = tokio::spawn(run(client, options, async move {
        let _ = stopped.await;
    }));
    let mut renewed = clock();
    let outcome = loop {
        tokio::select! {
            () = shutdown.clone() => break Ok(()),
            _ = &mut work => break Err(LeaseError::ControllerStopped),
            () = tokio::time::sleep(retry) => {}
        }
        let now = clock();
        match elector.try_acquire_or_renew().await {
            Ok(Standing::Leading) => renewed = now,
            Ok(Standing::HeldBy(holder)) => break Err(LeaseError::Lost(format!("{holder} holds it now"))),
            Ok(Standing::Contended) => warn!("leader Lease renewal conflicted; retrying"),
            Err(e) => warn!(error = %e, "leader Lease renewal failed; retrying"),
        }
        if now.duration_since(renewed).as_secs_f64() >= renew_deadline.as_secs_f64() {
            break Err(LeaseError::Lost(format!("not renewed within {}", humantime::format_duration(renew_deadline))));
        }
    };

    let _ = stop.send(());
    // The work must end while the Lease is still ours: by the renew deadline after the last renewal
    // on shutdown, within what is left of the lease duration once lost. What has not finished is aborted.
    let since_renewal = Duration::try_from(clock().duration_since(renewed)).unwrap_or_default();
    let allowed = match &outcome {
        Ok(()) => renew_deadline.saturating_sub(since_renewal),
        Err(e) => {
            error!(error = %e, "stopping: no longer the leader");
            stop_within
        }
    };
    if !work.is_finished() && tokio::time::timeout(allowed, &mut work).await.is_err() {
        warn!("in-flight work did not finish in time; aborted");
        work.abort();
    }
    if outcome.is_ok()
        && let Err(e) = elector.release().await
    {
        warn!(error = %e, "could not release the leader Lease; the other replica takes over when it expires");
    }
    metrics.set_leader(false);
    outcome
}

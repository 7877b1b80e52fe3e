//! Which workloads to restart after a rotation, and when: pure, like the rest of the plan.
//!
//! A workload opts in on itself with the annotation [`RESTART_ANNOTATION`]
//! naming the ApiKeys (of its namespace) whose rotation should restart it:
//! the team that owns a workload knows how it reads its token, the team that
//! owns a key may not know who uses it. A ClusterApiKey is named `cluster/<name>` (its
//! owner text in key sets; an ApiKey's name cannot hold a `/`), by workloads of its
//! `spec.secretNamespace`, where its token is. A rotation restarts an opted-in
//! workload once, `delay` after the swap (so keys rotating together restart
//! it once), by changing [`RESTARTED_AT_ANNOTATION`] in its pod template, the
//! way `kubectl rollout restart` does; the same value on the workload's own
//! metadata records that the restart was asked for. The decision is level
//! based: a workload whose recorded restart is older than the key's last swap
//! is restarted, so a crash between the swap and the patch costs nothing.

use jiff::{SignedDuration, Timestamp};

/// Workload annotation listing the keys whose rotation restarts it (`crm, billing, cluster/agency`).
pub const RESTART_ANNOTATION: &str = "keyward.dev/restart-on-rotation";
/// Pod-template (and workload) annotation keyward sets to restart a workload.
pub const RESTARTED_AT_ANNOTATION: &str = "keyward.dev/restarted-at";
/// How long after a swap an opted-in workload is restarted, by default.
pub const DEFAULT_RESTART_DELAY: SignedDuration = SignedDuration::from_secs(10);

/// What the controller saw of one opted-in workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The ApiKeys its [`RESTART_ANNOTATION`] names.
    pub keys: Vec<String>,
    /// When keyward last restarted it ([`RESTARTED_AT_ANNOTATION`] on its metadata).
    pub restarted_at: Option<Timestamp>,
}

impl Workload {
    /// The ApiKey names of a [`RESTART_ANNOTATION`] value: comma- or space-separated.
    #[must_use]
    pub fn keys_of(annotation: &str) -> Vec<String> {
        annotation.split([',', ' ', '\n', '\t']).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

/// What to do about restarts for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restarts {
    /// Workloads (kind, name) to restart now, stamped with `now`.
    pub now: Vec<(&'static str, String)>,
    /// When to look again (a restart waiting for its delay).
    pub requeue_at: Option<Timestamp>,
}

/// Restarts owed to the workloads that name `key` after its swap at `swapped_at`
/// (`status.lastRotatedAt`), while the previous token is in its grace period.
#[must_use]
pub fn restarts(
    key: &str,
    swapped_at: Option<Timestamp>,
    in_grace: bool,
    workloads: &[Workload],
    delay: SignedDuration,
    now: Timestamp,
) -> Restarts {
    let mut out = Restarts::default();
    let Some(swapped_at) = swapped_at.filter(|_| in_grace) else { return out };
    let due = swapped_at.checked_add(delay).unwrap_or(swapped_at);
    for workload in workloads.iter().filter(|w| w.keys.iter().any(|k| k == key)) {
        if workload.restarted_at.is_some_and(|at| at >= swapped_at) {
            continue;
        }
        if now >= due {
            out.now.push((workload.kind, workload.name.clone()));
        } else {
            out.requeue_at = Some(due);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn workload(name: &str, keys: &str, restarted_at: Option<Timestamp>) -> Workload {
        Workload { kind: "Deployment", name: name.to_owned(), keys: Workload::keys_of(keys), restarted_at }
    }

    const DELAY: SignedDuration = SignedDuration::from_secs(10);

    #[test]
    fn a_workload_naming_the_key_is_restarted_once_after_the_delay() {
        let workloads = [workload("api", "crm, billing", None), workload("other", "billing", None)];

        let early = restarts("crm", Some(at(0)), true, &workloads, DELAY, at(3));
        assert_eq!(early, Restarts { now: vec![], requeue_at: Some(at(10)) }, "waits for keys rotating together");

        let due = restarts("crm", Some(at(0)), true, &workloads, DELAY, at(10));
        assert_eq!(due.now, vec![("Deployment", "api".to_owned())], "only the workload that names the key");

        let restarted = [workload("api", "crm, billing", Some(at(10)))];
        assert_eq!(restarts("crm", Some(at(0)), true, &restarted, DELAY, at(60)), Restarts::default(), "once");
    }

    #[test]
    fn keys_swapped_within_the_delay_restart_a_workload_once() {
        // billing swapped 4 s after crm; crm's restart at 10 s covers both swaps.
        let after_crm = [workload("api", "crm,billing", Some(at(10)))];
        assert_eq!(restarts("billing", Some(at(4)), true, &after_crm, DELAY, at(14)), Restarts::default());
    }

    #[test]
    fn no_rotation_or_no_grace_means_no_restart() {
        let workloads = [workload("api", "crm", None)];
        assert_eq!(restarts("crm", None, true, &workloads, DELAY, at(100)), Restarts::default(), "never rotated");
        assert_eq!(restarts("crm", Some(at(0)), false, &workloads, DELAY, at(100)), Restarts::default(), "grace over");
    }

    #[test]
    fn a_cluster_key_is_named_cluster_slash_name_and_not_by_its_bare_name() {
        let workloads = [workload("api", "agency", None), workload("agent", "crm, cluster/agency", None)];
        let due = restarts("cluster/agency", Some(at(0)), true, &workloads, DELAY, at(10));
        assert_eq!(due.now, vec![("Deployment", "agent".to_owned())], "an ApiKey named agency is another key");
    }

    #[test]
    fn a_later_rotation_restarts_again() {
        let workloads = [workload("api", "crm", Some(at(10)))];
        let second = restarts("crm", Some(at(3_600)), true, &workloads, DELAY, at(3_610));
        assert_eq!(second.now, vec![("Deployment", "api".to_owned())]);
    }
}

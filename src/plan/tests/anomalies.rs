//! Usage anomalies through the lifecycle: one Warning Event per kind and 24 hours, remembered
//! in status across restarts, and only for a key that works.

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fixtures::{T0, World, an_api_key, at};
use crate::api::{RequestCounts, Usage};
use crate::plan::anomaly::AnomalyKind;
use crate::plan::{EventKind, Reason};

/// A key created at [`T0`], Ready, and eight days later.
fn a_week_old_key() -> World {
    let mut key = an_api_key("crm").build();
    key.metadata.creation_timestamp = Some(Time(at(T0)));
    let mut world = World::converged(key, T0);
    world.after(SignedDuration::from_hours(8 * 24));
    world
}

/// A week-old key after a usage write with a spike, which was notified.
fn a_key_whose_spike_was_notified() -> World {
    let mut world = a_week_old_key();
    usage_written(&mut world, (20_000, 0), (23_000, 0));
    world.reconcile();
    world
}

/// The usage writer's status write: counts computed now.
fn usage_written(world: &mut World, day: (u64, u64), week: (u64, u64)) {
    let status = world.key.status.get_or_insert_with(Default::default);
    status.usage = Some(Usage {
        last24h: RequestCounts { allowed: day.0, denied: day.1 },
        last7d: RequestCounts { allowed: week.0, denied: week.1 },
        last30d: RequestCounts { allowed: week.0, denied: week.1 },
        updated_at: Some(Time(world.now)),
    });
}

fn anomaly_notes(world: &World) -> Vec<String> {
    let events = world.plans.iter().flat_map(|p| &p.events);
    events.filter(|e| e.reason == Reason::UsageAnomaly).map(|e| e.note.clone()).collect()
}

#[test]
fn a_spike_is_one_warning_event_recorded_in_status_and_not_repeated_for_a_day() {
    let mut world = a_week_old_key();
    usage_written(&mut world, (20_000, 0), (23_000, 0));
    let plan = world.reconcile();
    assert_eq!(plan.anomalies, [AnomalyKind::AllowedSpike]);
    let event = plan.events.iter().find(|e| e.reason == Reason::UsageAnomaly).expect("an Event");
    assert_eq!(event.kind, EventKind::Warning);
    assert_eq!(
        event.note,
        "Unusual usage: AllowedSpike: 20000 requests allowed in the last 24h, against 500 a day over the 6 days before"
    );
    let record = &world.status().usage_anomalies;
    assert_eq!(record.len(), 1);
    assert_eq!((record[0].kind.as_str(), record[0].notified_at.0), ("AllowedSpike", world.now));

    // More usage writes, a restart, hours later: the same spike is not notified again.
    for hours in [1, 5, 12] {
        world.restart();
        world.after(SignedDuration::from_hours(hours));
        usage_written(&mut world, (25_000, 0), (28_000, 0));
        world.reconcile();
    }
    assert_eq!(anomaly_notes(&world).len(), 1, "{:?}", anomaly_notes(&world));

    // A day after the notice, a spike still going on is notified again.
    world.after(SignedDuration::from_hours(7));
    usage_written(&mut world, (30_000, 0), (33_000, 0));
    world.reconcile();
    assert_eq!(anomaly_notes(&world).len(), 2, "{:?}", anomaly_notes(&world));
}

#[test]
fn a_denial_surge_after_a_spike_is_notified_on_its_own() {
    let mut world = a_key_whose_spike_was_notified();
    world.after(SignedDuration::from_hours(1));
    usage_written(&mut world, (20_000, 30_000), (23_000, 30_000));
    let plan = world.reconcile();
    assert_eq!(plan.anomalies, [AnomalyKind::DeniedSpike, AnomalyKind::DenialSurge], "the spike was already said");
    let kinds: Vec<&str> = world.status().usage_anomalies.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["AllowedSpike", "DenialSurge", "DeniedSpike"]);
}

#[test]
fn usual_usage_a_new_key_and_a_disabled_key_give_no_anomaly() {
    let mut world = a_week_old_key();
    usage_written(&mut world, (20_000, 0), (140_000, 0));
    assert!(world.reconcile().anomalies.is_empty(), "steady use");

    let mut key = an_api_key("new").build();
    key.metadata.creation_timestamp = Some(Time(at(T0)));
    let mut new = World::converged(key, T0);
    new.after(SignedDuration::from_hours(10));
    usage_written(&mut new, (50_000, 0), (50_000, 0));
    assert!(new.reconcile().anomalies.is_empty(), "the first day of a new key has no baseline");

    let mut disabled = a_week_old_key();
    disabled.key.spec.active = false;
    disabled.reconcile();
    usage_written(&mut disabled, (0, 5_000), (0, 5_000));
    assert!(disabled.reconcile().anomalies.is_empty(), "a disabled key's refusals are expected");
}

#[test]
fn stale_counts_are_not_judged_and_the_check_can_be_off() {
    let mut world = a_week_old_key();
    usage_written(&mut world, (20_000, 0), (23_000, 0));
    world.now = world.now.checked_add(SignedDuration::from_hours(25)).unwrap();
    assert!(world.reconcile().anomalies.is_empty(), "counts from more than a day ago");

    let mut off = a_week_old_key();
    off.settings.anomalies = None;
    usage_written(&mut off, (20_000, 0), (23_000, 0));
    assert!(off.reconcile().anomalies.is_empty());
    assert!(off.status().usage_anomalies.is_empty());
}

#[test]
fn an_old_record_goes_once_the_anomaly_is_over() {
    let mut world = a_key_whose_spike_was_notified();
    world.after(SignedDuration::from_hours(25));
    usage_written(&mut world, (300, 0), (23_300, 0));
    world.reconcile();
    assert!(world.status().usage_anomalies.is_empty(), "{:?}", world.status().usage_anomalies);
    assert_eq!(anomaly_notes(&world).len(), 1);
}

//! A key's own notice points (`spec.expiryNotices`) in place of the operator's `--expiry-notices`.

use jiff::{SignedDuration, Timestamp};

use super::fixtures::{KeyBuilder, T0, World, at, mins};

/// The notice points of every `ExpiringSoon` Event sent so far, in order (`30d`, `7d`).
fn notices_sent(world: &World) -> Vec<String> {
    world
        .plans
        .iter()
        .flat_map(|p| &p.events)
        .filter(|e| e.reason.as_str() == "ExpiringSoon")
        .map(|e| {
            e.note
                .rsplit_once("notice ")
                .map_or(e.note.clone(), |(_, rest)| rest.trim_end_matches(" before").to_owned())
        })
        .collect()
}

/// Walk the clock from `now` to `until` one hour at a time, restarting the operator every
/// `restart_every` hours, so that every notice point and every restart in between is seen.
fn walk(world: &mut World, until: Timestamp, restart_every: i64) {
    let mut hour = 0;
    while world.now < until {
        world.after(SignedDuration::from_hours(1));
        hour += 1;
        if hour % restart_every == 0 {
            world.restart();
            world.reconcile();
        }
    }
}

fn expiring(yaml: &str) -> World {
    World::converged(KeyBuilder::from_yaml(yaml).build(), T0)
}

#[test]
fn a_key_with_its_own_notice_points_gets_exactly_those_each_once_across_restarts() {
    let mut world =
        expiring("scopes: [\"a:read\"]\nexpiresAt: \"2026-03-01T00:00:00Z\"\nexpiryNotices: [\"7d\", \"30d\"]");
    assert_eq!(world.plan().requeue_at, Some(at("2026-01-30T00:00:00Z")), "the first look is 30 days before");
    walk(&mut world, at("2026-03-01T00:00:00Z"), 5);
    assert_eq!(notices_sent(&world), ["30d", "7d"], "the operator's 15d and 1d are not sent");
    assert_eq!(world.status().state, Some(crate::api::KeyState::Expired));
}

#[test]
fn each_own_notice_point_is_a_deadline_not_a_poll() {
    let mut world =
        expiring("scopes: [\"a:read\"]\nexpiresAt: \"2026-03-01T00:00:00Z\"\nexpiryNotices: [\"30d\", \"7d\"]");
    let first = world.at_deadline(&world.plan());
    assert_eq!(notices_sent(&world), ["30d"]);
    assert_eq!(first.requeue_at, Some(at("2026-02-22T00:00:00Z")), "then 7 days before");
    let second = world.at_deadline(&first);
    assert_eq!(notices_sent(&world), ["30d", "7d"]);
    assert_eq!(second.requeue_at, Some(at("2026-03-01T00:00:00Z")), "then the expiry itself");
}

#[test]
fn an_empty_list_sends_no_notices_and_sets_no_condition() {
    let mut world = expiring("scopes: [\"a:read\"]\nexpiresAt: \"2026-02-01T00:00:00Z\"\nexpiryNotices: []");
    assert_eq!(world.plan().requeue_at, Some(at("2026-02-01T00:00:00Z")), "only the expiry is a deadline");
    walk(&mut world, at("2026-02-01T00:00:00Z"), 7);
    assert_eq!(notices_sent(&world), Vec::<String>::new());
    assert!(!world.status().conditions.iter().any(|c| c.type_ == "ExpiringSoon"), "{:?}", world.status().conditions);
    assert_eq!(world.status().state, Some(crate::api::KeyState::Expired), "the key still expires");
}

#[test]
fn own_notice_points_in_hours_and_minutes_are_recorded_exactly() {
    let mut world =
        expiring("scopes: [\"a:read\"]\nexpiresAt: \"2026-01-10T00:00:00Z\"\nexpiryNotices: [\"36h\", \"1h30m\"]");
    world.now = at("2026-01-08T12:00:00Z");
    world.reconcile();
    assert_eq!(world.status().expiry_notice.as_ref().map(|n| n.before.as_str()), Some("36h"));
    world.now = at("2026-01-09T22:30:00Z");
    world.reconcile();
    world.restart();
    world.after(mins(10));
    assert_eq!(world.status().expiry_notice.as_ref().map(|n| n.before.as_str()), Some("1h30m"));
    assert_eq!(notices_sent(&world), ["36h", "1h30m"], "each once, also after the restart");
}

#[test]
fn an_unused_key_with_its_own_points_is_warned_at_those_before_it_expires_as_unused() {
    let mut world = expiring("scopes: [\"a:read\"]\nexpireAfterUnused: 60d\nexpiryNotices: [\"21d\", \"2d\"]");
    let deadline = super::fixtures::ready_since(&world) + SignedDuration::from_hours(60 * 24);
    walk(&mut world, deadline, 11);
    assert_eq!(notices_sent(&world), ["21d", "2d"]);
    let note = world.plans.iter().flat_map(|p| &p.events).find(|e| e.reason.as_str() == "ExpiringSoon").unwrap();
    assert!(note.note.contains("(Unused)"), "{}", note.note);
    assert_eq!(super::fixtures::ready_reason(&world).1, "Unused");
}

#[test]
fn points_changed_after_a_notice_apply_from_the_next_point_on() {
    let mut world = expiring("scopes: [\"a:read\"]\nexpiresAt: \"2026-02-01T00:00:00Z\"");
    world.now = at("2026-01-17T00:00:00Z");
    world.reconcile();
    assert_eq!(notices_sent(&world), ["15d"], "the operator's default");
    world.key.spec.expiry_notices = Some(vec!["10d".to_owned(), "3d".to_owned()]);
    world.key.metadata.generation = Some(2);
    let plan = world.reconcile();
    assert_eq!(notices_sent(&world), ["15d"], "10d is not reached yet and 15d is not sent again");
    assert_eq!(plan.requeue_at, Some(at("2026-01-22T00:00:00Z")));
    walk(&mut world, at("2026-02-01T00:00:00Z"), 13);
    assert_eq!(notices_sent(&world), ["15d", "10d", "3d"]);
}

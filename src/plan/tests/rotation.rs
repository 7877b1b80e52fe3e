//! Rotation: schedule, triggers, publish next, swap after the delay, grace, retire; crashes at every write.

use crate::api::KeyState;
use crate::plan::Reason;

use super::fixtures::{T0, World, an_api_key, at, later, mins, slot, stranger_token, swap, writes};

#[test]
fn rotation_every_interval_requeues_exactly_at_the_due_time() {
    let world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    let plan = world.plan();
    assert_eq!(plan.requeue_at, Some(at("2026-01-31T00:00:00Z")));
    assert_eq!(world.status().next_rotation_at.as_ref().map(|t| t.0), Some(at("2026-01-31T00:00:00Z")));
}

#[test]
fn due_rotation_persists_the_next_token_and_publishes_it_beside_the_current_one() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    let old = world.current_token().clone();

    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));

    let next = world.secret_tokens.1.clone().expect("next token persisted in the Secret");
    assert_eq!(world.current_token(), &old, "consumers keep the current token until the swap");
    assert_eq!(world.published_hashes().len(), 2);
    assert!(world.published_hashes().contains(&next.hash()));
    assert_eq!(world.status().state, Some(KeyState::Rotating));
    assert_eq!(started.requeue_at, Some(later(&world, world.settings.publish_poll)), "looks for the published hash");
    assert!(world.event_reasons().contains(&"RotationStarted"));
    assert_eq!(world.mints, 2);
}

#[test]
fn swap_waits_for_the_propagation_delay() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    world.after(jiff::SignedDuration::from_hours(24 * 30));
    let before = world.current_token().clone();

    world.after(mins(1));

    assert_eq!(world.current_token(), &before, "no swap one minute in");
    assert!(world.secret_tokens.1.is_some());
}

#[test]
fn swap_waits_until_the_next_hash_is_published() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    world.publisher_up = false;
    world.after(jiff::SignedDuration::from_hours(24 * 30));
    let before = world.current_token().clone();

    let plan = world.after(mins(10));

    assert_eq!(world.current_token(), &before, "never swap to a token verifiers may not know");
    assert_eq!(plan.requeue_at, Some(world.now.checked_add(world.settings.publish_poll).unwrap()));
}

#[test]
fn swap_waits_the_propagation_delay_after_the_hash_is_first_published() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    world.publisher_up = false;
    world.after(jiff::SignedDuration::from_hours(24 * 30));
    world.after(mins(10)); // the key-set write has been failing for ten minutes
    world.publisher_up = true;
    world.after(jiff::SignedDuration::from_secs(5)); // the publisher writes the hash now
    world.after(jiff::SignedDuration::from_secs(5)); // and the next look sees it
    let first_seen = world.now;
    assert_eq!(world.status().next_key.as_ref().and_then(|k| k.published_at.as_ref()).map(|t| t.0), Some(first_seen));

    let plan = world.after(jiff::SignedDuration::from_secs(5));

    assert!(world.status().last_rotated_at.is_none(), "swapped 5 s after the hash was first published");
    let swap_at = first_seen.checked_add(world.settings.propagation_delay).unwrap();
    assert_eq!(plan.requeue_at, Some(swap_at), "the swap is due a propagation delay after first publication");
    world.at_deadline(&plan);
    assert_eq!(world.status().last_rotated_at.as_ref().map(|t| t.0), Some(swap_at));
}

#[test]
fn after_the_swap_the_previous_token_keeps_working_for_the_grace_period() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").with_grace("2h").build(), T0);
    let old = world.current_token().clone();
    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));
    let next = world.secret_tokens.1.clone().unwrap();

    let swapped = swap(&mut world, &started);

    assert_eq!(world.current_token(), &next, "the Secret now holds the next token");
    assert_eq!(world.secret_tokens.1, None, "next-token is removed by the swap");
    let records =
        crate::plan::records_for(&world.key, &world.observed.class, world.settings.default_grace_period, world.now);
    let previous = records.iter().find(|r| r.hash == old.hash()).expect("previous still published");
    let grace_end = later(&world, jiff::SignedDuration::from_hours(2));
    assert_eq!(previous.not_after, Some(grace_end));
    assert_eq!(swapped.requeue_at, Some(grace_end), "requeue when the grace period ends");
    assert_eq!(world.status().last_rotated_at.as_ref().map(|t| t.0), Some(world.now));
    let due = later(&world, jiff::SignedDuration::from_hours(24 * 30));
    assert_eq!(world.status().next_rotation_at.as_ref().map(|t| t.0), Some(due));
    assert!(world.event_reasons().contains(&"Swapped"));
}

#[test]
fn previous_token_stops_working_after_the_grace_period() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").with_grace("2h").build(), T0);
    let old = world.current_token().clone();
    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));
    let swapped = swap(&mut world, &started);

    let retired = world.at_deadline(&swapped);

    assert_eq!(world.status().previous_key, None);
    assert!(!world.published_hashes().contains(&old.hash()));
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
    assert_eq!(world.status().state, Some(KeyState::Active));
    assert!(retired.events.iter().any(|e| e.reason == Reason::PreviousRetired));
    assert_eq!(world.mints, 2, "one rotation, one mint");
}

#[test]
fn a_second_rotation_requested_within_the_grace_period_waits_until_the_previous_token_retires() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").with_grace("2h").build(), T0);
    let first = world.current_token().clone();
    world.set_annotation("a");
    let started = world.after(mins(1));
    let started = world.at_deadline(&started); // the hash is seen published
    let swapped = world.at_deadline(&started); // swap 1: the first token is previous for 2 h
    assert!(world.event_reasons().contains(&"Swapped"), "{:?}", world.event_reasons());
    let grace_end = world.status().previous_key.as_ref().and_then(|k| k.not_after.as_ref()).map(|t| t.0).unwrap();
    world.set_annotation("b");

    let held = world.after(mins(10));

    assert!(world.published_hashes().contains(&first.hash()), "first token dropped before its grace ended");
    assert!(world.secret_tokens.1.is_none() && world.status().next_key.is_none(), "no rotation during grace");
    assert_eq!(held.requeue_at, Some(grace_end), "looks again when the grace period ends");
    assert_eq!(swapped.requeue_at, Some(grace_end));

    world.at_deadline(&held);

    assert!(!world.published_hashes().contains(&first.hash()), "retired at the end of its grace");
    assert!(world.status().next_key.is_some(), "the held request starts its rotation then");
    assert_eq!(world.mints, 3);
}

#[test]
fn crash_after_persisting_the_next_token_adopts_it_on_restart() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    world.now = at("2026-01-31T00:00:00Z");
    let mint = world.plan();
    assert!(mint.mint.is_some());
    world.apply(&mint, 1);

    world.reconcile();

    assert_eq!(world.mints, 2, "the persisted next token is adopted, not replaced");
    let next = world.secret_tokens.1.clone().unwrap();
    assert!(world.published_hashes().contains(&next.hash()));
}

#[test]
fn crash_after_the_swap_write_finishes_the_swap_without_minting() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));
    let seen = world.at_deadline(&started);
    world.now = seen.requeue_at.unwrap();
    let swap = world.plan();
    assert!(swap.secret.is_some() && swap.status.is_some(), "{swap:#?}");
    world.apply(&swap, 1); // Secret swapped, status not written

    world.after(mins(1));

    let status = world.status();
    assert_eq!(status.current_key.as_ref().unwrap().key_id, world.current_token().hash().key_id().to_string());
    assert!(status.previous_key.is_some() && status.next_key.is_none());
    assert_eq!(world.mints, 2);
}

#[test]
fn a_crash_after_any_write_of_a_whole_rotation_never_mints_twice() {
    for crash_after in 0..10 {
        let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
        world.now = at("2026-01-31T00:00:00Z");
        let mut budget = crash_after;
        let mut crashed = false;
        for _ in 0..30 {
            let plan = world.plan();
            let done = world.apply(&plan, if crashed { usize::MAX } else { budget });
            if !crashed && done < writes(&plan) {
                crashed = true; // the rest of this plan is lost; restart from stored state
                continue;
            }
            budget = budget.saturating_sub(done);
            match plan.requeue_at {
                Some(t) if t <= at("2026-02-02T00:00:00Z") => world.now = world.now.max(t),
                _ => break,
            }
        }
        assert_eq!(world.mints, 2, "crash after write {crash_after}: {:#?}", world.status());
        assert_eq!(world.published_hashes(), vec![world.current_token().hash()], "crash after write {crash_after}");
        assert_eq!(world.status().state, Some(KeyState::Active), "crash after write {crash_after}");
    }
}

#[test]
fn changing_the_rotate_annotation_rotates_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.set_annotation("2026-01-02");

    let started = world.after(mins(60));
    assert!(world.secret_tokens.1.is_some(), "rotation started");
    world.at_deadline(&started);
    world.after(mins(120));

    assert_eq!(world.mints, 2);
    assert_eq!(world.status().last_rotation_request.as_deref(), Some("2026-01-02"));
    let again = world.plan();
    assert!(again.mint.is_none() && again.secret.is_none() && again.status.is_none(), "{again:#?}");
}

#[test]
fn an_annotation_present_at_creation_does_not_rotate() {
    let mut key = an_api_key("crm").build();
    key.metadata.annotations = Some([(crate::api::ROTATE_ANNOTATION.to_owned(), "x".to_owned())].into());
    let mut world = World::converged(key, T0);
    world.after(mins(10));
    assert_eq!(world.mints, 1);
}

#[test]
fn changing_the_prefix_rotates_to_a_token_with_the_new_prefix() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.prefix = Some("acme_live".to_owned());

    let started = world.after(mins(1));
    swap(&mut world, &started);

    assert!(world.current_token().expose().starts_with("acme_live_"));
    assert_eq!(world.mints, 2);
}

#[test]
fn cron_schedule_sets_the_next_rotation_to_the_next_occurrence() {
    // 2026-01-01 is a Thursday; the next Monday 03:00 is 2026-01-05.
    let world = World::converged(an_api_key("crm").rotating_on("0 3 * * 1").build(), T0);
    assert_eq!(world.status().next_rotation_at.as_ref().map(|t| t.0), Some(at("2026-01-05T03:00:00Z")));
    assert_eq!(world.plan().requeue_at, Some(at("2026-01-05T03:00:00Z")));
}

#[test]
fn a_next_token_nobody_asked_for_is_removed_and_never_published() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let planted = stranger_token();
    world.secret_facts_mut().next_token = slot(Some(&planted));

    let plan = world.plan();

    assert_eq!(plan.secret.as_ref().map(|s| s.next_token), Some(None));
    assert_eq!(plan.records.len(), 1);
    assert!(plan.records.iter().all(|r| r.hash != planted.hash()));
}

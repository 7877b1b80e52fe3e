//! Lifecycle plans for every transition, with a fixed clock.

use crate::api::KeyState;
use crate::keyset::RecordState;

use super::fixtures::{KeyBuilder, T0, World, an_api_key, at, managed_labels, mins, slot};
use super::{EventKind, Finalizer, Publish, Reason, SecretView, Slot, Source, plan, validate};

const DEFAULT_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// From a rotation's start, look again until the next hash is seen published,
/// then wait the propagation delay: the swap. Returns the swapping plan.
fn swap(world: &mut World, started: &super::Plan) -> super::Plan {
    let seen = world.at_deadline(started);
    assert!(world.status().next_key.as_ref().is_some_and(|k| k.published_at.is_some()), "{:#?}", world.status());
    world.at_deadline(&seen)
}

fn later(world: &World, d: jiff::SignedDuration) -> jiff::Timestamp {
    world.now.checked_add(d).expect("test times are in range")
}

fn ready_reason(world: &World) -> (String, String) {
    let c = &world.status().conditions[0];
    (c.status.clone(), c.reason.clone())
}

// ---- create ----

#[test]
fn new_key_mints_into_the_secret_holds_the_token_until_ready_and_writes_status_once() {
    let mut world = World::new(an_api_key("crm").build(), T0);

    let first = world.step();
    assert!(first.mint.is_some(), "a new key mints: {first:#?}");
    let secret = first.secret.as_ref().expect("the token is persisted in the Secret first");
    assert_eq!(secret.token, Some(Source::Minted));
    assert_eq!(secret.name, "crm-apikey");
    assert_eq!(secret.labels, managed_labels("crm"));
    assert!(first.status.is_none(), "status waits until the token is in the Secret: {:?}", first.status);
    assert!(first.hold.is_none(), "nothing to hold before the Secret has it");
    assert_eq!(first.requeue_at, Some(at(T0)), "plans again at once");

    let adopted = world.step();
    assert!(adopted.mint.is_none() && adopted.secret.is_none(), "adopting mints nothing: {adopted:#?}");
    assert_eq!(adopted.status, None, "no status write while the token waits to be Ready");
    let hold = adopted.hold.as_ref().expect("the publisher is handed the token");
    assert_eq!(hold.hash(), Some(world.current_token().hash()));
    assert_eq!(hold.version.not_before.0, at(T0));
    assert_eq!(adopted.publish, Publish::Soon);
    assert_eq!(adopted.requeue_at, Some(later(&world, world.settings.publish_poll)), "looks for the publication");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()], "published before status names it");
    assert!(world.key.status.is_none(), "{:?}", world.key.status);

    let seen = world.at_deadline(&adopted);
    assert_eq!(seen.status, None, "published, not yet Ready: still no status write");
    let published_at = world.held.as_ref().and_then(|h| h.version.published_at.as_ref()).map(|t| t.0);
    assert_eq!(published_at, Some(at(T0)), "the publisher wrote it when it was handed over");
    assert_eq!(seen.requeue_at, Some(at(T0).checked_add(world.settings.propagation_delay).unwrap()));

    let ready = world.at_deadline(&seen);
    let status = ready.status.as_ref().expect("the one status write");
    let current = status.current_key.as_ref().expect("current key recorded");
    assert_eq!(current.key_id, world.current_token().hash().key_id().to_string());
    assert_eq!(current.published_at.as_ref().map(|t| t.0), Some(at(T0)));
    assert_eq!(current.not_before.0, at(T0), "valid from its adoption, as published");
    assert_eq!(status.state, Some(KeyState::Active));
    assert_eq!(status.prefix.as_deref(), Some(world.current_token().display_prefix().as_str()));
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()));
    assert!(ready.hold.is_some(), "still held while the status write is on its way");
    assert_eq!(ready.publish, Publish::Unchanged, "status names what is published already");

    let statuses = world.plans.iter().filter(|p| p.status.is_some()).count();
    assert_eq!(statuses, 1, "one status write for a new key");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
    assert_eq!(world.mints, 1);
    assert_eq!(world.event_reasons(), vec!["Created"]);
    let converged = world.plan();
    assert!(converged.hold.is_none() && converged.status.is_none(), "status is the record now: {converged:#?}");
}

#[test]
fn a_held_token_not_published_within_a_minute_is_recorded_as_publishing() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.publisher_up = false;
    world.reconcile();
    assert!(world.key.status.is_none());

    world.after(mins(1));

    let status = world.status();
    assert!(status.current_key.as_ref().is_some_and(|k| k.published_at.is_none()), "{status:#?}");
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    assert_eq!(status.state, Some(KeyState::Pending));
    world.publisher_up = true;
    let plan = world.after(jiff::SignedDuration::from_secs(5)); // published now
    let seen = world.at_deadline(&plan); // seen now
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    world.at_deadline(&seen);
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()), "then the recorded path as before");
    assert_eq!(world.mints, 1);
}

#[test]
fn a_crash_while_the_token_is_held_adopts_it_again_and_counts_its_publication_from_the_restart() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    world.after(jiff::SignedDuration::from_secs(90)); // published at T0, Ready due at T0 + 2m
    world.restart();

    let restarted = world.after(jiff::SignedDuration::from_secs(60));
    let seen_at = world.now;

    assert!(world.key.status.is_none(), "not Ready at T0 + 2m: the new process saw the hash only now");
    let held = world.held.as_ref().expect("held again");
    assert_eq!(held.version.published_at.as_ref().map(|t| t.0), Some(seen_at), "never earlier than the truth");
    let seen = world.at_deadline(&restarted);
    assert_eq!(seen.requeue_at, Some(seen_at.checked_add(world.settings.propagation_delay).unwrap()));
    world.at_deadline(&seen);
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()));
    assert_eq!(world.mints, 1, "the Secret's token is adopted, not replaced");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
}

/// The controller compares `requeue_at` with its own clock, which is not
/// whole seconds. With `--propagation-delay 1s --publish-poll 500ms` a held
/// token's deadlines (the poll after `now`, Ready one delay after the
/// publisher's sub-second `publishedAt`) fell between seconds, at or before
/// that clock: the plan asked to run again at once without having changed
/// anything, found the same deadline, and the reconcile gave up ("plan did not
/// settle"). [`World::reconcile`] panics the same way; the walk also checks
/// that rounding never lets a token be Ready or swapped in early.
#[test]
fn a_clock_between_whole_seconds_never_makes_a_plan_that_changed_nothing_run_again_at_once() {
    let tick = jiff::SignedDuration::from_millis(100);
    for start in ["00:00:00.2", "00:00:00.5", "00:00:00.7", "00:00:00.95"] {
        let key = an_api_key("crm").rotating_every("1h").with_grace("10m").build();
        let mut world = World::new(key, &format!("2026-01-01T{start}Z"));
        world.settings.propagation_delay = jiff::SignedDuration::from_secs(1);
        world.settings.publish_poll = jiff::SignedDuration::from_millis(500);
        let created = world.now;
        world.reconcile();
        let mut swapped = false;
        // Create, then a scheduled rotation an hour later, each watched in 100 ms steps.
        for phase in [jiff::SignedDuration::ZERO, jiff::SignedDuration::from_hours(1)] {
            world.now = created.checked_add(phase).unwrap();
            for _ in 0..60 {
                let before = world.secret_tokens.0.as_ref().map(crate::token::Token::hash);
                let was_ready =
                    world.key.status.as_ref().is_some_and(|s| s.state.is_some_and(|s| s != KeyState::Pending));
                world.after(tick);
                let token = world.current_token().hash();
                let ready = world.key.status.as_ref().is_some_and(|s| s.state.is_some_and(|s| s != KeyState::Pending));
                if before != Some(token) && before.is_some() {
                    swapped = true;
                }
                if (ready && !was_ready) || (before.is_some() && before != Some(token)) {
                    let since = world.published_since.get(&token).copied().expect("published before use");
                    assert!(
                        since.checked_add(world.settings.propagation_delay).unwrap() <= world.now,
                        "{start}: token in use at {} but published only at {since}",
                        world.now
                    );
                }
            }
        }
        assert_eq!(world.status().state, Some(KeyState::Rotating), "{start}: {:#?}", world.status());
        assert!(swapped, "{start}: the rotation swapped the Secret");
    }
}

#[test]
fn revoking_or_deleting_a_key_whose_token_is_held_withdraws_it_at_once() {
    for deleting in [false, true] {
        let mut world = World::new(an_api_key("crm").build(), T0);
        world.reconcile();
        assert_eq!(world.published_hashes().len(), 1);
        if deleting {
            world.key.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(world.now));
        } else {
            world.key.spec.revoked = true;
        }

        let plan = world.plan();

        assert_eq!(plan.hold, None, "deleting {deleting}: the publisher lets the token go");
        assert_eq!(plan.publish, Publish::Now, "deleting {deleting}: before any other write");
        assert!(plan.records.is_empty(), "deleting {deleting}: {:?}", plan.records);
        world.apply(&plan, usize::MAX);
        assert!(world.published_hashes().is_empty(), "deleting {deleting}");
    }
}

#[test]
fn disabling_a_key_whose_token_is_held_records_it_at_once() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    world.key.spec.active = false;

    let plan = world.after(jiff::SignedDuration::from_secs(5));

    assert_eq!(world.status().state, Some(KeyState::Inactive));
    assert_eq!(plan.publish, Publish::Now);
    assert_eq!(plan.records[0].state, RecordState::Inactive);
    assert_eq!(world.event_reasons(), vec!["Created"], "one Created, no Disabled for a key that never worked");
    assert_eq!(world.mints, 1);
}

#[test]
fn moving_a_held_key_to_another_key_set_records_it_and_leaves_the_old_set() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    world.key.spec.key_set = "partners".to_owned();

    let moved = world.step();

    assert_eq!(moved.status.as_ref().and_then(|s| s.key_set.as_deref()), Some("default"), "recorded where adopted");
    assert!(moved.status.as_ref().is_some_and(|s| s.current_key.is_some()));
    let left = world.step();
    assert_eq!(left.leave_key_set.as_deref(), Some("default"), "then left as any recorded key");
    assert_eq!(world.status().key_set.as_deref(), Some("partners"));
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    assert_eq!(world.mints, 1, "moving does not rotate");
}

#[test]
fn renaming_the_secret_of_a_held_key_records_it_and_repairs_as_for_any_recorded_key() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    let first = world.current_token().clone();
    world.key.spec.secret_name = Some("crm-token".to_owned());
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(jiff::SignedDuration::from_secs(5));

    assert_eq!(world.status().previous_secret_name.as_deref(), Some("crm-apikey"));
    assert_eq!(world.status().previous_key.as_ref().map(|k| k.key_id.clone()), Some(first.hash().key_id().to_string()));
    assert_eq!(world.mints, 2);
    assert!(world.event_reasons().contains(&"SecretRepaired"), "{:?}", world.event_reasons());
}

#[test]
fn reapplying_unchanged_yaml_plans_no_write_at_all() {
    let world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);

    let again = world.plan();

    assert_eq!(again.mint, None);
    assert_eq!(again.secret, None);
    assert_eq!(again.status, None);
    assert_eq!(again.publish, Publish::Unchanged);
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.finalizer, Finalizer::Keep);
}

#[test]
fn a_key_without_the_finalizer_gets_it_before_anything_is_published() {
    let world = World::new(an_api_key("crm").without_finalizer().build(), T0);
    assert_eq!(world.plan().finalizer, Finalizer::Add);
}

#[test]
fn crash_after_the_secret_write_adopts_the_token_instead_of_minting_again() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    let first = world.plan();
    world.apply(&first, 1); // the Secret is written, then the operator dies

    world.now = at("2026-01-01T00:05:00Z");
    world.reconcile();

    assert_eq!(world.mints, 1, "restart must not mint again");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
}

// ---- rotation ----

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
fn after_the_swap_the_previous_token_keeps_working_for_the_grace_period() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").with_grace("2h").build(), T0);
    let old = world.current_token().clone();
    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));
    let next = world.secret_tokens.1.clone().unwrap();

    let swapped = swap(&mut world, &started);

    assert_eq!(world.current_token(), &next, "the Secret now holds the next token");
    assert_eq!(world.secret_tokens.1, None, "next-token is removed by the swap");
    let records = super::records_for(&world.key, world.settings.default_grace_period, world.now);
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

fn writes(plan: &super::Plan) -> usize {
    usize::from(plan.finalizer == Finalizer::Add)
        + usize::from(plan.secret.is_some())
        + usize::from(plan.status.is_some())
}

fn stranger_token() -> crate::token::Token {
    use rand::SeedableRng;
    crate::token::Token::generate(&crate::token::Prefix::default(), &mut rand::rngs::StdRng::seed_from_u64(99))
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

// ---- disable / enable ----

#[test]
fn disabling_keeps_the_token_and_publishes_it_as_inactive_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let token = world.current_token().clone();
    world.key.spec.active = false;

    let plan = world.after(mins(1));

    assert_eq!(plan.publish, Publish::Now);
    assert_eq!(plan.records[0].state, RecordState::Inactive);
    assert_eq!(world.current_token(), &token);
    assert_eq!(world.status().state, Some(KeyState::Inactive));
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Disabled".to_owned()));
    assert!(plan.events.iter().any(|e| e.reason == Reason::Disabled));
}

#[test]
fn enabling_again_restores_the_same_token() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let token = world.current_token().clone();
    world.key.spec.active = false;
    world.after(mins(1));
    world.key.spec.active = true;

    let plan = world.after(mins(1));

    assert_eq!(world.current_token(), &token);
    assert_eq!(plan.records[0].state, RecordState::Active);
    assert!(plan.events.iter().any(|e| e.reason == Reason::Enabled));
    assert_eq!(world.mints, 1);
}

// ---- revoke ----

#[test]
fn revoking_unpublishes_every_hash_at_once_and_removes_the_token_from_the_secret() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    world.after(jiff::SignedDuration::from_hours(24 * 30)); // mid-rotation: two hashes published
    world.key.spec.revoked = true;

    let plan = world.after(mins(1));

    assert_eq!(plan.publish, Publish::Now);
    assert!(plan.records.is_empty());
    assert_eq!(plan.secret.as_ref().map(|s| (s.token, s.next_token)), Some((None, None)));
    assert_eq!(world.secret_tokens, (None, None));
    assert_eq!(world.status().state, Some(KeyState::Revoked));
    assert!(world.status().current_key.as_ref().and_then(|k| k.not_after.as_ref()).is_some(), "audit record");
    assert!(plan.events.iter().any(|e| e.reason == Reason::Revoked));
    assert!(plan.events.iter().any(|e| e.reason == Reason::CleanedUp));
    assert_eq!(plan.requeue_at, None);
    let later = world.plan();
    assert!(later.secret.is_none() && later.status.is_none() && later.events.is_empty(), "{later:#?}");
}

// ---- expiry ----

#[test]
fn a_key_requeues_exactly_at_its_expiry() {
    let world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    assert_eq!(world.plan().requeue_at, Some(at("2026-01-10T00:00:00Z")));
    assert_eq!(world.plan().records[0].not_after, Some(at("2026-01-10T00:00:00Z")));
}

#[test]
fn at_expiry_the_key_is_marked_expired_and_its_token_cleaned_up() {
    let mut world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    world.now = at("2026-01-10T00:00:00Z");

    let plan = world.reconcile();

    assert_eq!(world.status().state, Some(KeyState::Expired));
    assert_eq!(world.status().expired_at.as_ref().map(|t| t.0), Some(at("2026-01-10T00:00:00Z")));
    assert_eq!(world.secret_tokens, (None, None));
    assert!(plan.records.is_empty());
    assert_eq!(plan.requeue_at, None, "nothing left to do without retention");
    assert!(!world.deleted);
}

#[test]
fn an_expired_key_is_deleted_after_its_retention() {
    let key = an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").retained_after_expiry_for("7d").build();
    let mut world = World::converged(key, T0);
    world.now = at("2026-01-10T00:00:00Z");
    let expired = world.reconcile();
    assert_eq!(expired.requeue_at, Some(at("2026-01-17T00:00:00Z")));

    world.at_deadline(&expired);

    assert!(world.deleted);
}

#[test]
fn moving_expires_at_into_the_future_after_expiry_does_not_revive_the_key() {
    let mut world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    world.now = at("2026-01-10T00:00:00Z");
    world.reconcile();
    world.key.spec.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2027-01-01T00:00:00Z")));

    let plan = world.after(mins(1));

    assert!(plan.mint.is_none() && plan.records.is_empty());
    assert_eq!(world.status().state, Some(KeyState::Expired));
}

// ---- tampering ----

#[test]
fn a_deleted_secret_is_repaired_with_a_new_token_and_the_old_one_gets_a_grace_period() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let old = world.current_token().clone();
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    assert_eq!(world.mints, 2);
    let records = super::records_for(&world.key, world.settings.default_grace_period, world.now);
    assert_eq!(records.len(), 2, "new token plus the old one in its grace period");
    let old_record = records.iter().find(|r| r.hash == old.hash()).unwrap();
    assert_eq!(old_record.not_after, Some(later(&world, jiff::SignedDuration::from_hours(1))));
    assert!(world.event_reasons().contains(&"SecretRepaired"));
    let warning = world.plans.iter().flat_map(|p| &p.events).find(|e| e.reason == Reason::SecretRepaired).unwrap();
    assert_eq!(warning.kind, EventKind::Warning);
    assert!(warning.note.contains("deleted"), "{}", warning.note);
}

#[test]
fn changing_the_secret_name_issues_a_token_in_the_new_secret() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.secret_name = Some("crm-token".to_owned());
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    let first = world.step();

    assert!(first.events.iter().any(|e| e.note.contains("secretName")), "{:?}", first.events);
    assert_eq!(first.status.as_ref().and_then(|s| s.state), Some(KeyState::Pending));
    world.reconcile();
    assert_eq!(world.status().secret_name.as_deref(), Some("crm-token"));
    assert_eq!(world.mints, 2);
}

#[test]
fn moving_to_another_key_set_leaves_the_old_one_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    assert_eq!(world.status().key_set.as_deref(), Some("default"));
    world.key.spec.key_set = "partners".to_owned();

    let plan = world.plan();

    assert_eq!(plan.leave_key_set.as_deref(), Some("default"));
    assert_eq!(plan.status.as_ref().and_then(|s| s.key_set.as_deref()), Some("partners"));
    assert!(plan.mint.is_none(), "moving does not rotate");
    assert!(plan.events.iter().any(|e| e.reason == Reason::KeySetChanged));
    let status = plan.status.as_ref().unwrap();
    assert_eq!(status.conditions[0].reason, "Publishing", "verifiers of the new set have not seen the hash yet");
}

#[test]
fn a_token_edited_by_hand_is_never_published() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let planted = stranger_token();
    world.secret_facts_mut().token = slot(Some(&planted));
    world.secret_tokens.0 = Some(planted.clone());

    world.after(mins(1));

    assert!(!world.published_hashes().contains(&planted.hash()));
    assert_ne!(world.current_token(), &planted);
}

#[test]
fn foreign_data_keys_in_the_secret_are_removed() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.secret_facts_mut().foreign_keys = vec!["extra".to_owned()];
    let plan = world.plan();
    assert_eq!(plan.secret.as_ref().map(|s| s.token), Some(Some(Source::Token)));
}

#[test]
fn a_secret_owned_by_someone_else_is_left_alone_and_reported() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.observed.secret = SecretView::Present(Box::default());

    let plan = world.step();

    assert!(plan.secret.is_none() && plan.mint.is_none());
    assert_eq!(ready_reason(&world), ("False".to_owned(), "SecretConflict".to_owned()));
    assert_eq!(world.status().state, Some(KeyState::Error));
    assert!(plan.requeue_at.is_some_and(|t| t > world.now), "no hot loop");
}

#[test]
fn a_malformed_token_slot_counts_as_tampering() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.secret_facts_mut().token = Slot::Malformed;
    world.secret_tokens.0 = None;
    world.after(mins(1));
    assert_eq!(world.mints, 2);
    assert!(world.event_reasons().contains(&"SecretRepaired"));
}

// ---- deletion ----

#[test]
fn a_deleted_key_unpublishes_then_releases_its_finalizer() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(world.now));

    let plan = world.plan();

    assert_eq!(plan.finalizer, Finalizer::Remove);
    assert!(plan.records.is_empty());
    assert_eq!(plan.publish, Publish::Now);
    assert!(plan.status.is_none() && plan.secret.is_none());
}

// ---- invalid specs ----

#[test]
fn invalid_specs_name_the_field_and_wait_for_a_change() {
    let cases: &[(&str, &str)] = &[
        ("scopes: []", "spec.scopes"),
        ("scopes: [\"orders:delete\"]", "spec.scopes[0]"),
        ("scopes: [\"orders:read\", \"orders:read\"]", "spec.scopes[1]"),
        ("scopes: [\"a:read\"]\nprefix: \"Bad-Prefix\"", "spec.prefix"),
        ("scopes: [\"a:read\"]\nsecretName: \"Not_A_Name\"", "spec.secretName"),
        ("scopes: [\"a:read\"]\nkeySet: \"UPPER\"", "spec.keySet"),
        ("scopes: [\"a:read\"]\nrotation: {every: \"30 days\"}", "spec.rotation.every"),
        ("scopes: [\"a:read\"]\nrotation: {schedule: \"61 * * * *\"}", "spec.rotation.schedule"),
        ("scopes: [\"a:read\"]\nrotation: {schedule: \"0 0 3 * * 1\"}", "spec.rotation.schedule"),
        ("scopes: [\"a:read\"]\nrotation: {every: \"1h\", gracePeriod: \"2h\"}", "spec.rotation.gracePeriod"),
        ("scopes: [\"a:read\"]\nrotation: {gracePeriod: \"2h\"}", "spec.rotation"),
        ("scopes: [\"a:read\"]\nrotation: {every: \"1d\", schedule: \"0 3 * * 1\"}", "spec.rotation"),
        ("scopes: [\"a:read\"]\nrateLimit: {requests: 0, period: \"1m\"}", "spec.rateLimit"),
        ("scopes: [\"a:read\"]\nrateLimit: {requests: 5, period: \"soon\"}", "spec.rateLimit.period"),
        ("scopes: [\"a:read\"]\nretainExpiredFor: \"forever\"", "spec.retainExpiredFor"),
        ("scopes: [\"a:read\"]\nexpireAfterUnused: \"1y\"", "spec.expireAfterUnused"),
        ("scopes: [\"a:read\"]\nsecretTemplate: {labels: {keyward.dev/x: y}}", "spec.secretTemplate.labels"),
        (
            "scopes: [\"a:read\"]\nsecretTemplate: {annotations: {app.kubernetes.io/managed-by: me}}",
            "spec.secretTemplate.annotations",
        ),
        ("scopes: [\"a:read\"]\nrotation: {every: 0s}", "spec.rotation.every"),
        ("scopes: [\"a:read\"]\nrotation: {every: 1d, gracePeriod: 0m}", "spec.rotation.gracePeriod"),
    ];
    for (yaml, field) in cases {
        let key = KeyBuilder::from_yaml(yaml).build();
        let errors = validate(&key.spec, DEFAULT_GRACE).expect_err(yaml);
        assert!(errors.iter().any(|e| e.field == *field), "{yaml}: expected an error on {field}, got {errors:?}");

        let plan = plan(&key, &super::Observed::default(), &super::Settings::default(), at(T0));
        let status = plan.status.as_ref().expect("status reports the problem");
        assert_eq!(status.state, Some(KeyState::Error), "{yaml}");
        assert_eq!(status.conditions[0].reason, "InvalidSpec", "{yaml}");
        assert!(status.conditions[0].message.contains(field), "{yaml}: {}", status.conditions[0].message);
        assert!(plan.mint.is_none() && plan.secret.is_none(), "{yaml}: nothing is written");
        assert_eq!(plan.requeue_at, None, "{yaml}: no hot loop");
        assert_eq!(plan.events.len(), 1, "{yaml}");
    }
}

#[test]
fn an_invalid_spec_emits_its_event_once() {
    let mut world = World::new(KeyBuilder::from_yaml("scopes: []").build(), T0);
    world.step();
    let second = world.step();
    assert!(second.events.is_empty(), "{:?}", second.events);
    assert!(second.status.is_none());
}

#[test]
fn a_key_that_becomes_invalid_is_unpublished_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.scopes = vec!["orders:fly".to_owned()];
    let plan = world.plan();
    assert_eq!(plan.publish, Publish::Now);
    assert!(plan.records.is_empty());
}

#[test]
fn valid_specs_from_the_docs_pass_validation() {
    for yaml in [
        "scopes: [\"orders:read\", \"orders:write\"]",
        "scopes: [\"*:admin\"]\nprefix: acme_live\nrotation: {every: 30d, gracePeriod: 1h}",
        "scopes: [\"a:read\"]\nrotation: {schedule: \"0 3 * * 1\"}\nrateLimit: {requests: 100, period: 1m, burst: 20}",
        "scopes: [\"a:read\"]\nexpiresAt: \"2027-01-01T00:00:00Z\"\nretainExpiredFor: 30d\nsecretName: crm.token",
    ] {
        assert!(validate(&KeyBuilder::from_yaml(yaml).build().spec, DEFAULT_GRACE).is_ok(), "{yaml}");
    }
}

// ---- found in review: swap timing, rotation during grace, sticky revocation, readiness ----

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
fn clearing_revoked_after_revocation_never_publishes_the_key_again() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let first = world.current_token().clone();
    world.key.spec.revoked = true;
    world.after(mins(1));
    let revoked_at = world.status().revoked_at.clone().expect("revocation recorded in status");
    world.key.spec.revoked = false; // admission bypassed

    let plan = world.after(mins(1));

    assert!(plan.records.is_empty() && world.published_hashes().is_empty(), "{:?}", plan.records);
    assert!(!world.published_hashes().contains(&first.hash()), "revoked token published again");
    assert!(plan.mint.is_none(), "no new token for a revoked key");
    assert_eq!(world.status().state, Some(KeyState::Revoked));
    assert_eq!(world.status().revoked_at, Some(revoked_at));
    assert!(world.status().conditions[0].message.contains("does not undo"), "{:?}", world.status().conditions[0]);
}

#[test]
fn a_revocation_recorded_before_revoked_at_existed_is_final_too() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let first = world.current_token().clone();
    world.key.spec.revoked = true;
    world.after(mins(1));
    world.key.status.as_mut().unwrap().revoked_at = None; // as an older operator wrote it
    world.key.spec.revoked = false;

    let plan = world.after(mins(1));

    assert!(plan.records.is_empty() && plan.mint.is_none(), "{plan:#?}");
    assert!(!world.published_hashes().contains(&first.hash()));
    assert_eq!(world.status().state, Some(KeyState::Revoked));
    assert!(world.status().revoked_at.is_some(), "recorded now");
}

#[test]
fn a_token_whose_validity_ended_is_never_given_a_grace_period() {
    // A status edited by hand: the current token already ended, and the Secret lost it.
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let first = world.current_token().clone();
    let ended = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(world.now);
    world.key.status.as_mut().unwrap().current_key.as_mut().unwrap().not_after = Some(ended);
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    assert!(!world.published_hashes().contains(&first.hash()), "{:#?}", world.status());
    assert!(world.status().previous_key.is_none(), "{:?}", world.status().previous_key);
}

#[test]
fn a_new_key_is_not_ready_until_its_hash_is_published_and_has_had_the_propagation_delay() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.publisher_up = false;

    let adopted = world.reconcile();
    assert!(world.key.status.is_none(), "nothing to say yet but the Created Event");
    assert_eq!(adopted.requeue_at, Some(world.now.checked_add(world.settings.publish_poll).unwrap()));

    world.publisher_up = true;
    let polled = world.at_deadline(&adopted); // published now, seen at the next look
    let published = world.now;
    let published_at = world.held.as_ref().and_then(|k| k.version.published_at.as_ref()).map(|t| t.0);
    assert_eq!(published_at, Some(published));
    let seen = world.at_deadline(&polled);
    assert!(world.key.status.is_none());
    assert_eq!(seen.requeue_at, Some(published.checked_add(world.settings.propagation_delay).unwrap()));

    world.now = published;

    world.now = world.now.checked_add(jiff::SignedDuration::from_secs(119)).unwrap();
    world.reconcile();
    assert!(world.key.status.is_none(), "one second short of the delay");

    world.at_deadline(&seen);
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()));
    assert_eq!(world.status().state, Some(KeyState::Active));
}

#[test]
fn a_key_is_not_ready_while_its_hash_is_not_in_the_key_set() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.publisher_up = false;

    world.reconcile();
    let plan = world.after(mins(10));

    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    assert!(plan.requeue_at.is_some_and(|t| t > world.now), "polls, no hot loop");
}

#[test]
fn a_status_from_before_published_at_existed_stays_ready() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.status.as_mut().unwrap().current_key.as_mut().unwrap().published_at = None;

    world.after(mins(1));

    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()));
}

#[test]
fn a_repaired_secret_is_not_ready_until_the_new_token_is_published() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
}

#[test]
fn changing_the_secret_name_keeps_the_old_secret_until_the_previous_token_retires() {
    let mut world = World::converged(an_api_key("crm").with_grace("2h").rotating_every("30d").build(), T0);
    world.key.spec.secret_name = Some("crm-token".to_owned());
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    let first = world.step();
    assert_eq!(first.delete_secret, None, "the old Secret still holds the token in its grace period");
    world.reconcile();
    assert_eq!(world.status().previous_secret_name.as_deref(), Some("crm-apikey"));
    let grace_end = world.status().previous_key.as_ref().and_then(|k| k.not_after.as_ref()).map(|t| t.0).unwrap();

    world.now = grace_end;
    let retired = world.reconcile();

    let deleting: Vec<_> = world.plans.iter().filter_map(|p| p.delete_secret.clone()).collect();
    assert_eq!(deleting, vec!["crm-apikey".to_owned()], "deleted once, when the grace period ended");
    assert_eq!(world.status().previous_secret_name, None);
    assert_eq!(retired.delete_secret.as_deref(), Some("crm-apikey"), "deleted by the pass that retires the token");
}

#[test]
fn narrowing_scopes_or_tightening_the_rate_limit_publishes_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    assert_eq!(world.after(mins(1)).publish, Publish::Soon, "a wider grant can wait for coalescing");
    world.key.spec.scopes = vec!["orders:write".to_owned()];
    assert_eq!(world.after(mins(1)).publish, Publish::Now, "a narrower grant cannot");
    world.key.spec.rate_limit = Some(crate::api::RateLimitSpec { requests: 100, period: "1m".to_owned(), burst: None });
    assert_eq!(world.after(mins(1)).publish, Publish::Now, "a new limit cannot");
    world.key.spec.rate_limit = None;
    assert_eq!(world.after(mins(1)).publish, Publish::Soon, "dropping the limit can");
}

#[test]
fn grace_periods_must_be_shorter_than_any_interval_between_rotations() {
    let cases: &[(&str, bool)] = &[
        ("rotation: {every: 30m}", false),
        ("rotation: {every: 1h}", false),
        ("rotation: {every: 2h}", true),
        ("rotation: {every: 30m, gracePeriod: 10m}", true),
        ("rotation: {schedule: \"*/30 * * * *\"}", false),
        ("rotation: {schedule: \"*/30 * * * *\", gracePeriod: 20m}", true),
        ("rotation: {schedule: \"0 3,4 * * *\"}", false),
        ("rotation: {schedule: \"0 3 * * *\", gracePeriod: 1d}", false),
        ("rotation: {schedule: \"0 23 * * *\", gracePeriod: 23h}", true),
        ("rotation: {schedule: \"0 0 * * 1,2\", gracePeriod: 2d}", false),
        ("rotation: {schedule: \"0 0 * * 1\", gracePeriod: 2d}", true),
    ];
    for (rotation, valid) in cases {
        let yaml = format!("scopes: [\"a:read\"]\n{rotation}");
        let result = validate(&KeyBuilder::from_yaml(&yaml).build().spec, DEFAULT_GRACE);
        assert_eq!(result.is_ok(), *valid, "{rotation}: {result:?}");
        if let Err(errors) = result {
            assert!(errors.iter().any(|e| e.field == "spec.rotation.gracePeriod"), "{rotation}: {errors:?}");
        }
    }
}

#[test]
fn secret_template_keys_and_values_must_be_what_kubernetes_accepts() {
    let long = "a".repeat(64);
    let huge = "a".repeat(200 * 1024);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("labels: {team: x, app.kubernetes.io/name: crm, empty: \"\"}".to_owned(), None),
        ("annotations: {example.com/note: \"any text, even spaces\"}".to_owned(), None),
        ("labels: {\"bad key\": x}".to_owned(), Some("spec.secretTemplate.labels[bad key]")),
        ("labels: {\"-x\": y}".to_owned(), Some("spec.secretTemplate.labels[-x]")),
        ("labels: {\"Example.com/x\": y}".to_owned(), Some("spec.secretTemplate.labels[Example.com/x]")),
        (format!("labels: {{{long}: y}}"), Some("spec.secretTemplate.labels")),
        ("labels: {team: \"two words\"}".to_owned(), Some("spec.secretTemplate.labels[team]")),
        (format!("labels: {{team: {long}}}"), Some("spec.secretTemplate.labels[team]")),
        ("annotations: {\"a/b/c\": x}".to_owned(), Some("spec.secretTemplate.annotations[a/b/c]")),
        (format!("annotations: {{a: {huge}, b: {huge}}}"), Some("spec.secretTemplate.annotations")),
    ];
    for (template, field) in cases {
        let yaml = format!("scopes: [\"a:read\"]\nsecretTemplate: {{{template}}}");
        let result = validate(&KeyBuilder::from_yaml(&yaml).build().spec, DEFAULT_GRACE);
        match field {
            None => assert!(result.is_ok(), "{template}: {result:?}"),
            Some(field) => {
                let errors = result.expect_err(&template);
                assert!(
                    errors.iter().any(|e| e.field.starts_with(field)),
                    "{template}: expected {field} in {errors:?}"
                );
            }
        }
    }
}

#[test]
fn a_repair_during_a_grace_period_says_that_the_older_previous_token_stops_working() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").with_grace("2h").build(), T0);
    let first = world.current_token().clone();
    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));
    swap(&mut world, &started);
    let second = world.current_token().clone();
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    let published = world.published_hashes();
    assert!(published.contains(&second.hash()), "the token taken from the Secret keeps its grace");
    assert!(!published.contains(&first.hash()), "one previous slot");
    let warning =
        world.plans.iter().rev().flat_map(|p| &p.events).find(|e| e.reason == Reason::SecretRepaired).unwrap();
    let first_id = first.hash().key_id().to_string();
    assert!(warning.note.contains(&first_id) && warning.note.contains("stops working now"), "{}", warning.note);
}

#[test]
fn a_key_that_expires_while_its_token_is_held_is_looked_at_at_expiry_and_withdrawn() {
    let mut world = World::new(an_api_key("crm").expiring_at("2026-01-01T00:01:00Z").build(), T0);
    let adopted = world.reconcile();
    let seen = world.at_deadline(&adopted);
    assert_eq!(seen.requeue_at, Some(at("2026-01-01T00:01:00Z")), "expiry comes before Ready");

    let expired = world.at_deadline(&seen);

    assert_eq!(world.status().state, Some(KeyState::Expired));
    assert_eq!(expired.hold, None);
    assert_eq!(expired.publish, Publish::Now);
    assert!(world.published_hashes().is_empty());
    assert_eq!(world.secret_tokens, (None, None));
}

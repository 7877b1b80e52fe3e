//! When hashes are published, how urgently, and when a key may say Ready.

use crate::api::{KeyState, RateLimitSpec};
use crate::plan::Publish;

use super::fixtures::{T0, World, an_api_key, mins, ready_reason};

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
fn narrowing_scopes_or_tightening_the_rate_limit_publishes_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    assert_eq!(world.after(mins(1)).publish, Publish::Soon, "a wider grant can wait for coalescing");
    world.key.spec.scopes = vec!["orders:write".to_owned()];
    assert_eq!(world.after(mins(1)).publish, Publish::Now, "a narrower grant cannot");
    world.key.spec.rate_limit = Some(RateLimitSpec { requests: 100, period: "1m".to_owned(), burst: None });
    assert_eq!(world.after(mins(1)).publish, Publish::Now, "a new limit cannot");
    world.key.spec.rate_limit = None;
    assert_eq!(world.after(mins(1)).publish, Publish::Soon, "dropping the limit can");
}

//! Per-key usage counting: what each decision adds, across reloads, and what the tally reports.

use super::fixtures::*;
use crate::keyset::RecordState;
use crate::usage::Counts;
use crate::verifier::decision::{Now, Outcome, Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::routes::Routes;
use crate::verifier::usage::Tally;

fn ask(index: &KeyIndex, method: &str, uri: &str, auth: &str, now: Now) -> Outcome {
    let request = Request { method, uri, authorization: [auth.as_bytes()] };
    decide(index, &Routes::default(), request, now).outcome
}

fn counts(index: &KeyIndex, t: &crate::token::Token) -> Counts {
    index.get(&t.hash()).expect("the key is loaded").usage.snapshot()
}

#[test]
fn every_attributable_decision_is_counted_on_its_key_and_the_last_allowed_second_kept() {
    let (good, off, late, limited) = (token(1), token(2), token(3), token(4));
    let idx = KeyIndex::build(
        vec![key_set(
            "default",
            1,
            vec![
                record(&good, &["leads:read"]),
                with_state(record(&off, &["leads:read"]), RecordState::Inactive),
                with_window(record(&late, &["leads:read"]), "2026-01-01T00:00:00Z", Some("2026-01-02T00:00:00Z")),
                with_limit(record(&limited, &["leads:read"]), "1/1h/1"),
            ],
        )],
        None,
    )
    .unwrap();
    let later = Now { wall: now().wall + jiff::SignedDuration::from_secs(30), ..now() };
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&good), now()), Outcome::Allowed);
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&good), later), Outcome::Allowed);
    assert_eq!(ask(&idx, "POST", "/leads", &bearer(&good), now()), Outcome::InsufficientScope);
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&off), now()), Outcome::Inactive);
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&late), now()), Outcome::Expired);
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&limited), now()), Outcome::Allowed);
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&limited), now()), Outcome::RateLimited);
    // An earlier request finishing late never moves the last use back.
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&good), now()), Outcome::Allowed);

    let second = now().wall.as_second();
    assert_eq!(
        counts(&idx, &good),
        Counts { allowed: 3, insufficient_scope: 1, last_allowed: Some(second + 30), ..Counts::default() }
    );
    assert_eq!(counts(&idx, &off), Counts { inactive: 1, ..Counts::default() });
    assert_eq!(counts(&idx, &late), Counts { expired: 1, ..Counts::default() });
    assert_eq!(
        counts(&idx, &limited),
        Counts { allowed: 1, rate_limited: 1, last_allowed: Some(second), ..Counts::default() }
    );
}

#[test]
fn unknown_and_revoked_tokens_create_no_per_key_state() {
    let gone = token(1);
    let idx = KeyIndex::build(
        vec![key_set("default", 1, vec![with_state(record(&gone, &["leads:read"]), RecordState::Revoked)])],
        None,
    )
    .unwrap();
    for seed in 100..200 {
        assert_eq!(ask(&idx, "GET", "/leads", &bearer(&token(seed)), now()), Outcome::Unknown);
    }
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&gone), now()), Outcome::Revoked);
    assert_eq!(idx.usages().len(), 1, "one counter set per loaded key, none per token presented");
    assert!(counts(&idx, &gone).is_zero(), "revoked is counted apart, in the outcome metric");
    let mut tally = Tally::new();
    tally.update(Some(&idx));
    assert!(tally.totals().is_empty());
}

#[test]
fn counts_carry_over_a_reload_and_a_request_on_the_replaced_index_still_counts() {
    let t = token(1);
    let first = KeyIndex::build(vec![key_set("default", 1, vec![record(&t, &["leads:read"])])], None).unwrap();
    ask(&first, "GET", "/leads", &bearer(&t), now());
    let second =
        KeyIndex::build(vec![key_set("default", 2, vec![record(&t, &["leads:admin"])])], Some(&first)).unwrap();
    ask(&first, "GET", "/leads", &bearer(&t), now());
    ask(&second, "GET", "/leads", &bearer(&t), now());
    assert_eq!(counts(&second, &t).allowed, 3);
}

#[test]
fn the_tally_only_grows_when_a_key_leaves_the_set_and_comes_back() {
    let (t, other) = (token(1), token(2));
    let with_t = |previous: Option<&KeyIndex>| {
        KeyIndex::build(
            vec![key_set("default", 1, vec![record(&t, &["leads:read"]), record(&other, &["leads:read"])])],
            previous,
        )
        .unwrap()
    };
    let mut tally = Tally::new();
    let first = with_t(None);
    ask(&first, "GET", "/leads", &bearer(&t), now());
    tally.update(Some(&first));
    ask(&first, "GET", "/leads", &bearer(&t), now());
    // t leaves the key set; a request still on the old index counts before the tally reads it one last time.
    let without =
        KeyIndex::build(vec![key_set("default", 2, vec![record(&other, &["leads:read"])])], Some(&first)).unwrap();
    ask(&first, "GET", "/leads", &bearer(&t), now());
    tally.update(Some(&without));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 3);
    drop(first);
    // Back, with fresh counters: the tally adds them to what it had.
    let again = with_t(Some(&without));
    ask(&again, "GET", "/leads", &bearer(&t), now());
    tally.update(Some(&again));
    tally.update(Some(&again));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 4);
    assert!(!tally.totals().contains_key(&other.hash().key_id()), "an unused key is not reported");
}

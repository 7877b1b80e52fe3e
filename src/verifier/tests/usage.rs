//! Per-key usage counting: what each decision adds, across reloads, and what the tally reports.

use super::fixtures::*;
use crate::keyset::RecordState;
use crate::usage::Counts;
use crate::verifier::decision::{Now, Outcome, Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::loader::KeyStore;
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
    let memory = idx.approx_heap_bytes();
    for seed in 100..200 {
        assert_eq!(ask(&idx, "GET", "/leads", &bearer(&token(seed)), now()), Outcome::Unknown);
    }
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&gone), now()), Outcome::Revoked);
    assert_eq!(idx.approx_heap_bytes(), memory, "no state per token presented");
    idx.fold_usage();
    assert!(idx.ledger().totals().is_empty(), "nothing moved for unknown or revoked tokens");
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
    assert_eq!(counts(&second, &t).allowed, 1, "each index counts what was decided on it");
    let mut tally = Tally::new();
    tally.update(Some(&second));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 1, "the replaced index still holds its two");
    drop(first);
    tally.update(Some(&second));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 3, "dropped, it gave them to the ledger");
}

#[test]
fn a_request_in_flight_on_the_replaced_index_is_counted_after_the_reload() {
    let t = token(1);
    let id = t.hash().key_id();
    let store = KeyStore::default();
    let first = KeyIndex::build(vec![key_set("default", 1, vec![record(&t, &["leads:read"])])], None).unwrap();
    assert!(store.install(first).is_none());
    let mut tally = Tally::new();
    // Requests holding the index in force, as a serving thread does, while the key set reloads.
    let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| {
            let index = store.current().expect("loaded");
            held.wait();
            release.wait();
            // Decided on the replaced index, after the reload and after a report.
            for _ in 0..5 {
                assert_eq!(ask(&index, "GET", "/leads", &bearer(&t), now()), Outcome::Allowed);
            }
        });
        held.wait();
        let current = store.current().unwrap();
        let second =
            KeyIndex::build(vec![key_set("default", 2, vec![record(&t, &["leads:read"])])], Some(&current)).unwrap();
        drop(current);
        let replaced = store.install(second).expect("the first index was in force");
        ask(&store.current().unwrap(), "GET", "/leads", &bearer(&t), now());
        tally.update(store.current().as_deref());
        assert_eq!(tally.totals()[&id].allowed, 1, "the new index's request is reported at once");
        release.wait();
        in_flight.join().unwrap();
        tally.update(store.current().as_deref());
        assert_eq!(tally.totals()[&id].allowed, 1, "the in-flight requests wait in the replaced index");
        drop(replaced);
    });
    tally.update(store.current().as_deref());
    assert_eq!(tally.totals()[&id].allowed, 6, "none of the in-flight requests is lost");
    tally.update(store.current().as_deref());
    assert_eq!(tally.totals()[&id].allowed, 6, "nor counted twice");
}

#[test]
fn counting_while_the_report_folds_loses_nothing_and_counts_nothing_twice() {
    let keys: Vec<_> = (1..=4).map(token).collect();
    let idx =
        KeyIndex::build(vec![key_set("default", 1, keys.iter().map(|t| record(t, &["leads:read"])).collect())], None)
            .unwrap();
    let per_thread = 2_000;
    let mut tally = Tally::new();
    std::thread::scope(|scope| {
        for t in &keys {
            let idx = &idx;
            scope.spawn(move || {
                for _ in 0..per_thread {
                    ask(idx, "GET", "/leads", &bearer(t), now());
                    ask(idx, "POST", "/leads", &bearer(t), now());
                }
            });
        }
        for _ in 0..50 {
            tally.update(Some(&idx));
        }
    });
    tally.update(Some(&idx));
    for t in &keys {
        let total = tally.totals()[&t.hash().key_id()];
        assert_eq!((total.allowed, total.insufficient_scope), (per_thread, per_thread));
        let left = counts(&idx, t);
        assert_eq!((left.allowed, left.insufficient_scope), (0, 0), "all moved to the ledger");
    }
}

#[test]
fn the_last_allowed_second_is_kept_in_32_bits_from_1970_to_2106() {
    let t = token(1);
    let idx = KeyIndex::build(
        vec![key_set(
            "default",
            1,
            vec![with_window(record(&t, &["leads:read"]), "1969-01-01T00:00:00Z", Some("2200-01-01T00:00:00Z"))],
        )],
        None,
    )
    .unwrap();
    let at = |wall: &str| Now { wall: wall.parse().unwrap(), ..now() };
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&t), at("1969-06-01T00:00:00Z")), Outcome::Allowed);
    assert_eq!(counts(&idx, &t).last_allowed, None, "before 1970 reads as never");
    assert_eq!(ask(&idx, "GET", "/leads", &bearer(&t), at("2199-06-01T00:00:00Z")), Outcome::Allowed);
    assert_eq!(counts(&idx, &t).last_allowed, Some(i64::from(u32::MAX)), "after 2106, the last second of 2106");
    assert_eq!(counts(&idx, &t).allowed, 2);
}

#[test]
fn a_store_without_reports_keeps_no_counts_beyond_its_indexes() {
    let t = token(1);
    let store = KeyStore::default().discarding_usage(true);
    let build = |previous: Option<&KeyIndex>| {
        KeyIndex::build(vec![key_set("default", 1, vec![record(&t, &["leads:read"])])], previous).unwrap()
    };
    store.install(build(None));
    ask(&store.current().unwrap(), "GET", "/leads", &bearer(&t), now());
    let replaced = store.install(build(store.current().as_deref()));
    drop(replaced);
    let current = store.current().unwrap();
    current.fold_usage();
    assert!(current.ledger().totals().is_empty());
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
    // t leaves the key set; a request still on the old index counts, and reaches the tally once that index is dropped.
    let without =
        KeyIndex::build(vec![key_set("default", 2, vec![record(&other, &["leads:read"])])], Some(&first)).unwrap();
    ask(&first, "GET", "/leads", &bearer(&t), now());
    tally.update(Some(&without));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 1, "the last two are still in the replaced index");
    drop(first);
    tally.update(Some(&without));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 3);
    // Back, with fresh counters: the tally adds them to what it had.
    let again = with_t(Some(&without));
    ask(&again, "GET", "/leads", &bearer(&t), now());
    tally.update(Some(&again));
    tally.update(Some(&again));
    assert_eq!(tally.totals()[&t.hash().key_id()].allowed, 4);
    assert!(!tally.totals().contains_key(&other.hash().key_id()), "an unused key is not reported");
}

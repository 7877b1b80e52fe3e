//! The decision function, table by table.

use std::time::Duration;

use super::fixtures::*;
use crate::keyset::RecordState;
use crate::verifier::decision::{Decision, Now, Outcome, Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::routes::Routes;

fn index(records: Vec<crate::keyset::Record>) -> KeyIndex {
    KeyIndex::build(vec![key_set("default", 1, records)], None).unwrap()
}

fn ask<'i>(index: &'i KeyIndex, routes: &Routes, method: &str, uri: &str, auth: &[&str], now: Now) -> Decision<'i> {
    let request = Request { method, uri, authorization: auth.iter().map(|v| v.as_bytes()) };
    decide(index, routes, request, now)
}

fn bearer(token: &crate::token::Token) -> String {
    format!("Bearer {}", token.expose())
}

#[test]
fn every_outcome_is_reached_by_the_request_that_should_reach_it() {
    let (good, off, gone, late, early, reader, unknown) =
        (token(1), token(2), token(3), token(4), token(5), token(6), token(7));
    let idx = index(vec![
        record(&good, &["leads:read", "leads:write"]),
        with_state(record(&off, &["leads:read"]), RecordState::Inactive),
        with_state(record(&gone, &["leads:read"]), RecordState::Revoked),
        with_window(record(&late, &["leads:read"]), "2026-01-01T00:00:00Z", Some("2026-11-22T12:00:00Z")),
        with_window(record(&early, &["leads:read"]), "2026-11-22T12:00:01Z", None),
        record(&reader, &["leads:read"]),
    ]);
    let mut bad_checksum = good.expose().to_owned();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let routes = Routes::default();
    let cases: Vec<(&str, &str, Vec<String>, Outcome)> = vec![
        ("GET", "/leads/1", vec![bearer(&good)], Outcome::Allowed),
        ("POST", "/leads", vec![bearer(&good)], Outcome::Allowed),
        ("GET", "/leads/1", vec![], Outcome::Missing),
        ("GET", "/leads/1", vec!["Basic YTpi".into()], Outcome::Malformed),
        ("GET", "/leads/1", vec![bearer(&good), bearer(&good)], Outcome::Malformed),
        ("GET", "/leads/1", vec![format!("Bearer {bad_checksum}")], Outcome::Malformed),
        ("GET", "/leads/1", vec!["Bearer not-a-token".into()], Outcome::Malformed),
        ("GET", "/leads/1", vec![bearer(&unknown)], Outcome::Unknown),
        ("GET", "/leads/1", vec![bearer(&off)], Outcome::Inactive),
        ("GET", "/leads/1", vec![bearer(&gone)], Outcome::Revoked),
        ("GET", "/leads/1", vec![bearer(&late)], Outcome::Expired),
        ("GET", "/leads/1", vec![bearer(&early)], Outcome::Expired),
        ("POST", "/leads/1", vec![bearer(&reader)], Outcome::InsufficientScope),
        ("GET", "/contacts", vec![bearer(&good)], Outcome::InsufficientScope),
        ("GET", "/leads/../contacts", vec![bearer(&good)], Outcome::InvalidRequest),
        ("GET", "", vec![bearer(&good)], Outcome::InvalidRequest),
    ];
    for (method, uri, auth, expected) in cases {
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let decision = ask(&idx, &routes, method, uri, &auth, now());
        assert_eq!(decision.outcome, expected, "{method} {uri} with {} header(s)", auth.len());
    }
}

#[test]
fn checks_run_in_order_so_a_revoked_key_is_revoked_even_when_also_expired_and_out_of_scope() {
    let t = token(1);
    let idx = index(vec![with_window(
        with_state(record(&t, &["other:read"]), RecordState::Revoked),
        "2020-01-01T00:00:00Z",
        Some("2021-01-01T00:00:00Z"),
    )]);
    let d = ask(&idx, &Routes::default(), "GET", "/leads", &[&bearer(&t)], now());
    assert_eq!(d.outcome, Outcome::Revoked);
    assert_eq!(d.key_id(), Some(t.hash().key_id()), "the key is named once found");
}

#[test]
fn the_window_includes_not_before_and_excludes_not_after() {
    let t = token(1);
    let idx =
        index(vec![with_window(record(&t, &["leads:read"]), "2026-11-22T12:00:00Z", Some("2026-11-22T13:00:00Z"))]);
    let at = |wall: &str| Now { wall: time(wall), ..now() };
    let cases = [
        ("2026-11-22T11:59:59Z", Outcome::Expired),
        ("2026-11-22T12:00:00Z", Outcome::Allowed),
        ("2026-11-22T12:59:59Z", Outcome::Allowed),
        ("2026-11-22T13:00:00Z", Outcome::Expired),
    ];
    for (wall, expected) in cases {
        assert_eq!(
            ask(&idx, &Routes::default(), "GET", "/leads", &[&bearer(&t)], at(wall)).outcome,
            expected,
            "{wall}"
        );
    }
}

#[test]
fn admin_and_wildcard_scopes_allow_every_action_they_cover() {
    let (admin, all_read, all_admin) = (token(1), token(2), token(3));
    let idx =
        index(vec![record(&admin, &["leads:admin"]), record(&all_read, &["*:read"]), record(&all_admin, &["*:admin"])]);
    let routes = Routes::default();
    let cases = [
        (&admin, "DELETE", "/leads/1", Outcome::Allowed),
        (&admin, "GET", "/leads/1", Outcome::Allowed),
        (&admin, "GET", "/contacts", Outcome::InsufficientScope),
        (&all_read, "GET", "/anything", Outcome::Allowed),
        (&all_read, "GET", "/", Outcome::Allowed),
        (&all_read, "PUT", "/anything", Outcome::InsufficientScope),
        (&all_admin, "PUT", "/anything", Outcome::Allowed),
    ];
    for (t, method, uri, expected) in cases {
        assert_eq!(ask(&idx, &routes, method, uri, &[&bearer(t)], now()).outcome, expected, "{method} {uri}");
    }
}

#[test]
fn route_rules_decide_the_required_scope_and_a_denial_names_it() {
    let t = token(1);
    let idx = index(vec![record(&t, &["leads:read"])]);
    let routes = Routes::from_yaml("routes:\n  - pathPrefix: /leads/export\n    scope: leads:admin\n").unwrap();
    assert_eq!(ask(&idx, &routes, "GET", "/leads/1", &[&bearer(&t)], now()).outcome, Outcome::Allowed);
    let denied = ask(&idx, &routes, "GET", "/leads/export", &[&bearer(&t)], now());
    assert_eq!(denied.outcome, Outcome::InsufficientScope);
    assert_eq!(denied.required_scope.map(|s| s.to_string()).as_deref(), Some("leads:admin"));
}

#[test]
fn a_rate_limited_key_is_refused_with_the_wait_and_refilled_later() {
    let t = token(1);
    let idx = index(vec![with_limit(record(&t, &["leads:read"]), "60/1m/2")]);
    let routes = Routes::default();
    let outcomes: Vec<Outcome> =
        (0..3).map(|_| ask(&idx, &routes, "GET", "/leads", &[&bearer(&t)], now()).outcome).collect();
    assert_eq!(outcomes, [Outcome::Allowed, Outcome::Allowed, Outcome::RateLimited]);
    let refused = ask(&idx, &routes, "GET", "/leads", &[&bearer(&t)], now());
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    let later = Now { monotonic: now().monotonic + Duration::from_secs(1), ..now() };
    assert_eq!(ask(&idx, &routes, "GET", "/leads", &[&bearer(&t)], later).outcome, Outcome::Allowed);
}

#[test]
fn denied_requests_take_no_rate_limit_token() {
    let t = token(1);
    let idx = index(vec![with_limit(record(&t, &["leads:read"]), "1/1h/1")]);
    let routes = Routes::default();
    for _ in 0..5 {
        assert_eq!(ask(&idx, &routes, "POST", "/leads", &[&bearer(&t)], now()).outcome, Outcome::InsufficientScope);
    }
    assert_eq!(ask(&idx, &routes, "GET", "/leads", &[&bearer(&t)], now()).outcome, Outcome::Allowed);
}

#[test]
fn a_reload_keeps_the_bucket_of_a_key_whose_limit_did_not_change() {
    let (same, changed) = (token(1), token(2));
    let records = |limit_of_changed: &str| {
        vec![
            with_limit(record(&same, &["leads:read"]), "1/1h/1"),
            with_limit(record(&changed, &["leads:read"]), limit_of_changed),
        ]
    };
    let routes = Routes::default();
    let first = KeyIndex::build(vec![key_set("default", 1, records("1/1h/1"))], None).unwrap();
    for t in [&same, &changed] {
        assert_eq!(ask(&first, &routes, "GET", "/leads", &[&bearer(t)], now()).outcome, Outcome::Allowed);
    }
    let second = KeyIndex::build(vec![key_set("default", 2, records("2/1h/2"))], Some(&first)).unwrap();
    assert_eq!(ask(&second, &routes, "GET", "/leads", &[&bearer(&same)], now()).outcome, Outcome::RateLimited);
    assert_eq!(ask(&second, &routes, "GET", "/leads", &[&bearer(&changed)], now()).outcome, Outcome::Allowed);
}

#[test]
fn an_allowed_key_carries_ready_made_headers() {
    let t = token(1);
    let idx = index(vec![record(&t, &["leads:read", "contacts:write"])]);
    let d = ask(&idx, &Routes::default(), "GET", "/leads", &[&bearer(&t)], now());
    let entry = d.entry.expect("allowed decisions name the key");
    assert_eq!(entry.key_id_header(), t.hash().key_id().as_str());
    assert_eq!(entry.grant.header, "leads:read,contacts:write");
}

#[test]
fn keys_with_the_same_scopes_share_one_grant() {
    let (a, b, c) = (token(1), token(2), token(3));
    let idx =
        index(vec![record(&a, &["x:read", "y:write"]), record(&b, &["x:read", "y:write"]), record(&c, &["x:read"])]);
    let grant = |t: &crate::token::Token| std::ptr::from_ref(idx.get(&t.hash()).unwrap().grant);
    assert!(std::ptr::eq(grant(&a), grant(&b)));
    assert!(!std::ptr::eq(grant(&a), grant(&c)));
}

#[test]
fn outcome_all_lists_every_outcome_in_declaration_order() {
    for (i, outcome) in Outcome::ALL.iter().enumerate() {
        assert_eq!(*outcome as usize, i, "{outcome:?}");
    }
}

#[test]
fn the_same_hash_in_two_key_sets_is_refused() {
    let t = token(1);
    let sets = vec![key_set("a", 1, vec![record(&t, &["x:read"])]), key_set("b", 1, vec![record(&t, &["x:read"])])];
    assert!(KeyIndex::build(sets, None).is_err());
}

//! Key-set gates: 401 still wins for strangers, then 402 `payment_required` or 403 `access_disabled`
//! for every key of a gated set, and lifting the gate restores the same tokens.

use std::path::PathBuf;

use http::StatusCode;
use http::header::WWW_AUTHENTICATE;
use http_body_util::BodyExt;

use super::fixtures::*;
use crate::keyset::{self, Access, KeySetId, Record, RecordState};
use crate::verifier::decision::{Decision, Outcome, Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::loader::index_from_stored;
use crate::verifier::respond;
use crate::verifier::routes::Routes;

/// Key set `team-a/<name>` at `generation` with `access`, as stored shards, read through the verifier's loader.
fn loaded(name: &str, generation: u64, access: Access, records: &[Record]) -> KeyIndex {
    let id = KeySetId { namespace: "team-a".into(), name: name.into() };
    let files: Vec<(PathBuf, Vec<u8>)> = keyset::encode_packed_gated(&id, generation, access, records, 4_000)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| (PathBuf::from(keyset::shard_file_name(name, i + 1)), s.as_bytes().to_vec()))
        .collect();
    index_from_stored(&files, None).unwrap()
}

fn ask<'i>(index: &'i KeyIndex, method: &str, uri: &str, auth: &[String]) -> Decision<'i> {
    let request = Request { method, uri, authorization: auth.iter().map(String::as_bytes) };
    decide(index, &Routes::default(), request, now())
}

fn bearer(token: &crate::token::Token) -> String {
    format!("Bearer {}", token.expose())
}

#[test]
fn strangers_get_401_and_every_key_of_a_gated_set_gets_the_gate_before_any_per_key_check() {
    let (good, off, late, reader, stranger) = (token(1), token(2), token(3), token(4), token(9));
    let records = vec![
        record(&good, &["leads:read"]),
        with_state(record(&off, &["leads:read"]), RecordState::Inactive),
        with_window(record(&late, &["leads:read"]), "2026-01-01T00:00:00Z", Some("2026-02-01T00:00:00Z")),
        record(&reader, &["orders:read"]),
    ];
    for (access, gated) in
        [(Access::PaymentRequired, Outcome::PaymentRequired), (Access::Disabled, Outcome::AccessDisabled)]
    {
        let index = loaded("paid", 2, access, &records);
        let cases = [
            (vec![], Outcome::Missing),
            (vec!["Bearer not-a-token".to_owned()], Outcome::Malformed),
            (vec![bearer(&stranger)], Outcome::Unknown),
            (vec![bearer(&good)], gated),
            (vec![bearer(&off)], gated),
            (vec![bearer(&late)], gated),
            (vec![bearer(&reader)], gated),
        ];
        for (auth, expected) in cases {
            let decision = ask(&index, "GET", "/leads/1", &auth);
            assert_eq!(decision.outcome, expected, "{access:?}, {} header(s)", auth.len());
        }
        assert_eq!(index.sets()[0].access, access);
    }
}

#[test]
fn a_gate_holds_only_its_own_key_set() {
    let (paid, free) = (token(1), token(2));
    let id = |name: &str| KeySetId { namespace: "team-a".into(), name: name.into() };
    let mut files = Vec::new();
    for (name, access, t) in [("paid", Access::PaymentRequired, &paid), ("free", Access::Enabled, &free)] {
        let shard = keyset::encode_packed_gated(&id(name), 1, access, &[record(t, &["leads:read"])], 4_000).unwrap();
        files.push((PathBuf::from(keyset::shard_file_name(name, 1)), shard[0].as_bytes().to_vec()));
    }
    let index = index_from_stored(&files, None).unwrap();
    assert_eq!(ask(&index, "GET", "/leads", &[bearer(&paid)]).outcome, Outcome::PaymentRequired);
    assert_eq!(ask(&index, "GET", "/leads", &[bearer(&free)]).outcome, Outcome::Allowed);
}

#[test]
fn lifting_the_gate_restores_the_same_token() {
    let t = token(1);
    let records = vec![record(&t, &["leads:read"])];
    let gated = loaded("paid", 5, Access::PaymentRequired, &records);
    assert_eq!(ask(&gated, "GET", "/leads", &[bearer(&t)]).outcome, Outcome::PaymentRequired);
    let lifted = loaded("paid", 6, Access::Enabled, &records);
    let decision = ask(&lifted, "GET", "/leads", &[bearer(&t)]);
    assert_eq!(decision.outcome, Outcome::Allowed);
    assert_eq!(decision.key_id(), Some(t.hash().key_id()));
}

/// A shard set whose shards disagree on the gate is refused as a whole, like mixed generations.
#[test]
fn shards_disagreeing_on_the_gate_are_not_loaded() {
    let records: Vec<Record> = (0..60).map(|n| record(&token(n), &["leads:read"])).collect();
    let id = KeySetId { namespace: "team-a".into(), name: "paid".into() };
    // Plain text shards: gzip would fit these records in one.
    let gated = keyset::encode_gated(&id, 3, Access::Disabled, &records, 4_000).unwrap();
    let open = keyset::encode_gated(&id, 3, Access::Enabled, &records, 4_000).unwrap();
    assert!(gated.len() > 1);
    let mut files: Vec<(PathBuf, Vec<u8>)> = gated
        .iter()
        .enumerate()
        .map(|(i, s)| (PathBuf::from(keyset::shard_file_name("paid", i + 1)), s.as_bytes().to_vec()))
        .collect();
    files[1].1 = open[1].as_bytes().to_vec();
    assert!(index_from_stored(&files, None).is_err());
}

async fn body(response: http::Response<respond::Body>) -> serde_json::Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_answers_are_402_payment_required_and_403_access_disabled_without_a_challenge() {
    let t = token(1);
    let records = vec![record(&t, &["leads:read"])];
    for (access, status, reason) in [
        (Access::PaymentRequired, StatusCode::PAYMENT_REQUIRED, "payment_required"),
        (Access::Disabled, StatusCode::FORBIDDEN, "access_disabled"),
    ] {
        let index = loaded("paid", 1, access, &records);
        let response = respond::denied(&ask(&index, "GET", "/leads", &[bearer(&t)]));
        assert_eq!(response.status(), status);
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none(), "the credentials are fine: no challenge");
        assert_eq!(body(response).await, serde_json::json!({ "error": reason, "reason": reason }));
    }
    // A stranger asking a gated set learns nothing of the gate.
    let index = loaded("paid", 1, Access::PaymentRequired, &records);
    let response = respond::denied(&ask(&index, "GET", "/leads", &[bearer(&token(2))]));
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(response).await["error"], "invalid_token");
}

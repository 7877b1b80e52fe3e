use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::api::ApiKey;
use crate::plan::{EventKind, PlannedEvent, Reason};

/// The Standard Webhooks specification's own test vector (its libraries' `Sign` test).
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn spec_secret() -> SigningSecret {
    SigningSecret::parse(SPEC_SECRET.as_bytes()).unwrap()
}

#[test]
fn signing_matches_the_specifications_test_vector() {
    assert_eq!(sign(&spec_secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
}

#[test]
fn a_secret_without_its_prefix_or_with_a_newline_signs_the_same() {
    for value in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"] {
        let secret = SigningSecret::parse(value.as_bytes()).unwrap();
        assert_eq!(sign(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE, "secret {value:?}");
    }
}

#[test]
fn verification_accepts_the_signature_among_others_and_refuses_any_change() {
    let secret = spec_secret();
    let other = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SPEC_SIGNATURE} v2,abc");
    assert!(verify(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE));
    assert!(verify(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &other));
    assert!(!verify(&secret, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY, SPEC_SIGNATURE), "another timestamp");
    assert!(!verify(&secret, "msg_other", SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE), "another id");
    assert!(!verify(&secret, SPEC_ID, SPEC_TIMESTAMP, br#"{"test": 1}"#, SPEC_SIGNATURE), "another body");
    assert!(!verify(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, "v1,not base64!"), "garbage");
    let wrong = SigningSecret::parse(b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert!(!verify(&wrong, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE), "another secret");
}

#[test]
fn a_seal_checks_out_only_for_its_own_id_kind_body_and_secret_and_is_never_a_signature() {
    let secret = spec_secret();
    let sealed = seal(&secret, SPEC_ID, "apikey.revoked", SPEC_BODY);
    assert!(verify_seal(&secret, SPEC_ID, "apikey.revoked", SPEC_BODY, &sealed));
    assert!(!verify_seal(&secret, "msg_other", "apikey.revoked", SPEC_BODY, &sealed), "another id");
    assert!(!verify_seal(&secret, SPEC_ID, "apikey.enabled", SPEC_BODY, &sealed), "another kind");
    assert!(!verify_seal(&secret, SPEC_ID, "apikey.revoked", br#"{"test": 1}"#, &sealed), "another body");
    assert!(!verify_seal(&secret, SPEC_ID, "apikey.revoked", SPEC_BODY, "not base64!"), "garbage");
    assert!(!verify_seal(&secret, SPEC_ID, "apikey.revoked", SPEC_BODY, ""), "none");
    let wrong = SigningSecret::parse(b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert!(!verify_seal(&wrong, SPEC_ID, "apikey.revoked", SPEC_BODY, &sealed), "another secret");
    // A seal shown in status signs no message: not this one, at any time.
    for timestamp in [0, SPEC_TIMESTAMP] {
        assert!(!verify(&secret, SPEC_ID, timestamp, SPEC_BODY, &format!("v1,{sealed}")));
    }
    assert!(!sealed.contains(SPEC_SECRET.trim_start_matches("whsec_")));
}

#[test]
fn secrets_that_are_not_base64_or_of_the_wrong_length_are_refused_without_quoting_them() {
    let cases: [(&[u8], SecretError); 4] = [
        (b"whsec_not*base64*at*all", SecretError::NotBase64),
        (b"\xff\xfe", SecretError::NotBase64),
        (b"whsec_c2hvcnQ=", SecretError::Length(5)),
        (&[b'A'; 120], SecretError::Length(90)),
    ];
    for (value, expected) in cases {
        let error = SigningSecret::parse(value).unwrap_err();
        assert_eq!(error, expected, "value {:?}", String::from_utf8_lossy(value));
        assert!(!error.to_string().contains("base64*at"), "the message quotes the value: {error}");
    }
}

#[test]
fn a_signing_secret_never_prints_itself() {
    assert_eq!(format!("{:?}", spec_secret()), "SigningSecret(<redacted>)");
}

fn stored_key(labels: &str) -> ApiKey {
    serde_yaml::from_str(&format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: partner, namespace: team-a, uid: 0b5e-uid, generation: 3, labels: {labels}}}\n\
         spec: {{scopes: [orders:read], expiresAt: '2027-01-01T00:00:00Z'}}\nstatus: {{state: Revoked}}\n"
    ))
    .unwrap()
}

fn event(reason: Reason, note: &str) -> PlannedEvent {
    PlannedEvent { kind: EventKind::Normal, reason, note: note.to_owned() }
}

#[test]
fn a_revocation_is_a_notice_with_the_keys_names_ids_and_times() {
    let now: Timestamp = "2026-12-01T05:00:00Z".parse().unwrap();
    let key = stored_key("{team: payments}");
    let notice = notice(&key, &event(Reason::Revoked, "Key revoked for good"), "a1b2c3d4e5f6", now).unwrap();
    assert_eq!(notice.kind, NoticeType::Revoked);
    assert_eq!(notice.namespace, "team-a");
    assert_eq!(notice.labels.get("team").map(String::as_str), Some("payments"));
    let body: serde_json::Value = serde_json::from_slice(&notice.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "apikey.revoked",
            "timestamp": "2026-12-01T05:00:00Z",
            "data": {
                "kind": "ApiKey", "namespace": "team-a", "name": "partner", "uid": "0b5e-uid",
                "keyId": "a1b2c3d4e5f6", "reason": "Revoked", "message": "Key revoked for good", "state": "Revoked",
                "expiresAt": "2027-01-01T00:00:00Z",
            }
        })
    );
}

#[test]
fn only_the_steps_a_team_acts_on_are_notices() {
    let notices: Vec<(Reason, NoticeType)> =
        Reason::ALL.iter().filter_map(|r| notice_type(*r).map(|n| (*r, n))).collect();
    assert_eq!(
        notices,
        vec![
            (Reason::Disabled, NoticeType::Disabled),
            (Reason::Revoked, NoticeType::Revoked),
            (Reason::Expired, NoticeType::Expired),
            (Reason::Unused, NoticeType::Expired),
            (Reason::ExpiringSoon, NoticeType::ExpiringSoon),
            (Reason::ClassViolation, NoticeType::Disabled),
            (Reason::ClassNotFound, NoticeType::Disabled),
            (Reason::ClassAmbiguous, NoticeType::Disabled),
            (Reason::ClassSatisfied, NoticeType::Enabled),
            (Reason::Enabled, NoticeType::Enabled),
            (Reason::Swapped, NoticeType::Rotated),
            (Reason::UsageAnomaly, NoticeType::UsageAnomaly),
        ]
    );
    let now = Timestamp::UNIX_EPOCH;
    assert_eq!(notice(&stored_key("{}"), &event(Reason::Created, "minted"), "k", now), None);
}

#[test]
fn a_usage_anomaly_notice_carries_the_counts_it_was_judged_on() {
    let now: Timestamp = "2026-12-01T05:00:00Z".parse().unwrap();
    let mut key = stored_key("{}");
    key.status = Some(
        serde_json::from_value(serde_json::json!({
            "state": "Active",
            "usage": {"last24h": {"allowed": 20000, "denied": 3}, "last7d": {"allowed": 23000, "denied": 3},
                      "last30d": {"allowed": 23000, "denied": 3}, "updatedAt": "2026-12-01T04:55:00Z"}
        }))
        .unwrap(),
    );
    let note =
        "Unusual usage: AllowedSpike: 20000 requests allowed in the last 24h, against 500 a day over the 6 days before";
    let sent = notice(&key, &event(Reason::UsageAnomaly, note), "a1b2c3d4e5f6", now).unwrap();
    assert_eq!(sent.kind, NoticeType::UsageAnomaly);
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["type"], "apikey.usage_anomaly");
    assert_eq!((body["data"]["reason"].as_str(), body["data"]["message"].as_str()), (Some("UsageAnomaly"), Some(note)));
    assert_eq!(body["data"]["usage"]["last24h"], serde_json::json!({"allowed": 20000, "denied": 3}));
    // Other notices leave the counts out.
    let revoked = notice(&key, &event(Reason::Revoked, "Key revoked for good"), "a1b2c3d4e5f6", now).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&revoked.body).unwrap();
    assert!(body["data"].get("usage").is_none(), "{body}");
}

#[test]
fn a_key_held_back_by_its_class_is_a_disabled_notice_naming_the_class() {
    let note = "The key is not published: ApiKeyClass client (allowedScopes): not allowed: analytics:write";
    let sent = notice(&stored_key("{}"), &event(Reason::ClassViolation, note), "k", Timestamp::UNIX_EPOCH).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["type"], "apikey.disabled");
    assert_eq!(
        (body["data"]["reason"].as_str(), body["data"]["message"].as_str()),
        (Some("ClassViolation"), Some(note))
    );
}

#[test]
fn a_token_in_a_note_never_reaches_the_payload() {
    let token = crate::token::Token::generate(&"acme_live".parse().unwrap(), &mut crate::token::os_rng());
    let note = format!("something mentioned {}", token.expose());
    let notice = notice(&stored_key("{}"), &event(Reason::Disabled, &note), "k", Timestamp::UNIX_EPOCH).unwrap();
    let body = String::from_utf8(notice.body).unwrap();
    assert!(!body.contains(token.expose()), "the token reached the payload: {body}");
}

#[test]
fn the_message_id_is_the_same_for_the_same_step_and_new_for_another() {
    let revoked = event(Reason::Revoked, "Key revoked for good");
    let id = message_id("uid-1", 3, &revoked, "abc");
    assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
    assert_eq!(id, message_id("uid-1", 3, &revoked, "abc"), "a replay after a restart keeps its id");
    let others = [
        message_id("uid-2", 3, &revoked, "abc"),
        message_id("uid-1", 4, &revoked, "abc"),
        message_id("uid-1", 3, &event(Reason::Disabled, "Key revoked for good"), "abc"),
        message_id("uid-1", 3, &revoked, "def"),
        message_id("uid-1", 3, &event(Reason::Revoked, "another note"), "abc"),
    ];
    assert!(others.iter().all(|other| *other != id), "{id} repeats in {others:?}");
}

#[test]
fn retries_double_up_to_the_cap_then_give_up() {
    let policy = RetryPolicy { attempts: 5, base: Duration::from_secs(2), cap: Duration::from_secs(10) };
    let outcomes: Vec<Outcome> = (1..=5).map(|attempt| policy.after(attempt, false)).collect();
    let secs = Duration::from_secs;
    assert_eq!(
        outcomes,
        vec![
            Outcome::RetryAfter(secs(2)),
            Outcome::RetryAfter(secs(4)),
            Outcome::RetryAfter(secs(8)),
            Outcome::RetryAfter(secs(10)),
            Outcome::GiveUp
        ]
    );
    assert_eq!(policy.after(3, true), Outcome::Delivered);
    let huge = RetryPolicy { attempts: 100, ..policy };
    assert_eq!(huge.after(90, false), Outcome::RetryAfter(secs(10)), "no overflow past the cap");
}

#[test]
fn a_cluster_keys_notice_goes_to_its_secret_namespace_and_names_it_as_a_cluster_key() {
    let now: Timestamp = "2026-12-01T05:00:00Z".parse().unwrap();
    let key: crate::api::ClusterApiKey = serde_yaml::from_str(
        "apiVersion: keyward.dev/v1alpha1\nkind: ClusterApiKey\n\
         metadata: {name: agency, uid: cak-uid, generation: 2, labels: {team: platform}}\n\
         spec: {scopes: [orders:read], secretNamespace: platform, namespaceSelector: {matchLabels: {a: b}}}\n\
         status: {state: Rotating, namespaces: [loc-a]}\n",
    )
    .unwrap();
    let step = event(Reason::Swapped, "Secret now holds token a1b2c3d4e5f6");
    let notice = crate::notice::cluster_notice(&key, &step, "a1b2c3d4e5f6", now).unwrap();
    assert_eq!((notice.kind, notice.namespace.as_str()), (NoticeType::Rotated, "platform"));
    assert_eq!(notice.labels.get("team").map(String::as_str), Some("platform"), "matched by webhook selectors");
    let body: serde_json::Value = serde_json::from_slice(&notice.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "apikey.rotated",
            "timestamp": "2026-12-01T05:00:00Z",
            "data": {
                "kind": "ClusterApiKey", "name": "agency", "uid": "cak-uid", "keyId": "a1b2c3d4e5f6",
                "reason": "Swapped", "message": "Secret now holds token a1b2c3d4e5f6", "state": "Rotating",
            }
        })
    );
    assert_ne!(notice.id, crate::notice::notice(&stored_key("{}"), &step, "a1b2c3d4e5f6", now).unwrap().id);
}

//! The verifier in process: every decision through the forward-auth handler, and key-set loading from real directories.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use keyward::keyset::{self, RecordState};
use keyward::token::Token;
use keyward::verifier::clock::ManualClock;
use keyward::verifier::index::KeyIndex;
use keyward::verifier::loader::{KeyStore, Loader, ReloadError};
use keyward::verifier::metrics::Metrics;
use keyward::verifier::respond::Body;
use keyward::verifier::routes::Routes;
use keyward::verifier::service::Verifier;

struct Harness {
    verifier: Verifier,
    store: Arc<KeyStore>,
    metrics: Arc<Metrics>,
}

fn harness(records: Vec<keyset::Record>) -> Harness {
    let store = Arc::new(KeyStore::default());
    let set = keyset::KeySet {
        id: keyset::KeySetId { namespace: "team-a".into(), name: "default".into() },
        generation: 1,
        access: keyset::Access::Enabled,
        records,
    };
    store.install(KeyIndex::build(vec![set], None).unwrap());
    let metrics = Arc::new(Metrics::new());
    let routes = Routes::from_yaml("routes:\n  - pathPrefix: /leads/export\n    scope: leads:admin\n").unwrap();
    let verifier =
        Verifier::new(Arc::clone(&store), routes, Arc::clone(&metrics), Arc::new(ManualClock::new(now())), None);
    Harness { verifier, store, metrics }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: serde_json::Value,
    raw: String,
}

async fn answer(response: Response<Body>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let raw = String::from_utf8(bytes.to_vec()).unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
    Answer { status: parts.status, headers: parts.headers, body, raw }
}

fn verify(method: &str, uri: &str, auth: &[&str]) -> Request<Empty<Bytes>> {
    let mut builder = Request::builder()
        .method("GET")
        .uri("/verify")
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri);
    for value in auth {
        builder = builder.header("authorization", *value);
    }
    builder.body(Empty::new()).unwrap()
}

async fn send(h: &Harness, request: Request<Empty<Bytes>>) -> Answer {
    answer(h.verifier.handle(request).await).await
}

struct Keys {
    good: Token,
    off: Token,
    gone: Token,
    old: Token,
    reader: Token,
    limited: Token,
    stranger: Token,
}

fn keys() -> (Keys, Vec<keyset::Record>) {
    let k = Keys {
        good: token(1),
        off: token(2),
        gone: token(3),
        old: token(4),
        reader: token(5),
        limited: token(6),
        stranger: token(7),
    };
    let records = vec![
        record(&k.good, &["leads:read", "leads:write"]),
        with_state(record(&k.off, &["leads:read"]), RecordState::Inactive),
        with_state(record(&k.gone, &["leads:read"]), RecordState::Revoked),
        with_not_after(record(&k.old, &["leads:read"]), "2026-11-02T00:00:00Z"),
        record(&k.reader, &["leads:read"]),
        with_limit(record(&k.limited, &["leads:read"]), "10/1m/1"),
    ];
    (k, records)
}

/// Method, URI, Authorization values, then the expected status, reason and challenge.
type Case<'a> = (&'a str, &'a str, Vec<String>, StatusCode, &'a str, Option<&'a str>);

#[tokio::test]
async fn every_decision_gets_its_status_challenge_and_reason() {
    let (k, records) = keys();
    let h = harness(records);
    // Spend the limited key's only token first.
    assert_eq!(send(&h, verify("GET", "/leads", &[&bearer(&k.limited)])).await.status, StatusCode::OK);
    let invalid = Some(r#"Bearer realm="keyward", error="invalid_token""#);
    let cases: Vec<Case> = vec![
        ("GET", "/leads/1", vec![bearer(&k.good)], StatusCode::OK, "allowed", None),
        ("GET", "/leads/1", vec![], StatusCode::UNAUTHORIZED, "missing", invalid),
        ("GET", "/leads/1", vec!["Basic YTpi".into()], StatusCode::UNAUTHORIZED, "malformed", invalid),
        ("GET", "/leads/1", vec!["Bearer kw_short".into()], StatusCode::UNAUTHORIZED, "malformed", invalid),
        ("GET", "/leads/1", vec![bearer(&k.good), bearer(&k.good)], StatusCode::UNAUTHORIZED, "malformed", invalid),
        ("GET", "/leads/1", vec![bearer(&k.stranger)], StatusCode::UNAUTHORIZED, "unknown", invalid),
        ("GET", "/leads/1", vec![bearer(&k.off)], StatusCode::UNAUTHORIZED, "inactive", invalid),
        ("GET", "/leads/1", vec![bearer(&k.gone)], StatusCode::UNAUTHORIZED, "revoked", invalid),
        ("GET", "/leads/1", vec![bearer(&k.old)], StatusCode::UNAUTHORIZED, "expired", invalid),
        (
            "POST",
            "/leads/1",
            vec![bearer(&k.reader)],
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            Some(r#"Bearer realm="keyward", error="insufficient_scope", scope="leads:write""#),
        ),
        (
            "GET",
            "/leads/export",
            vec![bearer(&k.reader)],
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            Some(r#"Bearer realm="keyward", error="insufficient_scope", scope="leads:admin""#),
        ),
        ("GET", "/leads/1", vec![bearer(&k.limited)], StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
        (
            "GET",
            "/leads/%2e%2e/x",
            vec![bearer(&k.good)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(r#"Bearer realm="keyward", error="invalid_request""#),
        ),
    ];
    for (method, uri, auth, status, reason, challenge) in cases {
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let a = send(&h, verify(method, uri, &auth)).await;
        let context = format!("{method} {uri}: {} {}", a.status, a.raw);
        assert_eq!(a.status, status, "{context}");
        assert_eq!(a.body["reason"], reason, "{context}");
        let got = a.headers.get("www-authenticate").map(|v| v.to_str().unwrap());
        assert_eq!(got, challenge, "{context}");
        assert_eq!(a.headers["cache-control"], "no-store", "{context}");
    }
}

#[tokio::test]
async fn a_rate_limited_answer_says_when_to_retry() {
    let (k, records) = keys();
    let h = harness(records);
    send(&h, verify("GET", "/leads", &[&bearer(&k.limited)])).await;
    let a = send(&h, verify("GET", "/leads", &[&bearer(&k.limited)])).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "6", "10 per minute refills one every 6 s");
    assert_eq!(a.body["retryAfter"], 6);
}

#[tokio::test]
async fn an_allowed_answer_names_the_key_and_its_scopes_for_the_proxy_to_pass_on() {
    let (k, records) = keys();
    let h = harness(records);
    let a = send(&h, verify("GET", "/leads", &[&bearer(&k.good)])).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["x-keyward-key-id"], k.good.hash().key_id().as_str());
    assert_eq!(a.headers["x-keyward-scopes"], "leads:read,leads:write");
}

#[tokio::test]
async fn the_original_request_is_read_from_traefik_nginx_or_envoy_style_requests() {
    let (k, records) = keys();
    let h = harness(records);
    let auth = bearer(&k.reader);
    let build = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut b = Request::builder().method(method).uri(path).header("authorization", auth.as_str());
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(Empty::<Bytes>::new()).unwrap()
    };
    let cases = [
        (
            "traefik read",
            build("GET", "/verify", &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/leads/1")]),
            "allowed",
        ),
        (
            "traefik write",
            build("GET", "/verify", &[("x-forwarded-method", "PUT"), ("x-forwarded-uri", "/leads/1")]),
            "insufficient_scope",
        ),
        (
            "nginx read",
            build("GET", "/verify", &[("x-original-method", "GET"), ("x-original-uri", "/leads/1?a=b")]),
            "allowed",
        ),
        (
            "nginx write",
            build("POST", "/verify", &[("x-original-method", "DELETE"), ("x-original-uri", "/leads/1")]),
            "insufficient_scope",
        ),
        ("envoy read", build("GET", "/verify/leads/1?x=1", &[]), "allowed"),
        ("envoy write", build("PATCH", "/verify/leads/1", &[]), "insufficient_scope"),
        ("no method header", build("GET", "/verify", &[("x-original-uri", "/leads/1")]), "invalid_request"),
        ("no uri header", build("GET", "/verify", &[("x-original-method", "GET")]), "invalid_request"),
        (
            "client-added traefik header disagreeing with nginx's",
            build(
                "GET",
                "/verify",
                &[("x-original-method", "GET"), ("x-original-uri", "/leads/export"), ("x-forwarded-uri", "/leads/1")],
            ),
            "invalid_request",
        ),
        (
            "client-added header disagreeing with the envoy path",
            build("GET", "/verify/leads/export", &[("x-forwarded-uri", "/leads/1")]),
            "invalid_request",
        ),
        (
            "sources that agree",
            build(
                "GET",
                "/verify",
                &[
                    ("x-original-method", "GET"),
                    ("x-forwarded-method", "GET"),
                    ("x-original-uri", "/leads/1"),
                    ("x-forwarded-uri", "/leads/1"),
                ],
            ),
            "allowed",
        ),
        (
            "a repeated header",
            build(
                "GET",
                "/verify",
                &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/leads/1"), ("x-forwarded-uri", "/leads/1")],
            ),
            "invalid_request",
        ),
    ];
    for (name, request, reason) in cases {
        let a = answer(h.verifier.handle(request).await).await;
        assert_eq!(a.body["reason"], reason, "{name}: {} {}", a.status, a.raw);
    }
}

#[tokio::test]
async fn paths_other_than_verify_are_not_found() {
    let (k, records) = keys();
    let h = harness(records);
    for path in ["/", "/verifyx", "/leads", "/healthz"] {
        let request =
            Request::builder().uri(path).header("authorization", bearer(&k.good)).body(Empty::<Bytes>::new()).unwrap();
        assert_eq!(answer(h.verifier.handle(request).await).await.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn before_the_first_key_set_loads_every_request_is_refused_as_not_ready() {
    let (k, _) = keys();
    let store = Arc::new(KeyStore::default());
    let metrics = Arc::new(Metrics::new());
    let verifier =
        Verifier::new(store, Routes::default(), Arc::clone(&metrics), Arc::new(ManualClock::new(now())), None);
    let a = answer(verifier.handle(verify("GET", "/leads", &[&bearer(&k.good)])).await).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body["reason"], "not_ready");
    assert!(metrics.encode().contains(r#"keyward_verifier_decisions_total{outcome="not_ready"} 1"#));
}

#[tokio::test]
async fn no_answer_ever_contains_the_token() {
    let (k, records) = keys();
    let h = harness(records);
    let all = [&k.good, &k.off, &k.gone, &k.old, &k.reader, &k.limited, &k.stranger];
    for t in all {
        let secret = t.expose();
        let body_part = &secret[secret.len() - 20..];
        for (method, uri) in [("GET", "/leads"), ("POST", "/leads"), ("GET", "/leads/export"), ("GET", "/a/../b")] {
            for auth in
                [bearer(t), format!("Basic {secret}"), format!("Bearer {secret} {secret}"), format!("Bearer {secret}x")]
            {
                let a = send(&h, verify(method, uri, &[&auth])).await;
                let headers = format!("{:?}", a.headers);
                assert!(
                    !a.raw.contains(body_part) && !headers.contains(body_part),
                    "token echoed in {} {headers}",
                    a.raw
                );
            }
        }
    }
}

/// The status, reason and challenge of one forward-auth answer, after checking that `secret` appears nowhere in it.
async fn answer_without(
    h: &Harness,
    method: &str,
    uri: &str,
    auth: &str,
    secret: &str,
) -> (StatusCode, String, String) {
    let a = send(h, verify(method, uri, &[auth])).await;
    let headers = format!("{:?}", a.headers);
    assert!(!a.raw.contains(secret) && !headers.contains(secret), "{uri:?}: {secret:?} echoed in {} {headers}", a.raw);
    let challenge = a.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (a.status, a.body["reason"].as_str().unwrap_or_default().to_owned(), challenge)
}

#[tokio::test]
async fn request_text_never_reaches_an_answer_and_a_token_in_the_path_never_comes_back() {
    let (k, records) = keys();
    let h = harness(records);
    let fixed_400 = r#"Bearer realm="keyward", error="invalid_request""#;
    let injected = r#"/x",error="injected",realm="evil"#;
    let (status, reason, challenge) = answer_without(&h, "GET", injected, &bearer(&k.reader), "injected").await;
    assert_eq!((status, reason.as_str(), challenge.as_str()), (StatusCode::BAD_REQUEST, "invalid_request", fixed_400));

    let secret = k.good.expose();
    for uri in [format!("/{secret}"), format!("/{secret}/leads"), format!("/leads/{secret}"), format!("/x/{secret}")] {
        let (status, reason, challenge) = answer_without(&h, "POST", &uri, &bearer(&k.reader), secret).await;
        assert_ne!(status, StatusCode::OK, "{uri}");
        assert!(reason == "invalid_request" || reason == "insufficient_scope", "{uri}: {reason}");
        assert!(
            challenge == fixed_400
                || challenge.ends_with(r#"scope="leads:write""#)
                || challenge.ends_with(r#"scope="x:write""#),
            "{uri}: {challenge}"
        );
    }
}

#[tokio::test]
async fn absolute_form_uris_are_decided_on_their_real_path() {
    let orders = token(11);
    let h = harness(vec![record(&orders, &["orders:read"])]);
    let auth = bearer(&orders);
    let cases = [
        ("http://h/orders/1", StatusCode::OK, "allowed"),
        // The path of both is `/`, which needs a `*` scope.
        ("http://h?/orders/1", StatusCode::FORBIDDEN, "insufficient_scope"),
        ("http://h?x=/orders/1", StatusCode::FORBIDDEN, "insufficient_scope"),
        ("http://h#/orders/1", StatusCode::BAD_REQUEST, "invalid_request"),
        ("http://user@h/orders/1", StatusCode::BAD_REQUEST, "invalid_request"),
        ("ftp://h/orders/1", StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (uri, status, reason) in cases {
        let a = send(&h, verify("GET", uri, &[&auth])).await;
        assert_eq!((a.status, a.body["reason"].as_str()), (status, Some(reason)), "{uri}: {}", a.raw);
    }
}

#[tokio::test]
async fn ambiguous_paths_are_refused_or_need_the_stronger_scope() {
    let (k, _) = keys();
    let orders = token(11);
    let h = harness(vec![record(&k.reader, &["leads:read"]), record(&orders, &["orders:read"])]);
    let cases = [
        ("/orders/..;/admin", &orders, StatusCode::BAD_REQUEST, "invalid_request"),
        ("/orders/%252e%252e/admin", &orders, StatusCode::BAD_REQUEST, "invalid_request"),
        ("/orders/%2e%2e/admin", &orders, StatusCode::BAD_REQUEST, "invalid_request"),
        ("/leads/export;x=1", &k.reader, StatusCode::BAD_REQUEST, "invalid_request"),
        // `/leads/export` needs leads:admin (the harness's routes); so does `/leads/export.csv`.
        ("/leads/export.csv", &k.reader, StatusCode::FORBIDDEN, "insufficient_scope"),
        ("/leads/exports.csv", &k.reader, StatusCode::OK, "allowed"),
    ];
    for (uri, t, status, reason) in cases {
        let a = send(&h, verify("GET", uri, &[&bearer(t)])).await;
        assert_eq!((a.status, a.body["reason"].as_str()), (status, Some(reason)), "{uri}: {}", a.raw);
    }
    // With --allow-path-params the parameters are dropped before matching, never before `..`.
    let routes = Routes::from_yaml("routes:\n  - pathPrefix: /leads/export\n    scope: leads:admin\n")
        .unwrap()
        .with_policy(keyward::verifier::routes::PathPolicy { allow_path_params: true, allow_encoded_percent: false });
    let lenient =
        Verifier::new(Arc::clone(&h.store), routes, Arc::clone(&h.metrics), Arc::new(ManualClock::new(now())), None);
    for (uri, status) in [
        ("/leads/export;x=1", StatusCode::FORBIDDEN),
        ("/leads/1;v=2", StatusCode::OK),
        ("/orders/..;/admin", StatusCode::BAD_REQUEST),
    ] {
        let a = answer(lenient.handle(verify("GET", uri, &[&bearer(&k.reader)])).await).await;
        assert_eq!(a.status, status, "{uri}: {}", a.raw);
    }
}

#[tokio::test]
async fn metrics_count_decisions_by_outcome() {
    let (k, records) = keys();
    let h = harness(records);
    for t in [&k.good, &k.good, &k.off, &k.stranger] {
        send(&h, verify("GET", "/leads", &[&bearer(t)])).await;
    }
    let text = h.metrics.encode();
    for line in [
        r#"keyward_verifier_decisions_total{outcome="allowed"} 2"#,
        r#"keyward_verifier_decisions_total{outcome="inactive"} 1"#,
        r#"keyward_verifier_decisions_total{outcome="unknown"} 1"#,
        r#"keyward_verifier_decisions_total{outcome="revoked"} 0"#,
        "keyward_verifier_decision_seconds_count 4",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(h.store.is_ready());
}

// ---- Loading key sets from kubelet-style directories ----

fn loader_for(dirs: &[&KubeletDir]) -> (Loader, Arc<KeyStore>, Arc<Metrics>) {
    let store = Arc::new(KeyStore::default());
    let metrics = Arc::new(Metrics::new());
    let loader = Loader::new(dirs.iter().map(|d| d.path.clone()).collect(), Arc::clone(&store), Arc::clone(&metrics));
    (loader, store, metrics)
}

fn knows(store: &KeyStore, t: &Token) -> bool {
    store.current().is_some_and(|index| index.get(&t.hash()).is_some())
}

#[test]
fn a_kubelet_volume_loads_and_makes_the_verifier_ready() {
    let (a, b) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&a, &["x:read"]), record(&b, &["x:read"])]);
    let (mut loader, store, metrics) = loader_for(&[&dir]);
    assert!(!store.is_ready());
    loader.reload().unwrap();
    assert!(store.is_ready() && knows(&store, &a) && knows(&store, &b));
    let text = metrics.encode();
    for line in [
        "keyward_verifier_keys_loaded 2",
        r#"keyward_verifier_keyset_generation{keyset="team-a/default"} 1"#,
        "keyward_verifier_ready 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn gzip_shards_as_the_operator_stores_large_sets_load_from_a_volume() {
    let tokens: Vec<Token> = (1..=60).map(token).collect();
    let records: Vec<_> = tokens.iter().map(|t| record(t, &["x:read"])).collect();
    let id = keyset::KeySetId { namespace: "team-a".into(), name: "default".into() };
    let packed = keyset::encode_packed(&id, 3, &records, 2048).unwrap();
    assert!(packed.iter().all(|s| matches!(s, keyset::ShardBytes::Gzip(_))), "needs gzip shards");
    let mut dir = KubeletDir::new();
    let files: Vec<(String, Vec<u8>)> = packed
        .iter()
        .enumerate()
        .map(|(i, s)| (keyset::shard_file_name("default", i + 1), s.as_bytes().to_vec()))
        .collect();
    dir.publish_bytes(&files);
    let (mut loader, store, _) = loader_for(&[&dir]);
    loader.reload().unwrap();
    assert!(tokens.iter().all(|t| knows(&store, t)));
}

#[test]
fn the_verifier_is_not_ready_until_a_first_valid_set_appears() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("not-yet-mounted");
    let store = Arc::new(KeyStore::default());
    let metrics = Arc::new(Metrics::new());
    let mut loader = Loader::new(vec![missing.clone()], Arc::clone(&store), Arc::clone(&metrics));
    assert!(loader.reload().is_err(), "a missing directory is an error");
    std::fs::create_dir(&missing).unwrap();
    assert!(loader.reload().is_err(), "an empty directory is a missing key set, not an empty one");
    std::fs::write(missing.join("junk.keyset"), "not a key set\n").unwrap();
    assert!(loader.reload().is_err());
    assert!(!store.is_ready());
    assert!(metrics.encode().contains("keyward_verifier_reload_failures_total 3"));
    std::fs::write(missing.join("junk.keyset"), &shard_files("default", 1, &[], 4096)[0].1).unwrap();
    loader.reload().unwrap();
    assert!(store.is_ready(), "an empty but valid key set makes the verifier ready");
}

#[test]
fn a_corrupt_partial_or_mixed_update_keeps_the_last_good_set() {
    let (keep, revoke, added) = (token(1), token(2), token(3));
    let good = vec![record(&keep, &["x:read"]), record(&revoke, &["x:read"])];
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &good);
    let (mut loader, store, metrics) = loader_for(&[&dir]);
    loader.reload().unwrap();

    let next = vec![record(&keep, &["x:read"]), record(&added, &["x:read"])];
    // Force three shards so that partial and mixed sets can be built.
    let shards = shard_files("default", 2, &next, 700);
    assert!(shards.len() >= 2, "needs several shards, got {}", shards.len());
    let mut truncated = shards.clone();
    let cut = truncated[0].1.len() - 10;
    truncated[0].1.truncate(cut);
    let mut mixed = shards.clone();
    mixed[1].1 = mixed[1].1.replacen("generation=2", "generation=1", 1);
    let bad_updates: Vec<(&str, Vec<(String, String)>)> = vec![
        ("a shard missing", shards[1..].to_vec()),
        ("a truncated shard", truncated),
        ("shards of two generations", mixed),
        ("no shards at all", vec![]),
        ("a non-ASCII byte", vec![(shards[0].0.clone(), format!("{}\u{e9}", shards[0].1))]),
    ];
    for (n, (what, files)) in bad_updates.into_iter().enumerate() {
        dir.publish(&files);
        assert!(loader.reload().is_err(), "{what} was accepted");
        assert!(knows(&store, &revoke) && !knows(&store, &added), "{what}: the last good set must stay in force");
        let failures = format!("keyward_verifier_reload_failures_total {}", n + 1);
        assert!(metrics.encode().contains(&failures), "{what}: failures not counted");
    }
    dir.publish(&shards);
    loader.reload().unwrap();
    assert!(knows(&store, &keep) && knows(&store, &added) && !knows(&store, &revoke), "the whole new set is in force");
}

#[test]
fn a_data_link_leading_outside_the_volume_is_refused_and_the_last_good_set_stays() {
    let (good, intruder) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&good, &["x:read"])]);
    let (mut loader, store, _) = loader_for(&[&dir]);
    loader.reload().unwrap();

    // A whole, newer key set outside the volume.
    let outside = tempfile::tempdir().unwrap();
    let foreign = outside.path().join("..2026_11_22_13_00_00.000001");
    std::fs::create_dir(&foreign).unwrap();
    let files = shard_files("default", 9, &[record(&intruder, &["*:admin"])], keyset::DEFAULT_MAX_SHARD_BYTES);
    for (name, text) in &files {
        std::fs::write(foreign.join(name), text).unwrap();
    }
    let via_parent =
        std::path::Path::new("..").join(outside.path().file_name().unwrap()).join(foreign.file_name().unwrap());
    // Inside the volume, but itself a link out; and a real version directory whose shard is a link out.
    std::os::unix::fs::symlink(&foreign, dir.path.join("..2026_link")).unwrap();
    let linked_files = dir.path.join("..2026_linked_files");
    std::fs::create_dir(&linked_files).unwrap();
    std::os::unix::fs::symlink(foreign.join(&files[0].0), linked_files.join(&files[0].0)).unwrap();
    let targets = [
        foreign.clone(),
        dir.path.join(&via_parent),
        via_parent.clone(),
        std::path::PathBuf::from("..2026_link"),
        std::path::PathBuf::from("..2026_linked_files"),
        std::path::PathBuf::from("..2026_linked_files/../..2026_link"),
    ];
    let data = dir.path.join("..data");
    for target in targets {
        let tmp = dir.path.join("..data_tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        let err = loader.reload().expect_err("followed a link out of the volume");
        assert!(matches!(err, ReloadError::Load(keyset::LoadError::Escapes(_))), "{target:?}: {err}");
        assert!(knows(&store, &good) && !knows(&store, &intruder), "{target:?}: the last good set must stay");
    }
}

#[test]
fn an_older_key_set_is_refused_unless_rollback_is_explicitly_allowed() {
    let (kept, revoked) = (token(1), token(2));
    let older = [record(&kept, &["x:read"]), record(&revoked, &["x:read"])];
    for allow_rollback in [false, true] {
        let mut dir = KubeletDir::new();
        dir.publish_set("default", 2, &older[..1]);
        let store = Arc::new(KeyStore::new(allow_rollback));
        let metrics = Arc::new(Metrics::new());
        let mut loader = Loader::new(vec![dir.path.clone()], Arc::clone(&store), Arc::clone(&metrics));
        loader.reload().unwrap();
        dir.publish_set("default", 1, &older);
        let result = loader.reload();
        if allow_rollback {
            result.unwrap();
            assert!(knows(&store, &revoked), "--allow-keyset-rollback loads the older set");
            continue;
        }
        let err = result.expect_err("an older set was loaded");
        assert!(matches!(err, ReloadError::Rollback { from: 2, to: 1, .. }), "{err}");
        assert!(knows(&store, &kept) && !knows(&store, &revoked), "a revoked key came back");
        let text = metrics.encode();
        assert!(text.contains(r#"keyward_verifier_keyset_generation{keyset="team-a/default"} 2"#), "{text}");
        assert!(text.contains("keyward_verifier_reload_failures_total 1"), "{text}");
        dir.publish_set("default", 3, &older[..1]);
        loader.reload().unwrap();
    }
}

#[test]
fn shards_from_several_directories_merge_into_one_set() {
    let (a, b, c) = (token(1), token(2), token(3));
    let shards =
        shard_files("default", 5, &[record(&a, &["x:read"]), record(&b, &["x:read"]), record(&c, &["x:read"])], 700);
    assert!(shards.len() >= 2);
    let mut dirs: Vec<KubeletDir> = shards.iter().map(|_| KubeletDir::new()).collect();
    for (dir, shard) in dirs.iter_mut().zip(&shards) {
        dir.publish(std::slice::from_ref(shard));
    }
    let refs: Vec<&KubeletDir> = dirs.iter().collect();
    let (mut loader, store, _) = loader_for(&refs);
    loader.reload().unwrap();
    assert!(knows(&store, &a) && knows(&store, &b) && knows(&store, &c));

    // Another key set with a hash already loaded is refused as a whole.
    let mut other = KubeletDir::new();
    other.publish_set("other", 1, &[record(&a, &["y:read"])]);
    let mut refs = refs;
    refs.push(&other);
    let (mut loader, store, _) = loader_for(&refs);
    assert!(loader.reload().is_err());
    assert!(!store.is_ready());
}

#[test]
fn a_data_swap_that_removes_a_key_revokes_it_on_the_next_reload() {
    let (stay, revoke) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&stay, &["x:read"]), record(&revoke, &["x:read"])]);
    let (mut loader, store, _) = loader_for(&[&dir]);
    loader.reload().unwrap();
    assert!(loader.reload_if_changed().is_none(), "nothing changed, nothing read");
    dir.publish_set("default", 2, &[record(&stay, &["x:read"])]);
    assert!(matches!(loader.reload_if_changed(), Some(Ok(()))), "the swap is noticed by the fingerprint");
    assert!(knows(&store, &stay) && !knows(&store, &revoke));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_notices_a_swap_through_inotify_without_polling() {
    let (a, b) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&a, &["x:read"])]);
    let (loader, store, _) = loader_for(&[&dir]);
    // An hour between polls: only inotify can bring the change in during this test.
    let task = tokio::spawn(keyward::verifier::loader::watch(loader, std::time::Duration::from_secs(3600)));
    wait_for(|| knows(&store, &a)).await;
    dir.publish_set("default", 2, &[record(&b, &["x:read"])]);
    wait_for(|| knows(&store, &b) && !knows(&store, &a)).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_plain_directory_does_not_trigger_more_reloads() {
    let a = token(1);
    let temp = tempfile::tempdir().unwrap();
    let shard = &shard_files("default", 1, &[record(&a, &["x:read"])], keyset::DEFAULT_MAX_SHARD_BYTES)[0];
    std::fs::write(temp.path().join(&shard.0), &shard.1).unwrap();
    let store = Arc::new(KeyStore::default());
    let metrics = Arc::new(Metrics::new());
    let loader = Loader::new(vec![temp.path().to_owned()], Arc::clone(&store), Arc::clone(&metrics));
    let task = tokio::spawn(keyward::verifier::loader::watch(loader, std::time::Duration::from_secs(3600)));
    wait_for(|| store.is_ready()).await;
    // Nothing changes from here on, so nothing may reload; a reload that
    // reacted to its own file reads would keep counting up.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let settled = metrics.encode();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let reloads =
        |text: &str| text.lines().find(|l| l.starts_with("keyward_verifier_reloads_total")).unwrap_or("").to_owned();
    assert_eq!(reloads(&metrics.encode()), reloads(&settled));
    assert_eq!(reloads(&settled), "keyward_verifier_reloads_total 1");
    task.abort();
}

/// Wait (bounded) for a condition that the code under test makes true in its own time.
async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not met within a minute");
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever bytes replace a shard, a reload never panics and never lets in a key that was not published whole.
        #[test]
        fn corrupted_shards_never_widen_the_key_set(
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            junk in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let (kept, added) = (token(1), token(2));
            let mut dir = KubeletDir::new();
            dir.publish_set("default", 1, &[record(&kept, &["x:read"])]);
            let (mut loader, store, _) = loader_for(&[&dir]);
            loader.reload().unwrap();

            let good = shard_files("default", 2, &[record(&kept, &["x:read"]), record(&added, &["x:write"])], keyset::DEFAULT_MAX_SHARD_BYTES);
            let mut bytes = good[0].1.clone().into_bytes();
            let at = flip.index(bytes.len());
            bytes[at] = byte;
            bytes.truncate(cut.index(bytes.len() + 1).max(at + 1));
            bytes.extend_from_slice(&junk);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            dir.publish(&[(good[0].0.clone(), text)]);
            let result = loader.reload();
            let index = store.current().unwrap();
            if result.is_err() {
                prop_assert!(index.get(&added.hash()).is_none(), "a failed reload let the new key in");
                prop_assert!(index.get(&kept.hash()).is_some(), "a failed reload dropped the last good set");
            } else {
                // A mutation that still decodes (a changed scope letter, say) is a whole publication
                // of its own; a hash cannot change without its key id, so no other key can appear.
                prop_assert!(index.len() <= 2);
            }
        }
    }
}

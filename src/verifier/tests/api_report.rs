//! The usage report as the verifier stores it: one ConfigMap per pod, owned by the Pod, with counts and no token.

use super::fixtures::*;
use crate::usage::{LABEL_USAGE_REPORT, REPORT_KEY, Report};
use crate::verifier::api_report::{PodRef, Reporter};
use crate::verifier::decision::{Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::routes::Routes;

#[test]
fn the_report_is_a_configmap_owned_by_the_pod_holding_cumulative_counts_and_no_token() {
    let good = token(1);
    let idx = KeyIndex::build(vec![key_set("default", 1, vec![record(&good, &["leads:read"])])], None).unwrap();
    let auth = bearer(&good);
    for _ in 0..3 {
        let request = Request { method: "GET", uri: "/leads", authorization: [auth.as_bytes()] };
        decide(&idx, &Routes::default(), request, now());
    }
    let pod = PodRef { namespace: "team-a".into(), name: "crm-api-0".into(), uid: "uid-1".into() };
    let mut reporter = Reporter::new(pod, "00000000000000e1".into());
    let report = reporter.report(Some(&idx), now().wall);
    let cm = reporter.configmap(&report);

    assert_eq!(cm.metadata.name.as_deref(), Some("keyward-usage-crm-api-0"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Pod", "crm-api-0", "uid-1"));
    assert_eq!(cm.metadata.labels.as_ref().unwrap().get(LABEL_USAGE_REPORT).map(String::as_str), Some("true"));
    let text = &cm.data.as_ref().unwrap()[REPORT_KEY];
    let stored = Report::decode(text).expect("the stored report reads back");
    assert_eq!(stored, report);
    let counts = stored.keys[&good.hash().key_id()];
    assert_eq!((counts.allowed, counts.last_allowed), (3, Some(now().wall.as_second())));
    let whole = serde_json::to_string(&cm).unwrap();
    assert!(!whole.contains(good.expose()), "the token is in the report: {whole}");
    assert!(!whole.contains(&good.hash().to_string()), "the hash is in the report: {whole}");

    // Cumulative: a later report still holds the earlier requests.
    let request = Request { method: "GET", uri: "/leads", authorization: [auth.as_bytes()] };
    decide(&idx, &Routes::default(), request, now());
    assert_eq!(reporter.report(Some(&idx), now().wall).keys[&good.hash().key_id()].allowed, 4);
}

#[test]
fn the_report_holds_every_key_counted_across_reloads_including_requests_on_a_replaced_index() {
    let (a, b, idle) = (token(1), token(2), token(3));
    let set = |generation| {
        key_set(
            "default",
            generation,
            vec![record(&a, &["leads:read"]), record(&b, &["leads:read"]), record(&idle, &["leads:read"])],
        )
    };
    let ask = |index: &KeyIndex, method: &str, t: &crate::token::Token| {
        let auth = bearer(t);
        let request = Request { method, uri: "/leads", authorization: [auth.as_bytes()] };
        decide(index, &Routes::default(), request, now()).outcome
    };
    let pod = PodRef { namespace: "team-a".into(), name: "crm-api-0".into(), uid: "uid-1".into() };
    let mut reporter = Reporter::new(pod, "00000000000000e1".into());
    let first = KeyIndex::build(vec![set(1)], None).unwrap();
    ask(&first, "GET", &a);
    ask(&first, "POST", &b);
    let report = reporter.report(Some(&first), now().wall);
    assert_eq!(report.keys.len(), 2, "the keys used, and only those: {:?}", report.keys);

    let second = KeyIndex::build(vec![set(2)], Some(&first)).unwrap();
    // A request that was deciding on the replaced index when the reload came.
    ask(&first, "GET", &b);
    ask(&second, "GET", &a);
    drop(first);
    let report = reporter.report(Some(&second), now().wall);
    let (ca, cb) = (report.keys[&a.hash().key_id()], report.keys[&b.hash().key_id()]);
    assert_eq!((ca.allowed, ca.insufficient_scope), (2, 0));
    assert_eq!((cb.allowed, cb.insufficient_scope), (1, 1));
    assert_eq!(cb.last_allowed, Some(now().wall.as_second()));
    assert!(!report.keys.contains_key(&idle.hash().key_id()));
    assert_eq!(Report::decode(&report.encode()).unwrap(), report);
}

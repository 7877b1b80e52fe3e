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

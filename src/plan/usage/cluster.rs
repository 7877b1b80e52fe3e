//! A ClusterApiKey's usage: the reports of every namespace it is published to, in one ledger.
//!
//! A cluster key's token is published as `cluster/<name>` into key set `spec.keySet` of each
//! namespace in `status.namespaces`, and the verifiers there count its key ids like any other
//! key's. Its ledger is an ApiKey's, folded by the same [`super::fold`] rules and written under
//! the same [`super::status_write`] budget, with two differences, both decided here:
//!
//! - *Which reports count* ([`counted`]): only those of a namespace the key is published to now,
//!   and only if they list `<namespace>/<keySet>` among the key sets their verifier serves. A
//!   report of any other namespace or key set counts nothing, so no verifier outside the key's
//!   audience can change its usage.
//! - *Watermark keys* ([`source`]) are `<namespace>/<pod>/<epoch>`: a Pod's name is unique only
//!   in its namespace, and two namespaces' `api-0` are two verifiers. [`live`] qualifies them the
//!   same way over *every* namespace that has reports, not only the selected ones: a namespace
//!   that stops being selected stops counting at once, but its watermarks stay while its
//!   reports exist, so selecting it again adds only what is new, never a verifier's whole
//!   history a second time. They go, like any, when the report goes.
//!
//! An ApiKey's watermark keys stay `<pod>/<epoch>` (its reports come from one namespace), so
//! ledgers already stored keep working.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::{Fold, Live, fold_sources};
use crate::api::UsageLedger;
use crate::token::KeyId;
use crate::usage::Report;

/// One namespace's usage reports, as the usage pass read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceReports {
    /// The readable reports (stored under their own pod's name).
    pub reports: Vec<Report>,
    /// Pods whose report exists but could not be read.
    pub unreadable_pods: Vec<String>,
}

/// Every namespace's reports that the pass read, by namespace.
pub type ByNamespace = BTreeMap<String, NamespaceReports>;

/// The watermark key of `report`, read in `namespace`, in a cluster key's ledger:
/// `<namespace>/<pod>/<epoch>`.
#[must_use]
pub fn source(namespace: &str, report: &Report) -> String {
    format!("{namespace}/{}", super::source(report))
}

/// The reports that exist, namespace-qualified, in every namespace read (selected or not): a
/// cluster key's watermark of any other source is dropped at its next fold.
#[must_use]
pub fn live(seen: &ByNamespace) -> Live {
    let mut live = Live::default();
    for (namespace, of_namespace) in seen {
        live.sources.extend(of_namespace.reports.iter().map(|r| source(namespace, r)));
        live.unreadable_pods.extend(of_namespace.unreadable_pods.iter().map(|pod| format!("{namespace}/{pod}")));
    }
    live
}

/// The reports that count for a cluster key of key set `key_set` published to `namespaces`:
/// those of these namespaces whose verifier serves `<namespace>/<key_set>`, with their namespace.
#[must_use]
pub fn counted<'a>(seen: &'a ByNamespace, namespaces: &[String], key_set: &str) -> Vec<(&'a str, &'a Report)> {
    let mut out = Vec::new();
    for namespace in namespaces {
        let Some((namespace, of_namespace)) = seen.get_key_value(namespace) else { continue };
        let wanted = format!("{namespace}/{key_set}");
        out.extend(
            of_namespace.reports.iter().filter(|r| r.key_sets.contains(&wanted)).map(|r| (namespace.as_str(), r)),
        );
    }
    out
}

/// Fold the `counted` reports into `stored`, the ledger of a cluster key whose tokens have key
/// ids `ids`, at `now`: [`super::fold`] with namespace-qualified watermark keys.
#[must_use]
pub fn fold(
    stored: Option<&UsageLedger>,
    counted: &[(&str, &Report)],
    ids: &[KeyId],
    live: &Live,
    now: Timestamp,
) -> Fold {
    fold_sources(stored, counted.iter().map(|(namespace, r)| (source(namespace, r), *r)), ids, live, now)
}

/// `of_namespace` with only the counts of key ids in `ids`: what the pass keeps of a namespace's
/// reports for the cluster keys after its ApiKeys are done, so that memory follows the cluster
/// keys, not every key of every namespace. Every report stays (its source is live).
#[must_use]
pub fn only_keys(mut of_namespace: NamespaceReports, ids: &BTreeSet<KeyId>) -> NamespaceReports {
    for report in &mut of_namespace.reports {
        report.keys.retain(|id, _| ids.contains(id));
    }
    of_namespace
}

#[cfg(test)]
mod tests;

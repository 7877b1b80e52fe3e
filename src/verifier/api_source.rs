//! `--watch-keyset NAMESPACE/NAME`: the key set read from its ConfigMaps through the Kubernetes API.
//!
//! The only verifier code that touches kube. A label-selected watch
//! ([`label_selector`]) keeps a copy of the key set's shard ConfigMaps; after
//! the initial list and after every change, the shards they store are read by
//! the contract's one rule ([`crate::configmap`]) and assembled exactly as
//! from directories, with the same fail-closed rule: anything short of a
//! whole, consistent key set keeps the last good one in force. A change
//! reaches the verifier as soon as the API server sends the watch event, with
//! no kubelet volume sync in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

use super::index::{IndexError, KeyIndex};
use super::loader::{KeyStore, install};
use super::metrics::Metrics;
pub use crate::configmap::label_selector;
use crate::configmap::{ReadError, read_shards};
use crate::keyset::{AssembleError, KeySetId, assemble};

/// Why the key set in the API could not be loaded; the previous one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ApiSourceError {
    /// The ConfigMaps hold no shard, or one that does not decode.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The shards do not form a whole, consistent key set.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// A ConfigMap carries the labels of this key set but holds another.
    #[error("a ConfigMap labelled for key set {expected} holds key set {found}")]
    WrongKeySet {
        /// The key set being watched.
        expected: KeySetId,
        /// The key set found in a shard header.
        found: KeySetId,
    },
    /// The key set cannot be indexed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Build the index of key set `id` from its shard ConfigMaps, reusing the rate-limit buckets of `previous`;
/// keeping each key's owner when `keep_owners`.
pub fn index_from_configmaps<'a>(
    id: &KeySetId,
    configmaps: impl IntoIterator<Item = &'a ConfigMap>,
    previous: Option<&KeyIndex>,
    keep_owners: bool,
) -> Result<KeyIndex, ApiSourceError> {
    let shards = read_shards(configmaps)?;
    if let Some(shard) = shards.iter().find(|shard| shard.id != *id) {
        return Err(ApiSourceError::WrongKeySet { expected: id.clone(), found: shard.id.clone() });
    }
    Ok(KeyIndex::build_keeping_owners(assemble(shards)?, previous, keep_owners)?)
}

/// Watch key set `id`'s ConfigMaps and install every whole, consistent version, until dropped.
pub async fn watch(client: kube::Client, id: KeySetId, store: Arc<KeyStore>, metrics: Arc<Metrics>) {
    let api = kube::Api::<ConfigMap>::namespaced(client, &id.namespace);
    let config = watcher::Config::default().labels(&label_selector(&id.name));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut mirror = Mirror::default();
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(event) => mirror.apply(event),
            Err(err) => {
                // The backoff retries; the last good key set stays in force meanwhile.
                metrics.reload_failures.inc();
                tracing::warn!(error = %err, keyset = %id, "key-set watch failed; retrying");
                false
            }
        };
        if changed {
            let installed =
                index_from_configmaps(&id, mirror.configmaps(), store.current().as_deref(), store.keeps_owners())
                    .map_err(|err| err.to_string())
                    .and_then(|index| install(&store, &metrics, index).map_err(|err| err.to_string()));
            match installed {
                Ok(replaced) => drop(replaced),
                Err(err) => {
                    metrics.reload_failures.inc();
                    tracing::warn!(error = %err, keyset = %id, "key-set reload failed; last good set stays in force");
                }
            }
        }
    }
}

/// The watched ConfigMaps as last seen, kept from watch events.
#[derive(Debug, Default)]
pub struct Mirror {
    /// The ConfigMaps in force, by name.
    current: BTreeMap<String, ConfigMap>,
    /// A fresh list being collected after the watch (re)started; replaces `current` when complete.
    initial: Option<BTreeMap<String, ConfigMap>>,
}

impl Mirror {
    /// Take in one watch event; whether the ConfigMaps in force changed (and the key set should be rebuilt).
    ///
    /// A relist is collected whole before it replaces what was there, so a
    /// half-listed key set is never assembled.
    pub fn apply(&mut self, event: Event<ConfigMap>) -> bool {
        let name = |cm: &ConfigMap| cm.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Init => {
                self.initial = Some(BTreeMap::new());
                false
            }
            Event::InitApply(cm) => {
                self.initial.get_or_insert_with(BTreeMap::new).insert(name(&cm), cm);
                false
            }
            Event::InitDone => {
                self.current = self.initial.take().unwrap_or_default();
                true
            }
            Event::Apply(cm) => {
                self.current.insert(name(&cm), cm);
                true
            }
            Event::Delete(cm) => {
                self.current.remove(&name(&cm));
                true
            }
        }
    }

    /// The ConfigMaps in force.
    pub fn configmaps(&self) -> impl Iterator<Item = &ConfigMap> {
        self.current.values()
    }
}

#[cfg(test)]
mod tests {
    use keyward_testkit::fixtures::{record, token};

    use super::*;
    use crate::configmap::layout;
    use crate::keyset::{ShardBytes, encode};

    fn id(name: &str) -> KeySetId {
        KeySetId { namespace: "team-a".into(), name: name.into() }
    }

    /// The ConfigMaps the operator publishes (`keyset-<name>-<i>` with data key
    /// `<name>.<i>.keyset`), each with a hand-added README key besides.
    fn configmaps(name: &str, generation: u64, records: &[crate::keyset::Record], max_bytes: usize) -> Vec<ConfigMap> {
        let texts = encode(&id(name), generation, records, max_bytes).unwrap();
        layout(&id(name), texts.into_iter().map(ShardBytes::Text).collect())
            .iter()
            .map(|shard| {
                let mut cm = shard.to_configmap(&id(name));
                cm.data.get_or_insert_default().insert("README".into(), "x".into());
                cm
            })
            .collect()
    }

    #[test]
    fn whole_shard_sets_load_and_other_data_keys_are_ignored() {
        let (a, b) = (token(1), token(2));
        let cms = configmaps("default", 4, &[record(&a, &["x:read"]), record(&b, &["x:read"])], 700);
        assert!(cms.len() >= 2, "needs several shards");
        let index = index_from_configmaps(&id("default"), &cms, None, false).unwrap();
        assert!(index.get(&a.hash()).is_some() && index.get(&b.hash()).is_some());
        assert_eq!(index.sets()[0].generation, 4);
    }

    #[test]
    fn partial_corrupt_foreign_or_missing_sets_are_refused() {
        let (a, b) = (token(1), token(2));
        let cms = configmaps("default", 4, &[record(&a, &["x:read"]), record(&b, &["x:read"])], 700);
        let mut corrupt = cms.clone();
        corrupt[0].data.as_mut().unwrap().values_mut().for_each(|v| v.push_str("garbage"));
        let mixed = vec![
            cms[0].clone(),
            configmaps("default", 5, &[record(&a, &["x:read"]), record(&b, &["x:read"])], 700)[1].clone(),
        ];
        let cases: Vec<(&str, Vec<ConfigMap>, KeySetId)> = vec![
            ("a shard missing", cms[1..].to_vec(), id("default")),
            ("a corrupt shard", corrupt, id("default")),
            ("two generations", mixed, id("default")),
            ("nothing at all", vec![], id("default")),
            ("another key set", cms.clone(), id("other")),
        ];
        for (what, cms, expected) in cases {
            assert!(index_from_configmaps(&expected, &cms, None, false).is_err(), "{what} was accepted");
        }
        assert_eq!(label_selector("default"), "app.kubernetes.io/managed-by=keyward,keyward.dev/keyset=default");
    }

    #[test]
    fn gzip_shards_in_binary_data_load_like_plain_ones() {
        use crate::keyset::encode_packed;
        let tokens: Vec<_> = (1..=40).map(token).collect();
        let records: Vec<_> = tokens.iter().map(|t| record(t, &["x:read"])).collect();
        let packed = encode_packed(&id("default"), 9, &records, 2048).unwrap();
        assert!(packed.iter().all(|s| matches!(s, ShardBytes::Gzip(_))), "needs gzip shards: {packed:?}");
        let cms: Vec<ConfigMap> =
            layout(&id("default"), packed).iter().map(|s| s.to_configmap(&id("default"))).collect();
        assert!(cms.iter().all(|cm| cm.data.is_none() && cm.binary_data.is_some()), "gzip goes under binaryData");
        let index = index_from_configmaps(&id("default"), &cms, None, false).unwrap();
        assert!(tokens.iter().all(|t| index.get(&t.hash()).is_some()));
    }

    #[test]
    fn the_mirror_follows_watch_events_and_swaps_a_relist_in_whole() {
        let (a, b) = (token(1), token(2));
        let v1 = configmaps("default", 1, &[record(&a, &["x:read"]), record(&b, &["x:read"])], 700);
        let v2 = configmaps("default", 2, &[record(&a, &["x:read"])], 700);
        let loads = |m: &Mirror| index_from_configmaps(&id("default"), m.configmaps(), None, false).ok();
        let mut mirror = Mirror::default();
        assert!(!mirror.apply(Event::Init));
        assert!(!mirror.apply(Event::InitApply(v1[0].clone())), "nothing is used before the list is complete");
        assert!(!mirror.apply(Event::InitApply(v1[1].clone())));
        assert!(mirror.apply(Event::InitDone));
        assert!(loads(&mirror).is_some_and(|i| i.len() == 2));

        // The operator shrinks the set to one shard: shard 1 changes, shard 2 goes.
        assert!(mirror.apply(Event::Apply(v2[0].clone())));
        assert!(loads(&mirror).is_none(), "mixed generations in between are refused");
        assert!(mirror.apply(Event::Delete(v1[1].clone())));
        let index = loads(&mirror).unwrap();
        assert!(index.get(&a.hash()).is_some() && index.get(&b.hash()).is_none());

        // A restarted watch relists; objects not listed again are gone.
        assert!(!mirror.apply(Event::Init));
        assert!(mirror.apply(Event::InitDone));
        assert_eq!(mirror.configmaps().count(), 0);
    }
}

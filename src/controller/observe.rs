//! Observe: read what the plan needs, and describe the Secret by hashes only.

use std::collections::BTreeSet;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::ApiKey;
use crate::plan::{DATA_NEXT_TOKEN, DATA_TOKEN, Observed, SecretFacts, SecretView, Slot, TokenFacts, secret_name};
use crate::token::Token;

use super::{Context, Error, FIELD_MANAGER, key_set_id, namespace};

/// What was read for one reconcile pass: the plan's view plus the raw Secret
/// (whose tokens the apply step copies when the plan moves them).
pub(super) struct Seen {
    pub observed: Observed,
    pub secret: Option<Secret>,
}

pub(super) async fn observe(ctx: &Context, key: &ApiKey) -> Result<Seen, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace(key)?);
    let secret = secrets.get_opt(&secret_name(key)).await.map_err(Error::kube("get Secret"))?;
    let uid = key.metadata.uid.as_deref().ok_or(Error::MissingField("metadata.uid"))?;
    let view = secret.as_ref().map_or(SecretView::Absent, |s| SecretView::Present(Box::new(facts(s, uid))));
    let name = key.metadata.name.as_deref().ok_or(Error::MissingField("metadata.name"))?;
    let published = ctx.publisher.published_by(&key_set_id(key)?, name).await?;
    let held = ctx.publisher.held(uid);
    let class = super::classes::read(&ctx.client, namespace(key)?).await?.resolve(key);
    Ok(Seen { observed: Observed { secret: view, published, held, class }, secret })
}

pub(super) fn facts(secret: &Secret, uid: &str) -> SecretFacts {
    let data = secret.data.clone().unwrap_or_default();
    SecretFacts {
        owned: secret.metadata.owner_references.iter().flatten().any(|o| o.uid == uid),
        labels: secret.metadata.labels.clone().unwrap_or_default(),
        annotations: secret.metadata.annotations.clone().unwrap_or_default(),
        applied_labels: applied_keys(secret, "f:labels"),
        applied_annotations: applied_keys(secret, "f:annotations"),
        foreign_keys: data.keys().filter(|k| *k != DATA_TOKEN && *k != DATA_NEXT_TOKEN).cloned().collect(),
        token: slot(data.get(DATA_TOKEN)),
        next_token: slot(data.get(DATA_NEXT_TOKEN)),
    }
}

/// The metadata `field` keys (`f:labels` or `f:annotations`) that the operator's
/// server-side apply owns, as recorded in `managedFields`.
fn applied_keys(secret: &Secret, field: &str) -> BTreeSet<String> {
    secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.fields_v1.as_ref()?.0.get("f:metadata")?.get(field)?.as_object())
        .flat_map(|owned| owned.keys().filter_map(|k| k.strip_prefix("f:")).map(str::to_owned))
        .collect()
}

fn slot(value: Option<&ByteString>) -> Slot {
    match value.map(token_of) {
        None => Slot::Empty,
        Some(None) => Slot::Malformed,
        Some(Some(token)) => Slot::Token(TokenFacts {
            hash: token.hash(),
            prefix: token.prefix().to_owned(),
            display_prefix: token.display_prefix(),
        }),
    }
}

/// The token held in a Secret data value, if it is a well-formed one.
pub(super) fn token_of(value: &ByteString) -> Option<Token> {
    std::str::from_utf8(&value.0).ok().and_then(|text| Token::parse(text).ok())
}

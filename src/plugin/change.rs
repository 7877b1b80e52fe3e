//! The commands that change a key: rotate, disable, enable, revoke. Each is a merge patch of one field.
//!
//! Merge patches rather than server-side apply: an apply keeps the fields it
//! sent owned by its field manager, and a later apply by the same manager
//! that leaves a field out removes it. `kubectl keyward disable` followed by
//! `kubectl keyward rotate` (which sends only the annotation) would then drop
//! `spec.active`, and the API server would default it back to `true`: the key
//! re-enabled by a rotation. A merge patch changes exactly the field named and
//! nothing later undoes it. The writes carry their own field manager,
//! `kubectl-keyward`, so `managedFields` shows a person changed the field with
//! this tool (not the operator, `keyward`, nor a GitOps tool), and a GitOps
//! tool applying server-side reports a conflict naming it.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use jiff::Timestamp;
use serde_json::json;

use super::{FIELD_MANAGER, PluginError, Session, Target, print};
use crate::api::{ApiKey, KeyState, ROTATE_ANNOTATION};

/// `rotate NAME`: set the rotate annotation to a new value (the time), which the operator acts on once.
pub async fn rotate(session: &Session, target: &Target, now: Timestamp) -> Result<ExitCode, PluginError> {
    let key = session.get(target).await?.key;
    let (noun, kind) = (target.noun(), target.kind());
    if let Some(state @ (KeyState::Revoked | KeyState::Expired)) = state(&key) {
        return Err(PluginError::Refused(format!(
            "{noun} is {state:?}: it has no token to rotate; create a new {kind} instead"
        )));
    }
    let value = now.to_string();
    let declared = declared_by(&key, &["f:metadata", "f:annotations", &format!("f:{ROTATE_ANNOTATION}")]);
    if !declared.is_empty() {
        eprintln!(
            "warning: the {ROTATE_ANNOTATION} annotation is also declared by {}: its next apply sets the old value \
             back, which the operator takes as another rotation request. Rotate by changing the value there instead.",
            declared.join(", ")
        );
    }
    session.patch(target, &json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: value } } })).await?;
    print(&format!(
        "{noun} rotation requested ({ROTATE_ANNOTATION}={value})\n\
         The operator publishes a new token, swaps it into the Secret after the propagation delay, and keeps the\n\
         previous token working for the grace period. Follow it with: kubectl keyward status {again}\n",
        again = target.again(&session.namespace),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `disable NAME` / `enable NAME`: set `spec.active`.
pub async fn set_active(session: &Session, target: &Target, active: bool) -> Result<ExitCode, PluginError> {
    let key = session.get(target).await?.key;
    let noun = target.noun();
    let word = if active { "enabled" } else { "disabled" };
    if key.spec.active == active {
        print(&format!("{noun} is already {word} (spec.active={active}); nothing changed\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    warn_declared(&key, "active");
    session.patch(target, &json!({ "spec": { "active": active } })).await?;
    let what = if active {
        "its token works again (the same token) once the key set is republished".to_owned()
    } else {
        // An ApiKey is named as before (`enable crm`); a ClusterApiKey needs its type to be found.
        let again = if target.is_cluster() { format!("cak/{}", target.name()) } else { target.name().to_owned() };
        let sets = if target.is_cluster() { "the key sets are" } else { "the key set is" };
        format!("verifiers refuse its token once {sets} republished; `kubectl keyward enable {again}` restores it")
    };
    print(&format!("{noun} {word} (spec.active={active}): {what}\n"))?;
    if key.spec.revoked {
        eprintln!("note: the key is revoked; spec.active does not bring a revoked key back");
    }
    Ok(ExitCode::SUCCESS)
}

/// `revoke NAME`: set `spec.revoked`, after a confirmation typed on a terminal or `--yes`.
pub async fn revoke(session: &Session, target: &Target, yes: bool) -> Result<ExitCode, PluginError> {
    let key = session.get(target).await?.key;
    let (noun, kind) = (target.noun(), target.kind());
    if key.spec.revoked {
        print(&format!("{noun} is already revoked; nothing changed\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        confirm(session, &key, target)?;
    }
    warn_declared(&key, "revoked");
    session.patch(target, &json!({ "spec": { "revoked": true } })).await?;
    let sets = if target.is_cluster() { "key sets of every selected namespace" } else { "key set" };
    print(&format!(
        "{noun} revoked (spec.revoked=true). Its token stops working as soon as verifiers see the\n\
         {sets} and is removed from the Secret; the {kind} stays as an audit record. This cannot be undone.\n"
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Ask on the terminal; refuse when there is no terminal to ask on.
fn confirm(session: &Session, key: &ApiKey, target: &Target) -> Result<(), PluginError> {
    let (who, kind, name) = (target.who(&session.namespace), target.kind(), target.name());
    if !std::io::stdin().is_terminal() {
        return Err(PluginError::Refused(format!(
            "refusing to revoke {who} without --yes: standard input is not a terminal to confirm on. \
             Revocation cannot be undone; pass --yes if you mean it"
        )));
    }
    let key_id = key.status.as_ref().and_then(|s| s.current_key.as_ref()).map_or("none", |k| k.key_id.as_str());
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "Revoke {kind} {who} (current key id {key_id})?\n\
         This cannot be undone: the token stops working everywhere, it is removed from the Secret, and the\n\
         {kind} can never be enabled again (create a new {kind} instead).\n\
         Type the key's name ({name}) to confirm: "
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != name {
        return Err(PluginError::Refused(format!("not revoked: the answer did not match {name}")));
    }
    Ok(())
}

/// Warn when an apply (kubectl apply, a GitOps sync) declares `spec.<field>`: it may set it back.
fn warn_declared(key: &ApiKey, field: &str) {
    let declared = declared_by(key, &["f:spec", &format!("f:{field}")]);
    if !declared.is_empty() {
        eprintln!(
            "warning: spec.{field} is also declared by {} (an apply, such as kubectl apply or a GitOps sync); \
             its next apply may set it back: make the same change there.",
            declared.join(", ")
        );
    }
}

/// The field managers that declare the field at `path` (in `managedFields` notation,
/// `["f:spec", "f:active"]`) by applying: server-side apply, or kubectl's client-side apply.
#[must_use]
pub fn declared_by(key: &ApiKey, path: &[&str]) -> Vec<String> {
    key.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.operation.as_deref() == Some("Apply") || m.manager.as_deref() == Some("kubectl-client-side-apply")
        })
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|m| {
            m.fields_v1.as_ref().is_some_and(|f| path.iter().try_fold(&f.0, |node, step| node.get(step)).is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn state(key: &ApiKey) -> Option<KeyState> {
    key.status.as_ref().and_then(|s| s.state)
}

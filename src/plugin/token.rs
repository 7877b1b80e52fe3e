//! `token NAME`: the one command that prints a token, read from the key's Secret, with a warning on stderr.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Secret;

use super::{Access, PluginError, Session, Target, print};
use crate::plan::{DATA_TOKEN, secret_name};
use crate::token::Token;

/// Print the token of the key `target` names on stdout, alone on its line, so that
/// `$(kubectl keyward token x)` works. A ClusterApiKey's Secret is read in its `spec.secretNamespace`.
pub async fn run(session: &Session, target: &Target) -> Result<ExitCode, PluginError> {
    let subject = session.get(target).await?;
    let (key, noun, name) = (&subject.key, target.noun(), target.name());
    let status = key.status.clone().unwrap_or_default();
    if key.spec.revoked || status.revoked_at.is_some() {
        return Err(PluginError::Refused(format!("{noun} is revoked: its token is gone")));
    }
    if status.expired_at.is_some() {
        return Err(PluginError::Refused(format!("{noun} has expired: its token is gone")));
    }
    let secret_name = status.secret_name.clone().unwrap_or_else(|| secret_name(key));
    let namespace = subject.secret_namespace(&session.namespace);
    let access = Access {
        verb: "get",
        resource: "secrets",
        kind: "Secret",
        namespace: Some(namespace),
        name: Some(&secret_name),
    };
    let secrets: kube::Api<Secret> = kube::Api::namespaced(session.client.clone(), namespace);
    let secret = secrets.get(&secret_name).await.map_err(|e| access.fail(e))?;
    let raw = secret.data.and_then(|mut d| d.remove(DATA_TOKEN)).ok_or_else(|| {
        PluginError::Refused(format!(
            "Secret {secret_name} holds no token yet: `kubectl keyward status {again}` says why the key is not Ready",
            again = if target.is_cluster() { format!("cak/{name}") } else { name.to_owned() },
        ))
    })?;
    // Checked so that a hand-edited Secret is not handed on as if it were a key; the error never quotes it.
    let token = std::str::from_utf8(&raw.0).ok().and_then(|text| Token::parse(text).ok()).ok_or_else(|| {
        PluginError::Refused(format!("Secret {secret_name} holds something that is not a well-formed token"))
    })?;
    let key_id = token.hash().key_id();
    eprintln!(
        "warning: this is a live credential for {kind} {who} (key id {key_id}). Store it in a secret manager \
         or the external system's credential store at once; do not paste it into chats, tickets or shell history.",
        kind = target.kind().to_ascii_lowercase(),
        who = target.who(&session.namespace),
    );
    if status.current_key.as_ref().is_some_and(|k| k.key_id != key_id.as_str()) {
        eprintln!("note: the key is being rotated; this token is the one the Secret holds now");
    }
    if let Some(next) = &status.next_rotation_at {
        eprintln!("note: the token is rotated at {}; fetch it again after that", next.0);
    }
    print(&format!("{}\n", token.expose()))?;
    Ok(ExitCode::SUCCESS)
}

//! One notice to one webhook: check, sign, POST with a timeout, retry with backoff, report.
//!
//! What a failure reports (status, Event, log) is a coarse reason such as
//! `HTTP 500` or `Timeout`, never the URL (it may carry a credential), the
//! Secret's value or the receiver's answer.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use crate::api::{ApiKeyWebhook, DEFAULT_SECRET_KEY};
use crate::notice::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Notice, Outcome, SigningSecret, checked_url, seal, sign, verify_seal,
};

use super::Shared;
use super::pending::{Origin, Start};

/// The HTTP(S) client for every webhook.
pub(super) type Http = HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/1 client for http and https URLs: rustls with ring (kube's provider) and the system's roots.
pub(super) fn client() -> Http {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = match builder.with_provider_and_native_roots(rustls::crypto::ring::default_provider()) {
        Ok(tls) => tls,
        Err(e) => {
            warn!(error = %e, "no system CA certificates: https webhooks fail until the image has them");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports rustls' default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    HttpClient::builder(TokioExecutor::new()).build(tls.https_or_http().enable_http1().build())
}

/// Why one attempt failed, as status and metrics say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The receiver answered with a status other than 2xx.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// The connection (DNS, TCP, TLS) failed.
    Connection,
    /// The signing Secret or its key does not exist.
    SecretNotFound,
    /// The signing Secret could not be read (RBAC, API down).
    SecretUnreadable,
    /// The signing Secret's value is not a Standard Webhooks secret.
    InvalidSecret(crate::notice::SecretError),
    /// `spec.url` breaks the rule admission applies.
    InvalidUrl(crate::notice::UrlError),
    /// `spec.selector` does not parse.
    InvalidSelector,
    /// A notice read from `status.pending` whose seal does not check out under the signing
    /// secret: written there by someone else, or sealed under a secret rotated since.
    Unsealed,
}

impl Failure {
    /// The condition reason for a webhook whose last notice failed this way.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::Status(_) | Failure::Timeout | Failure::Connection => "DeliveryFailing",
            Failure::SecretNotFound => "SecretNotFound",
            Failure::SecretUnreadable => "SecretUnreadable",
            Failure::InvalidSecret(_) => "InvalidSecret",
            Failure::InvalidUrl(_) => "InvalidURL",
            Failure::InvalidSelector => "InvalidSelector",
            Failure::Unsealed => "PendingUnsealed",
        }
    }

    /// Whether trying again can help: a spec or Secret a person must fix is given up at once
    /// (the next notice tries again, after the fix).
    fn retryable(&self) -> bool {
        matches!(self, Failure::Status(_) | Failure::Timeout | Failure::Connection | Failure::SecretUnreadable)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(code) => write!(f, "HTTP {code}"),
            Failure::Timeout => f.write_str("Timeout"),
            Failure::Connection => f.write_str("connection failed"),
            Failure::SecretNotFound => f.write_str("the signing Secret or its key (spec.secretRef) does not exist"),
            Failure::SecretUnreadable => f.write_str("the signing Secret could not be read"),
            Failure::InvalidSecret(e) => write!(f, "spec.secretRef: {e}"),
            Failure::InvalidUrl(e) => e.fmt(f),
            Failure::InvalidSelector => f.write_str("spec.selector is not a valid label selector"),
            Failure::Unsealed => f.write_str(
                "status.pending held it without a valid seal under the signing Secret (written by someone else, \
                 or the secret was rotated while no operator ran): not sent",
            ),
        }
    }
}

/// Deliver `notice` to `hook` from `start` on, retrying as the policy says, and report the outcome.
/// Each retry's attempt count and due time go to the tracker, which keeps them in `status.pending`.
pub(super) async fn deliver(shared: &Shared, hook: &ApiKeyWebhook, notice: &Notice, start: Start) {
    let (namespace, name) = (hook.namespace().unwrap_or_default(), hook.name_any());
    let mut attempt = start.attempt.max(1);
    if !start.wait.is_zero() {
        tokio::time::sleep(start.wait).await;
    }
    // A stored entry's seal is checked at the first attempt that reads the secret; from then on
    // it is this leader's, and each attempt seals it anew.
    let mut origin = start.origin;
    loop {
        let result = {
            let _slot = shared.in_flight.acquire().await.expect("the semaphore is never closed");
            attempt_once(shared, hook, notice, &mut origin).await
        };
        let retryable = result.as_ref().err().is_none_or(Failure::retryable);
        let outcome = match &result {
            Ok(()) => Outcome::Delivered,
            Err(_) if !retryable => Outcome::GiveUp,
            Err(_) => shared.options.retry.after(attempt, false),
        };
        match (outcome, result) {
            (Outcome::Delivered, _) | (_, Ok(())) => {
                debug!(%namespace, webhook = %name, message_id = %notice.id, attempt, "notice delivered");
                shared.tracker.delivered(hook, &notice.id, (shared.clock)());
                return;
            }
            (Outcome::RetryAfter(wait), Err(failure)) => {
                debug!(%namespace, webhook = %name, message_id = %notice.id, attempt, %failure, ?wait, "delivery failed; retrying");
                let due = (shared.clock)().checked_add(wait).unwrap_or_else(|_| (shared.clock)());
                shared.tracker.retrying(hook, &notice.id, attempt, due);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            (Outcome::GiveUp, Err(failure)) => {
                warn!(%namespace, webhook = %name, message_id = %notice.id, attempt, %failure, "notice given up");
                shared.tracker.failed(hook, &notice.id, attempt, &failure, (shared.clock)());
                return;
            }
        }
    }
}

async fn attempt_once(
    shared: &Shared,
    hook: &ApiKeyWebhook,
    notice: &Notice,
    origin: &mut Origin,
) -> Result<(), Failure> {
    let uri = checked_url(&hook.spec.url).map_err(Failure::InvalidUrl)?;
    if let Some(selector) = hook.spec.selector.clone() {
        kube::core::Selector::try_from(selector).map_err(|_| Failure::InvalidSelector)?;
    }
    let secret = signing_secret(shared, hook).await?;
    let kind = notice.kind.event_type();
    if let Origin::Stored(stored) = origin {
        if !stored.as_deref().is_some_and(|stored| verify_seal(&secret, &notice.id, kind, &notice.body, stored)) {
            return Err(Failure::Unsealed);
        }
        *origin = Origin::Planned;
    }
    shared.tracker.sealed(hook, &notice.id, seal(&secret, &notice.id, kind, &notice.body));
    let timestamp = (shared.clock)().as_second();
    let request = Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("keyward/", env!("CARGO_PKG_VERSION")))
        .header(HEADER_ID, &notice.id)
        .header(HEADER_TIMESTAMP, timestamp)
        .header(HEADER_SIGNATURE, sign(&secret, &notice.id, timestamp, &notice.body))
        .body(Full::new(Bytes::copy_from_slice(&notice.body)))
        .map_err(|_| Failure::InvalidUrl(crate::notice::UrlError::Malformed))?;
    let timeout = hook.spec.timeout_seconds.map_or(shared.options.default_timeout, |s| Duration::from_secs(s.into()));
    // The answer's body is never read: nothing the receiver says reaches status or logs.
    match tokio::time::timeout(timeout, shared.http.request(request)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(_)) => Err(Failure::Connection),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(Failure::Status(response.status().as_u16())),
    }
}

/// The webhook's signing secret, read from its Secret for each attempt (a rotated secret is used at once).
async fn signing_secret(shared: &Shared, hook: &ApiKeyWebhook) -> Result<SigningSecret, Failure> {
    let namespace = hook.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), &namespace);
    let secret = secrets.get_opt(&hook.spec.secret_ref.name).await.map_err(|_| Failure::SecretUnreadable)?;
    let data_key = hook.spec.secret_ref.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY);
    let value = secret.and_then(|s| s.data).and_then(|mut d| d.remove(data_key)).ok_or(Failure::SecretNotFound)?;
    SigningSecret::parse(&value.0).map_err(Failure::InvalidSecret)
}

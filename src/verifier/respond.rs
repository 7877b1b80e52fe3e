//! Turning a decision into an HTTP answer: status, `WWW-Authenticate`, `Retry-After` and a short JSON reason.
//!
//! Bodies and headers carry only the outcome, the required scope and the key
//! id; never anything taken from the request, so a token can never be echoed.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::decision::{Decision, Outcome};
use super::index::Entry;

/// Errors of streamed bodies, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every answer.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Response header naming the key that was allowed.
pub static KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-keyward-key-id");
/// Response header listing the allowed key's scopes, comma-separated.
pub static SCOPES_HEADER: HeaderName = HeaderName::from_static("x-keyward-scopes");

/// A body from bytes in memory.
#[must_use]
pub fn full(bytes: impl Into<Bytes>) -> Body {
    full_body(Full::new(bytes.into()))
}

/// The same body, from one already built.
#[must_use]
pub fn full_body(body: Full<Bytes>) -> Body {
    body.map_err(|never| match never {}).boxed_unsync()
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Answers depend on the credentials; no cache may keep them.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to an allowed forward-auth request, carrying the key's headers.
#[must_use]
pub fn allowed(entry: &Entry<'_>) -> Response<Body> {
    let mut response =
        json(StatusCode::OK, &serde_json::json!({ "reason": "allowed", "keyId": entry.key_id().as_str() }));
    add_key_headers(response.headers_mut(), entry);
    response
}

/// Set `X-Keyward-Key-Id` and `X-Keyward-Scopes`, replacing any value already there.
pub fn add_key_headers(headers: &mut http::HeaderMap, entry: &Entry<'_>) {
    headers.insert(KEY_ID_HEADER.clone(), entry.key_id_header());
    headers.insert(SCOPES_HEADER.clone(), entry.grant.header.clone());
}

/// The answer to a denied request.
#[must_use]
pub fn denied(decision: &Decision<'_>) -> Response<Body> {
    let reason = decision.outcome.as_str();
    let (status, error) = match decision.outcome {
        Outcome::Allowed => (StatusCode::OK, "none"),
        Outcome::Missing
        | Outcome::Malformed
        | Outcome::Unknown
        | Outcome::Inactive
        | Outcome::Revoked
        | Outcome::Expired => (StatusCode::UNAUTHORIZED, "invalid_token"),
        Outcome::PaymentRequired => (StatusCode::PAYMENT_REQUIRED, "payment_required"),
        Outcome::AccessDisabled => (StatusCode::FORBIDDEN, "access_disabled"),
        Outcome::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
        Outcome::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Outcome::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let mut body = serde_json::json!({ "error": error, "reason": reason });
    let mut challenge = format!("Bearer realm=\"keyward\", error=\"{error}\"");
    if let Some(scope) = &decision.required_scope {
        // A parsed Scope: lowercase letters, digits, `.`, `_`, `-`, `*` and `:` only, nothing to escape.
        let scope = scope.to_string();
        challenge.push_str(", scope=\"");
        challenge.push_str(&scope);
        challenge.push('"');
        body["scope"] = scope.into();
    }
    let retry_after = decision.retry_after.map(|wait| {
        // Whole seconds, rounded up, at least one: Retry-After has no fractions.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        secs.max(1)
    });
    if let Some(secs) = retry_after {
        body["retryAfter"] = secs.into();
    }
    let mut response = json(status, &body);
    let headers = response.headers_mut();
    // No challenge for a gate (402, or 403 access_disabled): the credentials are good, and RFC 6750's
    // error codes describe the token; a client that re-authenticates on a challenge would loop.
    let gated = matches!(decision.outcome, Outcome::PaymentRequired | Outcome::AccessDisabled);
    if !gated && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST) {
        // The challenge holds only fixed words and a scope (SCOPE_PATTERN characters): always a valid value.
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
    }
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The answer while no key set has loaded: the verifier cannot decide, so it refuses.
#[must_use]
pub fn not_ready() -> Response<Body> {
    json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "error": "unavailable", "reason": "not_ready" }))
}

/// A plain JSON error answer (`not_found`, `bad_gateway`, `gateway_timeout`).
#[must_use]
pub fn error(status: StatusCode, reason: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": reason, "reason": reason }))
}

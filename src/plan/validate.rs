//! Re-checks every invariant admission applies, for ApiKeys that bypassed it (or predate a rule),
//! and those admission cannot check: the grace period (or the operator's default) against the
//! rotation schedule's shortest interval, and the total size of the Secret template's annotations.
//!
//! Each problem names its field (`spec.rotation.every`) and never quotes a
//! value that could be a secret; spec fields hold no secrets, but the habit
//! keeps Events and conditions safe to show.

use jiff::{SignedDuration, Timestamp};

use crate::api::ApiKeySpec;
use crate::duration::KeyDuration;
use crate::keyset::RateLimit;
use crate::scope::Scope;
use crate::token::Prefix;

/// Longest `keySet` name, as admission has it.
const MAX_KEY_SET_LEN: usize = 40;
/// Most labels (and most annotations) a Secret template may add, as admission has it.
const MAX_TEMPLATE_ENTRIES: usize = 64;
/// Longest label value, and longest name part of a label or annotation key (Kubernetes' limit).
const MAX_NAME_LEN: usize = 63;
/// Longest prefix (`example.com/`) of a label or annotation key (Kubernetes' limit).
const MAX_KEY_PREFIX_LEN: usize = 253;
/// Most bytes all annotations of an object may hold, keys included (Kubernetes' limit).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Start of the window in which a cron schedule's intervals across days are examined (a leap year).
const SCHEDULE_SCAN_START: &str = "2024-01-01T00:00:00Z";
/// End of that window: a year and a week later, so every wrap is seen once.
const SCHEDULE_SCAN_END: &str = "2025-01-08T00:00:00Z";

/// One invalid field of a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// The field path, such as `spec.scopes[1]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), problem: problem.into() }
}

/// The stored name of an ApiKey, which the key-set format carries: a real API
/// server only stores DNS subdomain names, but an object written around it
/// (or by an older server) may hold another, and is then never published.
pub fn validate_name(name: &str) -> Option<SpecError> {
    (!is_dns_subdomain(name)).then(|| err("metadata.name", "must be a DNS subdomain name to be published"))
}

/// How the token is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// A fixed interval after the last rotation.
    Every(KeyDuration),
    /// A five-field cron schedule, in UTC.
    Schedule(Box<croner::Cron>),
}

/// Automatic rotation, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// When.
    pub cadence: Cadence,
    /// How long the previous token keeps working; `None` means the operator default.
    pub grace_period: Option<KeyDuration>,
}

/// A spec whose every field has been checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSpec {
    /// The grants, in spec order.
    pub scopes: Vec<Scope>,
    /// Token prefix.
    pub prefix: Prefix,
    /// When the key stops working.
    pub expires_at: Option<Timestamp>,
    /// Automatic rotation.
    pub rotation: Option<Rotation>,
    /// Per-key rate limit.
    pub rate_limit: Option<RateLimit>,
    /// How long to keep an expired ApiKey before deleting it.
    pub retain_expired_for: Option<KeyDuration>,
    /// Expire the key once unused for this long.
    pub expire_after_unused: Option<KeyDuration>,
    /// The key's own notice points before expiry; `None` means the operator's.
    pub expiry_notices: Option<Vec<KeyDuration>>,
}

/// Check `spec` the way admission does; collect every problem, not just the first.
///
/// `default_grace` is the operator's grace period for keys that set none: it
/// must be shorter than the rotation interval like an explicit one (admission
/// checks this against the documented default, `1h`).
pub fn validate(spec: &ApiKeySpec, default_grace: SignedDuration) -> Result<ValidSpec, Vec<SpecError>> {
    let mut errors = Vec::new();
    let scopes = scopes(&spec.scopes, &mut errors);
    let prefix = match spec.prefix.as_deref() {
        None => Prefix::default(),
        Some(text) => text.parse().unwrap_or_else(|e| {
            errors.push(err("spec.prefix", format!("{e}")));
            Prefix::default()
        }),
    };
    let rotation = spec.rotation.as_ref().and_then(|r| rotation(r, default_grace, &mut errors));
    let rate_limit = spec.rate_limit.as_ref().and_then(|limit| rate_limit_into(limit, &mut errors));
    let expire_after_unused = duration("spec.expireAfterUnused", spec.expire_after_unused.as_deref(), &mut errors);
    let retain_expired_for = duration("spec.retainExpiredFor", spec.retain_expired_for.as_deref(), &mut errors);
    let expiry_notices = spec.expiry_notices.as_deref().map(|texts| expiry_notices(texts, &mut errors));
    if !is_dns_label(&spec.key_set) || spec.key_set.len() > MAX_KEY_SET_LEN {
        errors.push(err("spec.keySet", "must be a DNS label of at most 40 characters"));
    }
    if let Some(name) = &spec.secret_name
        && !is_dns_subdomain(name)
    {
        errors.push(err("spec.secretName", "must be a DNS subdomain name"));
    }
    if let Some(display) = &spec.display_name
        && (display.is_empty() || display.len() > 256)
    {
        errors.push(err("spec.displayName", "must be 1 to 256 characters"));
    }
    if let Some(template) = &spec.secret_template {
        for (field, map) in [
            ("spec.secretTemplate.labels", &template.labels),
            ("spec.secretTemplate.annotations", &template.annotations),
        ] {
            if map.keys().any(|k| k.starts_with("keyward.dev/") || k == super::LABEL_MANAGED_BY) {
                errors.push(err(field, "keys under keyward.dev/ and app.kubernetes.io/managed-by are reserved"));
            }
            if map.len() > MAX_TEMPLATE_ENTRIES {
                errors.push(err(field, "at most 64 entries"));
            }
            if let Some(key) = map.keys().find(|k| !is_qualified_name(k)) {
                // The key is the user's own text, not a secret; it names the offender.
                errors.push(err(
                    format!("{field}[{}]", shortened(key)),
                    "not a valid key: an optional DNS subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                ));
            }
        }
        if let Some(key) = template.labels.iter().find(|(_, v)| !is_label_value(v)).map(|(k, _)| k) {
            errors.push(err(
                format!("spec.secretTemplate.labels[{}]", shortened(key)),
                "not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            ));
        }
        let annotation_bytes: usize = template.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if annotation_bytes > MAX_ANNOTATIONS_BYTES {
            errors.push(err("spec.secretTemplate.annotations", "at most 256 KiB in total, keys included"));
        }
    }
    if errors.is_empty() {
        let expires_at = spec.expires_at.as_ref().map(|t| t.0);
        Ok(ValidSpec {
            scopes,
            prefix,
            expires_at,
            rotation,
            rate_limit,
            retain_expired_for,
            expire_after_unused,
            expiry_notices,
        })
    } else {
        Err(errors)
    }
}

fn rate_limit_into(limit: &crate::api::RateLimitSpec, errors: &mut Vec<SpecError>) -> Option<RateLimit> {
    let period = duration("spec.rateLimit.period", Some(&limit.period), errors)?;
    if limit.requests == 0 || limit.burst == Some(0) || period.get().is_zero() {
        errors.push(err("spec.rateLimit", "requests, burst and period must be above zero"));
        return None;
    }
    Some(RateLimit { requests: limit.requests, period, burst: limit.burst.unwrap_or(limit.requests) })
}

/// A rate limit from elsewhere (an ApiKeyClass's default), parsed; `None` when it is not valid.
pub(super) fn rate_limit(limit: &crate::api::RateLimitSpec) -> Option<RateLimit> {
    rate_limit_into(limit, &mut Vec::new())
}

fn scopes(texts: &[String], errors: &mut Vec<SpecError>) -> Vec<Scope> {
    if texts.is_empty() {
        errors.push(err("spec.scopes", "at least one scope is required"));
    }
    if texts.len() > 64 {
        errors.push(err("spec.scopes", "at most 64 scopes"));
    }
    let mut parsed: Vec<Scope> = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        match text.parse::<Scope>() {
            Ok(scope) if parsed.contains(&scope) => errors.push(err(format!("spec.scopes[{i}]"), "listed twice")),
            Ok(scope) => parsed.push(scope),
            Err(e) => errors.push(err(format!("spec.scopes[{i}]"), e.to_string())),
        }
    }
    parsed
}

fn expiry_notices(texts: &[String], errors: &mut Vec<SpecError>) -> Vec<KeyDuration> {
    if texts.len() > crate::api::MAX_EXPIRY_NOTICES {
        errors.push(err("spec.expiryNotices", format!("at most {} notice points", crate::api::MAX_EXPIRY_NOTICES)));
    }
    let mut parsed: Vec<KeyDuration> = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let field = format!("spec.expiryNotices[{i}]");
        match duration(&field, Some(text), errors) {
            Some(d) if parsed.iter().any(|p| p.as_str() == d.as_str()) => errors.push(err(field, "listed twice")),
            Some(d) => parsed.push(d),
            None => {}
        }
    }
    parsed
}

fn duration(field: &str, text: Option<&str>, errors: &mut Vec<SpecError>) -> Option<KeyDuration> {
    match text?.parse::<KeyDuration>() {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(err(field, e.to_string()));
            None
        }
    }
}

fn rotation(
    spec: &crate::api::RotationSpec,
    default_grace: SignedDuration,
    errors: &mut Vec<SpecError>,
) -> Option<Rotation> {
    let every = duration("spec.rotation.every", spec.every.as_deref(), errors);
    let grace_period = duration("spec.rotation.gracePeriod", spec.grace_period.as_deref(), errors);
    let schedule = spec.schedule.as_deref().and_then(|text| match parse_schedule(text) {
        Ok(cron) => Some(cron),
        Err(problem) => {
            errors.push(err("spec.rotation.schedule", problem));
            None
        }
    });
    if spec.every.is_some() == spec.schedule.is_some() {
        errors.push(err("spec.rotation", "set exactly one of every and schedule"));
        return None;
    }
    if let (Some(every), Some(grace)) = (&every, &grace_period)
        && grace.get() >= every.get()
    {
        errors.push(err("spec.rotation.gracePeriod", "must be shorter than rotation.every"));
        return None;
    }
    if every.as_ref().is_some_and(|d| d.get().is_zero()) {
        errors.push(err("spec.rotation.every", "must be above zero"));
        return None;
    }
    // A rotation is held while the previous token is in its grace period (so
    // that token is never cut short); a grace as long as the interval would
    // hold every rotation. The default grace applies when none is set.
    let (grace, whose) = match &grace_period {
        Some(g) => (SignedDuration::try_from(g.get()).unwrap_or(SignedDuration::MAX), "must be shorter"),
        None => (default_grace, "is absent, so the operator default applies; it must be shorter"),
    };
    if grace_period.is_none()
        && let Some(every) = &every
        && SignedDuration::try_from(every.get()).is_ok_and(|every| default_grace >= every)
    {
        errors.push(err(
            "spec.rotation.gracePeriod",
            format!("{whose} than rotation.every (default {default_grace:#}); set a shorter gracePeriod"),
        ));
        return None;
    }
    if let Some(cron) = &schedule
        && let Some(gap) = min_interval_at_most(cron, grace)
    {
        errors.push(err(
            "spec.rotation.gracePeriod",
            format!("{whose} than the shortest interval of rotation.schedule ({gap:#}, grace {grace:#})"),
        ));
        return None;
    }
    let cadence = match (every, schedule) {
        (Some(every), None) => Cadence::Every(every),
        (None, Some(cron)) => Cadence::Schedule(Box::new(cron)),
        _ => return None,
    };
    Some(Rotation { cadence, grace_period })
}

/// An interval between two consecutive occurrences of `cron` that is at most
/// `limit`, if there is one.
///
/// Cron's minute and hour fields are the same every day, so the intervals
/// within a day are known from those fields alone, and any interval across
/// days is at least the wrap from a day's last time to the next day's first.
/// Only when `limit` reaches that far are occurrences walked, over one leap
/// year ([`SCHEDULE_SCAN_START`] to [`SCHEDULE_SCAN_END`]), which covers
/// every day-of-month, month and weekday pattern at least once. Pure: no clock.
fn min_interval_at_most(cron: &croner::Cron, limit: SignedDuration) -> Option<SignedDuration> {
    let pattern = &cron.pattern;
    let hours: Vec<i64> = (0..24).filter(|h| pattern.hour_match(*h).unwrap_or(false)).map(i64::from).collect();
    let minutes: Vec<i64> = (0..60).filter(|m| pattern.minute_match(*m).unwrap_or(false)).map(i64::from).collect();
    let times: Vec<i64> = hours.iter().flat_map(|h| minutes.iter().map(move |m| h * 60 + m)).collect();
    let (first, last) = (*times.first()?, *times.last()?);
    if let Some(within_day) = times.windows(2).map(|w| SignedDuration::from_mins(w[1] - w[0])).min()
        && within_day <= limit
    {
        return Some(within_day);
    }
    if limit < SignedDuration::from_mins(24 * 60 - (last - first)) {
        return None;
    }
    let start: Timestamp = SCHEDULE_SCAN_START.parse().ok()?;
    let end: Timestamp = SCHEDULE_SCAN_END.parse().ok()?;
    let mut previous: Option<Timestamp> = None;
    for occurrence in cron.iter_after(start.to_zoned(jiff::tz::TimeZone::UTC)) {
        let t = occurrence.timestamp();
        if let Some(p) = previous
            && t.duration_since(p) <= limit
        {
            return Some(t.duration_since(p));
        }
        if t > end {
            break;
        }
        previous = Some(t);
    }
    None
}

/// Parse a five-field cron schedule (minute hour day-of-month month day-of-week).
pub(super) fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    if text.split_whitespace().count() != 5 {
        return Err("must have five fields: minute hour day-of-month month day-of-week".to_owned());
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("not a valid cron schedule: {e}"))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `key` as a field name in a message: long keys are cut, so a message stays short.
fn shortened(key: &str) -> String {
    match key.char_indices().nth(MAX_NAME_LEN) {
        Some((end, _)) => format!("{}…", &key[..end]),
        None => key.to_owned(),
    }
}

/// A Kubernetes qualified name, as label and annotation keys must be:
/// `[prefix/]name`, prefix a DNS subdomain, name as [`is_label_value`] but not empty.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(|p| !p.is_empty() && p.len() <= MAX_KEY_PREFIX_LEN && is_dns_subdomain(p))
        && !name.is_empty()
        && is_label_value(name)
}

/// A Kubernetes label value: empty, or at most 63 of `[A-Za-z0-9-_.]`,
/// starting and ending with a letter or digit.
fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.is_empty()
        || (b.len() <= MAX_NAME_LEN
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

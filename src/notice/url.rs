//! The operator's own check of a webhook URL, the same rule admission applies
//! ([`crate::api::URL_RULE`]), for objects stored before the rule existed.

use http::Uri;

/// Why a webhook URL is refused. The messages never quote the URL: it may carry a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute http(s) URL.
    #[error("spec.url is not an absolute http:// or https:// URL")]
    Malformed,
    /// Plain http to a host off the node and outside the cluster.
    #[error("spec.url uses plain http:// to a host that is not loopback or a cluster Service; use https://")]
    PlainHttpOutside,
}

/// `url` parsed, if keyward may send notices to it: https anywhere, http only to
/// loopback or `<service>.<namespace>.svc[.cluster.local]`.
pub fn checked_url(url: &str) -> Result<Uri, UrlError> {
    let uri: Uri = url.parse().map_err(|_| UrlError::Malformed)?;
    let host = uri.host().ok_or(UrlError::Malformed)?.to_ascii_lowercase();
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if stays_inside(&host) => Ok(uri),
        Some("http") => Err(UrlError::PlainHttpOutside),
        _ => Err(UrlError::Malformed),
    }
}

fn stays_inside(host: &str) -> bool {
    let loopback_v4 = host.strip_prefix("127.").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    let service = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .is_some_and(|name| name.split('.').count() >= 2 && name.split('.').all(|label| !label.is_empty()));
    host == "localhost" || host == "[::1]" || loopback_v4 || service
}

#[cfg(test)]
mod tests {
    use super::{UrlError, checked_url};

    #[test]
    fn the_operator_applies_the_admission_rule_itself() {
        let cases = [
            ("https://hooks.example.com/keyward", Ok(())),
            ("http://127.0.0.1:8080/hook", Ok(())),
            ("http://localhost/hook", Ok(())),
            ("http://[::1]:9000/", Ok(())),
            ("http://receiver.team-a.svc:8080/notices", Ok(())),
            ("http://receiver.team-a.svc.cluster.local/notices", Ok(())),
            ("http://hooks.example.com/keyward", Err(UrlError::PlainHttpOutside)),
            ("http://127.0.0.1.example.com/", Err(UrlError::PlainHttpOutside)),
            ("http://team-a.svc/", Err(UrlError::PlainHttpOutside)),
            ("ftp://hooks.example.com/", Err(UrlError::Malformed)),
            ("/relative/path", Err(UrlError::Malformed)),
            ("not a url", Err(UrlError::Malformed)),
        ];
        for (url, expected) in cases {
            assert_eq!(checked_url(url).map(|_| ()), expected, "url {url}");
        }
    }
}

//! Which scope a request needs: route rules from a file, and the default rule.
//!
//! The default: `GET` and `HEAD` need `<resource>:read`, every other method
//! `<resource>:write`, where the resource is the first segment of the path.
//! A routes file (YAML, see `docs/verifier.md`) overrides this for path
//! prefixes, optionally per method. The longest matching prefix wins; at
//! equal length a rule naming the method wins over one for every method.
//!
//! Paths are checked in the form the upstream will see them, so that no
//! spelling of a path can reach a resource under another resource's scope:
//! the request target is parsed as RFC 9112 defines it (origin-form or
//! absolute-form), percent-encoded unreserved characters are decoded, and
//! dot segments, empty segments, encoded slashes, dots and backslashes are
//! refused, as are (unless a [`PathPolicy`] allows them) `;` path parameters
//! and encoded `%`, which frameworks read in ways of their own. The resource
//! the default rule takes from the first segment must be a valid scope
//! resource, so it can be named in an answer without escaping.

use std::borrow::Cow;
use std::path::Path;

use serde::Deserialize;

use crate::scope::{Action, Scope};

/// Longest path (without query) the verifier decides on.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Why a request path cannot be decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// There is no path: the original URI header is missing or empty.
    #[error("no request path")]
    Missing,
    /// The path does not start with `/`.
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The path has bytes outside visible ASCII or a bad percent escape.
    #[error("path has bytes outside visible ASCII or a malformed percent escape")]
    BadEncoding,
    /// The path has `.` or `..` segments, empty segments, or an encoded `/` or `\`.
    #[error("path is not in canonical form")]
    NotCanonical,
    /// The request target is neither origin-form (`/path?query`) nor an `http(s)` absolute-form URI without user info.
    #[error("request target is neither origin-form nor absolute-form")]
    BadTarget,
    /// The path has a shape frameworks read differently: a fragment, `;` path
    /// parameters, an encoded `%`, `.` or `;` (see [`PathPolicy`]).
    #[error("path is ambiguous (fragment, path parameters or encoded '%', '.' or ';')")]
    Ambiguous,
    /// The first segment, which the default rule takes as the resource, is not a valid scope resource.
    #[error("first path segment is not a resource name (lowercase letters, digits, '.', '_', '-')")]
    BadResource,
}

/// Which path shapes that frameworks read in ways of their own are let through; both are refused by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Accept `;` path parameters (`/a;v=1/b`). Rules are then matched on the
    /// path without them, as Tomcat, Jetty and Spring route it (`/a/b`), and a
    /// segment that is `..` before its parameters (`..;x`) is still refused.
    pub allow_path_params: bool,
    /// Accept an encoded `%` (`%25`), which an app that decodes twice reads as another escape (`%252e` → `.`).
    pub allow_encoded_percent: bool,
}

/// What a request needs: an action on a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement<'a> {
    /// The resource, `""` for the root path.
    pub resource: Cow<'a, str>,
    /// The action.
    pub action: Action,
}

impl std::fmt::Display for Requirement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The root path has no resource: only `*` scopes reach it.
        let resource = if self.resource.is_empty() { "*" } else { &self.resource };
        write!(f, "{resource}:{}", self.action.as_str())
    }
}

/// One rule of a routes file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Path prefix, matched on whole segments (`/leads` matches `/leads` and `/leads/7`, not `/leadsx`).
    pub path_prefix: String,
    /// Methods the rule applies to; absent or empty means every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The scope a request needs; `admin` or `*` scopes on the key also satisfy it, as everywhere.
    pub scope: Scope,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    routes: Vec<Rule>,
}

/// Why a routes file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML of the routes shape.
    #[error("routes file: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A rule's path prefix is not a canonical absolute path.
    #[error("rule {index}: pathPrefix must be a canonical path starting with '/'")]
    BadPrefix {
        /// 1-based rule number.
        index: usize,
    },
    /// A rule names a method that is not an uppercase HTTP method token.
    #[error("rule {index}: methods must be uppercase HTTP method names")]
    BadMethod {
        /// 1-based rule number.
        index: usize,
    },
}

/// The route rules in force; the default rule when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Longest prefix first; at equal length, rules naming methods first.
    rules: Vec<Rule>,
    /// Which ambiguous path shapes are let through.
    policy: PathPolicy,
}

impl Routes {
    /// Rules from the YAML text of a routes file.
    pub fn from_yaml(text: &str) -> Result<Routes, RoutesError> {
        let file: RoutesFile = serde_yaml::from_str(text)?;
        let mut rules = file.routes;
        for (i, rule) in rules.iter().enumerate() {
            let index = i + 1;
            if canonical_path(&rule.path_prefix).ok().is_none_or(|p| p != rule.path_prefix) {
                return Err(RoutesError::BadPrefix { index });
            }
            if !rule.methods.iter().all(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase())) {
                return Err(RoutesError::BadMethod { index });
            }
        }
        rules.sort_by_key(|r| (std::cmp::Reverse(r.path_prefix.len()), r.methods.is_empty()));
        Ok(Routes { rules, policy: PathPolicy::default() })
    }

    /// The same rules, letting through the path shapes `policy` allows.
    #[must_use]
    pub fn with_policy(self, policy: PathPolicy) -> Routes {
        Routes { policy, ..self }
    }

    /// Rules from a routes file.
    pub fn load(path: &Path) -> Result<Routes, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Io { path: path.to_owned(), source })?;
        Routes::from_yaml(&text)
    }

    /// What a request with `method` on `uri` (path, optionally with a query) needs.
    pub fn requirement<'a>(&'a self, method: &str, uri: &'a str) -> Result<Requirement<'a>, PathError> {
        let path = canonical_path_with(uri, self.policy)?;
        for rule in &self.rules {
            let method_ok = rule.methods.is_empty() || rule.methods.iter().any(|m| m == method);
            if method_ok && prefix_matches(&rule.path_prefix, &path) {
                return Ok(Requirement { resource: Cow::Borrowed(rule.scope.resource()), action: rule.scope.action() });
            }
        }
        let action = if method == "GET" || method == "HEAD" { Action::Read } else { Action::Write };
        let resource = match path {
            Cow::Borrowed(p) => Cow::Borrowed(first_segment(p)),
            Cow::Owned(p) => Cow::Owned(first_segment(&p).to_owned()),
        };
        // The resource may be named in an answer (`scope="…"`): only the characters a scope allows.
        if !resource.is_empty() && (resource == "*" || Scope::new(&resource, action).is_err()) {
            return Err(PathError::BadResource);
        }
        Ok(Requirement { resource, action })
    }
}

fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// Whether `prefix` covers `path`, on whole segments. A dot after the prefix
/// also matches (`/leads/export` covers `/leads/export.csv`): Spring's suffix
/// patterns and Rails' `(.:format)` route that to the same handler, so it needs
/// the same scope.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('.') || prefix.ends_with('/'))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The path of `uri` in the one form rules are matched against, or why there
/// is none, with the default (strict) [`PathPolicy`].
pub fn canonical_path(uri: &str) -> Result<Cow<'_, str>, PathError> {
    canonical_path_with(uri, PathPolicy::default())
}

/// The path of a request target (RFC 9112 §3.2): origin-form `/path?query` or
/// absolute-form `http://host/path?query`, without its query.
///
/// Anything else is refused rather than guessed at: a `#` (never part of a
/// request target; `http://h#/orders` has the path `/`), user info, schemes
/// other than http(s), authority-form and asterisk-form.
fn target_path(uri: &str) -> Result<&str, PathError> {
    if uri.is_empty() {
        return Err(PathError::Missing);
    }
    if uri.contains('#') {
        return Err(PathError::Ambiguous);
    }
    if uri.starts_with('/') {
        return Ok(uri.split_once('?').map_or(uri, |(path, _)| path));
    }
    let parsed: http::Uri = uri.parse().map_err(|_| PathError::BadTarget)?;
    let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err(PathError::BadTarget);
    };
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    if !http || authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(PathError::BadTarget);
    }
    // The path starts right after `scheme://authority`; check that this is what `http` parsed.
    let authority_start = scheme.len() + "://".len();
    let path_start = authority_start + authority.as_str().len();
    if uri.get(authority_start..path_start) != Some(authority.as_str()) {
        return Err(PathError::BadTarget);
    }
    let rest = &uri[path_start..];
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    // `http://host` and `http://host?q` have the path `/` (RFC 9112 §3.2.2).
    Ok(if path.is_empty() { "/" } else { path })
}

/// [`canonical_path`] letting through the shapes `policy` allows.
///
/// Drops the query; decodes escapes of unreserved characters; with path
/// parameters allowed, drops them from every segment.
pub fn canonical_path_with(uri: &str, policy: PathPolicy) -> Result<Cow<'_, str>, PathError> {
    // Byte-level and single-pass where it can be: this runs on every request.
    let path = target_path(uri)?;
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let (mut escaped, mut params) = (false, false);
    for &b in path.as_bytes() {
        if !b.is_ascii_graphic() {
            return Err(PathError::BadEncoding);
        }
        escaped |= b == b'%';
        params |= b == b';';
    }
    if params && !policy.allow_path_params {
        return Err(PathError::Ambiguous);
    }
    let mut path = if escaped { Cow::Owned(decode_unreserved(path, policy)?) } else { Cow::Borrowed(path) };
    if params {
        path = Cow::Owned(strip_params(&path));
    }
    check_segments(&path)?;
    Ok(path)
}

/// Drop `;parameters` from every segment, as servlet containers do before routing.
fn strip_params(path: &str) -> String {
    path.split('/').map(|segment| segment.split(';').next().unwrap_or("")).collect::<Vec<_>>().join("/")
}

/// Decode escapes of unreserved characters other than `.`; keep others
/// escaped, in uppercase hex. Refuse encoded `/` and `\` (not canonical),
/// `.` and `;` (ambiguous: no client needs them, and `%2e%2e` or `..%3b`
/// spell `..` to some framework), and `%` unless `policy` allows it.
fn decode_unreserved(path: &str, policy: PathPolicy) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        else {
            return Err(PathError::BadEncoding);
        };
        match (hi << 4) | lo {
            b'/' | b'\\' => return Err(PathError::NotCanonical),
            b'.' | b';' => return Err(PathError::Ambiguous),
            b'%' if !policy.allow_encoded_percent => return Err(PathError::Ambiguous),
            d if d.is_ascii_alphanumeric() || matches!(d, b'-' | b'_' | b'~') => out.push(char::from(d)),
            d => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(d >> 4)]));
                out.push(char::from(HEX[usize::from(d & 0xf)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Refuse `.` and `..` segments, empty segments (except a trailing slash) and backslashes.
fn check_segments(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut start = 1;
    for i in 1..=bytes.len() {
        let at_end = i == bytes.len();
        if at_end || bytes[i] == b'/' {
            let segment = &bytes[start..i];
            if (segment.is_empty() && !at_end) || segment == b"." || segment == b".." {
                return Err(PathError::NotCanonical);
            }
            start = i + 1;
        } else if bytes[i] == b'\\' {
            return Err(PathError::NotCanonical);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(routes: &Routes, method: &str, uri: &str) -> Result<String, PathError> {
        routes.requirement(method, uri).map(|r| r.to_string())
    }

    #[test]
    fn without_rules_get_and_head_need_read_and_other_methods_write_on_the_first_segment() {
        let routes = Routes::default();
        let cases = [
            ("GET", "/leads/42", "leads:read"),
            ("HEAD", "/leads", "leads:read"),
            ("POST", "/leads/", "leads:write"),
            ("DELETE", "/leads/42?force=1", "leads:write"),
            ("OPTIONS", "/contacts", "contacts:write"),
            ("get", "/leads", "leads:write"),
            ("GET", "/", "*:read"),
            ("GET", "/?q=1", "*:read"),
            ("GET", "http://svc.local/orders/1?x", "orders:read"),
            ("GET", "http://svc.local", "*:read"),
            ("GET", "/le%61ds/x", "leads:read"),
            ("GET", "/leads/a%20b", "leads:read"),
            ("GET", "/crm.v2_x-y/1", "crm.v2_x-y:read"),
        ];
        for (method, uri, expected) in cases {
            assert_eq!(need(&routes, method, uri), Ok(expected.to_owned()), "{method} {uri}");
        }
    }

    #[test]
    fn paths_that_could_reach_another_resource_are_refused() {
        let routes = Routes::default();
        let cases = [
            ("", PathError::Missing),
            ("leads", PathError::BadTarget),
            ("/leads/../admin", PathError::NotCanonical),
            ("/leads/%2e%2e/admin", PathError::Ambiguous),
            ("/./leads", PathError::NotCanonical),
            ("//leads", PathError::NotCanonical),
            ("/leads//x", PathError::NotCanonical),
            ("/leads%2Fx", PathError::NotCanonical),
            ("/leads%5cx", PathError::NotCanonical),
            ("/leads\\x", PathError::NotCanonical),
            ("/leads%zz", PathError::BadEncoding),
            ("/leads%2", PathError::BadEncoding),
            ("/le ads", PathError::BadEncoding),
            ("/l\u{e9}ads", PathError::BadEncoding),
        ];
        for (uri, expected) in cases {
            assert_eq!(need(&routes, "GET", uri), Err(expected), "{uri:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(need(&routes, "GET", &long), Err(PathError::TooLong));
    }

    #[test]
    fn absolute_form_targets_are_parsed_as_rfc_9112_defines_them() {
        let routes = Routes::default();
        let allowed = [
            ("http://h/orders/1", "orders:read"),
            ("HTTPS://h:8443/orders/1?x=/admin", "orders:read"),
            // The path ends where the query starts: these are the root, not /orders/1.
            ("http://h?/orders/1", "*:read"),
            ("http://h?q=1", "*:read"),
            ("/orders/1?next=http://h/admin", "orders:read"),
        ];
        for (uri, expected) in allowed {
            assert_eq!(need(&routes, "GET", uri), Ok(expected.to_owned()), "{uri}");
        }
        let refused = [
            // A fragment is never part of a request target; `http://h#/orders/1` is the root.
            ("http://h#/orders/1", PathError::Ambiguous),
            ("/orders/1#x", PathError::Ambiguous),
            ("http://user@h/orders/1", PathError::BadTarget),
            ("ftp://h/orders/1", PathError::BadTarget),
            ("h:80", PathError::BadTarget),
            ("*", PathError::BadTarget),
            ("http:/orders/1", PathError::BadTarget),
            ("http:///orders/1", PathError::BadTarget),
            ("orders/1", PathError::BadTarget),
        ];
        for (uri, expected) in refused {
            assert_eq!(need(&routes, "GET", uri), Err(expected), "{uri}");
        }
    }

    #[test]
    fn a_first_segment_that_is_not_a_resource_name_is_refused_before_it_can_reach_an_answer() {
        let routes = Routes::default();
        for uri in [
            "/x\",error=\"injected\",realm=\"evil",
            "/x%22,error=%22injected",
            "/Leads/1",
            "/a%20b",
            "/a%2cb",
            "/*",
            "/-leads",
            "/leads-/1",
            "/kw_0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2yZ",
        ] {
            assert_eq!(need(&routes, "GET", uri), Err(PathError::BadResource), "{uri}");
        }
        // A rule's scope is checked when the file loads, so a rule may cover any first segment.
        let rules = Routes::from_yaml("routes:\n  - pathPrefix: /API\n    scope: api:read\n").unwrap();
        assert_eq!(need(&rules, "GET", "/API/x"), Ok("api:read".to_owned()));
        assert_eq!(need(&rules, "GET", "/Other"), Err(PathError::BadResource));
    }

    /// The scope a path needs, or why it is refused.
    type Need = Result<&'static str, PathError>;

    #[test]
    fn path_shapes_frameworks_read_differently_are_refused_unless_allowed() {
        let strict = Routes::from_yaml(ROUTES).unwrap();
        let params = Routes::from_yaml(ROUTES)
            .unwrap()
            .with_policy(PathPolicy { allow_path_params: true, allow_encoded_percent: false });
        let percent = Routes::from_yaml(ROUTES)
            .unwrap()
            .with_policy(PathPolicy { allow_path_params: false, allow_encoded_percent: true });
        // (uri, strict, with path parameters allowed, with encoded % allowed)
        let cases: [(&str, Need, Need, Need); 12] = [
            // Tomcat, Jetty and Spring read `..;` as `..`.
            ("/orders/..;/admin", Err(PathError::Ambiguous), Err(PathError::NotCanonical), Err(PathError::Ambiguous)),
            ("/orders/.;x/admin", Err(PathError::Ambiguous), Err(PathError::NotCanonical), Err(PathError::Ambiguous)),
            ("/orders/..%3b/admin", Err(PathError::Ambiguous), Err(PathError::Ambiguous), Err(PathError::Ambiguous)),
            // An app that decodes twice reads `%252e` as `.`.
            ("/orders/%252e%252e/admin", Err(PathError::Ambiguous), Err(PathError::Ambiguous), Ok("orders:read")),
            ("/orders/%2e%2e/admin", Err(PathError::Ambiguous), Err(PathError::Ambiguous), Err(PathError::Ambiguous)),
            ("/orders/x%2ejson", Err(PathError::Ambiguous), Err(PathError::Ambiguous), Err(PathError::Ambiguous)),
            // Parameters are dropped before routing, so the export rule applies.
            ("/leads/export;x=1", Err(PathError::Ambiguous), Ok("leads:admin"), Err(PathError::Ambiguous)),
            ("/leads;jsessionid=1/export", Err(PathError::Ambiguous), Ok("leads:admin"), Err(PathError::Ambiguous)),
            ("/leads/;x/export", Err(PathError::Ambiguous), Err(PathError::NotCanonical), Err(PathError::Ambiguous)),
            // Suffix patterns (Spring) and formats (Rails) route `export.csv` to `export`.
            ("/leads/export.csv", Ok("leads:admin"), Ok("leads:admin"), Ok("leads:admin")),
            ("/leads/export.csv/x", Ok("leads:admin"), Ok("leads:admin"), Ok("leads:admin")),
            ("/leads/exports.csv", Ok("leads:read"), Ok("leads:read"), Ok("leads:read")),
        ];
        for (uri, s, p, e) in cases {
            let want = |r: Need| r.map(str::to_owned);
            assert_eq!(need(&strict, "GET", uri), want(s), "strict {uri}");
            assert_eq!(need(&params, "GET", uri), want(p), "path params {uri}");
            assert_eq!(need(&percent, "GET", uri), want(e), "encoded % {uri}");
        }
    }

    const ROUTES: &str = r#"
routes:
  - pathPrefix: /leads/export
    scope: leads:admin
  - pathPrefix: /leads
    methods: [POST]
    scope: crm:write
  - pathPrefix: /public/
    scope: "*:read"
  - pathPrefix: /v2/orders
    methods: [GET, HEAD]
    scope: orders:read
  - pathPrefix: /v2/orders
    scope: orders:write
"#;

    #[test]
    fn the_longest_matching_rule_decides_and_unmatched_paths_use_the_default() {
        let routes = Routes::from_yaml(ROUTES).unwrap();
        let cases = [
            ("GET", "/leads/export", "leads:admin"),
            ("GET", "/leads/export/2026?fmt=csv", "leads:admin"),
            ("GET", "/leads/exports", "leads:read"),
            ("GET", "/leads/ex%70ort", "leads:admin"),
            ("POST", "/leads/7", "crm:write"),
            ("PUT", "/leads/7", "leads:write"),
            ("GET", "/public/logo.png", "*:read"),
            ("GET", "/v2/orders/9", "orders:read"),
            ("HEAD", "/v2/orders", "orders:read"),
            ("PATCH", "/v2/orders/9", "orders:write"),
            ("GET", "/v2/other", "v2:read"),
        ];
        for (method, uri, expected) in cases {
            assert_eq!(need(&routes, method, uri), Ok(expected.to_owned()), "{method} {uri}");
        }
    }

    #[test]
    fn malformed_routes_files_are_refused() {
        let cases = [
            "routes:\n  - pathPrefix: leads\n    scope: leads:read\n",
            "routes:\n  - pathPrefix: /a/../b\n    scope: leads:read\n",
            "routes:\n  - pathPrefix: /a\n    scope: Leads:read\n",
            "routes:\n  - pathPrefix: /a\n    methods: [get]\n    scope: leads:read\n",
            "routes:\n  - pathPrefix: /a\n    scope: leads:read\n    public: true\n",
            "rules: []\n",
            "- not a map",
        ];
        for text in cases {
            assert!(Routes::from_yaml(text).is_err(), "accepted {text:?}");
        }
    }
}

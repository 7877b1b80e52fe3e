//! Scopes: `resource:action` grants shared by the ApiKey resource, the key set and the verifier.
//!
//! A scope names one resource and one action. Actions do not imply each other
//! except `admin`, which allows every action on its resource; `write` does not
//! imply `read`. The resource `*` stands for every resource.

use std::fmt;
use std::str::FromStr;

/// Longest scope accepted anywhere (admission enforces the same bound).
pub const MAX_SCOPE_LEN: usize = 128;

/// The regular expression admission uses for one scope; [`Scope::from_str`] accepts exactly this language.
pub const SCOPE_PATTERN: &str = r"^(\*|[a-z0-9]([a-z0-9._-]*[a-z0-9])?):(read|write|admin)$";

/// What a scope allows on its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Reading: by default GET and HEAD requests.
    Read,
    /// Changing: by default every method other than GET and HEAD.
    Write,
    /// Everything on the resource.
    Admin,
}

impl Action {
    /// The lowercase word used in scopes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }
}

/// One `resource:action` grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    resource: String,
    action: Action,
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The scope has no `:` between resource and action.
    #[error("scope {0:?} is not of the form resource:action")]
    MissingColon(String),
    /// The action is not one of read, write, admin.
    #[error("scope {0:?} has an action other than read, write or admin")]
    UnknownAction(String),
    /// The resource has characters outside lowercase letters, digits, `.`, `_`, `-`, or is not `*`.
    #[error(
        "scope {0:?} has an invalid resource (lowercase letters, digits, '.', '_', '-', starting and ending with a letter or digit, or '*')"
    )]
    InvalidResource(String),
    /// The scope is longer than [`MAX_SCOPE_LEN`].
    #[error("scope is longer than {MAX_SCOPE_LEN} characters")]
    TooLong,
}

impl Scope {
    /// A scope from its parts; the resource must be valid.
    pub fn new(resource: &str, action: Action) -> Result<Self, ScopeError> {
        format!("{resource}:{}", action.as_str()).parse()
    }

    /// The resource this scope applies to (`*` for all).
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The action granted.
    #[must_use]
    pub fn action(&self) -> Action {
        self.action
    }

    /// Whether this grant allows `action` on `resource`.
    #[must_use]
    pub fn allows(&self, resource: &str, action: Action) -> bool {
        let resource_matches = self.resource == "*" || self.resource == resource;
        resource_matches && (self.action == Action::Admin || self.action == action)
    }
}

fn valid_resource(resource: &str) -> bool {
    if resource == "*" {
        return true;
    }
    let bytes = resource.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            edge_ok(first) && edge_ok(last) && bytes.iter().all(|&b| edge_ok(b) || matches!(b, b'.' | b'_' | b'-'))
        }
        _ => false,
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong);
        }
        let (resource, action) = s.rsplit_once(':').ok_or_else(|| ScopeError::MissingColon(s.to_owned()))?;
        let action = match action {
            "read" => Action::Read,
            "write" => Action::Write,
            "admin" => Action::Admin,
            _ => return Err(ScopeError::UnknownAction(s.to_owned())),
        };
        if !valid_resource(resource) {
            return Err(ScopeError::InvalidResource(s.to_owned()));
        }
        Ok(Scope { resource: resource.to_owned(), action })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action.as_str())
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print_back() {
        for s in ["leads:read", "contacts:write", "crm.v2_x-y:admin", "*:admin", "a:read"] {
            let scope: Scope = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(scope.to_string(), s);
        }
    }

    #[test]
    fn malformed_scopes_are_refused_with_the_reason() {
        let cases = [
            ("leads", ScopeError::MissingColon("leads".into())),
            ("leads:delete", ScopeError::UnknownAction("leads:delete".into())),
            ("Leads:read", ScopeError::InvalidResource("Leads:read".into())),
            (":read", ScopeError::InvalidResource(":read".into())),
            ("-leads:read", ScopeError::InvalidResource("-leads:read".into())),
            ("leads-:read", ScopeError::InvalidResource("leads-:read".into())),
            ("a b:read", ScopeError::InvalidResource("a b:read".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Scope>(), Err(expected), "input {input:?}");
        }
        assert_eq!("x".repeat(200).parse::<Scope>(), Err(ScopeError::TooLong));
    }

    #[test]
    fn write_does_not_imply_read_but_admin_allows_everything() {
        let write: Scope = "leads:write".parse().unwrap();
        assert!(write.allows("leads", Action::Write));
        assert!(!write.allows("leads", Action::Read));
        let admin: Scope = "leads:admin".parse().unwrap();
        for action in [Action::Read, Action::Write, Action::Admin] {
            assert!(admin.allows("leads", action));
            assert!(!admin.allows("contacts", action));
        }
        let all: Scope = "*:read".parse().unwrap();
        assert!(all.allows("anything", Action::Read));
        assert!(!all.allows("anything", Action::Write));
    }
}

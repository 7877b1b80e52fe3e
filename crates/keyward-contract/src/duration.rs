//! The duration grammar of ApiKey fields (`30d`, `720h`, `1h30m`, `90s`).
//!
//! Admission (an OpenAPI pattern plus CEL rules) and the operator must agree on
//! exactly one language, so this is a small parser for that language rather
//! than a more liberal general-purpose one: either whole days (`<n>d`), or
//! hours, minutes and seconds in that order, each optional but at least one.
//! CEL has no day unit, so the CRD's rules compare durations as whole seconds:
//! `<n>d` is `n * 86400`, anything else `duration(X).getSeconds()`;
//! [`CEL_SECONDS_MACRO`] is that expression. Integer arithmetic keeps the API
//! server's static cost estimate small: building a string from an integer
//! (`string(int(...)) + 'h'`) has no size bound there, and made every rule that
//! used it exceed the cost budget a hundredfold (docs/architecture.md).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The OpenAPI pattern that admission applies to every duration field.
///
/// The bounds keep every accepted value under Go's `time.Duration` maximum
/// (2562047h), which the API server's CEL `duration()` enforces. Zero is
/// refused separately (a CEL rule at admission, [`KeyDuration::from_str`] in code).
pub const DURATION_PATTERN: &str =
    r"^([0-9]{1,5}d|[0-9]{1,6}h([0-9]{1,7}m)?([0-9]{1,7}s)?|[0-9]{1,7}m([0-9]{1,7}s)?|[0-9]{1,7}s)$";

/// CEL that turns the duration string `X` into whole seconds (an `int`), days included.
pub const CEL_SECONDS_MACRO: &str =
    "(X.endsWith('d') ? int(X.substring(0, X.size() - 1)) * 86400 : duration(X).getSeconds())";

/// The CEL rule, for a duration field itself, that refuses zero. A value the pattern
/// admits is zero exactly when none of its digits is, so no conversion is needed.
#[must_use]
pub fn cel_positive_rule() -> String {
    "self.matches('[1-9]')".to_owned()
}

/// Build the CEL expression converting the field at `path` into whole seconds.
#[must_use]
pub fn cel_seconds(path: &str) -> String {
    CEL_SECONDS_MACRO.replace('X', path)
}

/// A duration written the way ApiKey fields accept it; prints back as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDuration {
    text: String,
    value: Duration,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration above zero such as 30d, 720h, 1h30m or 90s")]
pub struct DurationError(pub String);

impl KeyDuration {
    /// The length of time.
    #[must_use]
    pub fn get(&self) -> Duration {
        self.value
    }

    /// The text as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for KeyDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_owned());
        if let Some(days) = s.strip_suffix('d') {
            if days.is_empty() || days.len() > 5 || !days.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let days: u64 = days.parse().map_err(|_| err())?;
            if days == 0 {
                return Err(err());
            }
            return Ok(KeyDuration { text: s.to_owned(), value: Duration::from_secs(days * 86_400) });
        }
        // Hours, then minutes, then seconds; each at most once and in that order.
        let mut rest = s;
        let mut total: u64 = 0;
        let mut last_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let max_digits = if rest.as_bytes().get(digits) == Some(&b'h') { 6 } else { 7 };
            if digits == 0 || digits > max_digits || digits == rest.len() {
                return Err(err());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| err())?;
            let (rank, seconds) = match rest.as_bytes()[digits] {
                b'h' => (1, 3_600),
                b'm' => (2, 60),
                b's' => (3, 1),
                _ => return Err(err()),
            };
            if rank <= last_unit {
                return Err(err());
            }
            last_unit = rank;
            total += number * seconds;
            rest = &rest[digits + 1..];
        }
        if last_unit == 0 || total == 0 {
            return Err(err());
        }
        Ok(KeyDuration { text: s.to_owned(), value: Duration::from_secs(total) })
    }
}

impl fmt::Display for KeyDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<u64> {
        s.parse::<KeyDuration>().ok().map(|d| d.get().as_secs())
    }

    #[test]
    fn accepted_durations_have_the_expected_length() {
        let cases = [
            ("30d", 30 * 86_400),
            ("720h", 720 * 3_600),
            ("1h30m", 5_400),
            ("2h5s", 7_205),
            ("15m", 900),
            ("90s", 90),
            ("99999d", 99_999 * 86_400),
            ("999999h", 999_999 * 3_600),
        ];
        for (input, expected) in cases {
            assert_eq!(secs(input), Some(expected), "input {input:?}");
        }
    }

    #[test]
    fn everything_outside_the_grammar_is_refused() {
        let cases = [
            "", "d", "h", "30", "1d12h", "30m1h", "1h1h", "1.5h", "-1h", "1w", " 1h", "1h ", "1H", "0s", "0d", "0h0m",
            "100000d", "1000000h",
        ];
        for input in cases {
            assert_eq!(secs(input), None, "input {input:?} should be refused");
        }
    }

    #[test]
    fn the_admission_pattern_and_the_parser_agree() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        // The pattern admits zero; a CEL rule refuses it at admission, as the parser does.
        for input in
            ["30d", "720h", "1h30m", "90s", "", "1d12h", "30m1h", "1.5h", "1h1h", "5m10s", "100000d", "1000000h"]
        {
            assert_eq!(re.is_match(input), secs(input).is_some(), "input {input:?}");
        }
        for zero in ["0s", "0d", "0h0m0s"] {
            assert!(re.is_match(zero) && secs(zero).is_none(), "input {zero:?}");
        }
    }

    #[test]
    fn text_prints_back_as_written() {
        let d: KeyDuration = "1h30m".parse().unwrap();
        assert_eq!(d.to_string(), "1h30m");
    }
}

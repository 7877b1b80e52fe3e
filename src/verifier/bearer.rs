//! Reading a Bearer token out of the `Authorization` header values of one request.
//!
//! The rules, chosen so that every odd input has exactly one defined answer:
//!
//! - no `Authorization` header: [`BearerError::Missing`];
//! - more than one: malformed ([`BearerError::Duplicate`]); the header is not a
//!   list (RFC 9110 §11.6.2), and two credentials make the request ambiguous;
//! - longer than [`MAX_AUTHORIZATION_LEN`]: malformed ([`BearerError::TooLong`]);
//! - any byte outside visible ASCII, space and tab: malformed ([`BearerError::NotAscii`]);
//! - leading and trailing spaces and tabs are not part of a field value
//!   (RFC 9110 §5.5) and are ignored;
//! - the scheme is compared case-insensitively (RFC 9110 §11.1), so `bearer`
//!   and `BEARER` work; any other scheme is malformed ([`BearerError::WrongScheme`]);
//! - one or more spaces separate scheme and token (RFC 6750 §2.1: `1*SP`); a
//!   tab there, or no token, or anything after the token, is malformed
//!   ([`BearerError::BadSyntax`]).
//!
//! Errors never carry the header text: it may be a token.

/// Longest `Authorization` value looked at; a keyward token is under 70 characters.
pub const MAX_AUTHORIZATION_LEN: usize = 1024;

/// Why no Bearer token could be read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// The request has no `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// The request has more than one `Authorization` header.
    #[error("more than one Authorization header")]
    Duplicate,
    /// The header value is longer than [`MAX_AUTHORIZATION_LEN`].
    #[error("Authorization header is longer than {MAX_AUTHORIZATION_LEN} bytes")]
    TooLong,
    /// The header value holds bytes other than visible ASCII, space and tab.
    #[error("Authorization header has bytes outside visible ASCII")]
    NotAscii,
    /// The scheme is not `Bearer` (in any case).
    #[error("Authorization scheme is not Bearer")]
    WrongScheme,
    /// The value is not `Bearer`, spaces, and one token.
    #[error("Authorization header is not of the form 'Bearer <token>'")]
    BadSyntax,
}

/// The token text of the only `Authorization` header among `values`, checked as described in the module docs.
///
/// The text is not yet checked as a keyward token; [`crate::token::Token::parse`] does that.
pub fn bearer_token<'a, I>(values: I) -> Result<&'a str, BearerError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut values = values.into_iter();
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Duplicate);
    }
    parse_value(value)
}

fn parse_value(value: &[u8]) -> Result<&str, BearerError> {
    // Byte-level and single-pass where it can be: this runs on every request.
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(BearerError::TooLong);
    }
    if !value.iter().all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t') {
        return Err(BearerError::NotAscii);
    }
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let Some(start) = value.iter().position(|b| !blank(b)) else {
        return Err(BearerError::Missing);
    };
    let end = value.iter().rposition(|b| !blank(b)).map_or(value.len(), |last| last + 1);
    let text = &value[start..end];
    let (scheme, rest) = text.split_at(text.len().min(6));
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::WrongScheme);
    }
    match rest.first() {
        None | Some(b'\t') => return Err(BearerError::BadSyntax),
        Some(b' ') => {}
        // `Bearerxyz`: a longer scheme name, not Bearer.
        Some(_) => return Err(BearerError::WrongScheme),
    }
    let token = &rest[rest.iter().position(|b| *b != b' ').unwrap_or(rest.len())..];
    if token.is_empty() || token.iter().any(blank) {
        return Err(BearerError::BadSyntax);
    }
    // Every byte is visible ASCII (checked above), so this cannot fail.
    std::str::from_utf8(token).map_err(|_| BearerError::NotAscii)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(values: &[&str]) -> Result<String, BearerError> {
        bearer_token(values.iter().map(|v| v.as_bytes())).map(str::to_owned)
    }

    #[test]
    fn each_shape_of_header_gets_its_defined_answer() {
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        let cases: &[(&[&str], Result<&str, BearerError>)] = &[
            (&["Bearer abc"], Ok("abc")),
            (&["bearer abc"], Ok("abc")),
            (&["BEARER abc"], Ok("abc")),
            (&["BeArEr abc"], Ok("abc")),
            (&["Bearer    abc"], Ok("abc")),
            (&["  Bearer abc \t"], Ok("abc")),
            (&[], Err(BearerError::Missing)),
            (&[""], Err(BearerError::Missing)),
            (&["   "], Err(BearerError::Missing)),
            (&["Bearer abc", "Bearer abc"], Err(BearerError::Duplicate)),
            (&["Bearer abc", ""], Err(BearerError::Duplicate)),
            (&[long.as_str()], Err(BearerError::TooLong)),
            (&["Bearer ab\u{e9}"], Err(BearerError::NotAscii)),
            (&["Bearer a\u{0}b"], Err(BearerError::NotAscii)),
            (&["Bearer a\nb"], Err(BearerError::NotAscii)),
            (&["Basic dXNlcjpwYXNz"], Err(BearerError::WrongScheme)),
            (&["Bearerabc"], Err(BearerError::WrongScheme)),
            (&["abc"], Err(BearerError::WrongScheme)),
            (&["Bearer"], Err(BearerError::BadSyntax)),
            (&["Bearer\tabc"], Err(BearerError::BadSyntax)),
            (&["Bearer abc def"], Err(BearerError::BadSyntax)),
            (&["Bearer abc\tdef"], Err(BearerError::BadSyntax)),
        ];
        for (values, expected) in cases {
            assert_eq!(parse(values), expected.map(str::to_owned), "values {values:?}");
        }
    }

    #[test]
    fn errors_never_hold_the_header_text() {
        let secret = "kw_SECRETSECRETSECRETSECRETSECRETSEC000000";
        for values in [vec![format!("Basic {secret}")], vec![format!("Bearer {secret} x")]] {
            let err = bearer_token(values.iter().map(String::as_bytes)).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_header_values_never_panic_and_ok_tokens_are_clean(
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..3)
        ) {
            if let Ok(token) = bearer_token(values.iter().map(Vec::as_slice)) {
                prop_assert!(!token.is_empty());
                prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
            }
        }

        #[test]
        fn any_scheme_case_and_spacing_yields_the_token(
            scheme in "[bB][eE][aA][rR][eE][rR]", lead in "[ \t]{0,3}", gap in " {1,4}", trail in "[ \t]{0,3}",
            token in "[!-~]{1,60}"
        ) {
            let value = format!("{lead}{scheme}{gap}{token}{trail}");
            prop_assert_eq!(parse(&[&value]), Ok(token));
        }
    }
}

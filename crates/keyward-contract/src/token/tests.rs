use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[test]
fn a_generated_token_has_the_documented_shape() {
    let token = Token::generate(&prefix("acme_live"), &mut seeded(1));
    let text = token.expose();
    assert!(text.starts_with("acme_live_"), "{}", token.display_prefix());
    assert_eq!(text.len(), "acme_live_".len() + RANDOM_LEN + CHECKSUM_LEN);
    assert!(regex_lite::Regex::new(SCANNER_REGEX).unwrap().is_match(text));
    assert_eq!(Token::parse(text), Ok(token.clone()));
    assert_eq!(token.prefix(), "acme_live");
    assert_eq!(token.display_prefix().len(), "acme_live_".len() + DISPLAY_RANDOM_CHARS);
}

#[test]
fn tokens_from_the_os_generator_differ() {
    let mut rng = os_rng();
    let a = Token::generate(&Prefix::default(), &mut rng);
    let b = Token::generate(&Prefix::default(), &mut rng);
    assert_ne!(a, b);
}

#[test]
fn debug_and_display_never_show_the_token() {
    let token = Token::generate(&prefix("kw"), &mut seeded(2));
    let body = &token.expose()[3..];
    for shown in [format!("{token:?}"), format!("{token}"), format!("{:?}", Some(&token))] {
        assert!(!shown.contains(body), "leaked in {shown:?}");
        assert!(shown.contains("redacted"), "{shown:?}");
    }
}

#[test]
fn each_kind_of_malformed_token_gets_its_own_error() {
    let good = Token::generate(&prefix("kw"), &mut seeded(3));
    let text = good.expose().to_owned();
    let body = &text[3..];
    let cases: Vec<(String, FormatError)> = vec![
        (body.to_owned(), FormatError::MissingSeparator),
        (format!("KW_{body}"), FormatError::InvalidPrefix(PrefixError::Invalid)),
        (format!("_{body}"), FormatError::InvalidPrefix(PrefixError::Empty)),
        (format!("kw_{}!", &body[1..]), FormatError::InvalidCharacter),
        (format!("{text}a"), FormatError::WrongLength { found: 40, expected: 39 }),
        (text[..text.len() - 1].to_owned(), FormatError::WrongLength { found: 38, expected: 39 }),
        (format!("kx_{body}"), FormatError::ChecksumMismatch),
    ];
    for (input, expected) in cases {
        assert_eq!(Token::parse(&input).err(), Some(expected), "input {input:?}");
    }
    assert_eq!(
        Token::parse_with_prefix(&text, &prefix("acme")).err(),
        Some(FormatError::WrongPrefix { expected: "acme".into() })
    );
}

#[test]
fn prefix_errors_never_quote_the_input() {
    for input in ["Ab9SecretValue12_xyz", "UPPER_abc"] {
        let message = Token::parse(input).unwrap_err().to_string();
        assert!(!message.contains("Secret") && !message.contains("UPPER"), "{message}");
    }
}

#[test]
fn errors_never_contain_the_token() {
    let token = Token::generate(&prefix("kw"), &mut seeded(4));
    let mut broken = token.expose().to_owned();
    broken.push('x');
    let message = Token::parse(&broken).unwrap_err().to_string();
    assert!(!message.contains(&broken[3..20]), "{message}");
}

#[test]
fn hash_is_sha256_of_the_whole_token_in_lowercase_hex() {
    // Known answer, from `printf kw_test | sha256sum`.
    let hash = KeyHash::of_token_text("kw_test");
    assert_eq!(hash.to_string(), "sha256:9e97f1bd3e53a029b06261f700c740a33036b20f9ddcb7516fa320fcb563d529");
    assert_eq!(hash.to_string().parse::<KeyHash>(), Ok(hash));
    assert_eq!(hash.key_id().as_str(), "9e97f1bd3e53");
}

#[test]
fn malformed_hashes_are_refused() {
    assert_eq!("abc".parse::<KeyHash>(), Err(HashParseError::MissingAlgorithm));
    assert_eq!("sha256:abc".parse::<KeyHash>(), Err(HashParseError::InvalidHex));
    let upper = format!("sha256:{}", "A".repeat(64));
    assert_eq!(upper.parse::<KeyHash>(), Err(HashParseError::InvalidHex));
}

#[test]
fn prefixes_follow_the_admission_pattern() {
    let re = regex_lite::Regex::new(PREFIX_PATTERN).unwrap();
    for input in ["kw", "acme_live", "a1", "a", "a_b_c", "", "_a", "a_", "a__b", "Acme", "1a", "a-b", &"a".repeat(25)] {
        assert_eq!(re.is_match(input), input.parse::<Prefix>().is_ok(), "input {input:?}");
    }
}

proptest! {
    #[test]
    fn every_generated_token_parses(seed in any::<u64>(), p in "[a-z]([a-z0-9]|_[a-z0-9]){0,10}") {
        let token = Token::generate(&prefix(&p), &mut seeded(seed));
        prop_assert!(Token::parse_with_prefix(token.expose(), &prefix(&p)).is_ok());
    }

    #[test]
    fn any_single_character_change_is_rejected(seed in any::<u64>(), pos in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let token = Token::generate(&prefix("kw"), &mut seeded(seed));
        let mut chars: Vec<char> = token.expose().chars().collect();
        let i = pos.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        prop_assert!(Token::parse(&changed).is_err(), "accepted a changed token");
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,80}") {
        let _ = Token::parse(&text);
    }
}

#[test]
fn redact_hides_token_bodies_and_keeps_everything_else() {
    let token = Token::generate(&prefix("acme_live"), &mut seeded(5));
    let text = format!("unknown variant `{}`, expected one of é and kw_short", token.expose());
    let redacted = redact(&text);
    assert_eq!(redacted, "unknown variant `acme_live_<redacted>`, expected one of é and kw_short");
}

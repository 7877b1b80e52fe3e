//! `keyward token`: mint, hash and check tokens.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::token::{Prefix, Token, os_rng};

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Print one new token on stdout.
    New {
        /// Token prefix: lowercase letters, digits and single underscores.
        #[arg(long, default_value = "kw")]
        prefix: String,
    },
    /// Read a token from stdin and print its hash (`sha256:<hex>`).
    Hash {
        /// Also print the key id, tab-separated after the hash.
        #[arg(long)]
        key_id: bool,
    },
    /// Read a token from stdin; exit 0 if its format and checksum are valid.
    Check {
        /// Also require this prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
}

pub(super) fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::New { prefix } => {
            let prefix: Prefix = prefix.parse().context("--prefix")?;
            let token = Token::generate(&prefix, &mut os_rng());
            super::print_stdout(&format!("{}\n", token.expose()))
        }
        TokenCommand::Hash { key_id } => {
            let token = read_token(None)?;
            let hash = token.hash();
            let line = if key_id { format!("{hash}\t{}\n", hash.key_id()) } else { format!("{hash}\n") };
            super::print_stdout(&line)
        }
        TokenCommand::Check { prefix } => {
            let prefix = prefix.map(|p| p.parse::<Prefix>()).transpose().context("--prefix")?;
            read_token(prefix.as_ref())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Read one token from stdin; a single trailing newline is allowed.
fn read_token(prefix: Option<&Prefix>) -> anyhow::Result<Token> {
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin().take(4096).read_to_string(&mut input).context("reading the token from stdin")?;
    let text = input.strip_suffix('\n').unwrap_or(&input);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let parsed = match prefix {
        Some(p) => Token::parse_with_prefix(text, p),
        None => Token::parse(text),
    };
    parsed.context("not a valid keyward token")
}

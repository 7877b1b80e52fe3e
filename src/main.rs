//! The keyward binary: parses the command line and hands over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = keyward::cli::Cli::parse();
    keyward::cli::run(cli)
}

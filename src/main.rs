//! The keyward binary: parses the command line and hands over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // `keyward ...`, or `kubectl keyward ...` when started as `kubectl-keyward`.
    let cli = keyward::cli::Cli::from_invocation();
    keyward::cli::run(cli)
}

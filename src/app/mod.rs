//! The commands, one module each: turn a validated plan into a run and a human (stderr) or
//! JSON (stdout) report.

mod bench;
mod copy;
mod demo;
mod generate;
mod status;
mod verify;

use std::io::Write;

use crate::cli::{Cli, Command};
use crate::error::{Error, Result};
use crate::pipeline::Cancel;

/// Exit code of a `verify` that found missing or doubled rows.
pub const EXIT_VERIFY_FAILED: i32 = 3;

/// Exit code of a `status` that found a source behind its limits or never synced.
pub const EXIT_LAGGING: i32 = 5;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli, cancel: &Cancel) -> Result<i32> {
    match cli.command {
        Command::Generate(a) => generate::run(&a).map(|_| 0),
        Command::Copy(a) => copy::run(&a, cancel).map(|_| 0),
        Command::Verify(a) => verify::run(&a, cancel),
        Command::Status(a) => status::run(&a, cancel),
        Command::Demo(a) => demo::run(&a, cancel),
        Command::Bench(a) => bench::run(&a, cancel).map(|_| 0),
    }
}

/// Prints a report as JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (perfcopy ... --json | head) is not an error.
    let _ = writeln!(out, "{text}");
    Ok(())
}

pub(crate) use crate::pipeline::human::short;

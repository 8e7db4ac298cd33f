//! `pgmux demo`: a throwaway local PostgreSQL primary + replica with pgmux in front, until Ctrl-C.

use std::process::ExitCode;

pub fn run(_port: u16) -> ExitCode {
    ExitCode::FAILURE
}

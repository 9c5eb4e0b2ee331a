//! The one helper layer of the CLI tests: run the `farmlog` binary as a
//! user would and capture its exit code and output.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; run: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "the binary panicked: {self:#?}");
        self
    }
}

pub fn farmlog(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_farmlog"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the farmlog binary runs");
    Run {
        code: output.status.code().expect("farmlog exits rather than being killed"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

pub fn path(dir: &Path) -> &str {
    dir.to_str().expect("temporary paths are UTF-8")
}

/// Each line of stdout, parsed as one JSON value.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("line {line:?} is not JSON: {error}")))
        .collect()
}

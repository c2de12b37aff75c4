//! Helpers shared by the `squall` black-box tests.

#[allow(dead_code)]
pub mod chaos;

use std::path::PathBuf;
use std::process::Command;

/// The WordCount binary, built beside the tests (built here if missing).
#[allow(dead_code)]
pub fn word_count() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("word-count");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "squall-examples", "--bin", "word-count"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

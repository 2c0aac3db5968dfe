//! Tools a test runs from the host's PATH.

use std::process::Command;

/// Fails the test (never skips it) when `tool` is not on PATH, naming the
/// Debian package that scripts/setup-host installs it from.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not on PATH: this test needs the real {tool} (Debian package {package}; scripts/setup-host installs it)"
    );
}

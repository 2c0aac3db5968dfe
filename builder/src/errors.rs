//! Error classification for exit codes: 2 for input the user must fix,
//! 1 for everything else.

use std::fmt;

/// Input the user must fix (a flag, a file, a name): exit code 2.
/// Spec problems use [`crate::spec::SpecError`], which maps to 2 as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Shorthand: `return Err(bad_input(format!(...)))`.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// Exit code for an error chain: 2 when any cause is bad input.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let bad = err.chain().any(|e| {
        e.downcast_ref::<BadInput>().is_some()
            || e.downcast_ref::<crate::spec::SpecError>().is_some()
    });
    if bad {
        2
    } else {
        1
    }
}

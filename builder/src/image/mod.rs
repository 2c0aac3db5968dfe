//! Image assembly: the `hakube-build --profile ROLE` pipeline.
//! (Owned by the image work; this is the agreed interface.)

use crate::cli::BuildArgs;
use anyhow::Result;

/// `hakube-build --profile ROLE ...`
pub fn run(_args: &BuildArgs) -> Result<()> {
    anyhow::bail!("build: not implemented yet")
}

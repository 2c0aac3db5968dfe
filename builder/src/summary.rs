//! `hakube-build summary`: the resolved cluster, without building anything.

use crate::cli::SummaryArgs;
use anyhow::Result;

pub fn run(args: &SummaryArgs) -> Result<()> {
    let cluster = crate::spec::load(args.cluster.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
    } else {
        println!("{cluster:#?}");
    }
    Ok(())
}

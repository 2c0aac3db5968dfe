//! Cluster spec: parsing, validation and resolution into [`model::Cluster`].
//!
//! `load` is the only way to obtain a `Cluster`. Every refusal is a
//! [`SpecError`] naming the file, the field path and what was expected.

pub mod model;
mod node;
pub mod raw;
pub mod resolve;
pub mod types;
mod validate;

pub use model::{Cluster, Node, NodeNetwork, SpecSource};

use std::fmt;
use std::path::Path;

/// The embedded default cluster, used when no `--cluster` is given.
pub const DEFAULT_CLUSTER_YAML: &str = include_str!("../../../profiles/default-cluster.yaml");
/// Role profiles, embedded so the binary works from any directory.
pub const MASTER_PROFILE_YAML: &str = include_str!("../../../profiles/master.yaml");
pub const WORKER_PROFILE_YAML: &str = include_str!("../../../profiles/worker.yaml");
pub const ETCD_PROFILE_YAML: &str = include_str!("../../../profiles/etcd.yaml");

/// A spec the user must fix. Maps to exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file (or `<embedded default cluster>`).
    pub file: String,
    /// Field path, e.g. `nodes[2].network.address`; empty for whole-file errors.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

impl std::error::Error for SpecError {}

/// Loads the spec at `path`, or the embedded default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Cluster, SpecError> {
    match path {
        None => parse(DEFAULT_CLUSTER_YAML, SpecSource::Embedded),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| SpecError {
                file: p.display().to_string(),
                field: String::new(),
                message: format!("cannot read the cluster spec: {e}"),
            })?;
            parse(&text, SpecSource::File(p.to_path_buf()))
        }
    }
}

/// Parses and resolves spec text.
pub fn parse(text: &str, source: SpecSource) -> Result<Cluster, SpecError> {
    resolve::resolve(text, source)
}

//! The node's record of OS updates (`/var/lib/hakube/update/state.json`):
//! what was installed, what the health gate found, what was rolled back. It
//! lives on /var, so it survives both slots; `status` reports the last one.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Events kept (oldest dropped first).
const KEEP: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// RFC 3339.
    pub at: String,
    /// upgrade, health, rollback
    pub action: String,
    /// The version it concerns.
    pub version: String,
    /// installed, healthy, unhealthy: ..., marked bad, ...
    pub result: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub events: Vec<Event>,
}

pub fn path(root: &Path) -> PathBuf {
    root.join(hakube_os_layout::STATE_FILE)
}

pub fn load(root: &Path) -> Result<State> {
    let p = path(root);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Appends `event` and writes the file atomically (temp file, fsync, rename).
pub fn record(root: &Path, event: Event) -> Result<()> {
    let mut s = load(root)?;
    s.events.push(event);
    let excess = s.events.len().saturating_sub(KEEP);
    s.events.drain(..excess);
    let p = path(root);
    let dir = p.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = p.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(&s)?;
    text.push('\n');
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &p)
        .with_context(|| format!("renaming {} to {}", tmp.display(), p.display()))
}

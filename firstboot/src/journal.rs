//! The journal: what firstboot has done on this node, kept in
//! `<root>/var/lib/hakube/firstboot/journal.json`. It is rewritten atomically
//! (temp file, fsync, rename, fsync of the directory) at every state change,
//! so after a power cut it says exactly which steps completed.

use anyhow::{Context, Result};
use hakube_node_profile::Role;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Journal location relative to the root.
pub const JOURNAL_PATH: &str = "var/lib/hakube/firstboot/journal.json";
/// The journal's mode: root's alone.
pub const JOURNAL_MODE: u32 = 0o600;
const JOURNAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    /// Started and not finished: either running now or interrupted by a crash.
    Running,
    Done,
    Failed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub name: String,
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    /// What the step found or did, in a few words ("skipped: ...", "joined").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl StepRecord {
    fn new(name: &str) -> StepRecord {
        StepRecord {
            name: name.to_string(),
            state: StepState::Pending,
            started: None,
            finished: None,
            duration_ms: None,
            attempts: 0,
            outcome: None,
            last_error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalData {
    pub version: u32,
    pub node: String,
    pub role: Role,
    pub steps: Vec<StepRecord>,
    /// Facts decided once and relied on later (e.g. `decision` = init|join,
    /// the apiserver certificate fingerprint before `kubeadm init`).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

/// The journal of one node, bound to its file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    pub data: JournalData,
}

impl Journal {
    pub fn path_under(root: &Path) -> PathBuf {
        root.join(JOURNAL_PATH)
    }

    /// Reads the journal if it exists, else starts an empty one (not yet written).
    /// Steps in `plan` missing from it are added as pending, in plan order.
    pub fn open(root: &Path, node: &str, role: Role, plan: &[&str]) -> Result<Journal> {
        let path = Self::path_under(root);
        let mut data = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<JournalData>(&text)
                .with_context(|| format!("parsing the firstboot journal {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JournalData {
                version: JOURNAL_VERSION,
                node: node.to_string(),
                role,
                steps: Vec::new(),
                notes: BTreeMap::new(),
            },
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the firstboot journal {}", path.display()))
            }
        };
        if data.node != node || data.role != role {
            anyhow::bail!(
                "the firstboot journal {} belongs to node {} ({}), but the profile says {} ({}); \
                 this disk was not built for this node: rebuild the image or remove the journal deliberately",
                path.display(),
                data.node,
                data.role,
                node,
                role
            );
        }
        let mut steps = Vec::new();
        for name in plan {
            let rec = data
                .steps
                .iter()
                .find(|s| s.name == *name)
                .cloned()
                .unwrap_or_else(|| StepRecord::new(name));
            steps.push(rec);
        }
        data.steps = steps;
        Ok(Journal { path, data })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.data.steps.iter().find(|s| s.name == name)
    }

    pub fn step_mut(&mut self, name: &str) -> &mut StepRecord {
        let i = match self.data.steps.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.data.steps.push(StepRecord::new(name));
                self.data.steps.len() - 1
            }
        };
        &mut self.data.steps[i]
    }

    pub fn note(&self, key: &str) -> Option<&str> {
        self.data.notes.get(key).map(String::as_str)
    }

    /// Records a fact and writes the journal at once.
    pub fn set_note(&mut self, key: &str, value: &str) -> Result<()> {
        self.data.notes.insert(key.to_string(), value.to_string());
        self.save()
    }

    /// Writes the journal atomically and durably, readable by root alone
    /// (its notes and errors describe the cluster's credentials' state).
    pub fn save(&self) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.data).context("serialising journal")?;
        text.push('\n');
        write_atomic_mode(&self.path, text.as_bytes(), JOURNAL_MODE)
    }
}

/// Temp file in the same directory, fsync, rename over the target, fsync the
/// directory: after a crash the file is either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_inner(path, bytes, None)
}

/// [`write_atomic`] with the file's mode set before it gets its final name
/// (0600 for a kubeconfig holding a client key, as kubeadm writes it).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_inner(path, bytes, Some(mode))
}

fn write_atomic_inner(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        if let Some(m) = mode {
            f.set_permissions(fs::Permissions::from_mode(m))
                .with_context(|| format!("setting the mode of {}", tmp.display()))?;
        }
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_plan_sync() {
        let root = tempfile::tempdir().unwrap();
        let mut j = Journal::open(root.path(), "e1", Role::Etcd, &["a", "b"]).unwrap();
        j.step_mut("a").state = StepState::Done;
        j.set_note("decision", "init").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(root.path().join(JOURNAL_PATH))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, JOURNAL_MODE, "the journal is root's alone");
        let again = Journal::open(root.path(), "e1", Role::Etcd, &["a", "b", "c"]).unwrap();
        assert_eq!(again.step("a").unwrap().state, StepState::Done);
        assert_eq!(again.step("c").unwrap().state, StepState::Pending);
        assert_eq!(again.note("decision"), Some("init"));
        let names: Vec<_> = again.data.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // no temp file left behind
        let dir = Journal::path_under(root.path());
        let leftovers: Vec<_> = fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn journal_of_another_node_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let j = Journal::open(root.path(), "e1", Role::Etcd, &["a"]).unwrap();
        j.save().unwrap();
        let err = Journal::open(root.path(), "m1", Role::Master, &["a"]).unwrap_err();
        assert!(format!("{err:#}").contains("belongs to node e1"), "{err:#}");
    }
}

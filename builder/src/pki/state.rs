//! The cluster state directory (`.hakube/<cluster>` by default): the CAs,
//! keys, bootstrap token and issued leaf certificates every later build
//! reuses. Directories are 0700 and files 0600, written atomically; a
//! directory that belongs to another cluster is refused.

use crate::errors::bad_input;
use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use time::OffsetDateTime;

const MARKER: &str = "state.json";
const FORMAT: u32 = 1;

/// `state.json`: which cluster this directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Marker {
    format: u32,
    cluster: String,
    /// RFC 3339, informational.
    created: String,
}

const LOCK: &str = ".lock";

/// An opened, checked state directory, exclusively locked (flock on
/// `.lock`) for as long as it is open, so two builds never create two CAs.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    _lock: Option<Flock<fs::File>>,
}

impl StateDir {
    /// Opens `root` for `cluster`, creating it (0700) when missing or empty.
    /// Refuses (bad input) a directory of another cluster, one that is not a
    /// hakube state directory, or one owned by another user; group/other
    /// permission bits are removed with a warning.
    pub fn open(root: &Path, cluster: &str, now: OffsetDateTime) -> Result<StateDir> {
        let mut dir = StateDir {
            root: root.to_path_buf(),
            _lock: None,
        };
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir_all(root)?;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("inspecting state directory {}", root.display()))
            }
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(bad_input(format!(
                        "state directory {} is not a directory (a directory created by hakube-build expected; pass another --state)",
                        root.display()
                    )));
                }
                dir.check_owner_and_tighten(root, &meta)?;
            }
        }
        // Locked before anything is read or written, so a temporary found
        // now belongs to a build that was killed: remove it (a kill while
        // state.json was written would otherwise make the directory look
        // foreign).
        dir._lock = Some(lock(root)?);
        remove_temporaries(root)?;
        let marker_path = root.join(MARKER);
        if marker_path.exists() {
            let text = fs::read_to_string(&marker_path)
                .with_context(|| format!("reading {}", marker_path.display()))?;
            let marker: Marker = serde_json::from_str(&text).map_err(|e| {
                bad_input(format!(
                    "{} is not a hakube state marker ({e}); pass another --state",
                    marker_path.display()
                ))
            })?;
            if marker.cluster != cluster {
                return Err(bad_input(format!(
                    "state directory {} belongs to cluster {:?}, not {:?}: pass --state with this cluster's directory (sharing one would mix two clusters' CAs)",
                    root.display(),
                    marker.cluster,
                    cluster
                )));
            }
            if marker.format != FORMAT {
                return Err(bad_input(format!(
                    "state directory {} has format {}, this hakube-build understands format {FORMAT}",
                    root.display(),
                    marker.format
                )));
            }
        } else {
            let non_empty = fs::read_dir(root)
                .with_context(|| format!("listing {}", root.display()))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name() != LOCK);
            if non_empty {
                return Err(bad_input(format!(
                    "{} is not empty and has no {MARKER}: not a hakube state directory; pass an empty or new --state directory",
                    root.display()
                )));
            }
            let created = now
                .format(&time::format_description::well_known::Rfc3339)
                .context("formatting the creation time")?;
            let marker = Marker {
                format: FORMAT,
                cluster: cluster.to_string(),
                created,
            };
            let json = serde_json::to_string_pretty(&marker).context("serialising state.json")?;
            dir.write(MARKER, format!("{json}\n").as_bytes())?;
        }
        dir.tighten_tree(root)?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &str) -> PathBuf {
        let rel = Path::new(rel);
        assert!(
            rel.components().all(|c| matches!(c, Component::Normal(_))),
            "state path must be relative: {}",
            rel.display()
        );
        self.root.join(rel)
    }

    /// Reads `rel`, or `None` when it does not exist.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(rel);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Reads `rel` as UTF-8, or `None` when it does not exist.
    pub fn read_string(&self, rel: &str) -> Result<Option<String>> {
        match self.read(rel)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .with_context(|| format!("{} is not UTF-8", self.path(rel).display())),
        }
    }

    /// Writes `rel` atomically with mode 0600: a temporary file in the same
    /// directory, flushed to disk, then renamed over the target, so a crash
    /// never leaves a half-written key behind.
    pub fn write(&self, rel: &str, contents: &[u8]) -> Result<()> {
        let p = self.path(rel);
        let parent = p.parent().unwrap_or(&self.root).to_path_buf();
        create_private_dir_all(&parent)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&parent)
            .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
        tmp.write_all(contents)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("flushing {}", tmp.path().display()))?;
        tmp.persist(&p)
            .with_context(|| format!("renaming into {}", p.display()))?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn check_owner_and_tighten(&self, path: &Path, meta: &fs::Metadata) -> Result<()> {
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(bad_input(format!(
                "{} is owned by uid {}, not by this user (uid {me}): refusing to keep cluster secrets there",
                path.display(),
                meta.uid()
            )));
        }
        Ok(())
    }

    /// Removes group/other bits everywhere under the root (0700 dirs, 0600 files).
    fn tighten_tree(&self, dir: &Path) -> Result<()> {
        let meta =
            fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
        self.check_owner_and_tighten(dir, &meta)?;
        tighten(dir, &meta, 0o700)?;
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let p = entry.path();
            let meta =
                fs::symlink_metadata(&p).with_context(|| format!("inspecting {}", p.display()))?;
            if meta.file_type().is_symlink() {
                return Err(bad_input(format!(
                    "{} is a symbolic link: the state directory must hold only regular files",
                    p.display()
                )));
            } else if meta.is_dir() {
                self.tighten_tree(&p)?;
            } else {
                self.check_owner_and_tighten(&p, &meta)?;
                tighten(&p, &meta, 0o600)?;
            }
        }
        Ok(())
    }
}

/// Removes the `.tmp-*` files [`StateDir::write`] leaves when killed.
fn remove_temporaries(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            remove_temporaries(&entry.path())?;
        } else if ft.is_file() && entry.file_name().to_string_lossy().starts_with(".tmp-") {
            tracing::info!(
                "removing {}, left by an interrupted build",
                entry.path().display()
            );
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Takes the directory's lock, waiting (with a message) while another
/// hakube-build holds it.
fn lock(root: &Path) -> Result<Flock<fs::File>> {
    let path = root.join(LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((file, Errno::EWOULDBLOCK)) => {
            tracing::warn!("waiting for another hakube-build using {}", root.display());
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
        }
        Err((_, e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

fn tighten(path: &Path, meta: &fs::Metadata, want: u32) -> Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode != want {
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} had mode {mode:04o}; tightened to {want:04o} (cluster secrets)",
                path.display()
            );
        }
        fs::set_permissions(path, fs::Permissions::from_mode(want))
            .with_context(|| format!("setting mode {want:04o} on {}", path.display()))?;
    }
    Ok(())
}

/// `mkdir -p` where every directory created is 0700 from the start (parents
/// outside the state directory, e.g. `.hakube`, too): a kill between a
/// `mkdir` and a `chmod` once left a 0755 node directory (crash_safety).
fn create_private_dir_all(dir: &Path) -> Result<()> {
    crate::private::create_dir_all(dir)
}

//! Bounded caches: after a successful build, each keyed cache under
//! `--cache-dir` keeps the entries the build used plus the `--cache-keep`
//! most recently used others; the rest are deleted (docs/cache.md).
//!
//! The keyed caches, each entry named by its SHA-256 cache key:
//! - `rootfs/<key>.tar` + `<key>.json`: base root file systems
//!   ([`crate::image::base`]); the `.json` is the entry's marker;
//! - `osroot/<key>/`: OS roots ([`crate::image::osroot`]);
//! - `containerd-store/<key>/`: containerd image stores
//!   ([`crate::images::store`]).
//!
//! The content-addressed downloads (`artifacts/sha256/`) are not pruned:
//! they are small next to these (tens of MB per Kubernetes version), shared
//! by every cluster and version that pins the same file, and a pinned file
//! deleted there would have to be fetched again, from a mirror that may be
//! gone.
//!
//! Safety against concurrent builds sharing the cache: builds hold each
//! entry they use with a [`Lease`] (a shared flock, and the entry's use
//! time set); the pruner deletes only an entry it can lock exclusively and
//! whose use time is older than its own build's start, and never looks at
//! names that are not cache keys (`.build-*` work directories and other
//! temporaries of builds in progress).

pub mod lease;
pub mod select;

pub use lease::Lease;
pub use select::{select, Candidate, Selection};

use crate::private::WorkDir;
use anyhow::{Context, Result};
use lease::Identity;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many unused entries per kind a build keeps unless told otherwise.
pub const DEFAULT_KEEP: u32 = 3;

/// A keyed cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Rootfs,
    Osroot,
    ContainerdStore,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Rootfs, Kind::Osroot, Kind::ContainerdStore];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rootfs => "rootfs",
            Kind::Osroot => "osroot",
            Kind::ContainerdStore => "containerd-store",
        }
    }

    /// The kind's directory under the cache directory.
    pub fn dir(self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(match self {
            Kind::Rootfs => crate::image::base::CACHE_SUBDIR,
            Kind::Osroot => crate::image::osroot::CACHE_SUBDIR,
            Kind::ContainerdStore => crate::images::store::CACHE_SUBDIR,
        })
    }

    /// The path an entry's lease locks and whose mtime is its use time: the
    /// entry's directory, or a base rootfs's metadata (written last, so it
    /// exists exactly when the entry is complete).
    pub fn marker(self, kind_dir: &Path, key: &str) -> PathBuf {
        match self {
            Kind::Rootfs => kind_dir.join(format!("{key}.json")),
            Kind::Osroot | Kind::ContainerdStore => kind_dir.join(key),
        }
    }

    /// The names that make up an entry, in the order they are removed: the
    /// marker first, so an interrupted removal never leaves a marker whose
    /// entry is partly gone.
    fn parts(self, key: &str) -> Vec<String> {
        match self {
            Kind::Rootfs => vec![format!("{key}.json"), format!("{key}.tar")],
            Kind::Osroot | Kind::ContainerdStore => vec![key.to_string()],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The entries a build used, per kind: never pruned by that build, and held
/// (their leases kept) until the build ends, so that an entry used by one
/// node and needed again by the next stays held in between.
#[derive(Debug, Default)]
pub struct Used {
    keys: BTreeMap<Kind, BTreeSet<String>>,
    leases: Vec<Arc<Lease>>,
}

impl Used {
    pub fn add(&mut self, kind: Kind, key: &str, lease: Option<&Arc<Lease>>) {
        self.keys.entry(kind).or_default().insert(key.to_string());
        self.leases.extend(lease.cloned());
    }

    pub fn keys(&self, kind: Kind) -> BTreeSet<String> {
        self.keys.get(&kind).cloned().unwrap_or_default()
    }
}

/// What pruning one kind did (a line of the build's output, and `--json`'s
/// `cache.pruned`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub kind: Kind,
    /// Keys of the entries deleted (and of leftovers of interrupted builds).
    pub removed: Vec<String>,
    pub removed_bytes: u64,
    /// Entries left, this build's included.
    pub kept: usize,
    /// Of those, entries past the limit left alone because another build
    /// was using them.
    pub busy: usize,
}

impl fmt::Display for Pruned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.removed.len() {
            0 => write!(f, "cache: nothing to prune in {}", self.kind)?,
            1 => write!(f, "cache: pruned 1 {} entry", self.kind)?,
            n => write!(f, "cache: pruned {n} {} entries", self.kind)?,
        }
        if !self.removed.is_empty() {
            write!(f, " ({})", human_bytes(self.removed_bytes))?;
        }
        write!(f, ", kept {}", self.kept)?;
        if self.busy > 0 {
            write!(f, " ({} in use by another build)", self.busy)?;
        }
        Ok(())
    }
}

/// Decimal units, as `df -H` and disk vendors count.
pub fn human_bytes(n: u64) -> String {
    const MB: u64 = 1_000_000;
    const GB: u64 = 1_000 * MB;
    if n >= 10 * GB {
        format!("{} GB", (n + GB / 2) / GB)
    } else if n >= GB {
        format!("{:.1} GB", n as f64 / GB as f64)
    } else {
        format!("{} MB", (n + MB / 2) / MB)
    }
}

/// Prunes every keyed cache under `cache_dir` (see [`prune`]). A kind that
/// fails is reported and the others still run: pruning never fails a build
/// whose images are made.
pub fn prune_all(
    cache_dir: &Path,
    used: &Used,
    keep_others: usize,
    started: SystemTime,
) -> Vec<Result<Pruned>> {
    Kind::ALL
        .iter()
        .filter_map(|&kind| {
            prune(cache_dir, kind, &used.keys(kind), keep_others, started)
                .with_context(|| {
                    format!(
                        "pruning the {kind} cache in {}",
                        kind.dir(cache_dir).display()
                    )
                })
                .transpose()
        })
        .collect()
}

/// Deletes the entries of `kind` that [`select`] picks, skipping any entry a
/// build holds or used since `started`. `None` when the build made no cache
/// of that kind yet.
pub fn prune(
    cache_dir: &Path,
    kind: Kind,
    this_build: &BTreeSet<String>,
    keep_others: usize,
    started: SystemTime,
) -> Result<Option<Pruned>> {
    let dir = kind.dir(cache_dir);
    if !dir.is_dir() {
        return Ok(None);
    }
    let found = scan(&dir, kind)?;
    let sel = select(&found.entries, this_build, keep_others, started);
    // Entries go into a private work directory first (one rename each), then
    // are deleted there: a pruner killed halfway leaves no half-deleted entry
    // under a key, only a work directory the next build sweeps (creating
    // this one sweeps those of earlier pruners).
    let trash = WorkDir::new_in(&dir, ".build-prune-")?;
    let mut report = Pruned {
        kind,
        removed: Vec::new(),
        removed_bytes: 0,
        kept: sel.keep.len() + sel.busy.len(),
        busy: sel.busy.len(),
    };
    for c in &sel.remove {
        if remove_entry(kind, &dir, &c.key, started, &trash)? {
            report.removed.push(c.key.clone());
            report.removed_bytes += c.size;
        } else {
            report.kept += 1;
            report.busy += 1;
        }
    }
    for (name, size) in &found.leftovers {
        if remove_leftover(&dir, name, started, &trash)? {
            report.removed.push(name.clone());
            report.removed_bytes += size;
        }
    }
    Ok(Some(report))
}

/// A kind's directory as the pruner sees it.
#[derive(Debug, Default)]
struct Found {
    entries: Vec<Candidate>,
    /// A base rootfs tar without its metadata: left by a build (or a
    /// pruner) killed between its two renames, and never read. Name, size.
    leftovers: Vec<(String, u64)>,
}

/// A cache key: 64 lowercase hex digits (a SHA-256). Anything else in a
/// kind's directory is not an entry and is left alone.
fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn scan(dir: &Path, kind: Kind) -> Result<Found> {
    let mut found = Found::default();
    let mut names = BTreeSet::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(n) = e.file_name().to_str() {
            names.insert(n.to_string());
        }
    }
    for name in &names {
        let path = dir.join(name);
        match kind {
            Kind::Rootfs => {
                if let Some(key) = name.strip_suffix(".json").filter(|k| is_key(k)) {
                    let Some(meta) = stat_file(&path)? else {
                        continue;
                    };
                    let tar = stat_file(&dir.join(format!("{key}.tar")))?;
                    found.entries.push(Candidate {
                        key: key.to_string(),
                        used: meta.modified()?,
                        size: meta.len() + tar.map_or(0, |t| t.len()),
                    });
                } else if let Some(key) = name.strip_suffix(".tar").filter(|k| is_key(k)) {
                    if !names.contains(&format!("{key}.json")) {
                        if let Some(m) = stat_file(&path)? {
                            found.leftovers.push((name.clone(), m.len()));
                        }
                    }
                }
            }
            Kind::Osroot | Kind::ContainerdStore => {
                if !is_key(name) {
                    continue;
                }
                let Ok(m) = fs::symlink_metadata(&path) else {
                    continue; // deleted meanwhile
                };
                if m.is_dir() {
                    found.entries.push(Candidate {
                        key: name.clone(),
                        used: m.modified()?,
                        size: tree_size(&path)?,
                    });
                }
            }
        }
    }
    Ok(found)
}

/// A regular file's metadata; `None` when it is not there (any more).
fn stat_file(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Bytes of the regular files under `root`, hard links counted once.
/// Files an update bundle hard-linked from an OS root stay on disk until
/// that bundle goes too: the size counts them all the same.
fn tree_size(root: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", d.display())),
        };
        for e in rd {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    Ok(total)
}

/// Deletes one entry unless a build holds it or used it since `started`.
/// Whether it was deleted.
fn remove_entry(
    kind: Kind,
    dir: &Path,
    key: &str,
    started: SystemTime,
    trash: &WorkDir,
) -> Result<bool> {
    let marker = kind.marker(dir, key);
    let f = match File::open(&marker) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("opening {}", marker.display())),
    };
    let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(false), // a build holds it
        Err((_, e)) => anyhow::bail!("locking {} to prune it: {e}", marker.display()),
    };
    // Looked at again under the lock: a build may have used it (and let go)
    // since the listing, or replaced it.
    let m = lock
        .metadata()
        .with_context(|| format!("reading {}", marker.display()))?;
    if Identity::at(&marker)? != Some(Identity::of(&m)) || m.modified()? >= started {
        return Ok(false);
    }
    for part in kind.parts(key) {
        let from = dir.join(&part);
        match fs::rename(&from, trash.join(&part)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("moving {} aside to prune it", from.display()))
            }
        }
    }
    empty(trash.path())?;
    drop(lock);
    Ok(true)
}

/// Deletes a rootfs leftover (a tar without metadata) that has not changed
/// since `started`: a build between its two renames has just renamed its
/// tar (which sets the tar's ctime), so it is never mistaken for one.
fn remove_leftover(dir: &Path, name: &str, started: SystemTime, trash: &WorkDir) -> Result<bool> {
    let path = dir.join(name);
    let Some(m) = stat_file(&path)? else {
        return Ok(false);
    };
    let changed = UNIX_EPOCH
        + Duration::new(
            u64::try_from(m.ctime()).unwrap_or(0),
            u32::try_from(m.ctime_nsec()).unwrap_or(0),
        );
    if changed >= started {
        return Ok(false);
    }
    fs::rename(&path, trash.join(name))
        .with_context(|| format!("moving {} aside to prune it", path.display()))?;
    empty(trash.path())?;
    Ok(true)
}

/// Deletes everything in `dir` (keeping `dir`).
fn empty(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let r = if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.with_context(|| format!("deleting {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! A build's hold on a cache entry: a shared flock(2) on the entry's marker
//! (its directory, or a base rootfs's `<key>.json`) for as long as the build
//! works with it, and a use time (the marker's mtime) set when it is taken.
//!
//! The pruner takes the same lock exclusively, without waiting, before it
//! deletes an entry: an entry some build holds is never deleted, and a build
//! that asks for an entry while it is being deleted waits, then finds it gone
//! and makes it anew. flock(2) locks the inode, so a lease taken on a staged
//! entry still holds it after the rename that publishes it.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// Holds an entry against pruning while it lives.
#[derive(Debug)]
pub struct Lease {
    file: Flock<File>,
    id: Identity,
}

/// Which inode a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    pub(super) fn of(m: &fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// The identity of what `path` names now; `None` when nothing does.
    pub(super) fn at(path: &Path) -> Result<Option<Identity>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(Identity::of(&m))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

impl Lease {
    /// Takes a lease on the entry whose marker is `marker` and records a use
    /// now. `None` when there is no such entry, or when it was deleted while
    /// this waited for the lock (the caller makes it again).
    pub fn take(marker: &Path) -> Result<Option<Lease>> {
        let f = match File::open(marker) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", marker.display())),
        };
        // Blocks only while a pruner deletes this very entry (milliseconds).
        let file = Flock::lock(f, FlockArg::LockShared)
            .map_err(|(_, e)| anyhow::anyhow!("locking {} (shared): {e}", marker.display()))?;
        let id = Identity::of(
            &file
                .metadata()
                .with_context(|| format!("reading {}", marker.display()))?,
        );
        if Identity::at(marker)? != Some(id) {
            return Ok(None);
        }
        // A use time that cannot be set (a cache someone else owns) only
        // makes this entry look older to the pruner; the lock still holds it.
        if let Err(e) = file.set_modified(SystemTime::now()) {
            tracing::warn!(
                "cannot record the use of cache entry {}: {e}",
                marker.display()
            );
        }
        Ok(Some(Lease { file, id }))
    }

    /// This lease, when `path` names the inode it holds; else a new lease on
    /// `path` (another build published the same entry first). Used after the
    /// rename that publishes an entry made under a temporary name.
    pub fn held_at(self, path: &Path) -> Result<Lease> {
        if Identity::at(path)? == Some(self.id) {
            return Ok(self);
        }
        drop(self.file);
        Lease::take(path)?.with_context(|| {
            format!(
                "the cache entry {} vanished right after it was made; run the build again",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn mtime(p: &Path) -> SystemTime {
        fs::metadata(p).unwrap().modified().unwrap()
    }

    #[test]
    fn a_lease_records_a_use_and_locks_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("k");
        fs::create_dir(&entry).unwrap();
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000);
        File::open(&entry).unwrap().set_modified(old).unwrap();
        let before = SystemTime::now();
        let lease = Lease::take(&entry).unwrap().unwrap();
        assert!(mtime(&entry) >= before, "the use time is now");
        let f = File::open(&entry).unwrap();
        assert!(
            Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
            "a held entry cannot be locked for deletion"
        );
        drop(lease);
        let f = File::open(&entry).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
        assert!(Lease::take(&dir.path().join("absent")).unwrap().is_none());
    }

    #[test]
    fn a_lease_follows_its_entry_through_the_publishing_rename() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join(".build-x");
        fs::create_dir(&staged).unwrap();
        let lease = Lease::take(&staged).unwrap().unwrap();
        let entry = dir.path().join("k");
        fs::rename(&staged, &entry).unwrap();
        let lease = lease.held_at(&entry).unwrap();
        assert_eq!(Identity::at(&entry).unwrap(), Some(lease.id));
        // Another build's entry won the name: the lease moves to it.
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        let moved = Lease::take(&other)
            .unwrap()
            .unwrap()
            .held_at(&entry)
            .unwrap();
        assert_eq!(Identity::at(&entry).unwrap(), Some(moved.id));
        assert!(Lease::take(&other)
            .unwrap()
            .unwrap()
            .held_at(&dir.path().join("gone"))
            .is_err());
    }
}

//! Files that may hold secrets are private from their first byte (issue 14).
//!
//! A node's image, its partition temporaries, a render tree and an Ignition
//! file carry CA keys, the service-account key, kubeconfigs or the join token.
//! So hakube never writes such a file world-readable and tightens it later:
//!
//! - files hakube writes itself are opened with mode 0600 (`O_CREAT|O_EXCL`),
//!   directories made with mode 0700;
//! - files external tools write (qemu-img, mke2fs, mkfs.vfat) are made inside
//!   a [`WorkDir`]: a 0700 directory next to their final name, so nobody else
//!   can open them while they are written; they get their final mode there and
//!   are renamed into place, complete;
//! - a [`WorkDir`] is removed when dropped (every error path), and one left by
//!   a killed build is swept by the next build in the same directory: each
//!   live one holds an flock(2), so a work directory whose lock can be taken
//!   belongs to nobody.
//!
//! Everyone writing secret-bearing files (the image pipeline, render, update
//! bundles) uses these helpers rather than `fs::write` + `set_permissions`.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a file that may hold a secret.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a directory that may hold secrets.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` (which must not exist) with mode 0600 from the first byte.
pub fn create_file(path: &Path) -> Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("creating {} (mode 0600)", path.display()))
}

/// Writes `bytes` to a new file `path` with mode 0600 and flushes it to disk.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = create_file(path)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates `dir` and its missing parents with mode 0700; directories that
/// exist already keep their mode.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating directory {} (mode 0700)", dir.display()))
}

/// Writes `bytes` to `path` atomically: a 0600 temporary next to it, then a
/// rename, so `path` is either absent, the old file or the complete new one.
/// A temporary left by a killed writer is swept by the next one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with_mode(path, bytes, FILE_MODE)
}

/// [`write_atomically`] for a file that holds no secret and is meant to be
/// read by others (a manifest): `mode` from the first byte.
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    const PREFIX: &str = ".hakube-tmp-";
    let dir = parent_of(path);
    let (mut tmp, _lock) = {
        let _parent_lock = lock_dir(dir)?;
        sweep(dir, PREFIX);
        let tmp = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        let f = tmp
            .as_file()
            .try_clone()
            .context("duplicating a file handle")?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", tmp.path().display()))?;
        (tmp, lock)
    };
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into place {}", path.display()))?;
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A 0700 work directory next to final outputs. Removed when dropped; while
/// it lives it holds an exclusive flock(2), which marks it as in use.
#[derive(Debug)]
pub struct WorkDir {
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl WorkDir {
    /// Creates `<parent>/<prefix>XXXXXX` with mode 0700, after removing any
    /// `<prefix>*` directory in `parent` that no live build holds.
    pub fn new_in(parent: &Path, prefix: &str) -> Result<WorkDir> {
        // The parent's own flock orders sweeping against creating: a sweeper
        // never sees a new work directory before its creator has locked it.
        let _parent_lock = lock_dir(parent)?;
        sweep(parent, prefix);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(fs::Permissions::from_mode(DIR_MODE))
            .tempdir_in(parent)
            .with_context(|| format!("creating a work directory in {}", parent.display()))?;
        let f =
            File::open(dir.path()).with_context(|| format!("opening {}", dir.path().display()))?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", dir.path().display()))?;
        Ok(WorkDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The directory's own flock(2): orders sweeping against creating, so a
/// sweeper never sees a new temporary before its creator has locked it.
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    let f = File::open(dir).with_context(|| format!("opening {} to lock it", dir.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", dir.display()))
}

/// Removes `<prefix>*` files and directories in `parent` that no process
/// holds locked: those of writers that were killed. Best effort: a failure
/// leaves the entry (private, so it exposes nothing) for the next sweep.
fn sweep(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let stale = e.file_name().to_string_lossy().starts_with(prefix)
            && (ft.is_dir() || ft.is_file())
            && File::open(e.path())
                .ok()
                .and_then(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).ok())
                .is_some();
        if stale {
            tracing::info!(
                "removing {}, left by an interrupted build",
                e.path().display()
            );
            let _ = if ft.is_dir() {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            };
        }
    }
}

/// Who may read a finished image besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageAccess {
    /// 0600: the owner only. libvirt's system instance still starts the
    /// domain: with `dynamic_ownership = 1` (its default) it chowns the disk
    /// to the qemu user for the life of the domain.
    Owner,
    /// `--image-group GROUP`: 0640 and that group.
    Group(nix::unistd::Gid),
}

impl ImageAccess {
    /// `--image-group NAME` (or none).
    pub fn from_group(name: Option<&str>) -> Result<ImageAccess> {
        let Some(name) = name else {
            return Ok(ImageAccess::Owner);
        };
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(ImageAccess::Group(g.gid)),
            Ok(None) => Err(crate::errors::bad_input(format!(
                "--image-group {name}: no such group on this machine (see /etc/group): \
                 a group that may read the images expected, e.g. libvirt-qemu or kvm"
            ))),
            Err(e) => Err(anyhow::anyhow!("looking up group {name}: {e}")),
        }
    }

    pub fn mode(self) -> u32 {
        match self {
            ImageAccess::Owner => FILE_MODE,
            ImageAccess::Group(_) => 0o640,
        }
    }

    /// Gives `path` (a complete file, still inside a [`WorkDir`]) its final
    /// group and mode, before it is renamed into place.
    pub fn apply(self, path: &Path) -> Result<()> {
        if let ImageAccess::Group(gid) = self {
            nix::unistd::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", path.display()))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode()))
            .with_context(|| format!("setting the mode of {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn files_and_dirs_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_dir_all(&d).unwrap();
        write_file(&d.join("key"), b"secret").unwrap();
        write_atomically(&d.join("conf"), b"secret").unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("key")), 0o600);
        assert_eq!(mode(&d.join("conf")), 0o600);
        assert!(
            write_file(&d.join("key"), b"again").is_err(),
            "must not reuse a file"
        );
    }

    #[test]
    fn work_dirs_are_private_removed_on_drop_and_stale_ones_swept() {
        let dir = tempfile::tempdir().unwrap();
        let live = WorkDir::new_in(dir.path(), ".n.work-").unwrap();
        assert_eq!(mode(live.path()), 0o700);
        // A killed build's work directory: present, but nobody holds it.
        let stale = dir.path().join(".n.work-dead");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("disk.raw"), b"x").unwrap();
        let other = dir.path().join(".m.work-dead");
        fs::create_dir(&other).unwrap();
        let second = WorkDir::new_in(dir.path(), ".n.work-").unwrap();
        assert!(!stale.exists(), "a stale work dir is swept");
        assert!(other.exists(), "another node's work dir is left alone");
        assert!(live.path().exists(), "a live work dir is never swept");
        let (a, b) = (live.path().to_path_buf(), second.path().to_path_buf());
        drop(live);
        drop(second);
        assert!(!a.exists() && !b.exists());
    }

    #[test]
    fn a_killed_writers_temporary_file_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".hakube-tmp-dead");
        fs::write(&stale, b"half").unwrap();
        write_atomically(&dir.path().join("x.ign"), b"whole").unwrap();
        assert!(!stale.exists());
        assert_eq!(fs::read(dir.path().join("x.ign")).unwrap(), b"whole");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn image_access_modes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("img");
        fs::write(&f, b"x").unwrap();
        ImageAccess::Owner.apply(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        let gid = nix::unistd::getegid();
        ImageAccess::Group(gid).apply(&f).unwrap();
        assert_eq!(mode(&f), 0o640);
        assert_eq!(fs::metadata(&f).unwrap().gid(), gid.as_raw());
        let err = ImageAccess::from_group(Some("no-such-group-hakube")).unwrap_err();
        assert_eq!(crate::errors::exit_code(&err), 2);
        assert!(format!("{err}").contains("--image-group no-such-group-hakube"));
    }
}

//! An in-memory file tree: the files one node's image receives, keyed by
//! their path relative to the image root (`etc/kubernetes/pki/ca.crt`).
//! Built in memory, then written in one step ([`FileTree::write_atomically`]).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// One entry: a regular file with contents and Unix mode bits, or a symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEntry {
    File {
        contents: Vec<u8>,
        mode: u32,
    },
    /// A symbolic link (e.g. a systemd `*.wants/` enablement link).
    Symlink {
        target: String,
    },
}

/// Panics on absolute paths or `..`: a tree path comes from code, never from users.
fn checked(path: &Path) -> &Path {
    assert!(
        path.components().all(|c| matches!(c, Component::Normal(_))),
        "tree path must be relative and normal: {}",
        path.display()
    );
    path
}

/// Files keyed by relative path; ordered, so iteration is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    files: BTreeMap<PathBuf, FileEntry>,
}

impl FileTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file. Panics on absolute paths or `..`: those are programming errors.
    pub fn add(&mut self, path: impl AsRef<Path>, contents: impl Into<Vec<u8>>, mode: u32) {
        let path = checked(path.as_ref());
        self.files.insert(
            path.to_path_buf(),
            FileEntry::File {
                contents: contents.into(),
                mode,
            },
        );
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn add_symlink(&mut self, path: impl AsRef<Path>, target: impl Into<String>) {
        let path = checked(path.as_ref());
        self.files.insert(
            path.to_path_buf(),
            FileEntry::Symlink {
                target: target.into(),
            },
        );
    }

    /// Enables a systemd unit the way `systemctl enable` would:
    /// `etc/systemd/system/<target>.wants/<unit>` -> `/etc/systemd/system/<unit>`
    /// (or `/lib/systemd/system/<unit>` when `vendor` is true).
    pub fn enable_unit(&mut self, unit: &str, wanted_by: &str, vendor: bool) {
        let dir = if vendor {
            "/lib/systemd/system"
        } else {
            "/etc/systemd/system"
        };
        self.add_symlink(
            format!("etc/systemd/system/{wanted_by}.wants/{unit}"),
            format!("{dir}/{unit}"),
        );
    }

    /// A public file (0644).
    pub fn add_public(&mut self, path: impl AsRef<Path>, contents: impl Into<Vec<u8>>) {
        self.add(path, contents, 0o644);
    }

    /// A secret (0600).
    pub fn add_secret(&mut self, path: impl AsRef<Path>, contents: impl Into<Vec<u8>>) {
        self.add(path, contents, 0o600);
    }

    pub fn merge(&mut self, other: FileTree) {
        self.files.extend(other.files);
    }

    pub fn get(&self, path: impl AsRef<Path>) -> Option<&FileEntry> {
        self.files.get(path.as_ref())
    }

    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.files.contains_key(path.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &FileEntry)> {
        self.files.iter()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes the tree under `root` (new files only; `root` may exist, empty).
    pub fn write_to(&self, root: &Path) -> Result<()> {
        for (rel, entry) in &self.files {
            let path = root.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating directory {}", parent.display()))?;
            }
            let (contents, mode) = match entry {
                FileEntry::File { contents, mode } => (contents, *mode),
                FileEntry::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &path)
                        .with_context(|| format!("creating symlink {}", path.display()))?;
                    continue;
                }
            };
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(contents)
                .with_context(|| format!("writing {}", path.display()))?;
            // The umask may have narrowed the mode; set it exactly.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting mode of {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes the tree to `dest` atomically: into a temporary sibling
    /// directory first, then renamed over `dest` (an older `dest` is replaced).
    pub fn write_atomically(&self, dest: &Path) -> Result<()> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let Some(name) = dest.file_name() else {
            bail!("{} has no file name", dest.display());
        };
        // Private, and swept by the next render if this one is killed.
        let tmp =
            crate::private::WorkDir::new_in(parent, &format!(".{}.tmp", name.to_string_lossy()))?;
        // The tree's root is 0700: render trees hold a node's keys and
        // kubeconfigs, and its public files must not show which.
        let staged = tmp.path().join("tree");
        crate::private::create_dir_all(&staged)?;
        self.write_to(&staged)?;
        if dest.exists() {
            let old = tmp.path().join("old");
            fs::rename(dest, &old).with_context(|| format!("moving aside {}", dest.display()))?;
        }
        fs::rename(&staged, dest).with_context(|| format!("renaming into {}", dest.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_modes_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("node");
        let mut t = FileTree::new();
        t.add_secret("etc/kubernetes/pki/ca.key", "k");
        t.add_public("etc/hostname", "n\n");
        t.enable_unit("kubelet.service", "multi-user.target", false);
        t.write_atomically(&dest).unwrap();
        let link = dest.join("etc/systemd/system/multi-user.target.wants/kubelet.service");
        assert_eq!(
            fs::read_link(link).unwrap(),
            Path::new("/etc/systemd/system/kubelet.service")
        );
        let mode = fs::metadata(dest.join("etc/kubernetes/pki/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut t2 = FileTree::new();
        t2.add_public("etc/hostname", "m\n");
        t2.write_atomically(&dest).unwrap();
        assert!(!dest.join("etc/kubernetes/pki/ca.key").exists());
        assert_eq!(
            fs::read_to_string(dest.join("etc/hostname")).unwrap(),
            "m\n"
        );
        // No temporary directories left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    #[should_panic(expected = "relative")]
    fn refuses_absolute_paths() {
        FileTree::new().add_public("/etc/passwd", "x");
    }
}

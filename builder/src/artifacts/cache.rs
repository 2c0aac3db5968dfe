//! The content-addressed download cache: `<cache>/artifacts/sha256/<hex>`.
//!
//! A file only ever appears under its final name by a rename after its
//! SHA-256 was computed while it was written and compared with the pin, so a
//! name in the cache is a verified file: an interrupted download leaves at
//! most a `.partial-*` temporary (never read, removed when the process that
//! wrote it ends normally), and two builds downloading the same artifact each
//! write their own temporary and rename identical bytes over one another.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// A file written into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// The stored bytes do not match the expected SHA-256; nothing was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub actual: String,
    pub size: u64,
}

impl Cache {
    /// The cache under `cache_root` (the `--cache-dir`).
    pub fn new(cache_root: &Path) -> Cache {
        Cache {
            dir: cache_root.join("artifacts").join("sha256"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// The cached file for `sha256`, if present (and of `size` bytes when known).
    pub fn lookup(&self, sha256: &str, size: Option<u64>) -> Option<PathBuf> {
        let p = self.path_for(sha256);
        let meta = std::fs::metadata(&p).ok()?;
        if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
            return None;
        }
        Some(p)
    }

    /// Streams `write` into a temporary file in the cache, hashing as it goes;
    /// when `expected` is given and differs, the temporary is deleted and
    /// `Ok(Err(Mismatch))` returned. Otherwise the file is renamed to its hash.
    pub fn store(
        &self,
        expected: Option<&str>,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<std::result::Result<Stored, Mismatch>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating cache directory {}", self.dir.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&self.dir)
            .with_context(|| format!("creating a temporary file in {}", self.dir.display()))?;
        let (hasher, size) = {
            let mut w = HashingWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()),
                hasher: Sha256::new(),
                size: 0,
            };
            write(&mut w)?;
            w.inner
                .flush()
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            (w.hasher, w.size)
        };
        let actual = hex::encode(hasher.finalize());
        if let Some(exp) = expected {
            if exp != actual {
                // Dropping `tmp` deletes it.
                return Ok(Err(Mismatch { actual, size }));
            }
        }
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", tmp.path().display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("setting mode of {}", tmp.path().display()))?;
        }
        let path = self.path_for(&actual);
        tmp.persist(&path)
            .with_context(|| format!("renaming a download into {}", path.display()))?;
        Ok(Ok(Stored {
            path,
            sha256: actual,
            size,
        }))
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn stores_under_hash_and_refuses_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let stored = cache
            .store(Some(HELLO), |w| Ok(w.write_all(b"hello")?))
            .unwrap()
            .unwrap();
        assert_eq!(stored.path, dir.path().join("artifacts/sha256").join(HELLO));
        assert_eq!(std::fs::read(&stored.path).unwrap(), b"hello");
        assert_eq!(cache.lookup(HELLO, Some(5)), Some(stored.path.clone()));
        assert_eq!(cache.lookup(HELLO, Some(6)), None);

        let bad = cache
            .store(Some(&"0".repeat(64)), |w| Ok(w.write_all(b"hellO")?))
            .unwrap()
            .unwrap_err();
        assert_eq!(bad.size, 5);
        assert_ne!(bad.actual, HELLO);
        let names: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the verified file remains");
    }

    #[test]
    fn failed_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let err = cache
            .store(None, |w| {
                w.write_all(b"half")?;
                anyhow::bail!("connection reset")
            })
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"));
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
    }
}

//! Filesystem helpers for reproducible staging: clamped timestamps, fixed
//! directory modes, sparse copies into a disk file, hashing, atomic renames.

use anyhow::{Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents below `base` with mode 0755
/// regardless of the umask (directories in the /etc overlay's upper layer
/// shadow the lower ones' modes, so they must be exact).
pub fn create_dirs_0755(base: &Path, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() && cur.starts_with(base) {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", d.display()))?;
    }
    Ok(())
}

/// Sets atime and mtime of everything under `root` (symlinks themselves, not
/// their targets) to `epoch`.
pub fn clamp_times(root: &Path, epoch: i64) -> Result<()> {
    let ts = TimeSpec::new(epoch, 0);
    let mut stack = Vec::new();
    if root.is_dir() && !root.is_symlink() {
        stack.push(root.to_path_buf());
    }
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            }
            all.push(entry.path());
        }
    }
    all.push(root.to_path_buf());
    // Children before parents is irrelevant for utimensat; set all.
    for p in all {
        utimensat(
            nix::fcntl::AT_FDCWD,
            &p,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .with_context(|| format!("setting the timestamps of {}", p.display()))?;
    }
    Ok(())
}

/// Every path under `root` (relative, sorted), directories included.
pub fn walk_sorted(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
            if let Ok(rel) = entry.path().strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Moves the contents of `src` into `dst`, merging directories that exist in both.
pub fn merge_move(src: &Path, dst: &Path) -> Result<()> {
    create_dirs_0755(dst, dst)?;
    for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry.with_context(|| format!("listing {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let from_is_dir = entry.file_type()?.is_dir();
        if from_is_dir && to.is_dir() && !to.is_symlink() {
            merge_move(&from, &to)?;
        } else {
            if to.symlink_metadata().is_ok() {
                if to.is_dir() && !to.is_symlink() {
                    fs::remove_dir_all(&to)
                } else {
                    fs::remove_file(&to)
                }
                .with_context(|| format!("replacing {}", to.display()))?;
            }
            fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Copies `src` into `disk` at byte `offset`, skipping all-zero blocks so the
/// disk file stays sparse.
pub fn copy_sparse_into(src: &Path, disk: &File, offset: u64, max_len: u64) -> Result<u64> {
    let mut f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = f.metadata()?.len();
    anyhow::ensure!(
        len <= max_len,
        "{} is {len} bytes, larger than its partition ({max_len} bytes)",
        src.display()
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n =
            read_full(&mut f, &mut buf).with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if chunk.iter().any(|b| *b != 0) {
            disk.write_all_at(chunk, offset + pos)
                .context("writing a partition into the disk image")?;
        }
        pos += n as u64;
    }
    Ok(pos)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Renames a finished temporary file to its final name.
pub fn commit(tmp: &Path, dest: &Path) -> Result<()> {
    fs::rename(tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_writes_data_and_leaves_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut data = vec![0u8; 3 << 20];
        data[5] = 1;
        data[(2 << 20) + 7] = 9;
        fs::write(&src, &data).unwrap();
        let disk = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("disk"))
            .unwrap();
        disk.set_len(8 << 20).unwrap();
        copy_sparse_into(&src, &disk, 1 << 20, 4 << 20).unwrap();
        let out = fs::read(dir.path().join("disk")).unwrap();
        assert_eq!(&out[(1 << 20)..(4 << 20)], &data[..]);
        assert!(copy_sparse_into(&src, &disk, 0, 1 << 20).is_err());
    }

    #[test]
    fn merge_move_merges_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(a.join("x/y")).unwrap();
        fs::write(a.join("x/y/f"), "new").unwrap();
        fs::create_dir_all(b.join("x/z")).unwrap();
        fs::write(b.join("x/z/g"), "kept").unwrap();
        merge_move(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(b.join("x/y/f")).unwrap(), "new");
        assert_eq!(fs::read_to_string(b.join("x/z/g")).unwrap(), "kept");
    }
}

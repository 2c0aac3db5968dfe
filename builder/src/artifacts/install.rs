//! Laying verified artifacts into a root filesystem directory.
//!
//! Timestamps are deterministic so the OS root (and the images) are
//! reproducible: a plain downloaded file gets `SOURCE_DATE_EPOCH` when set,
//! else 0 (the Unix epoch); a file from a tarball keeps the archive's mtime,
//! clamped to `SOURCE_DATE_EPOCH` when that is set (as mkosi does).
//!
//! Tarballs are read entry by entry and only the selected regular files are
//! written, by name, under the layout's destination directory; any entry with
//! an absolute path or a `..` component makes the whole artifact refused.

use super::catalog::{Layout, Members};
use super::ResolvedArtifact;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// `SOURCE_DATE_EPOCH`, if set; a value that is not a whole number of seconds is bad input.
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().map(Some).map_err(|_| {
            crate::errors::bad_input(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970"
            ))
        }),
        _ => Ok(None),
    }
}

/// Installs one artifact under `root`; returns the paths written (relative to root).
pub fn install(
    art: &ResolvedArtifact,
    layout: &Layout,
    root: &Path,
    epoch: Option<u64>,
) -> Result<Vec<PathBuf>> {
    match layout {
        Layout::File { dest, mode } => {
            let mut src = fs::File::open(&art.path).with_context(|| {
                format!("opening cached {} at {}", art.name, art.path.display())
            })?;
            write_file(root, Path::new(dest), &mut src, *mode, epoch.unwrap_or(0))?;
            Ok(vec![PathBuf::from(dest)])
        }
        Layout::TarGz {
            prefix,
            members,
            required,
            dest_dir,
        } => install_tarball(art, prefix, members, required, dest_dir, root, epoch),
    }
}

fn install_tarball(
    art: &ResolvedArtifact,
    prefix: &str,
    members: &Members,
    required: &[&str],
    dest_dir: &str,
    root: &Path,
    epoch: Option<u64>,
) -> Result<Vec<PathBuf>> {
    let label = format!("{} v{}", art.name, art.version);
    let file = fs::File::open(&art.path)
        .with_context(|| format!("opening cached {label} at {}", art.path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut written = Vec::new();
    let entries = archive
        .entries()
        .with_context(|| format!("reading {label} ({}) as a gzip tarball", art.url))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading a tar entry of {label}"))?;
        let raw = entry
            .path()
            .with_context(|| format!("reading a tar entry name of {label}"))?;
        let rel = normalise(&raw).with_context(|| {
            format!(
                "refusing {label} from {}: tar entry {:?} has an absolute path or '..'",
                art.url,
                raw.display()
            )
        })?;
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel.as_str()),
        };
        if parent != prefix || name.is_empty() {
            continue;
        }
        let wanted = match members {
            Members::AllExcept(skip) => !skip.contains(&name),
            Members::Only(only) => only.contains(&name),
        };
        if !wanted {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            if required.contains(&name) {
                bail!("{label} from {}: {rel} is not a regular file", art.url);
            }
            continue;
        }
        let archive_mtime = entry.header().mtime().unwrap_or(0);
        let mtime = match epoch {
            Some(e) => archive_mtime.min(e),
            None => archive_mtime,
        };
        let dest = Path::new(dest_dir).join(name);
        write_file(root, &dest, &mut entry, 0o755, mtime)
            .with_context(|| format!("unpacking {rel} of {label}"))?;
        written.push(dest);
    }
    for r in required {
        if !written
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == *r))
        {
            let where_ = if prefix.is_empty() {
                "at the top level".to_string()
            } else {
                format!("under {prefix}/")
            };
            bail!("{label} from {}: the tarball has no {r} {where_}", art.url);
        }
    }
    written.sort();
    Ok(written)
}

/// `./a/b` -> `a/b`; `None` for absolute paths or `..`.
fn normalise(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Writes `src` to `root/rel` with `mode` and `mtime`, replacing whatever was
/// there (never writing through an existing symlink).
fn write_file(root: &Path, rel: &Path, src: &mut dyn Read, mode: u32, mtime: u64) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dest = root.join(rel);
    let dir = dest.parent().expect("joined path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => bail!("{} is a directory", dest.display()),
        Ok(_) => fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?,
        Err(_) => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    std::io::copy(src, &mut f).with_context(|| format!("writing {}", dest.display()))?;
    // The umask may have narrowed `mode`.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", dest.display()))?;
    let t = UNIX_EPOCH + Duration::from_secs(mtime);
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .with_context(|| format!("setting times of {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_refuses_escapes() {
        assert_eq!(normalise(Path::new("./bridge")).as_deref(), Some("bridge"));
        assert_eq!(normalise(Path::new("bin/ctr")).as_deref(), Some("bin/ctr"));
        assert_eq!(normalise(Path::new("/etc/passwd")), None);
        assert_eq!(normalise(Path::new("bin/../../x")), None);
    }
}

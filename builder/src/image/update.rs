//! The cluster's OS update bundle: `<out>/<cluster>/update/<version>/` with
//! the root image, kernel, initrd and boot entry of this build's OS root,
//! and SHA256SUMS listing them. Names and the entry come from
//! `hakube_os_layout`, which the node's `hakube-firstboot upgrade` and the
//! image's systemd-sysupdate transfers read. Not signed: the SHA-256 sums
//! protect against corruption in transit; authenticity rests on how the
//! bundle reaches the node (a directory the operator copied, or a URL they
//! trust).

use super::fsutil;
use super::osroot::OsRoot;
use anyhow::{Context, Result};
use hakube_os_layout::{self as layout, bundle};
use std::fs;
use std::path::{Path, PathBuf};

/// What was written, for manifest.json.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateInfo {
    pub version: String,
    /// Relative to the manifest's directory.
    pub dir: String,
    pub root_partuuid: String,
    /// file name -> sha256
    pub files: std::collections::BTreeMap<String, String>,
}

/// Writes the bundle of `os` for `cluster` under `out_dir/update/` (a
/// complete directory or none: written to a temporary one, then renamed).
pub fn write_bundle(os: &OsRoot, cluster: &str, out_dir: &Path) -> Result<UpdateInfo> {
    let v = os.image_version()?;
    let uuid = layout::update_root_uuid(cluster, &v);
    let parent = out_dir.join("update");
    let dest = parent.join(v.as_str());
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    // 0700 and locked while in use; one a killed build left is swept here.
    let work = crate::private::WorkDir::new_in(&parent, ".work-")?;
    let entry = layout::entry_conf(&v, &os.kernel_version, &uuid);
    let files: Vec<(String, PathBuf)> = vec![
        (bundle::root(&v, &uuid), os.erofs()),
        (bundle::kernel(&v), os.kernel()),
        (bundle::initrd(&v), os.initrd()),
    ];
    let mut sums = std::collections::BTreeMap::new();
    for (name, src) in &files {
        let to = work.path().join(name);
        link_or_copy(src, &to)?;
        sums.insert(name.clone(), fsutil::sha256_file(&to)?);
    }
    let entry_name = bundle::entry(&v);
    fs::write(work.path().join(&entry_name), &entry)
        .with_context(|| format!("writing {entry_name}"))?;
    sums.insert(entry_name, fsutil::sha256_bytes(entry.as_bytes()));
    let text: String = sums.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    fs::write(work.path().join(bundle::SHA256SUMS), text).context("writing SHA256SUMS")?;
    let info = UpdateInfo {
        version: v.to_string(),
        dir: format!("update/{v}"),
        root_partuuid: uuid.to_string(),
        files: sums,
    };
    if dest.join(bundle::SHA256SUMS).is_file() {
        // Same version, same OS root: the same bundle is there already.
        return Ok(info);
    }
    // The work directory is removed when dropped (after a successful rename
    // there is nothing left to remove); a parallel build may have won.
    if let Err(e) = fs::rename(work.path(), &dest) {
        if !dest.join(bundle::SHA256SUMS).is_file() {
            return Err(e).with_context(|| format!("renaming into {}", dest.display()));
        }
    }
    Ok(info)
}

/// A hard link from the cache when on the same filesystem (the files are
/// read-only inputs), else a copy.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

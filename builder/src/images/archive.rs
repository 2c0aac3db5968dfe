//! A node's images on its var partition: [`INDEX_FILE`] under
//! [`IMAGES_DIR`] lists them with their digests, which first boot checks. On
//! a containerd node the images are in containerd's own store already (see
//! [`super::store`]) and the index names no archive; on a CRI-O node one OCI
//! image layout archive per image sits beside the index, and first boot
//! imports them before kubeadm starts.
//!
//! Each archive holds only the linux/amd64 manifest, its config and layers;
//! `index.json` names the image by its full reference in
//! `io.containerd.image.name` (what `ctr images import` reads) and
//! `org.opencontainers.image.ref.name` (what `oci-archive:` readers use). The
//! tar is written deterministically (sorted, owner 0, mtime `epoch`).
//! Format: <https://github.com/opencontainers/image-spec/blob/main/image-layout.md>.

use super::pull::{sha256_hex_of, Blob, PulledImage};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

/// Where a node's image archives live (relative to the var partition's root,
/// i.e. `/var/lib/hakube/images` on the node).
pub const IMAGES_DIR: &str = "lib/hakube/images";
/// The list first boot reads, in [`IMAGES_DIR`].
pub const INDEX_FILE: &str = "images.json";

/// One entry of `images.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchivedImage {
    pub image: String,
    /// What the tag resolves to upstream (the pin).
    pub digest: String,
    /// The linux/amd64 manifest in the archive: the runtime reports this one.
    pub amd64_digest: String,
    /// File name in [`IMAGES_DIR`]; none when the image is in the
    /// runtime's store on the disk already (containerd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Bytes of the archive (0 without one).
    pub size: u64,
}

/// `images.json`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagesIndex {
    pub node: String,
    pub images: Vec<ArchivedImage>,
}

/// Writes `images.json` into `<var_stage>/lib/hakube/images/`, with the
/// archives beside it when `with_archives` (else the images must be in the
/// runtime's store on the disk).
pub fn write_node_images(
    var_stage: &Path,
    node: &str,
    images: &[&PulledImage],
    epoch: i64,
    with_archives: bool,
) -> Result<ImagesIndex> {
    let dir = var_stage.join(IMAGES_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut index = ImagesIndex {
        node: node.to_string(),
        images: Vec::new(),
    };
    for img in images {
        let (archive, size) = if with_archives {
            let name = img.image.archive_name();
            let path = dir.join(&name);
            write_archive(img, &path, epoch).with_context(|| {
                format!("writing the archive of {} to {}", img.image, path.display())
            })?;
            (Some(name), std::fs::metadata(&path)?.len())
        } else {
            (None, 0)
        };
        index.images.push(ArchivedImage {
            image: img.image.to_string(),
            digest: img.digest.clone(),
            amd64_digest: img.amd64_digest().to_string(),
            archive,
            size,
        });
    }
    let p = dir.join(INDEX_FILE);
    let mut text = serde_json::to_string_pretty(&index)?;
    text.push('\n');
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    // Modes independent of the builder's umask: the files are public.
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(&dir)? {
        std::fs::set_permissions(e?.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    for d in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(index)
}

/// Writes one image's OCI layout archive to `path`.
pub fn write_archive(img: &PulledImage, path: &Path, epoch: i64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f));
    let mtime = epoch.max(0) as u64;
    let name = img.image.to_string();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": img.manifest.media_type,
            "digest": img.manifest.digest,
            "size": img.manifest.size,
            "platform": {"os": "linux", "architecture": "amd64"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            },
        }],
    });
    let dir = |tar: &mut tar::Builder<_>, p: &str| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        tar.append_data(&mut h, p, std::io::empty())?;
        Ok(())
    };
    dir(&mut tar, "blobs/")?;
    dir(&mut tar, "blobs/sha256/")?;
    let mut blobs: Vec<&Blob> = vec![&img.manifest, &img.config];
    blobs.extend(img.layers.iter());
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    for b in blobs {
        let hex = sha256_hex_of(&b.digest)?;
        let f = std::fs::File::open(&b.path)
            .with_context(|| format!("opening {}", b.path.display()))?;
        append(&mut tar, &format!("blobs/sha256/{hex}"), b.size, mtime, f)?;
    }
    let index_bytes = serde_json::to_vec(&index)?;
    append(
        &mut tar,
        "index.json",
        index_bytes.len() as u64,
        mtime,
        &index_bytes[..],
    )?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append(
        &mut tar,
        "oci-layout",
        layout.len() as u64,
        mtime,
        &layout[..],
    )?;
    let w = tar.into_inner().context("finishing the tar")?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing the tar")?;
    f.sync_all()?;
    Ok(())
}

fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mtime: u64,
    data: impl std::io::Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    tar.append_data(&mut h, path, data)
        .with_context(|| format!("adding {path}"))
}

//! A node's container images in containerd's own store, made at build: the
//! var partition carries `/var/lib/containerd` with the content store and the
//! unpacked overlayfs snapshots of every image (namespace `k8s.io`, each
//! image labelled pinned), so first boot imports nothing.
//!
//! The store is made by the node's own containerd (the release the OS root
//! carries, see [`super::containerd`]) on the build host: the bytes on disk
//! are exactly what that containerd reads at boot, with no second
//! implementation of its bolt databases or snapshot layout to keep in step.
//!
//! Cached under `<cache>/containerd-store/<key>/` (`root/` and `store.json`),
//! the key a canonical sorted manifest of the inputs ([`key_material`]).
//! containerd's databases carry timestamps, so the cache is what makes a
//! rebuild bit-identical. An entry appears only by the rename of a complete
//! directory; a killed build leaves at most a private `.build-*` work
//! directory, swept by the next one.
//!
//! CRI-O nodes do not use this: their images stay archives that first boot
//! copies into containers/storage with skopeo. CRI-O cannot be built or
//! booted here (the Go module proxy refuses github.com/cri-o/cri-o), so a
//! store made for it could not be checked against the CRI-O that reads it.

use super::containerd::{self, Binaries, Daemon, Paths, NAMESPACE, SNAPSHOTTER};
use super::pull::PulledImage;
use crate::artifacts::ResolvedArtifact;
use crate::cache::Lease;
use crate::image::fsutil;
use crate::image::tools::{Invocation, Runner, CP};
use crate::private::WorkDir;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bumped when what the stage makes changes for the same inputs.
pub const FORMAT: u32 = 1;
/// Where the store lands on the var partition: `/var/lib/containerd`, the
/// node's containerd root (hakube's config.toml keeps the default).
pub const VAR_DIR: &str = "lib/containerd";
/// `<cache>/containerd-store/<key>/` (see [`crate::cache`]).
pub const CACHE_SUBDIR: &str = "containerd-store";
const META: &str = "store.json";

/// One image of a store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredImage {
    pub image: String,
    /// The linux/amd64 manifest digest `ctr images ls` reported.
    pub amd64_digest: String,
    /// The top of its snapshot chain (committed).
    pub chain_id: String,
}

/// `store.json` of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreMeta {
    pub key: String,
    pub containerd_version: String,
    pub containerd_sha256: String,
    pub snapshotter: String,
    pub namespace: String,
    pub images: Vec<StoredImage>,
    pub snapshots: usize,
}

/// A cached store.
#[derive(Debug, Clone)]
pub struct Store {
    pub meta: StoreMeta,
    /// The tree that becomes `/var/lib/containerd`.
    pub root: PathBuf,
    pub cache_hit: bool,
    /// Holds the entry against pruning by other builds while this lives.
    pub lease: Option<Arc<Lease>>,
}

/// The canonical, sorted manifest of everything a store is made from.
pub fn key_material(containerd: &ResolvedArtifact, images: &[(String, String)]) -> String {
    let mut lines = vec![
        format!("format {FORMAT}"),
        format!("containerd {} {}", containerd.version, containerd.sha256),
        format!("snapshotter {SNAPSHOTTER}"),
        format!("namespace {NAMESPACE}"),
        format!(
            "label {}={}",
            containerd::PINNED_LABEL,
            containerd::PINNED_VALUE
        ),
        "platform linux/amd64".to_string(),
    ];
    for (name, digest) in images {
        lines.push(format!("image {name} {digest}"));
    }
    lines.sort();
    lines.dedup();
    lines.join("\n") + "\n"
}

pub fn cache_key(containerd: &ResolvedArtifact, images: &[(String, String)]) -> String {
    fsutil::sha256_bytes(key_material(containerd, images).as_bytes())
}

/// The chain ID of a layer stack (the snapshot key of its top):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(n))`
/// (<https://github.com/opencontainers/image-spec/blob/main/config.md#layer-chainid>).
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut it = diff_ids.iter();
    let mut id = it.next()?.clone();
    for d in it {
        id = format!(
            "sha256:{}",
            fsutil::sha256_bytes(format!("{id} {d}").as_bytes())
        );
    }
    Some(id)
}

/// The chain ID of a pulled image, from its config's `rootfs.diff_ids`.
fn image_chain_id(img: &PulledImage) -> Result<String> {
    let p = &img.config.path;
    let text = fs::read(p).with_context(|| format!("reading the config of {}", img.image))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("reading the config of {} ({})", img.image, p.display()))?;
    let diff_ids: Vec<String> = v["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    chain_id(&diff_ids).with_context(|| format!("the config of {} lists no layer", img.image))
}

/// Returns the cached store of `images`, making it with `containerd` when missing.
pub fn ensure(
    cache_dir: &Path,
    containerd: &ResolvedArtifact,
    images: &[&PulledImage],
) -> Result<Store> {
    let wanted: Vec<(String, String)> = images
        .iter()
        .map(|i| (i.image.to_string(), i.amd64_digest().to_string()))
        .collect();
    let key = cache_key(containerd, &wanted);
    let dir = cache_dir.join(CACHE_SUBDIR);
    let entry = dir.join(&key);
    if let Some(lease) = Lease::take(&entry)? {
        if let Some(store) = load(&entry, &key)? {
            return Ok(Store {
                lease: Some(Arc::new(lease)),
                ..store
            });
        }
    }
    crate::private::create_dir_all(&dir)?;
    // A build killed from here on leaves its work directory; the next sweeps it.
    let work = WorkDir::new_in(&dir, ".build-")?;
    let meta = make(work.path(), containerd, images, &key)?;
    let staged = work.join("entry");
    fs::create_dir(&staged).with_context(|| format!("creating {}", staged.display()))?;
    fsutil::commit(&work.join("d/root"), &staged.join("root"))?;
    fs::write(staged.join(META), serde_json::to_vec_pretty(&meta)?)
        .with_context(|| format!("writing {}", staged.join(META).display()))?;
    // Held from before it is published, so no pruner can take it between.
    let lease = Lease::take(&staged)?.with_context(|| format!("{} vanished", staged.display()))?;
    // The entry appears whole, by one rename. A concurrent build that made
    // the same entry first wins; ours is dropped with the work directory.
    if let Err(e) = fs::rename(&staged, &entry) {
        if load(&entry, &key)?.is_none() {
            return Err(e)
                .with_context(|| format!("renaming {} to {}", staged.display(), entry.display()));
        }
    }
    let lease = lease.held_at(&entry)?;
    let store = load(&entry, &key)?.with_context(|| format!("reading {}", entry.display()))?;
    Ok(Store {
        cache_hit: false,
        lease: Some(Arc::new(lease)),
        ..store
    })
}

fn load(entry: &Path, key: &str) -> Result<Option<Store>> {
    let meta_path = entry.join(META);
    if !meta_path.is_file() || !entry.join("root").is_dir() {
        return Ok(None);
    }
    let text = fs::read(&meta_path).with_context(|| format!("reading {}", meta_path.display()))?;
    let meta: StoreMeta = serde_json::from_slice(&text)
        .with_context(|| format!("reading {}", meta_path.display()))?;
    if meta.key != key {
        bail!(
            "{} names key {}, not its directory's {key}; remove {} to rebuild it",
            meta_path.display(),
            meta.key,
            entry.display()
        );
    }
    Ok(Some(Store {
        meta,
        root: entry.join("root"),
        cache_hit: true,
        lease: None,
    }))
}

/// Runs containerd in `work` and fills its root with `images`; `work/d/root`
/// is the store when this returns.
fn make(
    work: &Path,
    art: &ResolvedArtifact,
    images: &[&PulledImage],
    key: &str,
) -> Result<StoreMeta> {
    let bins: Binaries = containerd::extract(art, &work.join("bin"))?;
    let archives = work.join("archives");
    fs::create_dir(&archives).with_context(|| format!("creating {}", archives.display()))?;
    let d = work.join("d");
    fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
    // The sockets live in a short directory of their own: a Unix socket's
    // path holds at most 107 bytes, and a cache under a deep home directory
    // (or a shared cargo target directory) is longer than that.
    let run = tempfile::Builder::new()
        .prefix("hakube-ctr-")
        .tempdir()
        .context("creating a directory for the build's containerd sockets")?;
    let daemon = Daemon::start(
        &bins,
        Paths {
            state: run.path().join("state"),
            grpc: run.path().join("c.sock"),
            ttrpc: run.path().join("c.ttrpc"),
            ..Paths::under(&d)
        },
    )?;
    let mut stored = Vec::new();
    for img in images {
        let name = img.image.to_string();
        let archive = archives.join(img.image.archive_name());
        super::archive::write_archive(img, &archive, 0)
            .with_context(|| format!("writing the archive of {name}"))?;
        daemon
            .import_pinned(&archive)
            .with_context(|| format!("importing {name} into the build's containerd"))?;
        fs::remove_file(&archive).ok();
        stored.push(StoredImage {
            image: name,
            amd64_digest: img.amd64_digest().to_string(),
            chain_id: image_chain_id(img)?,
        });
    }
    let want: Vec<(String, String)> = stored
        .iter()
        .map(|s| (s.image.clone(), s.amd64_digest.clone()))
        .collect();
    containerd::check_listed(&daemon.images()?, &want)
        .context("checking the images in the build's containerd")?;
    let snapshots = daemon.snapshots()?;
    for s in &stored {
        let top = snapshots.iter().find(|x| x.key == s.chain_id);
        match top {
            Some(t) if t.kind == "Committed" => {}
            Some(t) => bail!(
                "the snapshot {} of {} is {}, not committed",
                s.chain_id,
                s.image,
                t.kind
            ),
            None => bail!(
                "containerd holds no {SNAPSHOTTER} snapshot {} for {} (the image was not unpacked)",
                s.chain_id,
                s.image
            ),
        }
    }
    daemon.stop()?;
    tidy(&d.join("root"))?;
    Ok(StoreMeta {
        key: key.to_string(),
        containerd_version: art.version.clone(),
        containerd_sha256: art.sha256.clone(),
        snapshotter: SNAPSHOTTER.into(),
        namespace: NAMESPACE.into(),
        images: stored,
        snapshots: snapshots.len(),
    })
}

/// Drops what belongs to one daemon run rather than to the store: the empty
/// temporary mount point directory, and the introspection plugin's UUID (each
/// node's containerd makes its own at first start).
fn tidy(root: &Path) -> Result<()> {
    let tmpmounts = root.join("tmpmounts");
    if tmpmounts.is_dir() {
        fs::remove_dir(&tmpmounts).with_context(|| {
            format!(
                "removing {} (a mount the build's containerd left?)",
                tmpmounts.display()
            )
        })?;
    }
    let uuid = root.join("io.containerd.grpc.v1.introspection/uuid");
    if uuid.exists() {
        fs::remove_file(&uuid).with_context(|| format!("removing {}", uuid.display()))?;
    }
    Ok(())
}

impl Store {
    /// Whether the store holds `image` with `amd64_digest`.
    pub fn has(&self, image: &str, amd64_digest: &str) -> bool {
        self.meta
            .images
            .iter()
            .any(|i| i.image == image && i.amd64_digest == amd64_digest)
    }

    /// Bytes the tree takes on an ext4 file system, roughly: every file
    /// rounded up to 4 KiB plus an inode's worth per entry.
    pub fn size(&self) -> Result<u64> {
        let mut total = 0u64;
        for rel in fsutil::walk_sorted(&self.root)? {
            let m = fs::symlink_metadata(self.root.join(&rel))
                .with_context(|| format!("reading {}", self.root.join(&rel).display()))?;
            total += m.len().next_multiple_of(4096) + 256;
        }
        Ok(total)
    }

    /// Copies the store to `<var_stage>/lib/containerd` with everything
    /// containerd relies on: owners, modes, hard links, the overlay whiteouts
    /// (character devices 0/0) and `trusted.overlay.*` xattrs.
    pub fn copy_into(&self, runner: &dyn Runner, var_stage: &Path) -> Result<()> {
        let dest = var_stage.join(VAR_DIR);
        fsutil::create_dirs_0755(var_stage, &dest)?;
        runner
            .run(
                &Invocation::new(CP)
                    .args(["-a", "--no-target-directory"])
                    .arg(&self.root)
                    .arg(&dest),
            )
            .with_context(|| {
                format!(
                    "copying the containerd image store {} into the var partition",
                    self.root.display()
                )
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(sha: &str) -> ResolvedArtifact {
        ResolvedArtifact {
            name: "containerd".into(),
            version: "2.3.7".into(),
            url: "https://example/containerd.tar.gz".into(),
            sha256: sha.into(),
            path: PathBuf::from("/nonexistent"),
        }
    }

    fn imgs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn key_is_canonical_and_covers_every_input() {
        let a = imgs(&[("r/pause:1", "sha256:aa"), ("r/proxy:1", "sha256:bb")]);
        let m = key_material(&art("c1"), &a);
        let lines: Vec<&str> = m.lines().collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
        for want in [
            "format 1",
            "containerd 2.3.7 c1",
            "snapshotter overlayfs",
            "namespace k8s.io",
            "label io.cri-containerd.pinned=pinned",
            "image r/pause:1 sha256:aa",
            "image r/proxy:1 sha256:bb",
        ] {
            assert!(lines.contains(&want), "{want} not in\n{m}");
        }
        // Order of the images does not matter; each input does.
        let mut b = a.clone();
        b.reverse();
        assert_eq!(cache_key(&art("c1"), &a), cache_key(&art("c1"), &b));
        assert_ne!(cache_key(&art("c1"), &a), cache_key(&art("c2"), &a));
        assert_ne!(cache_key(&art("c1"), &a), cache_key(&art("c1"), &a[..1]));
        let moved = imgs(&[("r/pause:1", "sha256:aa"), ("r/proxy:1", "sha256:cc")]);
        assert_ne!(cache_key(&art("c1"), &a), cache_key(&art("c1"), &moved));
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let two = chain_id(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            two,
            format!(
                "sha256:{}",
                fsutil::sha256_bytes(format!("{a} {b}").as_bytes())
            )
        );
        assert_ne!(two, chain_id(&[b, a]).unwrap());
    }

    #[test]
    fn an_entry_counts_only_with_its_metadata_and_matching_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = dir.path().join("k1");
        fs::create_dir_all(e.join("root")).unwrap();
        assert!(
            load(&e, "k1").unwrap().is_none(),
            "no store.json: not an entry"
        );
        let meta = StoreMeta {
            key: "k1".into(),
            containerd_version: "2.3.7".into(),
            containerd_sha256: "c1".into(),
            snapshotter: SNAPSHOTTER.into(),
            namespace: NAMESPACE.into(),
            images: vec![StoredImage {
                image: "r/pause:1".into(),
                amd64_digest: "sha256:aa".into(),
                chain_id: "sha256:cc".into(),
            }],
            snapshots: 1,
        };
        fs::write(e.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        let s = load(&e, "k1").unwrap().unwrap();
        assert!(s.cache_hit && s.has("r/pause:1", "sha256:aa") && !s.has("r/pause:1", "sha256:ab"));
        let err = load(&e, "k2").unwrap_err().to_string();
        assert!(
            err.contains("names key k1, not its directory's k2"),
            "{err}"
        );
    }
}

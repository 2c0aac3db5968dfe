//! Pulling one image into the content-addressed cache, pinned.
//!
//! The tag's manifest (or index) digest is pinned in `hakube.lock` the first
//! time; later builds take the manifest from the cache by that digest and
//! make no request at all when every blob is cached too. A tag that now
//! resolves to another digest, a blob whose bytes do not hash to its digest
//! and an image the source does not have are refused (exit 2). From an index
//! only the linux/amd64 manifest is taken: nodes are amd64.

use super::reference::ImageRef;
use super::source::{DigestMismatch, ImageSource, NotFound};
use crate::artifacts::cache::Cache;
use crate::artifacts::lock::{ImageLockEntry, Lock};
use crate::errors::bad_input;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;

/// One blob of an image, verified and in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub path: PathBuf,
}

/// An image ready to be laid into a node: its linux/amd64 manifest, config
/// and layers, all in the cache.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub image: ImageRef,
    /// The digest the tag resolves to (pinned).
    pub digest: String,
    /// The linux/amd64 manifest.
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl PulledImage {
    pub fn amd64_digest(&self) -> &str {
        &self.manifest.digest
    }
    /// Bytes of manifest, config and layers.
    pub fn size(&self) -> u64 {
        self.manifest.size + self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// The hex part of a `sha256:` digest; other algorithms are refused.
pub fn sha256_hex_of(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if crate::artifacts::lock::is_sha256_hex(h) => Ok(h),
        _ => bail!("digest {digest:?} is not sha256:<64 lower-case hex digits>"),
    }
}

pub struct Puller<'a> {
    pub source: &'a dyn ImageSource,
    pub cache: Cache,
    /// The lock file as read at the start; pins are looked up here.
    pub lock: &'a Lock,
    pub lock_path: &'a std::path::Path,
    /// Pins this run adds.
    pub learned: Lock,
}

impl Puller<'_> {
    pub fn pull(&mut self, image: &ImageRef) -> Result<PulledImage> {
        let name = image.to_string();
        let pin = self.lock.image(&name).cloned();
        let (digest, top) = match &pin {
            Some(p) => match self.cached(&p.digest, None)? {
                Some(bytes) => (p.digest.clone(), bytes),
                None => {
                    let bytes = self.fetch_manifest(image, None)?;
                    let d = digest_of(&bytes);
                    if d != p.digest {
                        return Err(bad_input(format!(
                            "refusing image {image}: its tag now names manifest {d} at {}, but {} pins {} \
                             (pinned from {}).\nhint: if the image was really re-published, delete its \
                             entry from {} to pin it again",
                            self.source.origin(image),
                            self.lock_path.display(),
                            p.digest,
                            p.pinned_from,
                            self.lock_path.display()
                        )));
                    }
                    self.store_bytes(&d, &bytes)?;
                    (d, bytes)
                }
            },
            None => {
                let bytes = self.fetch_manifest(image, None)?;
                let d = digest_of(&bytes);
                self.store_bytes(&d, &bytes)?;
                (d, bytes)
            }
        };
        let top_json = parse_json(&top, image, &digest)?;
        let (manifest_digest, manifest_bytes) = if is_index(&top_json) {
            let d = pick_linux_amd64(&top_json).ok_or_else(|| {
                bad_input(format!(
                    "image {image} ({digest}) has no linux/amd64 manifest"
                ))
            })?;
            if let Some(p) = &pin {
                if p.amd64_digest != d {
                    return Err(bad_input(format!(
                        "image {image}: index {digest} names linux/amd64 manifest {d}, but {} pins {}",
                        self.lock_path.display(),
                        p.amd64_digest
                    )));
                }
            }
            let bytes = match self.cached(&d, None)? {
                Some(b) => b,
                None => {
                    let b = self.fetch_manifest(image, Some(&d))?;
                    if digest_of(&b) != d {
                        return Err(bad_input(format!(
                            "refusing image {image}: manifest {d} from {} hashes to {}",
                            self.source.origin(image),
                            digest_of(&b)
                        )));
                    }
                    self.store_bytes(&d, &b)?;
                    b
                }
            };
            (d, bytes)
        } else {
            (digest.clone(), top)
        };
        let m = parse_json(&manifest_bytes, image, &manifest_digest)?;
        let manifest = Blob {
            digest: manifest_digest.clone(),
            media_type: media_type(&m),
            size: manifest_bytes.len() as u64,
            path: self.cache.path_for(sha256_hex_of(&manifest_digest)?),
        };
        let config = descriptor(&m["config"]).with_context(|| {
            format!("reading the config descriptor of {image} ({manifest_digest})")
        })?;
        let config = self.blob(image, config)?;
        let mut layers = Vec::new();
        for l in m["layers"].as_array().into_iter().flatten() {
            let d = descriptor(l).with_context(|| {
                format!("reading a layer descriptor of {image} ({manifest_digest})")
            })?;
            layers.push(self.blob(image, d)?);
        }
        if layers.is_empty() {
            return Err(bad_input(format!(
                "image {image} ({manifest_digest}) has no layers"
            )));
        }
        if pin.is_none() {
            let origin = self.source.origin(image);
            self.learned.upsert_image(ImageLockEntry {
                image: name,
                digest: digest.clone(),
                amd64_digest: manifest_digest,
                pinned_from: origin,
            });
        }
        Ok(PulledImage {
            image: image.clone(),
            digest,
            manifest,
            config,
            layers,
        })
    }

    /// The cached bytes of `digest`, if present (and still hashing to it).
    fn cached(&self, digest: &str, size: Option<u64>) -> Result<Option<Vec<u8>>> {
        let hex = sha256_hex_of(digest)?;
        match self.cache.lookup(hex, size) {
            Some(p) => Ok(Some(
                std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
            )),
            None => Ok(None),
        }
    }

    fn store_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let hex = sha256_hex_of(digest)?;
        self.cache
            .store(Some(hex), |w| Ok(w.write_all(bytes)?))?
            .map_err(|m| anyhow!("storing {digest}: bytes hash to {}", m.actual))?;
        Ok(())
    }

    fn fetch_manifest(&self, image: &ImageRef, digest: Option<&str>) -> Result<Vec<u8>> {
        self.source
            .manifest(image, digest)
            .map_err(|e| refine(e, image))
    }

    fn blob(&self, image: &ImageRef, d: (String, String, u64)) -> Result<Blob> {
        let (digest, media_type, size) = d;
        let hex = sha256_hex_of(&digest)?.to_string();
        if let Some(path) = self.cache.lookup(&hex, Some(size)) {
            return Ok(Blob {
                digest,
                media_type,
                size,
                path,
            });
        }
        let bar = crate::ui::bytes_bar(Some(size), &format!("{image} {}", &hex[..12]));
        let res = self.cache.store(Some(&hex), |w| {
            self.source
                .blob(image, &digest, w, &mut |done, _| bar.set_position(done))
        });
        bar.finish_and_clear();
        match res.map_err(|e| refine(e, image))? {
            Ok(stored) if stored.size == size => Ok(Blob {
                digest,
                media_type,
                size,
                path: stored.path,
            }),
            Ok(stored) => Err(bad_input(format!(
                "refusing image {image}: blob {digest} from {} has {} bytes, its manifest says {size}",
                self.source.origin(image),
                stored.size
            ))),
            Err(m) => Err(bad_input(format!(
                "refusing image {image}: blob {digest} from {} hashes to sha256:{}; nothing was cached",
                self.source.origin(image),
                m.actual
            ))),
        }
    }
}

/// A missing image or wrong bytes are the user's to fix (exit 2).
fn refine(e: anyhow::Error, image: &ImageRef) -> anyhow::Error {
    if let Some(nf) = e.downcast_ref::<NotFound>() {
        return bad_input(format!("image {image} is missing: {nf}"));
    }
    if let Some(m) = e.downcast_ref::<DigestMismatch>() {
        return bad_input(format!("refusing image {image}: {m}; nothing was cached"));
    }
    e
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::image::fsutil::sha256_bytes(bytes))
}

fn parse_json(bytes: &[u8], image: &ImageRef, digest: &str) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| bad_input(format!("image {image}: manifest {digest} is not JSON: {e}")))
}

fn media_type(m: &Value) -> String {
    m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string()
}

pub fn is_index(m: &Value) -> bool {
    matches!(
        m["mediaType"].as_str(),
        Some("application/vnd.oci.image.index.v1+json")
            | Some("application/vnd.docker.distribution.manifest.list.v2+json")
    ) || (m.get("manifests").is_some() && m.get("layers").is_none())
}

/// The linux/amd64 entry of an index (the first, when there are several).
pub fn pick_linux_amd64(index: &Value) -> Option<String> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| {
            m["platform"]["os"].as_str() == Some("linux")
                && m["platform"]["architecture"].as_str() == Some("amd64")
        })
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
}

/// (digest, mediaType, size) of a descriptor.
fn descriptor(d: &Value) -> Result<(String, String, u64)> {
    let digest = d["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("no digest"))?
        .to_string();
    sha256_hex_of(&digest)?;
    let size = d["size"].as_u64().ok_or_else(|| anyhow!("no size"))?;
    let mt = d["mediaType"].as_str().unwrap_or_default().to_string();
    Ok((digest, mt, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_linux_amd64_from_an_index() {
        let idx = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": "sha256:aa", "platform": {"os": "linux", "architecture": "arm64"}},
                {"digest": "sha256:bb", "platform": {"os": "windows", "architecture": "amd64"}},
                {"digest": "sha256:cc", "platform": {"os": "linux", "architecture": "amd64"}},
            ]
        });
        assert!(is_index(&idx));
        assert_eq!(pick_linux_amd64(&idx).as_deref(), Some("sha256:cc"));
        let arm_only = json!({"manifests": [
            {"digest": "sha256:aa", "platform": {"os": "linux", "architecture": "arm64"}}]});
        assert_eq!(pick_linux_amd64(&arm_only), None);
        assert!(!is_index(&json!({"config": {}, "layers": []})));
    }

    #[test]
    fn only_sha256_digests() {
        assert!(sha256_hex_of(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(sha256_hex_of(&format!("sha512:{}", "a".repeat(128))).is_err());
        assert!(sha256_hex_of("sha256:../../etc/passwd").is_err());
    }
}

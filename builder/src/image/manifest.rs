//! `manifest.json`: every input and artifact with version and SHA-256, the
//! spec source hash, the base cache key, builder version and each image's
//! SHA-256. Images of other nodes built earlier into the same directory are
//! kept (each records the OS root it was built from).

use crate::artifacts::ResolvedArtifact;
use anyhow::Result;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    pub role: String,
    pub qcow2: String,
    pub xml: String,
    pub size: u64,
    pub sha256: String,
    pub os_root_key: String,
    pub source_date_epoch: i64,
    /// The container images inside this node's disk.
    #[serde(default)]
    pub container_images: Vec<crate::images::NodeImage>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub builder_version: String,
    pub cluster: String,
    pub spec: SpecInfo,
    pub base: BaseInfo,
    pub os_root: OsRootInfo,
    pub firstboot: FileInfo,
    /// The OS update bundle of this build's OS root.
    pub update: super::update::UpdateInfo,
    pub artifacts: Vec<ArtifactInfo>,
    pub images: BTreeMap<String, ImageEntry>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecInfo {
    pub source: String,
    pub sha256: String,
    pub kubernetes_version: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseInfo {
    pub cache_key: String,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    /// Every package in the base root and its Debian version.
    pub package_versions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsRootInfo {
    pub cache_key: String,
    pub erofs_sha256: String,
    pub kernel_version: String,
    pub source_date_epoch: i64,
    /// The image version (IMAGE_VERSION; names the update bundle and entries).
    pub version: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub sha256: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInfo {
    pub name: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
}

impl From<&ResolvedArtifact> for ArtifactInfo {
    fn from(a: &ResolvedArtifact) -> Self {
        ArtifactInfo {
            name: a.name.clone(),
            version: a.version.clone(),
            url: a.url.clone(),
            sha256: a.sha256.clone(),
        }
    }
}

impl Manifest {
    /// Adds this build's images to those an earlier manifest at `path` listed
    /// (entries whose file is gone are dropped), then writes it atomically.
    pub fn merge_and_write(mut self, path: &Path) -> Result<Manifest> {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(old) = serde_json::from_str::<Manifest>(&text) {
                let dir = path.parent().unwrap_or(Path::new("."));
                for (node, entry) in old.images {
                    if !self.images.contains_key(&node) && dir.join(&entry.qcow2).is_file() {
                        self.images.insert(node, entry);
                    }
                }
            }
        }
        let mut text = serde_json::to_string_pretty(&self)?;
        text.push('\n');
        // A hidden temporary, swept by the next build if this one is killed.
        crate::private::write_atomically_with_mode(path, text.as_bytes(), 0o644)?;
        Ok(self)
    }
}

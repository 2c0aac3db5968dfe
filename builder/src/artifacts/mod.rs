//! Kubernetes artifacts: the catalogue of what each release needs, the lock
//! file, the content-addressed download cache and mirrors.
//! (Owned by the artifacts work; the signatures below are the agreed interface.)

use crate::spec::Cluster;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Where artifacts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Their upstream release locations (dl.k8s.io, the projects' release downloads).
    Upstream,
    /// `--artifacts DIR_OR_URL`: a mirror laid out as `<mirror>/<host>/<path>`.
    Mirror(String),
}

/// What to resolve and where to keep it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub cluster: &'a Cluster,
    pub source: Source,
    /// `hakube.lock`: pins every artifact's SHA-256.
    pub lock_path: PathBuf,
    /// Cache root; downloads live in `<cache>/artifacts/sha256/<hex>`.
    pub cache_dir: PathBuf,
}

/// One artifact, verified and present in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedArtifact {
    pub name: String,
    pub version: String,
    /// The upstream URL (also when fetched from a mirror).
    pub url: String,
    pub sha256: String,
    /// The verified file in the cache.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub artifacts: Vec<ResolvedArtifact>,
}

/// Resolves every artifact the cluster needs: checksums from the lock file (or
/// the upstream checksum file on first resolution, then pinned), files from
/// the cache (or downloaded, verified, then cached).
pub fn resolve(_req: &Request) -> Result<Resolved> {
    anyhow::bail!("artifacts: not implemented yet")
}

impl Resolved {
    /// Lays the artifacts into a root filesystem directory: /usr/bin/{kubeadm,kubelet,kubectl},
    /// /usr/local/bin/crictl, /opt/cni/bin/*, /usr/local/bin/{containerd,containerd-shim-runc-v2,ctr},
    /// /usr/local/sbin/runc, /usr/local/bin/{etcd,etcdctl}, CRI-O's binaries when chosen,
    /// and manifests under /usr/share/hakube/manifests/.
    pub fn install_into(&self, _root: &Path) -> Result<()> {
        anyhow::bail!("artifacts: not implemented yet")
    }

    /// Canonical `name version sha256` lines, sorted: part of the base cache key.
    pub fn cache_key_material(&self) -> String {
        let mut lines: Vec<String> = self
            .artifacts
            .iter()
            .map(|a| format!("{} {} {}", a.name, a.version, a.sha256))
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// `$XDG_CACHE_HOME/hakube`, else `~/.cache/hakube`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hakube");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("hakube")
}

//! Container images: every image a node runs is inside its disk, checked at
//! build (air-gapped clusters form with no route to any registry).
//!
//! [`resolve`]: which images each node runs ([`list`]: kubeadm's own list
//! from the artifact set's kubeadm, the CNI manifest's images, the sandbox
//! image; by role), then each image pulled once ([`pull`]) from the upstream
//! registries, mirrors or an OCI layout ([`source`]), every blob verified,
//! manifest digests pinned in `hakube.lock`, blobs in the content-addressed
//! cache. A containerd node gets its images in containerd's own store on its
//! var partition ([`store`], made by the node's containerd, [`containerd`]);
//! first boot only checks them. A CRI-O node gets archives ([`archive`]) that
//! first boot imports before kubeadm runs. A missing image, a digest that
//! differs from its pin or a tampered blob stops the build with exit code 2,
//! naming the node and the image, before any store is made.

pub mod archive;
pub mod containerd;
pub mod list;
pub mod pull;
pub mod reference;
pub mod source;
pub mod store;

use crate::artifacts::cache::Cache;
use crate::artifacts::lock::Lock;
use crate::artifacts::Resolved;
use crate::errors::bad_input;
use crate::render;
use crate::spec::{model::Cni, Cluster, Node};
use anyhow::{anyhow, Context, Result};
use hakube_node_profile::Role;
pub use list::Origin;
pub use pull::PulledImage;
pub use reference::ImageRef;
use source::{ImageSource, LayoutSource, Mirror, RegistrySource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where images come from (`--registry-mirror`, `--registry-ca`, `--image-layout`).
#[derive(Debug, Clone, Default)]
pub struct SourceConfig {
    pub mirrors: Vec<Mirror>,
    pub ca: Option<PathBuf>,
    pub layout: Option<PathBuf>,
}

impl SourceConfig {
    pub fn open(&self) -> Result<Box<dyn ImageSource>> {
        match &self.layout {
            Some(dir) => Ok(Box::new(LayoutSource::new(dir)?)),
            None => Ok(Box::new(RegistrySource::new(
                self.mirrors.clone(),
                self.ca.as_deref(),
            )?)),
        }
    }
}

/// One image of one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeImage {
    pub image: ImageRef,
    pub origin: Origin,
    /// The pinned digest the tag resolves to.
    pub digest: String,
    pub amd64_digest: String,
}

/// Every node's images, pulled.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub nodes: BTreeMap<String, Vec<NodeImage>>,
    pub pulled: BTreeMap<ImageRef, PulledImage>,
}

impl Images {
    /// `node`'s images, ready to archive.
    pub fn for_node(&self, node: &str) -> Vec<&PulledImage> {
        self.nodes
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|i| self.pulled.get(&i.image))
            .collect()
    }
}

/// What [`resolve`] needs.
pub struct Request<'a> {
    pub cluster: &'a Cluster,
    pub nodes: &'a [Node],
    pub artifacts: &'a Resolved,
    /// The upstream files the trees are made from, read from `artifacts`.
    pub upstream: render::Upstream<'a>,
    pub lock_path: &'a Path,
    pub cache_dir: &'a Path,
}

/// The images each of `nodes` runs (see [`list`]), without pulling.
/// `upstream`: the upstream files the trees are made from (calico's manifest).
pub fn wanted(
    cluster: &Cluster,
    nodes: &[Node],
    kubeadm: &dyn list::KubeadmImages,
    upstream: &render::Upstream,
) -> Result<BTreeMap<String, Vec<(ImageRef, Origin)>>> {
    let mut out = BTreeMap::new();
    if nodes.iter().all(|n| n.role == Role::Etcd) {
        for n in nodes {
            out.insert(n.name.as_str().to_string(), Vec::new());
        }
        return Ok(out);
    }
    // The image list depends on the ClusterConfiguration only: render the
    // init node's config with placeholder credentials (nothing secret is
    // read or written to list images).
    let init = cluster.init_node();
    let creds = render::JoinCredentials {
        token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
        cluster_initialised: false,
    };
    let tree = render::config_tree(cluster, init, &creds, upstream)
        .with_context(|| format!("rendering node {} for its kubeadm config", init.name))?;
    let init_cfg = file_bytes(&tree, render::paths::KUBEADM_INIT)
        .ok_or_else(|| anyhow!("node {} has no {}", init.name, render::paths::KUBEADM_INIT))?;
    let kubeadm_list = list::kubeadm_images(kubeadm, init_cfg).context(
        "listing kubeadm's images with the kubeadm of the artifact set (kubeadm config images list)",
    )?;
    let cni = cni_images(cluster, &tree)?;
    let sandbox = ImageRef::parse(&crate::artifacts::catalog::pause_image(
        cluster.kubernetes_version,
    ))?;
    for n in nodes {
        out.insert(
            n.name.as_str().to_string(),
            list::for_role(n.role, &kubeadm_list, &cni, &sandbox),
        );
    }
    Ok(out)
}

/// Every image the CNI manifest the init node applies names (calico's too:
/// its manifest install names them all).
fn cni_images(cluster: &Cluster, init_tree: &crate::tree::FileTree) -> Result<Vec<ImageRef>> {
    let path = render::paths::cni_manifest(cluster.cni);
    let text = file_bytes(init_tree, &path)
        .ok_or_else(|| anyhow!("the init node's tree has no {path}"))?;
    list::manifest_images(&String::from_utf8_lossy(text))
        .with_context(|| format!("reading the images of {path}"))
}

fn file_bytes<'t>(tree: &'t crate::tree::FileTree, path: &str) -> Option<&'t [u8]> {
    match tree.get(path)? {
        crate::tree::FileEntry::File { contents, .. } => Some(contents),
        crate::tree::FileEntry::Symlink { .. } => None,
    }
}

/// Lists and pulls every image of `req.nodes`. Pins learned are saved even
/// when a later image fails (they are what the source published).
pub fn resolve(req: &Request, src: &SourceConfig) -> Result<Images> {
    let wanted = match req.artifacts.get("kubeadm") {
        Some(k) => wanted(
            req.cluster,
            req.nodes,
            &list::KubeadmBinary { path: &k.path },
            &req.upstream,
        )?,
        None if req.nodes.iter().all(|n| n.role == Role::Etcd) => BTreeMap::new(),
        None => return Err(anyhow!("the artifact set has no kubeadm")),
    };
    let needs_any = wanted.values().any(|v| !v.is_empty());
    if !needs_any {
        return Ok(Images {
            nodes: BTreeMap::new(),
            pulled: BTreeMap::new(),
        });
    }
    let source = src.open()?;
    pull_all(req.lock_path, req.cache_dir, &*source, wanted)
}

/// Pulls `wanted` (node -> images) through `source`, pinning in the lock
/// file at `lock_path` and caching under `cache_dir`.
pub fn pull_all(
    lock_path: &Path,
    cache_dir: &Path,
    source: &dyn ImageSource,
    wanted: BTreeMap<String, Vec<(ImageRef, Origin)>>,
) -> Result<Images> {
    let lock = Lock::load(lock_path)?;
    let cache = Cache::new(cache_dir);
    cache.sweep_stale_partials();
    let mut puller = pull::Puller {
        source,
        cache,
        lock: &lock,
        lock_path,
        learned: Lock::default(),
    };
    let mut users: BTreeMap<ImageRef, Vec<&str>> = BTreeMap::new();
    for (node, list) in &wanted {
        for (i, _) in list {
            users.entry(i.clone()).or_default().push(node);
        }
    }
    let mut pulled = BTreeMap::new();
    let mut result = Ok(());
    for (image, nodes) in &users {
        match puller.pull(image) {
            Ok(p) => {
                pulled.insert(image.clone(), p);
            }
            Err(e) => {
                result = Err(e.context(format!("{} needs image {image}", who(nodes))));
                break;
            }
        }
    }
    if !puller.learned.images().is_empty() {
        let saved = puller.learned.merge_and_save(lock_path);
        if result.is_ok() {
            saved?;
        } else if let Err(e) = saved {
            tracing::warn!("could not save the lock file: {e:#}");
        }
    }
    result?;
    let mut nodes = BTreeMap::new();
    for (node, list) in wanted {
        let entries = list
            .into_iter()
            .map(|(image, origin)| {
                let p = &pulled[&image];
                NodeImage {
                    digest: p.digest.clone(),
                    amd64_digest: p.amd64_digest().to_string(),
                    image,
                    origin,
                }
            })
            .collect();
        nodes.insert(node, entries);
    }
    Ok(Images { nodes, pulled })
}

fn who(nodes: &[&str]) -> String {
    match nodes {
        [one] => format!("node {one}"),
        _ => format!("nodes {}", nodes.join(", ")),
    }
}

/// One node's images, to lay on its var partition.
pub struct NodeLayout<'a> {
    pub needed: &'a [NodeImage],
    pub pulled: Vec<&'a PulledImage>,
    pub lock: &'a Lock,
    /// containerd's store holding them ([`store::ensure`]); `None`: archives
    /// for first boot to import (CRI-O).
    pub store: Option<&'a store::Store>,
}

impl NodeLayout<'_> {
    /// Bytes the images take on the partition (before file system overhead).
    pub fn size(&self) -> Result<u64> {
        match self.store {
            Some(s) => s.size(),
            None => Ok(self.pulled.iter().map(|p| p.size()).sum()),
        }
    }

    /// Writes `images.json` (and the archives, or the store) into the var
    /// stage, then checks that everything the node runs is there with its
    /// pinned digests.
    pub fn lay(
        &self,
        runner: &dyn crate::image::tools::Runner,
        node: &str,
        var_stage: &Path,
        epoch: i64,
    ) -> Result<()> {
        if !self.needed.is_empty() {
            archive::write_node_images(var_stage, node, &self.pulled, epoch, self.store.is_none())?;
            if let Some(s) = self.store {
                s.copy_into(runner, var_stage)?;
            }
        }
        check_complete(node, self.needed, var_stage, self.lock, self.store)
    }
}

/// Before anything is made of them: every image `node` runs was pulled, with
/// the digests pinned in `lock`. Refuses (exit 2) naming the node and the image.
pub fn check_pulled(
    node: &str,
    needed: &[NodeImage],
    pulled: &[&PulledImage],
    lock: &Lock,
) -> Result<()> {
    for n in needed {
        let name = n.image.to_string();
        let Some(p) = pulled.iter().find(|p| p.image == n.image) else {
            return Err(bad_input(format!(
                "node {node}: image {name} ({:?}) was not pulled; the node cannot run without it",
                n.origin
            )));
        };
        let pin = lock.image(&name);
        let want = pin.map(|p| p.digest.as_str()).unwrap_or(&n.digest);
        if p.digest != want || pin.is_some_and(|pin| pin.amd64_digest != p.amd64_digest()) {
            return Err(bad_input(format!(
                "node {node}: image {name} was pulled as {} but the pin is {want}",
                p.digest
            )));
        }
    }
    Ok(())
}

/// The completeness check of a node's laid-out images: every image the node
/// runs is in its `images.json` with the pinned digests, and its archive is
/// there, or `store` holds it with that digest. Refuses (exit 2) naming the
/// node and the image.
pub fn check_complete(
    node: &str,
    needed: &[NodeImage],
    var_stage: &Path,
    lock: &Lock,
    store: Option<&store::Store>,
) -> Result<()> {
    let dir = var_stage.join(archive::IMAGES_DIR);
    let p = dir.join(archive::INDEX_FILE);
    let laid: archive::ImagesIndex = if needed.is_empty() && !p.exists() {
        return Ok(());
    } else {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))?
    };
    for n in needed {
        let name = n.image.to_string();
        let Some(got) = laid.images.iter().find(|i| i.image == name) else {
            return Err(bad_input(format!(
                "node {node}: image {name} ({:?}) is missing from its disk",
                n.origin
            )));
        };
        let pinned = lock.image(&name);
        let want_digest = pinned.map(|p| p.digest.as_str()).unwrap_or(&n.digest);
        if got.digest != want_digest || pinned.is_some_and(|p| p.amd64_digest != got.amd64_digest) {
            return Err(bad_input(format!(
                "node {node}: image {name} on its disk has digest {} but the pin is {want_digest}",
                got.digest
            )));
        }
        match (&got.archive, store) {
            (Some(a), _) if dir.join(a).is_file() => {}
            (Some(a), _) => {
                return Err(bad_input(format!(
                    "node {node}: the archive {a} of image {name} is missing"
                )))
            }
            (None, Some(s)) if s.has(&name, &got.amd64_digest) => {}
            (None, _) => {
                return Err(bad_input(format!(
                    "node {node}: image {name} has no archive and is not in the containerd store laid on its disk"
                )))
            }
        }
    }
    Ok(())
}

/// One image of one node as `summary` shows it: the pin, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedImage {
    pub image: String,
    pub origin: Origin,
    /// `null` until a build pins it.
    pub digest: Option<String>,
    pub amd64_digest: Option<String>,
}

/// Every node's images for `summary`, from the kubeadm of the artifact set
/// when it is pinned and cached (a build has run), digests from the lock.
/// `Err(why)` when kubeadm is not available yet. Makes no network request
/// and writes nothing.
pub fn planned(
    cluster: &Cluster,
    lock_path: &Path,
    cache_dir: &Path,
) -> Result<std::result::Result<BTreeMap<String, Vec<PlannedImage>>, String>> {
    let lock = Lock::load(lock_path)?;
    let cached = |name: &str| crate::artifacts::cached(cluster, lock_path, cache_dir, name);
    let mut needed = vec![(
        "kubeadm",
        format!("kubeadm v{}", cluster.kubernetes_version),
    )];
    if cluster.cni == Cni::Calico {
        needed.push((render::CALICO_MANIFEST_ARTIFACT, "calico's manifest".into()));
    }
    for (name, what) in needed {
        if cached(name)?.is_none() {
            return Ok(Err(format!(
                "known after the first build: {what} of the artifact set is not pinned in {} and cached in {}",
                lock_path.display(),
                cache_dir.display()
            )));
        }
    }
    let kubeadm = cached("kubeadm")?.expect("checked above");
    let upstream =
        render::UpstreamTexts::load(cluster, cached, |name| anyhow!("{name} is not cached"))?;
    let w = wanted(
        cluster,
        &cluster.nodes,
        &list::KubeadmBinary { path: &kubeadm },
        &upstream.get(),
    )?;
    Ok(Ok(w
        .into_iter()
        .map(|(node, list)| {
            let list = list
                .into_iter()
                .map(|(image, origin)| {
                    let pin = lock.image(&image.to_string());
                    PlannedImage {
                        image: image.to_string(),
                        origin,
                        digest: pin.map(|p| p.digest.clone()),
                        amd64_digest: pin.map(|p| p.amd64_digest.clone()),
                    }
                })
                .collect();
            (node, list)
        })
        .collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pull::Blob;

    fn blob(d: &str) -> Blob {
        Blob {
            digest: d.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1,
            path: PathBuf::from("/nonexistent"),
        }
    }

    fn pulled(name: &str, digest: &str) -> PulledImage {
        PulledImage {
            image: ImageRef::parse(name).unwrap(),
            digest: digest.into(),
            manifest: blob(digest),
            config: blob("sha256:c"),
            layers: vec![],
        }
    }

    fn needed(name: &str, digest: &str, origin: Origin) -> NodeImage {
        NodeImage {
            image: ImageRef::parse(name).unwrap(),
            origin,
            digest: digest.into(),
            amd64_digest: digest.into(),
        }
    }

    /// What runs before the store stage: an image the node's list names but
    /// the pull did not give, or one pulled at another digest, stops the
    /// build (exit 2) naming the node and the image.
    #[test]
    fn check_pulled_refuses_a_missing_or_moved_image() {
        let lock = Lock::default();
        let need = [
            needed("registry.k8s.io/pause:3.10.2", "sha256:a", Origin::Sandbox),
            needed(
                "registry.k8s.io/kube-proxy:v1.37.2",
                "sha256:b",
                Origin::Kubeadm,
            ),
        ];
        let (p, k) = (
            pulled("registry.k8s.io/pause:3.10.2", "sha256:a"),
            pulled("registry.k8s.io/kube-proxy:v1.37.2", "sha256:b"),
        );
        check_pulled("worker-1", &need, &[&p, &k], &lock).unwrap();
        let e = check_pulled("worker-1", &need, &[&p], &lock).unwrap_err();
        assert_eq!(crate::errors::exit_code(&e), 2);
        assert!(
            e.to_string().contains(
                "node worker-1: image registry.k8s.io/kube-proxy:v1.37.2 (Kubeadm) was not pulled"
            ),
            "{e}"
        );
        let moved = pulled("registry.k8s.io/kube-proxy:v1.37.2", "sha256:z");
        let e = check_pulled("worker-1", &need, &[&p, &moved], &lock).unwrap_err();
        assert_eq!(crate::errors::exit_code(&e), 2);
        assert!(
            e.to_string()
                .contains("pulled as sha256:z but the pin is sha256:b"),
            "{e}"
        );
    }
}

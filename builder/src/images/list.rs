//! Which images a node runs.
//!
//! - kubeadm's own list for the cluster's ClusterConfiguration, printed by the
//!   kubeadm binary of the artifact set (`kubeadm config images list -o json
//!   --config init.yaml`, which reads only the file and needs no network). It
//!   follows the configuration: no etcd image with external etcd, no
//!   kube-proxy or CoreDNS when those addons are disabled, the configured
//!   imageRepository and versions.
//! - The images of the CNI manifest (its DaemonSet runs on every node).
//! - The runtime's sandbox (pause) image.
//!
//! By role: masters run all of kubeadm's list; workers run kube-proxy (a
//! DaemonSet), CoreDNS (a Deployment the scheduler may place on them) and
//! pause, never the control plane (kube-apiserver, kube-controller-manager,
//! kube-scheduler, etcd: static pods of masters); external etcd nodes run
//! etcd as a service and no containers at all.

use super::reference::ImageRef;
use anyhow::{bail, Context, Result};
use hakube_node_profile::Role;
use std::path::Path;

/// Images that only ever run as control-plane static pods.
pub const CONTROL_PLANE: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// Why a node has an image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// `kubeadm config images list`
    Kubeadm,
    /// The CNI manifest
    Cni,
    /// The runtime's sandbox image
    Sandbox,
}

/// Prints kubeadm's image list for a config file (a trait so unit tests can
/// stand in for the binary).
pub trait KubeadmImages {
    fn list(&self, config: &Path) -> Result<String>;
}

/// The kubeadm binary of the artifact set, run on the build host.
pub struct KubeadmBinary<'a> {
    pub path: &'a Path,
}

impl KubeadmImages for KubeadmBinary<'_> {
    fn list(&self, config: &Path) -> Result<String> {
        // The cache keeps files 0644: run a private executable copy.
        let dir = tempfile::tempdir().context("creating a directory to run kubeadm from")?;
        let exe = dir.path().join("kubeadm");
        std::fs::copy(self.path, &exe)
            .with_context(|| format!("copying {} to {}", self.path.display(), exe.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
        }
        let out = std::process::Command::new(&exe)
            .args(["config", "images", "list", "-o", "json", "--config"])
            .arg(config)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "kubeadm config images list --config {} failed ({}): {}",
                config.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// kubeadm's `-o json` output (`output.kubeadm.k8s.io` kind `Images`).
pub fn parse_kubeadm_list(text: &str) -> Result<Vec<ImageRef>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .with_context(|| format!("kubeadm's image list is not JSON: {:.200}", text.trim()))?;
    if v["kind"].as_str() != Some("Images") {
        bail!(
            "kubeadm's image list has kind {:?}, Images expected",
            v["kind"]
        );
    }
    v["images"]
        .as_array()
        .context("kubeadm's image list has no images array")?
        .iter()
        .map(|i| {
            let s = i
                .as_str()
                .context("an entry of kubeadm's image list is not a string")?;
            ImageRef::parse(s).with_context(|| format!("kubeadm listed {s:?}"))
        })
        .collect()
}

/// kubeadm's images for `init_config` (the init node's rendered config: its
/// ClusterConfiguration is the cluster's).
pub fn kubeadm_images(kubeadm: &dyn KubeadmImages, init_config: &[u8]) -> Result<Vec<ImageRef>> {
    let dir = tempfile::tempdir().context("creating a directory for the kubeadm config")?;
    let p = dir.path().join("init.yaml");
    std::fs::write(&p, init_config).with_context(|| format!("writing {}", p.display()))?;
    let text = kubeadm.list(&p)?;
    parse_kubeadm_list(&text)
}

/// Every `image:` of the containers and init containers in a multi-document
/// manifest.
pub fn manifest_images(yaml: &str) -> Result<Vec<ImageRef>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = serde_json::Value::deserialize(doc).context("reading the CNI manifest")?;
        collect(&v, &mut out)?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn collect(v: &serde_json::Value, out: &mut Vec<ImageRef>) -> Result<()> {
    match v {
        serde_json::Value::Object(m) => {
            for key in ["containers", "initContainers"] {
                for c in m.get(key).and_then(|c| c.as_array()).into_iter().flatten() {
                    if let Some(i) = c.get("image").and_then(|i| i.as_str()) {
                        out.push(
                            ImageRef::parse(i)
                                .with_context(|| format!("CNI manifest image {i:?}"))?,
                        );
                    }
                }
            }
            for (_, child) in m {
                collect(child, out)?;
            }
        }
        serde_json::Value::Array(a) => {
            for child in a {
                collect(child, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The images a node of `role` runs, sorted, with why.
pub fn for_role(
    role: Role,
    kubeadm: &[ImageRef],
    cni: &[ImageRef],
    sandbox: &ImageRef,
) -> Vec<(ImageRef, Origin)> {
    let mut out: Vec<(ImageRef, Origin)> = Vec::new();
    match role {
        Role::Etcd => return out,
        Role::Master => out.extend(kubeadm.iter().map(|i| (i.clone(), Origin::Kubeadm))),
        Role::Worker => out.extend(
            kubeadm
                .iter()
                .filter(|i| !CONTROL_PLANE.contains(&i.basename()))
                .map(|i| (i.clone(), Origin::Kubeadm)),
        ),
    }
    out.extend(cni.iter().map(|i| (i.clone(), Origin::Cni)));
    out.push((sandbox.clone(), Origin::Sandbox));
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(list: &[&str]) -> Vec<ImageRef> {
        list.iter().map(|s| ImageRef::parse(s).unwrap()).collect()
    }

    #[test]
    fn parses_kubeadm_json() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/kubeadm-1.37.2-images.json"
        ))
        .unwrap();
        let l = parse_kubeadm_list(&text).unwrap();
        assert_eq!(l.len(), 7);
        assert_eq!(l[6].to_string(), "registry.k8s.io/etcd:3.7.0-0");
        assert!(parse_kubeadm_list("registry.k8s.io/pause:3.10.2").is_err());
        assert!(parse_kubeadm_list(r#"{"kind":"Other","images":[]}"#).is_err());
    }

    #[test]
    fn roles_get_what_they_run() {
        let kubeadm = refs(&[
            "registry.k8s.io/kube-apiserver:v1.37.2",
            "registry.k8s.io/kube-controller-manager:v1.37.2",
            "registry.k8s.io/kube-scheduler:v1.37.2",
            "registry.k8s.io/kube-proxy:v1.37.2",
            "registry.k8s.io/coredns/coredns:v1.14.6",
            "registry.k8s.io/pause:3.10.2",
            "registry.k8s.io/etcd:3.7.0-0",
        ]);
        let cni = refs(&["ghcr.io/flannel-io/flannel:v0.28.10"]);
        let pause = ImageRef::parse("registry.k8s.io/pause:3.10.2").unwrap();
        let names = |role| -> Vec<String> {
            for_role(role, &kubeadm, &cni, &pause)
                .into_iter()
                .map(|(i, _)| i.basename().to_string())
                .collect()
        };
        assert_eq!(
            names(Role::Master),
            [
                "flannel",
                "coredns",
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-proxy",
                "kube-scheduler",
                "pause"
            ]
        );
        assert_eq!(
            names(Role::Worker),
            ["flannel", "coredns", "kube-proxy", "pause"]
        );
        assert!(names(Role::Etcd).is_empty());
    }

    #[test]
    fn manifest_images_of_pod_templates() {
        let yaml = "kind: Namespace\nmetadata: {name: x}\n---\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      initContainers:\n      - image: ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3\n      - image: ghcr.io/flannel-io/flannel:v0.28.10\n      containers:\n      - image: ghcr.io/flannel-io/flannel:v0.28.10\n";
        let l = manifest_images(yaml).unwrap();
        assert_eq!(
            l.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            [
                "ghcr.io/flannel-io/flannel:v0.28.10",
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"
            ]
        );
    }
}

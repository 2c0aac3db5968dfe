//! The catalogue: which upstream files each supported Kubernetes minor needs,
//! where their checksums are published, and how each is laid into the OS root.
//!
//! Versions of the companion components are pinned per Kubernetes minor:
//! - crictl: the cri-tools release of the same minor (cri-tools follows Kubernetes).
//! - containerd 1.7.x (the LTS line every supported minor is tested with) and
//!   the runc line containerd of that date shipped with.
//! - CNI plugins 1.5.1 for every minor.
//! - etcd: the version kubeadm of that minor deploys as its stacked etcd
//!   (`SupportedEtcdVersion` in kubeadm's constants.go at the minor's .0 release),
//!   so external and stacked clusters run the same etcd.
//! - CRI-O: the release of the same minor (CRI-O follows Kubernetes).
//! - Calico: a release whose support matrix lists that minor.

use crate::spec::model::Cni;
use crate::spec::types::KubeVersion;
use crate::spec::Cluster;
use hakube_node_profile::Runtime;

/// Where an artifact's SHA-256 comes from on first resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// An upstream checksum file: either a bare hex digest or `hex  filename`
    /// lines (sha256sum format); `entry` is the file name to look for.
    File { url: String, entry: String },
    /// The project publishes no checksum for this file: the first download is
    /// trusted and its SHA-256 pinned in the lock file (trust on first use).
    TrustOnFirstUse,
}

/// Which members of a tarball to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Every regular file directly under the prefix, except these names.
    AllExcept(Vec<&'static str>),
    /// Only these names (those missing from the archive are skipped unless required).
    Only(Vec<&'static str>),
}

/// How an artifact is laid into the OS root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A single file copied to `dest` with `mode`.
    File { dest: &'static str, mode: u32 },
    /// A gzip tarball: regular files directly under `prefix` (a directory in
    /// the archive, `""` for the top level) selected by `members` go to
    /// `dest_dir` with mode 0755; `required` names must be present.
    TarGz {
        prefix: String,
        members: Members,
        required: Vec<&'static str>,
        dest_dir: &'static str,
    },
}

/// One upstream file the cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSpec {
    pub name: &'static str,
    pub version: String,
    pub url: String,
    pub checksum: Checksum,
    pub layout: Layout,
}

impl ArtifactSpec {
    /// `kubeadm v1.31.4`
    pub fn label(&self) -> String {
        format!("{} v{}", self.name, self.version)
    }
}

/// Companion component versions for one Kubernetes minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Companions {
    pub crictl: &'static str,
    pub containerd: &'static str,
    pub runc: &'static str,
    pub cni_plugins: &'static str,
    pub etcd: &'static str,
    pub cri_o: &'static str,
    pub calico: &'static str,
}

/// The companion versions for `minor`, or `None` outside 1.29..=1.34.
pub fn companions(minor: u32) -> Option<Companions> {
    let c = |crictl, containerd, runc, etcd, cri_o, calico| Companions {
        crictl,
        containerd,
        runc,
        cni_plugins: "1.5.1",
        etcd,
        cri_o,
        calico,
    };
    Some(match minor {
        29 => c("1.29.0", "1.7.13", "1.1.12", "3.5.10", "1.29.1", "3.27.3"),
        30 => c("1.30.1", "1.7.18", "1.1.13", "3.5.12", "1.30.4", "3.28.0"),
        31 => c("1.31.1", "1.7.23", "1.1.14", "3.5.15", "1.31.3", "3.28.2"),
        32 => c("1.32.0", "1.7.24", "1.2.3", "3.5.16", "1.32.1", "3.29.1"),
        33 => c("1.33.0", "1.7.27", "1.2.6", "3.5.21", "1.33.0", "3.30.0"),
        // kubeadm 1.34 moved its stacked etcd to the 3.6 line.
        34 => c("1.34.0", "1.7.28", "1.2.6", "3.6.4", "1.34.0", "3.30.3"),
        _ => return None,
    })
}

/// Every artifact a cluster needs. etcd is always included: one OS root
/// serves every role, external etcd members included.
pub fn for_cluster(cluster: &Cluster) -> Vec<ArtifactSpec> {
    for_versions(cluster.kubernetes_version, cluster.runtime, cluster.cni)
}

/// How the artifact `name` at `version` is laid into the OS root (the same
/// layout the catalogue gives it), or `None` for a name the catalogue lacks.
pub fn layout_for(name: &str, version: &str) -> Option<Layout> {
    let spec = match name {
        "kubeadm" | "kubelet" | "kubectl" => {
            let k8s: KubeVersion = version.parse().ok()?;
            let name = ["kubeadm", "kubelet", "kubectl"]
                .into_iter()
                .find(|n| *n == name)?;
            kube_binary(name, k8s)
        }
        "crictl" => crictl(version),
        "cni-plugins" => cni_plugins(version),
        "containerd" => containerd(version),
        "runc" => runc(version),
        "etcd" => etcd(version),
        "cri-o" => cri_o(version),
        "calico-tigera-operator" => calico_operator(version),
        _ => return None,
    };
    Some(spec.layout)
}

/// Every artifact for a Kubernetes version, runtime and CNI.
pub fn for_versions(k8s: KubeVersion, runtime: Runtime, cni: Cni) -> Vec<ArtifactSpec> {
    // The spec parser only admits supported minors; fall back to the newest
    // known set rather than panic if the two lists ever drift.
    let comp = companions(k8s.minor)
        .or_else(|| companions(KubeVersion::MAX_MINOR))
        .expect("catalogue covers KubeVersion::MAX_MINOR");
    let mut out = Vec::new();
    for name in ["kubeadm", "kubelet", "kubectl"] {
        out.push(kube_binary(name, k8s));
    }
    out.push(crictl(comp.crictl));
    out.push(cni_plugins(comp.cni_plugins));
    match runtime {
        Runtime::Containerd => {
            out.push(containerd(comp.containerd));
            out.push(runc(comp.runc));
        }
        Runtime::CriO => out.push(cri_o(comp.cri_o)),
    }
    out.push(etcd(comp.etcd));
    if cni == Cni::Calico {
        out.push(calico_operator(comp.calico));
    }
    out
}

fn kube_binary(name: &'static str, k8s: KubeVersion) -> ArtifactSpec {
    let url = format!("https://dl.k8s.io/release/v{k8s}/bin/linux/amd64/{name}");
    ArtifactSpec {
        name,
        version: k8s.to_string(),
        checksum: Checksum::File {
            url: format!("{url}.sha256"),
            entry: name.to_string(),
        },
        url,
        layout: Layout::File {
            dest: match name {
                "kubeadm" => "usr/bin/kubeadm",
                "kubelet" => "usr/bin/kubelet",
                _ => "usr/bin/kubectl",
            },
            mode: 0o755,
        },
    }
}

/// `<url>` + `suffix` as checksum file, looking up the URL's file name.
fn sidecar(url: &str, suffix: &str) -> Checksum {
    Checksum::File {
        url: format!("{url}{suffix}"),
        entry: file_name(url).to_string(),
    }
}

pub(crate) fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn crictl(v: &str) -> ArtifactSpec {
    let url = format!(
        "https://github.com/kubernetes-sigs/cri-tools/releases/download/v{v}/crictl-v{v}-linux-amd64.tar.gz"
    );
    ArtifactSpec {
        name: "crictl",
        version: v.to_string(),
        checksum: sidecar(&url, ".sha256"),
        url,
        layout: Layout::TarGz {
            prefix: String::new(),
            members: Members::Only(vec!["crictl"]),
            required: vec!["crictl"],
            dest_dir: "usr/local/bin",
        },
    }
}

fn cni_plugins(v: &str) -> ArtifactSpec {
    let url = format!(
        "https://github.com/containernetworking/plugins/releases/download/v{v}/cni-plugins-linux-amd64-v{v}.tgz"
    );
    ArtifactSpec {
        name: "cni-plugins",
        version: v.to_string(),
        checksum: sidecar(&url, ".sha256"),
        url,
        layout: Layout::TarGz {
            prefix: String::new(),
            members: Members::AllExcept(vec!["LICENSE", "README.md"]),
            // What flannel and kubeadm's default setups call.
            required: vec!["bridge", "host-local", "loopback", "portmap"],
            dest_dir: "opt/cni/bin",
        },
    }
}

fn containerd(v: &str) -> ArtifactSpec {
    let url = format!(
        "https://github.com/containerd/containerd/releases/download/v{v}/containerd-{v}-linux-amd64.tar.gz"
    );
    ArtifactSpec {
        name: "containerd",
        version: v.to_string(),
        checksum: sidecar(&url, ".sha256sum"),
        url,
        layout: Layout::TarGz {
            prefix: "bin".into(),
            members: Members::AllExcept(vec![]),
            required: vec!["containerd", "containerd-shim-runc-v2", "ctr"],
            dest_dir: "usr/local/bin",
        },
    }
}

fn runc(v: &str) -> ArtifactSpec {
    let base = format!("https://github.com/opencontainers/runc/releases/download/v{v}");
    ArtifactSpec {
        name: "runc",
        version: v.to_string(),
        url: format!("{base}/runc.amd64"),
        checksum: Checksum::File {
            url: format!("{base}/runc.sha256sum"),
            entry: "runc.amd64".into(),
        },
        layout: Layout::File {
            dest: "usr/local/sbin/runc",
            mode: 0o755,
        },
    }
}

fn etcd(v: &str) -> ArtifactSpec {
    let base = format!("https://github.com/etcd-io/etcd/releases/download/v{v}");
    let tarball = format!("etcd-v{v}-linux-amd64.tar.gz");
    ArtifactSpec {
        name: "etcd",
        version: v.to_string(),
        url: format!("{base}/{tarball}"),
        checksum: Checksum::File {
            url: format!("{base}/SHA256SUMS"),
            entry: tarball,
        },
        layout: Layout::TarGz {
            prefix: format!("etcd-v{v}-linux-amd64"),
            members: Members::Only(vec!["etcd", "etcdctl", "etcdutl"]),
            required: vec!["etcd", "etcdctl"],
            dest_dir: "usr/local/bin",
        },
    }
}

fn cri_o(v: &str) -> ArtifactSpec {
    let url = format!("https://storage.googleapis.com/cri-o/artifacts/cri-o.amd64.v{v}.tar.gz");
    ArtifactSpec {
        name: "cri-o",
        version: v.to_string(),
        checksum: sidecar(&url, ".sha256sum"),
        url,
        layout: Layout::TarGz {
            prefix: "cri-o/bin".into(),
            // crictl comes from cri-tools like for containerd clusters.
            members: Members::AllExcept(vec!["crictl"]),
            required: vec!["crio", "pinns", "conmon"],
            dest_dir: "usr/local/bin",
        },
    }
}

/// Where the calico operator manifest lands in the OS root; render and the
/// node profile name this path (one constant, so they cannot drift apart).
pub const CALICO_OPERATOR_DEST: &str = "usr/share/hakube/manifests/calico-tigera-operator.yaml";

fn calico_operator(v: &str) -> ArtifactSpec {
    ArtifactSpec {
        name: "calico-tigera-operator",
        version: v.to_string(),
        url: format!(
            "https://raw.githubusercontent.com/projectcalico/calico/v{v}/manifests/tigera-operator.yaml"
        ),
        // Calico publishes no checksum file for its manifests: the first
        // download is trusted and pinned in hakube.lock (marked as such there).
        checksum: Checksum::TrustOnFirstUse,
        layout: Layout::File {
            dest: CALICO_OPERATOR_DEST,
            mode: 0o644,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn every_supported_minor_has_companions() {
        for minor in KubeVersion::MIN_MINOR..=KubeVersion::MAX_MINOR {
            let c = companions(minor).unwrap_or_else(|| panic!("1.{minor} missing"));
            assert_eq!(c.crictl.split('.').nth(1), Some(minor.to_string().as_str()));
            assert_eq!(c.cri_o.split('.').nth(1), Some(minor.to_string().as_str()));
            assert!(c.containerd.starts_with("1.7."));
        }
        assert!(companions(KubeVersion::MIN_MINOR - 1).is_none());
        assert!(companions(KubeVersion::MAX_MINOR + 1).is_none());
    }

    #[test]
    fn default_set_has_containerd_and_etcd_but_no_crio_or_calico() {
        let set = for_versions(v("1.31.4"), Runtime::Containerd, Cni::Flannel);
        let names: Vec<&str> = set.iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                "kubeadm",
                "kubelet",
                "kubectl",
                "crictl",
                "cni-plugins",
                "containerd",
                "runc",
                "etcd"
            ]
        );
        let kubeadm = &set[0];
        assert_eq!(
            kubeadm.url,
            "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
        );
        assert_eq!(
            kubeadm.checksum,
            Checksum::File {
                url: "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm.sha256".into(),
                entry: "kubeadm".into()
            }
        );
        let etcd = set.iter().find(|a| a.name == "etcd").unwrap();
        assert_eq!(
            etcd.url,
            "https://github.com/etcd-io/etcd/releases/download/v3.5.15/etcd-v3.5.15-linux-amd64.tar.gz"
        );
    }

    #[test]
    fn crio_replaces_containerd_and_calico_adds_a_trusted_manifest() {
        let set = for_versions(v("1.33.1"), Runtime::CriO, Cni::Calico);
        let names: Vec<&str> = set.iter().map(|a| a.name).collect();
        assert!(names.contains(&"cri-o"));
        assert!(!names.contains(&"containerd") && !names.contains(&"runc"));
        let calico = set
            .iter()
            .find(|a| a.name == "calico-tigera-operator")
            .unwrap();
        assert_eq!(calico.checksum, Checksum::TrustOnFirstUse);
        let crio = set.iter().find(|a| a.name == "cri-o").unwrap();
        assert_eq!(
            crio.url,
            "https://storage.googleapis.com/cri-o/artifacts/cri-o.amd64.v1.33.0.tar.gz"
        );
    }

    #[test]
    fn every_url_is_https_and_names_are_unique() {
        for minor in KubeVersion::MIN_MINOR..=KubeVersion::MAX_MINOR {
            let set = for_versions(v(&format!("1.{minor}.0")), Runtime::CriO, Cni::Calico);
            let mut names: Vec<&str> = set.iter().map(|a| a.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), set.len());
            for a in &set {
                assert!(a.url.starts_with("https://"), "{}", a.url);
                assert_eq!(layout_for(a.name, &a.version).as_ref(), Some(&a.layout));
            }
        }
    }
}

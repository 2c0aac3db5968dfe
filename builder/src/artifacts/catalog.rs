//! The catalogue: which upstream files each supported Kubernetes minor needs,
//! where their checksums are published, and how each is laid into the OS root.
//!
//! Companion versions are pinned per Kubernetes minor in [`companions`], each
//! with the source it was read from (also shown by `hakube-build summary`).
//! "The Go module proxy serves it" means `go list -m -versions` or
//! `go mod download -json MODULE@TAG` answered with that tag (checked
//! 2026-12-01): evidence that the upstream tag exists, and what the
//! from-source build (srcbuild/) compiles. Components the proxy does not
//! serve say "not confirmed".

use crate::spec::model::Cni;
use crate::spec::types::KubeVersion;
use crate::spec::Cluster;
use hakube_node_profile::{EtcdTopology, Runtime};

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
    /// `kubeadm v1.37.2`
    pub fn label(&self) -> String {
        format!("{} v{}", self.name, self.version)
    }
}

/// One pinned companion version and where it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pin {
    /// Without a leading `v` (`3.7.0`, `1.14.6`, `1.9.1-flannel3`).
    pub version: &'static str,
    /// The file or registry answer the version comes from.
    pub source: &'static str,
    /// Whether that source confirms the tag exists (kubeadm's own constants,
    /// or the Go module proxy serving the tag); `false` says "not confirmed".
    pub confirmed: bool,
}

const fn pin(version: &'static str, source: &'static str) -> Pin {
    Pin {
        version,
        source,
        confirmed: true,
    }
}

const fn unconfirmed(version: &'static str, source: &'static str) -> Pin {
    Pin {
        version,
        source,
        confirmed: false,
    }
}

/// Companion component versions for one Kubernetes minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Companions {
    /// kubeadm's etcd image tag (`3.7.0-0`: the release plus an image revision).
    pub etcd_image: Pin,
    /// The etcd release (binaries for external etcd nodes), the image tag's release.
    pub etcd: Pin,
    pub coredns: Pin,
    pub pause: Pin,
    pub crictl: Pin,
    pub containerd: Pin,
    pub runc: Pin,
    pub cni_plugins: Pin,
    pub cri_o: Pin,
    pub flannel: Pin,
    pub flannel_cni_plugin: Pin,
    pub calico: Pin,
}

impl Companions {
    /// `(name, pin)` for every companion, in a fixed order (for summaries).
    pub fn all(&self) -> [(&'static str, Pin); 12] {
        [
            ("etcd", self.etcd),
            ("etcd image", self.etcd_image),
            ("CoreDNS", self.coredns),
            ("pause", self.pause),
            ("crictl", self.crictl),
            ("containerd", self.containerd),
            ("runc", self.runc),
            ("CNI plugins", self.cni_plugins),
            ("CRI-O", self.cri_o),
            ("flannel", self.flannel),
            ("flannel CNI plugin", self.flannel_cni_plugin),
            ("calico", self.calico),
        ]
    }
}

// Shared by every minor.

/// CNI plugins: the 1.9 line containerd v2.2.9 installs for its own CRI tests
/// (v2.3.7's go.mod requires exactly v1.9.1)
/// (script/setup/install-cni takes the github.com/containernetworking/plugins
/// version of its go.mod, v1.9.0), at its newest patch the Go module proxy
/// serves, v1.9.1 (v1.10.0 is served too, but untested by that containerd).
const CNI_PLUGINS: Pin = pin(
    "1.9.1",
    "containerd v2.2.9 go.mod/script/setup/install-cni: the 1.9 line; github.com/containernetworking/plugins v1.9.1, served by the Go module proxy",
);
/// containerd per minor, from containerd's own Kubernetes support matrix
/// (RELEASES.md of v2.4.2): 1.35 -> 2.2.0+ (2.3 is not listed for 1.35),
/// 1.36 -> 2.3.0+ or 2.2.0+, 1.37 -> 2.4.0+ or 2.3.0+. 2.3 is the LTS line
/// (supported to 2028-04-30), so 1.36 and 1.37 take its newest patch the Go
/// module proxy serves; 1.35 stays on 2.2 (the only matrix line both lists
/// and the proxy serves), whose branch ended on 2026-11-06. Each with the runc
/// its release pins in script/setup/runc-version.
const CONTAINERD_2_2: Pin = pin(
    "2.2.9",
    "github.com/containerd/containerd/v2 v2.2.9, served by the Go module proxy; RELEASES.md: 2.2.0+ for Kubernetes 1.35 (the 2.2 branch ended 2026-11-06)",
);
const RUNC_FOR_2_2: Pin = pin(
    "1.3.6",
    "containerd v2.2.9 script/setup/runc-version (v1.3.6); github.com/opencontainers/runc v1.3.6, served by the Go module proxy",
);
const CONTAINERD_2_3: Pin = pin(
    "2.3.7",
    "github.com/containerd/containerd/v2 v2.3.7, served by the Go module proxy; RELEASES.md: 2.3.0+ for Kubernetes 1.36 and 1.37 (LTS to 2028-04-30)",
);
const RUNC_FOR_2_3: Pin = pin(
    "1.5.2",
    "containerd v2.3.7 script/setup/runc-version (v1.5.2); github.com/opencontainers/runc v1.5.2, served by the Go module proxy",
);
/// flannel v0.28.10 and the CNI plugin image its own manifest names
/// (Documentation/kube-flannel.yml of the github.com/flannel-io/flannel v0.28.10 module).
const FLANNEL: Pin = pin(
    "0.28.10",
    "github.com/flannel-io/flannel v0.28.10, served by the Go module proxy",
);
const FLANNEL_CNI_PLUGIN: Pin = pin(
    "1.9.1-flannel3",
    "flannel v0.28.10 Documentation/kube-flannel.yml (image ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3; flannel-io/cni-plugin itself is not served by the Go module proxy)",
);
/// flannel-io/cni-plugin (the image above) is not served by the Go module
/// proxy; its binary is built from the code it was forked from, and labelled so.
pub const FLANNEL_CNI_PLUGIN_BUILT_FROM: Pin = pin(
    "0.9.1",
    "github.com/containernetworking/plugins v0.9.1 plugins/meta/flannel (the code flannel-io/cni-plugin forked), served by the Go module proxy",
);
/// Calico publishes no Go module the proxy serves; v3.33.0's release page
/// exists and its requirements list Kubernetes 1.35-1.37 (as reported, not
/// checked here).
const CALICO: Pin = unconfirmed(
    "3.33.0",
    "not confirmed: projectcalico/calico is not served by the Go module proxy; v3.33.0 is the release whose tested Kubernetes versions cover 1.35-1.37",
);

/// The companion versions for `minor`, or `None` outside the supported minors.
///
/// etcd, CoreDNS and pause are kubeadm's own (`DefaultEtcdVersion`,
/// `CoreDNSVersion`, `PauseVersion` in cmd/kubeadm/app/constants/constants.go
/// of the k8s.io/kubernetes module at the minor's newest patch), so external
/// and stacked etcd run the same release and the runtime's sandbox image is
/// the one kubeadm pre-pulls. crictl is cri-tools of the same minor; CRI-O is
/// the release of the same minor (cri-o/cri-o is not served by the proxy).
pub fn companions(minor: u32) -> Option<Companions> {
    Some(match minor {
        35 => Companions {
            // kubeadm v1.35.4 constants.go: DefaultEtcdVersion = "3.6.6-0",
            // CoreDNSVersion = "v1.13.1", PauseVersion = "3.10.1".
            etcd_image: pin("3.6.6-0", "kubeadm v1.35.4 constants.go DefaultEtcdVersion"),
            etcd: pin(
                "3.6.6",
                "kubeadm v1.35.4 constants.go DefaultEtcdVersion 3.6.6-0; go.etcd.io/etcd/server/v3 v3.6.6 served by the Go module proxy",
            ),
            coredns: pin("1.13.1", "kubeadm v1.35.4 constants.go CoreDNSVersion"),
            pause: pin("3.10.1", "kubeadm v1.35.4 constants.go PauseVersion"),
            // sigs.k8s.io/cri-tools v1.35.0: the proxy answers 403 (not
            // served), so it cannot be built from source here. crictl is a
            // CRI v1 client; v1.36.0 (served) talks to 1.35 runtimes alike.
            crictl: pin(
                "1.36.0",
                "sigs.k8s.io/cri-tools v1.36.0, served by the Go module proxy (v1.35.0 is not served: 403)",
            ),
            containerd: CONTAINERD_2_2,
            runc: RUNC_FOR_2_2,
            cni_plugins: CNI_PLUGINS,
            cri_o: unconfirmed(
                "1.35.0",
                "not confirmed: CRI-O of the same minor; cri-o/cri-o is not served by the Go module proxy",
            ),
            flannel: FLANNEL,
            flannel_cni_plugin: FLANNEL_CNI_PLUGIN,
            calico: CALICO,
        },
        36 => Companions {
            // kubeadm v1.36.3 constants.go: DefaultEtcdVersion = "3.6.8-0",
            // CoreDNSVersion = "v1.14.2", PauseVersion = "3.10.2".
            etcd_image: pin("3.6.8-0", "kubeadm v1.36.3 constants.go DefaultEtcdVersion"),
            etcd: pin(
                "3.6.8",
                "kubeadm v1.36.3 constants.go DefaultEtcdVersion 3.6.8-0; go.etcd.io/etcd/server/v3 v3.6.8 served by the Go module proxy",
            ),
            coredns: pin("1.14.2", "kubeadm v1.36.3 constants.go CoreDNSVersion"),
            pause: pin("3.10.2", "kubeadm v1.36.3 constants.go PauseVersion"),
            crictl: pin(
                "1.36.0",
                "sigs.k8s.io/cri-tools v1.36.0 (same minor), served by the Go module proxy",
            ),
            containerd: CONTAINERD_2_3,
            runc: RUNC_FOR_2_3,
            cni_plugins: CNI_PLUGINS,
            cri_o: unconfirmed(
                "1.36.0",
                "not confirmed: CRI-O of the same minor; cri-o/cri-o is not served by the Go module proxy",
            ),
            flannel: FLANNEL,
            flannel_cni_plugin: FLANNEL_CNI_PLUGIN,
            calico: CALICO,
        },
        37 => Companions {
            // kubeadm v1.37.2 constants.go: DefaultEtcdVersion = "3.7.0-0",
            // CoreDNSVersion = "v1.14.6", PauseVersion = "3.10.2". (Its
            // SupportedEtcdVersion map stops at 36; kubeadm falls back to
            // the nearest entry, the same 3.7.0-0, with a warning.)
            etcd_image: pin("3.7.0-0", "kubeadm v1.37.2 constants.go DefaultEtcdVersion"),
            etcd: pin(
                "3.7.0",
                "kubeadm v1.37.2 constants.go DefaultEtcdVersion 3.7.0-0; go.etcd.io/etcd/server/v3 v3.7.0 served by the Go module proxy",
            ),
            coredns: pin("1.14.6", "kubeadm v1.37.2 constants.go CoreDNSVersion"),
            pause: pin("3.10.2", "kubeadm v1.37.2 constants.go PauseVersion"),
            crictl: pin(
                "1.37.0",
                "sigs.k8s.io/cri-tools v1.37.0 (same minor), served by the Go module proxy",
            ),
            containerd: CONTAINERD_2_3,
            runc: RUNC_FOR_2_3,
            cni_plugins: CNI_PLUGINS,
            cri_o: unconfirmed(
                "1.37.0",
                "not confirmed: CRI-O of the same minor; cri-o/cri-o is not served by the Go module proxy",
            ),
            flannel: FLANNEL,
            flannel_cni_plugin: FLANNEL_CNI_PLUGIN,
            calico: CALICO,
        },
        _ => return None,
    })
}

/// The companions of a supported version. The spec parser admits only
/// supported minors, and a test checks each has an entry.
pub fn companions_for(k8s: KubeVersion) -> Companions {
    companions(k8s.minor).expect("the catalogue covers every supported minor")
}

/// The images `kubeadm config images list` names for this version with the
/// default registry.k8s.io repository: the control plane at the Kubernetes
/// tag, then CoreDNS, pause and (for stacked etcd only; kubeadm runs no etcd
/// pod with an external one) etcd at kubeadm's own versions.
pub fn kubeadm_images(k8s: KubeVersion, etcd: EtcdTopology) -> Vec<String> {
    let c = companions_for(k8s);
    let mut out: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|n| format!("registry.k8s.io/{n}:{}", k8s.tag()))
    .collect();
    out.push(format!(
        "registry.k8s.io/coredns/coredns:v{}",
        c.coredns.version
    ));
    out.push(pause_image(k8s));
    if etcd == EtcdTopology::Stacked {
        out.push(format!("registry.k8s.io/etcd:{}", c.etcd_image.version));
    }
    out
}

/// flannel's images, as its own manifest (Documentation/kube-flannel.yml)
/// names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelImages {
    pub flannel_version: &'static str,
    /// `ghcr.io/flannel-io/flannel:v0.28.10`
    pub flannel: String,
    /// `ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3`
    pub cni_plugin: String,
}

pub fn flannel_images(k8s: KubeVersion) -> FlannelImages {
    let c = companions_for(k8s);
    FlannelImages {
        flannel_version: c.flannel.version,
        flannel: format!("ghcr.io/flannel-io/flannel:v{}", c.flannel.version),
        cni_plugin: format!(
            "ghcr.io/flannel-io/flannel-cni-plugin:v{}",
            c.flannel_cni_plugin.version
        ),
    }
}

/// The sandbox (pause) image kubeadm of this release pre-pulls; the runtime
/// must use the same one, or kubeadm warns and the image is pulled twice.
pub fn pause_image(k8s: KubeVersion) -> String {
    format!(
        "registry.k8s.io/pause:{}",
        companions_for(k8s).pause.version
    )
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
        "calico-manifest" => calico_manifest(version),
        _ => return None,
    };
    Some(spec.layout)
}

/// Every artifact for a Kubernetes version, runtime and CNI.
pub fn for_versions(k8s: KubeVersion, runtime: Runtime, cni: Cni) -> Vec<ArtifactSpec> {
    let comp = companions_for(k8s);
    let mut out = Vec::new();
    for name in ["kubeadm", "kubelet", "kubectl"] {
        out.push(kube_binary(name, k8s));
    }
    out.push(crictl(comp.crictl.version));
    out.push(cni_plugins(comp.cni_plugins.version));
    match runtime {
        Runtime::Containerd => {
            out.push(containerd(comp.containerd.version));
            out.push(runc(comp.runc.version));
        }
        Runtime::CriO => out.push(cri_o(comp.cri_o.version)),
    }
    out.push(etcd(comp.etcd.version));
    if cni == Cni::Calico {
        out.push(calico_manifest(comp.calico.version));
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

/// containerd 2.x's release tarball: `make release` (Makefile, v2.2.9) packs
/// `bin/` holding ctr, containerd, containerd-stress and
/// containerd-shim-runc-v2 into `containerd-<v>-linux-amd64.tar.gz` and writes
/// `<tarball>.sha256sum` (`hex  name`) beside it; the release workflow
/// uploads both.
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

/// runc's release (script/release_build.sh, v1.3.6): the binary
/// `runc.amd64`, listed in `runc.sha256sum` (clear-signed by release_sign.sh;
/// the parser picks the `hex  runc.amd64` line).
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

/// Where calico's manifest lands in the OS root, as published: the record of
/// what the init master's patched `/etc/hakube/cni/calico.yaml` was made from.
pub const CALICO_MANIFEST_DEST: &str = "usr/share/hakube/upstream/calico.yaml";

/// calico's manifest install: every image it runs is named in it (the
/// operator install chose them at runtime), so the build can preload and
/// check them all.
fn calico_manifest(v: &str) -> ArtifactSpec {
    ArtifactSpec {
        name: "calico-manifest",
        version: v.to_string(),
        url: format!(
            "https://raw.githubusercontent.com/projectcalico/calico/v{v}/manifests/calico.yaml"
        ),
        // Calico publishes no checksum file for its manifests: the first
        // download is trusted and pinned in hakube.lock (marked as such there).
        checksum: Checksum::TrustOnFirstUse,
        layout: Layout::File {
            dest: CALICO_MANIFEST_DEST,
            mode: 0o644,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::types::SUPPORTED_MINORS;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn every_supported_minor_has_companions_and_only_those() {
        for m in SUPPORTED_MINORS {
            let c = companions(m.minor).unwrap_or_else(|| panic!("1.{} missing", m.minor));
            let minor = m.minor.to_string();
            assert_eq!(c.cri_o.version.split('.').nth(1), Some(minor.as_str()));
            assert!(c.containerd.version.starts_with("2."));
            // The etcd release is the one kubeadm's image tag carries.
            assert_eq!(
                c.etcd_image.version.rsplit_once('-').map(|(r, _)| r),
                Some(c.etcd.version)
            );
            for (name, p) in c.all() {
                assert!(!p.version.starts_with('v'), "{name}: {}", p.version);
                assert!(!p.source.is_empty(), "{name}");
                assert_eq!(
                    p.source.starts_with("not confirmed"),
                    !p.confirmed,
                    "{name}"
                );
            }
        }
        assert!(companions(KubeVersion::MIN_MINOR - 1).is_none());
        assert!(companions(KubeVersion::MAX_MINOR + 1).is_none());
    }

    #[test]
    fn kubeadm_constants_per_release() {
        // Read from cmd/kubeadm/app/constants/constants.go of each release.
        for (k8s, etcd, coredns, pause) in [
            ("1.35.4", "3.6.6-0", "1.13.1", "3.10.1"),
            ("1.36.3", "3.6.8-0", "1.14.2", "3.10.2"),
            ("1.37.2", "3.7.0-0", "1.14.6", "3.10.2"),
        ] {
            let c = companions_for(v(k8s));
            assert_eq!(
                (c.etcd_image.version, c.coredns.version, c.pause.version),
                (etcd, coredns, pause),
                "{k8s}"
            );
        }
        assert_eq!(
            kubeadm_images(v("1.37.2"), EtcdTopology::Stacked),
            [
                "registry.k8s.io/kube-apiserver:v1.37.2",
                "registry.k8s.io/kube-controller-manager:v1.37.2",
                "registry.k8s.io/kube-scheduler:v1.37.2",
                "registry.k8s.io/kube-proxy:v1.37.2",
                "registry.k8s.io/coredns/coredns:v1.14.6",
                "registry.k8s.io/pause:3.10.2",
                "registry.k8s.io/etcd:3.7.0-0",
            ]
        );
        let external = kubeadm_images(v("1.35.4"), EtcdTopology::External);
        assert_eq!(external.len(), 6);
        assert_eq!(external[5], "registry.k8s.io/pause:3.10.1");
        assert_eq!(pause_image(v("1.35.0")), "registry.k8s.io/pause:3.10.1");
    }

    #[test]
    fn default_set_has_containerd_and_etcd_but_no_crio_or_calico() {
        let set = for_versions(v("1.37.2"), Runtime::Containerd, Cni::Flannel);
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
            "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm"
        );
        assert_eq!(
            kubeadm.checksum,
            Checksum::File {
                url: "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm.sha256".into(),
                entry: "kubeadm".into()
            }
        );
        let url = |n: &str| set.iter().find(|a| a.name == n).unwrap().url.as_str();
        assert_eq!(
            url("etcd"),
            "https://github.com/etcd-io/etcd/releases/download/v3.7.0/etcd-v3.7.0-linux-amd64.tar.gz"
        );
        assert_eq!(
            url("containerd"),
            "https://github.com/containerd/containerd/releases/download/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz"
        );
        assert_eq!(
            url("runc"),
            "https://github.com/opencontainers/runc/releases/download/v1.5.2/runc.amd64"
        );
        assert_eq!(
            url("crictl"),
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.37.0/crictl-v1.37.0-linux-amd64.tar.gz"
        );
        assert_eq!(
            url("cni-plugins"),
            "https://github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz"
        );
        let containerd = set.iter().find(|a| a.name == "containerd").unwrap();
        assert_eq!(
            containerd.checksum,
            Checksum::File {
                url: format!("{}.sha256sum", containerd.url),
                entry: "containerd-2.3.7-linux-amd64.tar.gz".into()
            }
        );
    }

    #[test]
    fn crio_replaces_containerd_and_calico_adds_a_trusted_manifest() {
        let set = for_versions(v("1.36.3"), Runtime::CriO, Cni::Calico);
        let names: Vec<&str> = set.iter().map(|a| a.name).collect();
        assert!(names.contains(&"cri-o"));
        assert!(!names.contains(&"containerd") && !names.contains(&"runc"));
        let calico = set.iter().find(|a| a.name == "calico-manifest").unwrap();
        assert_eq!(calico.checksum, Checksum::TrustOnFirstUse);
        let crio = set.iter().find(|a| a.name == "cri-o").unwrap();
        assert_eq!(
            crio.url,
            "https://storage.googleapis.com/cri-o/artifacts/cri-o.amd64.v1.36.0.tar.gz"
        );
    }

    #[test]
    fn every_url_is_https_and_names_are_unique() {
        for m in SUPPORTED_MINORS {
            let k8s = v(&format!("1.{}.{}", m.minor, m.newest_patch));
            let set = for_versions(k8s, Runtime::CriO, Cni::Calico);
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

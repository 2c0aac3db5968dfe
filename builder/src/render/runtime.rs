//! Container runtime configuration: containerd 2.x (config version 3) or a
//! CRI-O drop-in, plus crictl's endpoint.

use crate::artifacts::catalog::pause_image;
use crate::spec::Cluster;
use crate::tree::FileTree;
use hakube_node_profile::{crio_store, Runtime};

pub const CONTAINERD_CONFIG: &str = "etc/containerd/config.toml";
pub const CRIO_DROPIN: &str = "etc/crio/crio.conf.d/10-hakube.conf";
pub const CRICTL_CONFIG: &str = "etc/crictl.yaml";

/// containerd 2.x reads config version 3, where the CRI plugin of 1.x
/// (`io.containerd.grpc.v1.cri`) is split into `io.containerd.cri.v1.images`
/// (pulls; the sandbox image is a pinned image there, no longer
/// `sandbox_image`) and `io.containerd.cri.v1.runtime` (runtimes, CNI).
/// Reference: docs/cri/config.md and internal/cri/config/config.go of
/// containerd v2.3.7 (and v2.2.9 for 1.35). Only what differs from containerd's defaults is set.
fn containerd_config(cluster: &Cluster) -> String {
    format!(
        r#"# containerd configuration written by hakube-build render.
# Config version 3 (containerd 2.x).
version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  # The pause image kubeadm 1.{minor} pre-pulls (its PauseVersion): the same
  # one, or kubeadm warns and the sandbox image is pulled twice.
  sandbox = '{pause}'

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      # The kubelet uses the systemd cgroup driver (cgroup v2 only), so runc
      # must as well.
      SystemdCgroup = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  # Writable on the node (the CNI daemonset installs its plugin here).
  # bin_dirs replaces bin_dir, deprecated since containerd 2.1.
  bin_dirs = ['/opt/cni/bin']
  conf_dir = '/etc/cni/net.d'
"#,
        minor = cluster.kubernetes_version.minor,
        pause = pause_image(cluster.kubernetes_version)
    )
}

fn crio_dropin(cluster: &Cluster) -> String {
    format!(
        r#"# CRI-O drop-in written by hakube-build render.
[crio]
# The store first boot imports the disk's images into (skopeo, before kubeadm).
root = "{root}"
runroot = "{runroot}"
storage_driver = "{driver}"

[crio.runtime]
cgroup_manager = "systemd"
conmon_cgroup = "pod"

[crio.image]
pause_image = "{pause}"

[crio.network]
network_dir = "/etc/cni/net.d/"
plugin_dirs = ["/opt/cni/bin/"]
"#,
        pause = pause_image(cluster.kubernetes_version),
        root = crio_store::ROOT,
        runroot = crio_store::RUNROOT,
        driver = crio_store::DRIVER,
    )
}

fn crictl_config(runtime: Runtime) -> String {
    let sock = runtime.cri_socket();
    format!("runtime-endpoint: \"{sock}\"\nimage-endpoint: \"{sock}\"\ntimeout: 10\n")
}

/// Runtime files for a Kubernetes node.
pub fn add(tree: &mut FileTree, cluster: &Cluster) {
    match cluster.runtime {
        Runtime::Containerd => tree.add_public(CONTAINERD_CONFIG, containerd_config(cluster)),
        Runtime::CriO => tree.add_public(CRIO_DROPIN, crio_dropin(cluster)),
    }
    tree.add_public(CRICTL_CONFIG, crictl_config(cluster.runtime));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_image_follows_kubeadm_of_the_minor() {
        let mut c = crate::spec::load(None).unwrap();
        let cfg = containerd_config(&c);
        assert!(cfg.starts_with("# containerd configuration"), "{cfg}");
        assert!(cfg.contains("\nversion = 3\n"), "{cfg}");
        assert!(
            cfg.contains("sandbox = 'registry.k8s.io/pause:3.10.2'"),
            "{cfg}"
        );
        c.kubernetes_version = "1.35.4".parse().unwrap();
        assert!(containerd_config(&c).contains("sandbox = 'registry.k8s.io/pause:3.10.1'"));
        assert!(crio_dropin(&c).contains("pause_image = \"registry.k8s.io/pause:3.10.1\""));
        assert!(crio_dropin(&c).contains("[crio]\n# The store first boot imports"));
        assert!(crio_dropin(&c).contains("storage_driver = \"overlay\""));
    }
}

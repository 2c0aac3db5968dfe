//! Container runtime configuration: containerd (config version 2, read by
//! containerd 1.6 and 1.7) or a CRI-O drop-in, plus crictl's endpoint.

use crate::spec::types::KubeVersion;
use crate::spec::Cluster;
use crate::tree::FileTree;
use hakube_node_profile::Runtime;

pub const CONTAINERD_CONFIG: &str = "etc/containerd/config.toml";
pub const CRIO_DROPIN: &str = "etc/crio/crio.conf.d/10-hakube.conf";
pub const CRICTL_CONFIG: &str = "etc/crictl.yaml";

/// The pause image kubeadm of this release pre-pulls (its `PauseVersion`
/// constant); the runtime must use the same one or kubeadm warns and the
/// sandbox image is pulled twice.
pub fn pause_image(v: &KubeVersion) -> String {
    let tag = match v.minor {
        ..=30 => "3.9",
        31..=33 => "3.10",
        _ => "3.10.1",
    };
    format!("registry.k8s.io/pause:{tag}")
}

fn containerd_config(cluster: &Cluster) -> String {
    format!(
        r#"# containerd configuration written by hakube-build render.
# Config format version 2 (containerd 1.6/1.7): the kubelet uses the systemd
# cgroup driver, so runc must as well.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    # Writable on the node (the CNI daemonset installs its plugin here).
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"#,
        pause = pause_image(&cluster.kubernetes_version)
    )
}

fn crio_dropin(cluster: &Cluster) -> String {
    format!(
        r#"# CRI-O drop-in written by hakube-build render.
[crio.runtime]
cgroup_manager = "systemd"
conmon_cgroup = "pod"

[crio.image]
pause_image = "{pause}"

[crio.network]
network_dir = "/etc/cni/net.d/"
plugin_dirs = ["/opt/cni/bin/"]
"#,
        pause = pause_image(&cluster.kubernetes_version)
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
    fn pause_follows_kubeadm() {
        let v = |minor| KubeVersion {
            major: 1,
            minor,
            patch: 0,
        };
        assert_eq!(pause_image(&v(29)), "registry.k8s.io/pause:3.9");
        assert_eq!(pause_image(&v(30)), "registry.k8s.io/pause:3.9");
        assert_eq!(pause_image(&v(31)), "registry.k8s.io/pause:3.10");
        assert_eq!(pause_image(&v(34)), "registry.k8s.io/pause:3.10.1");
    }
}

//! Per-node configuration: kubeadm, kubelet, runtime, etcd, haproxy,
//! keepalived, CNI, networkd, the node profile, and Ignition output.
//! (Owned by the render work; this is the agreed interface.)

use crate::cli::RenderArgs;
use crate::pki::ClusterSecrets;
use crate::spec::{Cluster, Node};
use crate::tree::FileTree;
use anyhow::Result;

/// `hakube-build render`.
pub fn run(_args: &RenderArgs) -> Result<()> {
    anyhow::bail!("render: not implemented yet")
}

/// The complete tree laid into `node`'s image: PKI, configs and node profile.
/// Paths are under `etc/` or `var/` only.
pub fn node_tree(_cluster: &Cluster, _secrets: &ClusterSecrets, _node: &Node) -> Result<FileTree> {
    anyhow::bail!("render: not implemented yet")
}

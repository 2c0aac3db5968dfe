//! The node profile (`etc/hakube/node.json`) that hakube-firstboot reads.

use super::{cni, etcd, paths};
use crate::spec::{Cluster, Node};
use anyhow::{anyhow, Result};
use hakube_node_profile as np;
use hakube_node_profile::{EtcdTopology, Role};

fn abs(tree_path: &str) -> String {
    format!("/{tree_path}")
}

fn static_address(node: &Node) -> Result<std::net::Ipv4Addr> {
    node.address()
        .ok_or_else(|| anyhow!("{} {} has no static address", node.role, node.name))
}

fn etcd_client(cluster: &Cluster, node: &Node) -> Option<np::TlsClient> {
    const PKI: &str = "/etc/kubernetes/pki";
    let client = match (node.role, cluster.etcd_topology) {
        (Role::Worker, _) => return None,
        (Role::Master, EtcdTopology::External) => format!("{PKI}/apiserver-etcd-client"),
        (Role::Master, EtcdTopology::Stacked) | (Role::Etcd, _) => {
            format!("{PKI}/etcd/healthcheck-client")
        }
    };
    Some(np::TlsClient {
        ca_file: format!("{PKI}/etcd/ca.crt"),
        cert_file: format!("{client}.crt"),
        key_file: format!("{client}.key"),
    })
}

pub fn profile(cluster: &Cluster, node: &Node, initialised: bool) -> Result<np::NodeProfile> {
    let init_node = node.role == Role::Master && cluster.init_node().name == node.name;
    let kube = node.role != Role::Etcd;
    let masters = cluster
        .masters()
        .map(|m| {
            Ok(np::MasterRef {
                name: m.name.to_string(),
                address: static_address(m)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let etcd_members = cluster
        .etcd_member_nodes()
        .map(|m| {
            let ip = static_address(m)?;
            Ok(np::EtcdMember {
                name: m.name.to_string(),
                address: ip,
                peer_url: etcd::peer_url(ip),
                client_url: etcd::client_url(ip),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let kubeadm_config = match (kube, init_node) {
        (false, _) => None,
        (true, true) => Some(abs(paths::KUBEADM_INIT)),
        (true, false) => Some(abs(paths::KUBEADM_JOIN)),
    };
    let p = np::NodeProfile {
        profile_version: np::PROFILE_VERSION,
        cluster_name: cluster.name.to_string(),
        kubernetes_version: cluster.kubernetes_version.to_string(),
        node_name: node.name.to_string(),
        role: node.role,
        address: node.address(),
        init_node,
        cluster_initialised: initialised,
        runtime: cluster.runtime,
        etcd_topology: cluster.etcd_topology,
        endpoint: np::Endpoint {
            mode: cluster.endpoint.mode,
            host: cluster.endpoint.host.clone(),
            port: cluster.endpoint.port,
            vip_prefix: cluster.endpoint.vip.map(|v| v.prefix_len()),
        },
        local_lb: np::LocalLb {
            enabled: cluster.local_lb.enabled,
            port: cluster.local_lb.port,
        },
        masters,
        etcd_members,
        labels: node.labels.clone(),
        taints: node.taints.clone(),
        bootstrap_token_ttl: (node.role == Role::Master)
            .then(|| super::kubeadm::token_ttl(cluster)),
        paths: np::Paths {
            kubeadm_config,
            kubeadm_join_config: init_node.then(|| abs(paths::KUBEADM_JOIN)),
            kube_proxy_addon_config: (init_node && cluster.local_lb.enabled)
                .then(|| abs(paths::KUBEADM_KUBE_PROXY)),
            cni_manifest: (node.role == Role::Master)
                .then(|| abs(&cni::manifest_path(cluster.cni))),
            etcd_config: (node.role == Role::Etcd).then(|| abs(etcd::ETCD_CONFIG)),
            etcd_data_dir: etcd::DATA_DIR.to_string(),
            etcd_client: etcd_client(cluster, node),
            admin_kubeconfig: (node.role == Role::Master)
                .then(|| "/etc/kubernetes/admin.conf".to_string()),
            kubelet_kubeconfig: "/etc/kubernetes/kubelet.conf".to_string(),
            bootstrap_token: (node.role == Role::Master).then(|| abs(paths::BOOTSTRAP_TOKEN)),
        },
        health_deadline_seconds: cluster.os_update.health_deadline_seconds.get(node.role),
    };
    // Refuse to write what firstboot would refuse to read.
    np::NodeProfile::from_json(&p.to_json())
        .map_err(|e| anyhow!("rendered profile of {} is invalid: {e}", node.name))
}

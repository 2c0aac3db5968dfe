//! etcd configuration file for external members: the template
//! `etc/etcd/etcd.conf.yml` (initial-cluster-state `new`, every member), which
//! hakube-firstboot copies to /var/lib/hakube/etcd/etcd.conf.yml and adjusts
//! when the member joins an existing cluster.
//! Format: https://etcd.io/docs/v3.4/op-guide/configuration/ (etcd.conf.yml.sample).

use super::yaml;
use crate::spec::{Cluster, Node};
use anyhow::{anyhow, Result};
use serde_json::json;

pub const ETCD_CONFIG: &str = "etc/etcd/etcd.conf.yml";
pub const DATA_DIR: &str = "/var/lib/etcd";
const PKI: &str = "/etc/kubernetes/pki/etcd";

pub fn peer_url(ip: std::net::Ipv4Addr) -> String {
    format!("https://{ip}:2380")
}

pub fn client_url(ip: std::net::Ipv4Addr) -> String {
    format!("https://{ip}:2379")
}

/// The config file of external member `node`.
pub fn config(cluster: &Cluster, node: &Node) -> Result<String> {
    let ip = node
        .address()
        .ok_or_else(|| anyhow!("etcd member {} has no static address", node.name))?;
    let initial_cluster = cluster
        .etcd_member_nodes()
        .map(|m| {
            m.address()
                .map(|a| format!("{}={}", m.name, peer_url(a)))
                .ok_or_else(|| anyhow!("etcd member {} has no static address", m.name))
        })
        .collect::<Result<Vec<_>>>()?
        .join(",");
    let tls = |kind: &str| {
        json!({
            "cert-file": format!("{PKI}/{kind}.crt"),
            "key-file": format!("{PKI}/{kind}.key"),
            "trusted-ca-file": format!("{PKI}/ca.crt"),
            "client-cert-auth": true,
        })
    };
    let doc = json!({
        "name": node.name.as_str(),
        "data-dir": DATA_DIR,
        "listen-peer-urls": peer_url(ip),
        "listen-client-urls": format!("{},https://127.0.0.1:2379", client_url(ip)),
        "listen-metrics-urls": "http://127.0.0.1:2381",
        "initial-advertise-peer-urls": peer_url(ip),
        "advertise-client-urls": client_url(ip),
        "initial-cluster": initial_cluster,
        "initial-cluster-state": "new",
        "initial-cluster-token": cluster.name.as_str(),
        "client-transport-security": tls("server"),
        "peer-transport-security": tls("peer"),
        "snapshot-count": 10000,
    });
    Ok(format!(
        "# etcd configuration template of member {} written by hakube-build render.\n\
         # hakube-firstboot writes the effective copy to /var/lib/hakube/etcd/etcd.conf.yml.\n{}",
        node.name,
        yaml::to_yaml(&doc)
    ))
}

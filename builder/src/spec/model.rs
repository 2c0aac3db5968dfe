//! The resolved cluster model: a validated spec with role-profile defaults
//! applied. Everything downstream (PKI, rendering, images) reads this, never
//! the raw YAML. Constructed only by [`super::load`].

use super::types::{ClusterName, KeyAlgorithm, KubeVersion, MacAddr, NodeName, San, Validity};
use hakube_node_profile::{EndpointMode, EtcdTopology, Role, Runtime, Taint};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where a spec came from, for error messages and the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecSource {
    Embedded,
    File(PathBuf),
}

impl std::fmt::Display for SpecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecSource::Embedded => f.write_str("<embedded default cluster>"),
            SpecSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    Flannel,
    Calico,
}

impl Cni {
    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Flannel => "flannel",
            Cni::Calico => "calico",
        }
    }
}

/// Resolved control-plane endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub mode: EndpointMode,
    /// VIP address, DNS name or external LB host.
    pub host: String,
    pub port: u16,
    /// `vip` mode: the VIP with the masters' prefix length.
    pub vip: Option<Ipv4Net>,
}

impl Endpoint {
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    /// The endpoint host as a SAN (IP in vip mode or when the host is an IP literal).
    pub fn san(&self) -> San {
        match self.host.parse::<Ipv4Addr>() {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(self.host.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalLb {
    pub enabled: bool,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    pub pod_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub dns_domain: String,
}

impl Networking {
    /// First usable address of the service CIDR: the `kubernetes` service ClusterIP.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        let n = u32::from(self.service_cidr.network());
        Ipv4Addr::from(n + 1)
    }
    /// Tenth address of the service CIDR: the cluster DNS ClusterIP (kubeadm's choice).
    pub fn cluster_dns_ip(&self) -> Ipv4Addr {
        let n = u32::from(self.service_cidr.network());
        Ipv4Addr::from(n + 10)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificates {
    pub ca_validity: Validity,
    pub leaf_validity: Validity,
    pub key_algorithm: KeyAlgorithm,
}

/// OS updates: how long the boot health gate of an updated node waits for
/// its role to be healthy before it marks the boot bad and the node falls
/// back to the previous slot. A master restarts its static pods (and etcd)
/// and must see itself Ready; a worker needs its kubelet to report Ready; an
/// etcd member only its own member and quorum. A deadline that is too short
/// rolls back a good update; one that is too long keeps a bad one running.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OsUpdate {
    pub health_deadline_seconds: RoleSeconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RoleSeconds {
    pub master: u64,
    pub worker: u64,
    pub etcd: u64,
}

impl RoleSeconds {
    pub fn get(&self, role: Role) -> u64 {
        match role {
            Role::Master => self.master,
            Role::Worker => self.worker,
            Role::Etcd => self.etcd,
        }
    }
}

impl OsUpdate {
    /// Generous, as boots under TCG are slow.
    pub const DEFAULT_HEALTH_DEADLINES: RoleSeconds = RoleSeconds {
        master: 900,
        worker: 600,
        etcd: 180,
    };
    /// The range a deadline may take: a node needs a minute to restart its
    /// services; past two hours a bad update has run too long.
    pub const HEALTH_DEADLINE_RANGE: std::ops::RangeInclusive<u64> = 60..=7200;
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum NodeNetwork {
    Static {
        /// Host address with the subnet prefix, e.g. 192.168.122.11/24.
        address: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
    Dhcp,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: NodeName,
    pub role: Role,
    pub mac: MacAddr,
    pub network: NodeNetwork,
    /// Role-profile values merged with the node's overrides.
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub sysctls: BTreeMap<String, String>,
    pub kernel_modules: Vec<String>,
    /// systemd units enabled on this node.
    pub services: Vec<String>,
}

impl Node {
    /// The node's static address, if it has one.
    pub fn address(&self) -> Option<Ipv4Addr> {
        match &self.network {
            NodeNetwork::Static { address, .. } => Some(address.addr()),
            NodeNetwork::Dhcp => None,
        }
    }
}

/// A validated, resolved cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    #[serde(skip)]
    pub source: SpecSource,
    pub name: ClusterName,
    pub kubernetes_version: KubeVersion,
    pub etcd_topology: EtcdTopology,
    pub endpoint: Endpoint,
    pub local_lb: LocalLb,
    pub networking: Networking,
    pub cni: Cni,
    pub runtime: Runtime,
    pub ssh_authorized_keys: Vec<String>,
    pub api_server_extra_sans: Vec<San>,
    pub certificates: Certificates,
    pub os_update: OsUpdate,
    pub nodes: Vec<Node>,
    /// Non-fatal findings (e.g. an even etcd member count).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Cluster {
    pub fn nodes_with_role(&self, role: Role) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.role == role)
    }
    pub fn masters(&self) -> impl Iterator<Item = &Node> {
        self.nodes_with_role(Role::Master)
    }
    /// The master that runs `kubeadm init`: the first master in spec order.
    pub fn init_node(&self) -> &Node {
        self.masters().next().expect("validated spec has a master")
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }
    /// etcd members: the etcd nodes (external) or the masters (stacked).
    pub fn etcd_member_nodes(&self) -> impl Iterator<Item = &Node> {
        let role = match self.etcd_topology {
            EtcdTopology::Stacked => Role::Master,
            EtcdTopology::External => Role::Etcd,
        };
        self.nodes_with_role(role)
    }
    /// Roles that have at least one node, in the order master, worker, etcd.
    pub fn roles_present(&self) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| self.nodes.iter().any(|n| n.role == *r))
            .collect()
    }
}

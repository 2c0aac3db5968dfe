//! The node profile: what `hakube-build` bakes into every node image at
//! [`PROFILE_PATH`] and what `hakube-firstboot` reads at boot.
//!
//! It is the only contract between the two binaries, so it lives in its own
//! crate. It is written as pretty JSON (JSON is valid YAML, and JSON has no
//! `yes`/`no` ambiguities). Readers reject unknown fields so that a profile
//! written by a newer builder fails loudly on an older firstboot instead of
//! being half understood.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Where the profile lives inside a node's root filesystem.
pub const PROFILE_PATH: &str = "etc/hakube/node.json";
/// Version of the profile format; bump on incompatible changes.
pub const PROFILE_VERSION: u32 = 1;

/// Node roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Worker,
    Etcd,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Master, Role::Worker, Role::Etcd];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Etcd => "etcd",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of master, worker, etcd")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Role::Master),
            "worker" => Ok(Role::Worker),
            "etcd" => Ok(Role::Etcd),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

/// Container runtimes hakube can install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Containerd,
    CriO,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
        }
    }
    /// CRI socket as kubeadm's `--cri-socket` / `nodeRegistration.criSocket` wants it.
    pub fn cri_socket(self) -> &'static str {
        match self {
            Runtime::Containerd => "unix:///run/containerd/containerd.sock",
            Runtime::CriO => "unix:///var/run/crio/crio.sock",
        }
    }
    /// systemd unit that runs the runtime.
    pub fn unit(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd.service",
            Runtime::CriO => "crio.service",
        }
    }
}

/// CRI-O's image store (containers/storage): hakube's CRI-O drop-in sets it
/// and first boot imports the disk's images into it with skopeo, so both
/// name the same store whatever `/etc/containers/storage.conf` says.
pub mod crio_store {
    pub const DRIVER: &str = "overlay";
    pub const ROOT: &str = "/var/lib/containers/storage";
    pub const RUNROOT: &str = "/run/containers/storage";
}

/// How etcd is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdTopology {
    /// kubeadm runs etcd as a static pod on every master.
    Stacked,
    /// Dedicated nodes of role `etcd`.
    External,
}

/// How clients reach the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dns,
    External,
}

/// One etcd member as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdMember {
    pub name: String,
    pub address: Ipv4Addr,
    /// `https://<address>:2380`
    pub peer_url: String,
    /// `https://<address>:2379`
    pub client_url: String,
}

/// A master as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MasterRef {
    pub name: String,
    pub address: Ipv4Addr,
}

/// A taint to put on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

/// Control-plane endpoint as resolved at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub mode: EndpointMode,
    /// Host part (VIP address, DNS name or external LB host).
    pub host: String,
    pub port: u16,
    /// Only in `vip` mode: the address keepalived holds, with its prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_prefix: Option<u8>,
}

impl Endpoint {
    /// `host:port`, as kubeadm's `controlPlaneEndpoint` wants it.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Node-local API load balancer (haproxy on 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalLb {
    pub enabled: bool,
    /// Port haproxy listens on at 127.0.0.1.
    pub port: u16,
}

/// Everything `hakube-firstboot` needs to know about its node and cluster.
/// All paths are absolute paths inside the node's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeProfile {
    pub profile_version: u32,
    pub cluster_name: String,
    /// Without the leading `v`, e.g. `1.37.2`.
    pub kubernetes_version: String,
    pub node_name: String,
    pub role: Role,
    /// Static address of this node, if it has one (masters and etcd nodes always do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// True for the one master that runs `kubeadm init` when no cluster answers yet.
    pub init_node: bool,
    /// The image was built after the operator recorded the cluster as formed
    /// (`hakube-build --cluster-initialised`): even the init node only ever
    /// joins, and waits for the cluster when nothing answers.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cluster_initialised: bool,
    pub runtime: Runtime,
    pub etcd_topology: EtcdTopology,
    pub endpoint: Endpoint,
    pub local_lb: LocalLb,
    /// All masters, in spec order.
    pub masters: Vec<MasterRef>,
    /// All etcd members (external topology: the etcd nodes; stacked: the masters).
    pub etcd_members: Vec<EtcdMember>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Masters: the join token's lifetime as a Go duration (`8760h0m0s`);
    /// every master renews the token once less than half of it is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_ttl: Option<String>,
    pub paths: Paths,
    /// How long the boot health gate waits, after an OS update, for this
    /// node's role to be healthy before it marks the boot bad and reboots
    /// into the previous slot.
    #[serde(default = "default_health_deadline")]
    pub health_deadline_seconds: u64,
}

/// [`NodeProfile::health_deadline_seconds`] when a profile does not say.
pub const DEFAULT_HEALTH_DEADLINE_SECONDS: u64 = 600;

fn default_health_deadline() -> u64 {
    DEFAULT_HEALTH_DEADLINE_SECONDS
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Files baked into the image that firstboot hands to tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Paths {
    /// kubeadm config for this node (init config on the init node, join config elsewhere).
    /// Absent on etcd nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_config: Option<String>,
    /// On the init node only: a JoinConfiguration used when a cluster already
    /// answers at the endpoint and this node must join instead of init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_join_config: Option<String>,
    /// On the init node with the node-local load balancer: the kubeadm config
    /// `kubeadm init phase addon kube-proxy` deploys kube-proxy from (its
    /// kubeconfig names the local balancer); `kubeadm init` skips that phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_addon_config: Option<String>,
    /// CNI manifest to apply (masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_manifest: Option<String>,
    /// etcd config file (external etcd members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_config: Option<String>,
    /// etcd data directory.
    pub etcd_data_dir: String,
    /// etcd CA and a client certificate/key this node may use to talk to etcd
    /// (etcd members and masters; absent on workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_client: Option<TlsClient>,
    /// Admin kubeconfig (masters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_kubeconfig: Option<String>,
    /// The kubelet's kubeconfig, written by kubeadm (Kubernetes roles).
    pub kubelet_kubeconfig: String,
    /// The join bootstrap token file (masters: to keep the token alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<String>,
}

/// TLS client material for etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsClient {
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("node profile is not valid: {0}")]
    Parse(#[from] serde_json::Error),
    #[error(
        "node profile has profileVersion {found}, this hakube-firstboot understands {expected}"
    )]
    Version { found: u32, expected: u32 },
    #[error("node profile field {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl NodeProfile {
    /// Parses and checks a profile.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let p: NodeProfile = serde_json::from_str(text)?;
        if p.profile_version != PROFILE_VERSION {
            return Err(ProfileError::Version {
                found: p.profile_version,
                expected: PROFILE_VERSION,
            });
        }
        p.check()?;
        Ok(p)
    }

    /// Pretty JSON with a trailing newline; deterministic (maps are ordered).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("profile serialises");
        s.push('\n');
        s
    }

    fn check(&self) -> Result<(), ProfileError> {
        let bad = |field, problem: &str| ProfileError::Invalid {
            field,
            problem: problem.to_string(),
        };
        if self.node_name.is_empty() {
            return Err(bad("nodeName", "is empty"));
        }
        if self.role != Role::Etcd && self.paths.kubeadm_config.is_none() {
            return Err(bad(
                "paths.kubeadmConfig",
                "is required for Kubernetes roles",
            ));
        }
        if self.role == Role::Etcd && self.paths.etcd_config.is_none() {
            return Err(bad("paths.etcdConfig", "is required for etcd members"));
        }
        if self.init_node && self.role != Role::Master {
            return Err(bad("initNode", "only a master can be the init node"));
        }
        if self.masters.is_empty() {
            return Err(bad("masters", "lists no master"));
        }
        Ok(())
    }

    /// This node's own etcd member entry, if it is one.
    pub fn own_etcd_member(&self) -> Option<&EtcdMember> {
        self.etcd_members.iter().find(|m| m.name == self.node_name)
    }
}

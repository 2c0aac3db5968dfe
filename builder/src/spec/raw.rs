//! The cluster spec exactly as written in YAML. Strict: unknown fields are
//! refused. Optional fields are `Option` so that resolution can tell "absent"
//! (take the default) from "given".

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCluster {
    pub name: String,
    pub kubernetes_version: String,
    #[serde(default)]
    pub etcd: Option<RawEtcd>,
    pub control_plane_endpoint: RawEndpoint,
    #[serde(default)]
    pub node_local_load_balancer: Option<RawLocalLb>,
    #[serde(default)]
    pub networking: Option<RawNetworking>,
    #[serde(default)]
    pub cni: Option<String>,
    #[serde(default)]
    pub container_runtime: Option<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Extra names/addresses in every apiserver certificate (`apiServerExtraSans`).
    #[serde(default)]
    pub api_server_extra_sans: Vec<String>,
    #[serde(default)]
    pub certificates: Option<RawCertificates>,
    #[serde(default)]
    pub os_update: Option<RawOsUpdate>,
    pub nodes: Vec<RawNode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOsUpdate {
    /// Per role: how long the boot health gate waits after an OS update.
    #[serde(default)]
    pub health_deadline_seconds: Option<RawRoleSeconds>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoleSeconds {
    #[serde(default)]
    pub master: Option<u64>,
    #[serde(default)]
    pub worker: Option<u64>,
    #[serde(default)]
    pub etcd: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawEtcd {
    pub topology: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawEndpoint {
    /// `vip`, `dns` or `external`.
    pub mode: String,
    /// `vip`: the virtual IPv4 address.
    #[serde(default)]
    pub address: Option<String>,
    /// `dns` / `external`: the name or address clients connect to.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLocalLb {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNetworking {
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(default, rename = "serviceCIDR")]
    pub service_cidr: Option<String>,
    #[serde(default)]
    pub dns_domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertificates {
    #[serde(default)]
    pub ca_validity: Option<String>,
    #[serde(default)]
    pub leaf_validity: Option<String>,
    #[serde(default)]
    pub key_algorithm: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNode {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub mac: Option<String>,
    pub network: RawNodeNetwork,
    /// Overrides merged over the role profile.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Option<Vec<RawTaint>>,
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub kernel_modules: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNodeNetwork {
    #[serde(default)]
    pub dhcp: Option<bool>,
    /// `ADDRESS/PREFIX`
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTaint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

/// A role profile (`profiles/<role>.yaml`): per-role defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRoleProfile {
    pub role: String,
    /// systemd units to enable.
    pub services: Vec<String>,
    pub kernel_modules: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    /// Swap must be off for the kubelet; kept explicit so nobody turns it on by accident.
    pub swap: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<RawTaint>,
}

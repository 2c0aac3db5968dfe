//! TEST DOUBLE support: the kubeadm config API (kubeadm.k8s.io/v1beta3 and
//! v1beta4), typed strictly like kubeadm's own decoder (unknown fields are
//! errors). Fields are those the two versions define (see the kubeadm
//! configuration reference for v1beta3/v1beta4); where the versions differ
//! the field is typed loosely here and checked per version in
//! [`check_version_fields`].

// Many fields are only decoded (so that unknown ones are refused), never read.
#![allow(dead_code)]

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

pub const V1BETA3: &str = "kubeadm.k8s.io/v1beta3";
pub const V1BETA4: &str = "kubeadm.k8s.io/v1beta4";
pub const KUBELET_API: &str = "kubelet.config.k8s.io/v1beta1";
pub const KUBEPROXY_API: &str = "kubeproxy.config.k8s.io/v1alpha1";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub bootstrap_tokens: Vec<BootstrapToken>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub node_registration: Option<NodeRegistration>,
    #[serde(default, rename = "localAPIEndpoint")]
    pub local_api_endpoint: Option<ApiEndpoint>,
    #[serde(default)]
    pub certificate_key: Option<String>,
    #[serde(default)]
    pub skip_phases: Vec<String>,
    #[serde(default)]
    pub patches: Option<Patches>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    pub token: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub usages: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cri_socket: Option<String>,
    #[serde(default)]
    pub taints: Option<Vec<Taint>>,
    /// v1beta3: a map; v1beta4: a list of `{name, value}`.
    #[serde(default)]
    pub kubelet_extra_args: Option<Value>,
    #[serde(default)]
    pub ignore_preflight_errors: Vec<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// v1beta4 only.
    #[serde(default)]
    pub image_pull_serial: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
    #[serde(default)]
    pub time_added: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    #[serde(default)]
    pub advertise_address: Option<String>,
    #[serde(default)]
    pub bind_port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patches {
    #[serde(default)]
    pub directory: Option<String>,
}

/// v1beta4 only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default)]
    pub control_plane_component_health_check: Option<String>,
    #[serde(default)]
    pub kubelet_health_check: Option<String>,
    #[serde(default, rename = "kubernetesAPICall")]
    pub kubernetes_api_call: Option<String>,
    #[serde(default, rename = "etcdAPICall")]
    pub etcd_api_call: Option<String>,
    #[serde(default)]
    pub tls_bootstrap: Option<String>,
    #[serde(default)]
    pub discovery: Option<String>,
    #[serde(default)]
    pub upgrade_manifests: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub etcd: Option<Etcd>,
    #[serde(default)]
    pub networking: Option<Networking>,
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    #[serde(default)]
    pub control_plane_endpoint: Option<String>,
    #[serde(default)]
    pub api_server: Option<ApiServer>,
    #[serde(default)]
    pub controller_manager: Option<ControlPlaneComponent>,
    #[serde(default)]
    pub scheduler: Option<ControlPlaneComponent>,
    #[serde(default)]
    pub dns: Option<Dns>,
    /// v1beta4 only.
    #[serde(default)]
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub certificates_dir: Option<String>,
    #[serde(default)]
    pub image_repository: Option<String>,
    #[serde(default)]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// v1beta4 only.
    #[serde(default)]
    pub encryption_algorithm: Option<String>,
    /// v1beta4 only.
    #[serde(default)]
    pub certificate_validity_period: Option<String>,
    /// v1beta4 only.
    #[serde(default)]
    pub ca_certificate_validity_period: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    #[serde(default)]
    pub local: Option<LocalEtcd>,
    #[serde(default)]
    pub external: Option<ExternalEtcd>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalEtcd {
    #[serde(default)]
    pub image_repository: Option<String>,
    #[serde(default)]
    pub image_tag: Option<String>,
    #[serde(default)]
    pub data_dir: Option<String>,
    #[serde(default)]
    pub extra_args: Option<Value>,
    /// v1beta4 only.
    #[serde(default)]
    pub extra_envs: Option<Value>,
    #[serde(default, rename = "serverCertSANs")]
    pub server_cert_sans: Vec<String>,
    #[serde(default, rename = "peerCertSANs")]
    pub peer_cert_sans: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default)]
    pub service_subnet: Option<String>,
    #[serde(default)]
    pub pod_subnet: Option<String>,
    #[serde(default)]
    pub dns_domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(default)]
    pub extra_args: Option<Value>,
    #[serde(default)]
    pub extra_envs: Option<Value>,
    #[serde(default)]
    pub extra_volumes: Vec<HostPathMount>,
    #[serde(default, rename = "certSANs")]
    pub cert_sans: Vec<String>,
    /// v1beta3 only (moved to InitConfiguration.timeouts in v1beta4).
    #[serde(default)]
    pub timeout_for_control_plane: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneComponent {
    #[serde(default)]
    pub extra_args: Option<Value>,
    #[serde(default)]
    pub extra_envs: Option<Value>,
    #[serde(default)]
    pub extra_volumes: Vec<HostPathMount>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathMount {
    pub name: String,
    pub host_path: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub path_type: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    #[serde(default)]
    pub image_repository: Option<String>,
    #[serde(default)]
    pub image_tag: Option<String>,
    /// v1beta4 only.
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub node_registration: Option<NodeRegistration>,
    #[serde(default)]
    pub ca_cert_path: Option<String>,
    pub discovery: Discovery,
    #[serde(default)]
    pub control_plane: Option<JoinControlPlane>,
    #[serde(default)]
    pub skip_phases: Vec<String>,
    #[serde(default)]
    pub patches: Option<Patches>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    #[serde(default)]
    pub bootstrap_token: Option<BootstrapTokenDiscovery>,
    #[serde(default)]
    pub file: Option<FileDiscovery>,
    #[serde(default)]
    pub tls_bootstrap_token: Option<String>,
    /// v1beta3 only.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub api_server_endpoint: Option<String>,
    #[serde(default)]
    pub ca_cert_hashes: Vec<String>,
    #[serde(default, rename = "unsafeSkipCAVerification")]
    pub unsafe_skip_ca_verification: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDiscovery {
    pub kube_config_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinControlPlane {
    #[serde(default, rename = "localAPIEndpoint")]
    pub local_api_endpoint: Option<ApiEndpoint>,
    #[serde(default)]
    pub certificate_key: Option<String>,
}

/// Fields that exist in only one of the two versions, and the shape of
/// `extraArgs`/`kubeletExtraArgs` (v1beta3: map; v1beta4: list of name/value).
pub fn check_version_fields(
    api: &str,
    init: Option<&InitConfiguration>,
    cluster: Option<&ClusterConfiguration>,
    join: Option<&JoinConfiguration>,
) -> Result<(), String> {
    let v4 = api == V1BETA4;
    let only4 = |present: bool, field: &str| -> Result<(), String> {
        if present && !v4 {
            Err(format!(
                "strict decoding error: unknown field \"{field}\" ({api})"
            ))
        } else {
            Ok(())
        }
    };
    let only3 = |present: bool, field: &str| -> Result<(), String> {
        if present && v4 {
            Err(format!(
                "strict decoding error: unknown field \"{field}\" ({api})"
            ))
        } else {
            Ok(())
        }
    };
    let mut regs = Vec::new();
    if let Some(i) = init {
        only4(i.dry_run.is_some(), "dryRun")?;
        only4(i.timeouts.is_some(), "timeouts")?;
        regs.push(("nodeRegistration", i.node_registration.as_ref()));
        for t in &i.bootstrap_tokens {
            check_token(&t.token)?;
        }
    }
    if let Some(j) = join {
        only4(j.dry_run.is_some(), "dryRun")?;
        only4(j.timeouts.is_some(), "timeouts")?;
        only3(j.discovery.timeout.is_some(), "discovery.timeout")?;
        regs.push(("nodeRegistration", j.node_registration.as_ref()));
    }
    for (path, reg) in regs {
        if let Some(r) = reg {
            only4(
                r.image_pull_serial.is_some(),
                "nodeRegistration.imagePullSerial",
            )?;
            check_args(
                v4,
                r.kubelet_extra_args.as_ref(),
                &format!("{path}.kubeletExtraArgs"),
            )?;
        }
    }
    if let Some(c) = cluster {
        only4(c.proxy.is_some(), "proxy")?;
        only4(c.encryption_algorithm.is_some(), "encryptionAlgorithm")?;
        only4(
            c.certificate_validity_period.is_some(),
            "certificateValidityPeriod",
        )?;
        only4(
            c.ca_certificate_validity_period.is_some(),
            "caCertificateValidityPeriod",
        )?;
        if let Some(a) = &c.encryption_algorithm {
            let ok = [
                "RSA-2048",
                "RSA-3072",
                "RSA-4096",
                "ECDSA-P256",
                "ECDSA-P384",
            ];
            if !ok.contains(&a.as_str()) {
                return Err(format!(
                    "encryptionAlgorithm: Invalid value: {a:?}: must be one of {ok:?}"
                ));
            }
        }
        only4(
            c.dns.as_ref().is_some_and(|d| d.disabled.is_some()),
            "dns.disabled",
        )?;
        if let Some(a) = &c.api_server {
            only3(
                a.timeout_for_control_plane.is_some(),
                "apiServer.timeoutForControlPlane",
            )?;
            only4(a.extra_envs.is_some(), "apiServer.extraEnvs")?;
            check_args(v4, a.extra_args.as_ref(), "apiServer.extraArgs")?;
        }
        for (name, comp) in [
            ("controllerManager", &c.controller_manager),
            ("scheduler", &c.scheduler),
        ] {
            if let Some(comp) = comp {
                only4(comp.extra_envs.is_some(), &format!("{name}.extraEnvs"))?;
                check_args(v4, comp.extra_args.as_ref(), &format!("{name}.extraArgs"))?;
            }
        }
        if let Some(local) = c.etcd.as_ref().and_then(|e| e.local.as_ref()) {
            only4(local.extra_envs.is_some(), "etcd.local.extraEnvs")?;
            check_args(v4, local.extra_args.as_ref(), "etcd.local.extraArgs")?;
        }
        if let Some(e) = &c.etcd {
            if e.local.is_some() && e.external.is_some() {
                return Err(
                    "etcd: Invalid value: local and external are mutually exclusive".into(),
                );
            }
        }
    }
    Ok(())
}

fn check_args(v4: bool, args: Option<&Value>, path: &str) -> Result<(), String> {
    let Some(args) = args else { return Ok(()) };
    if v4 {
        let Value::Sequence(items) = args else {
            return Err(format!(
                "strict decoding error: {path}: a list of {{name, value}} expected (v1beta4), got {}",
                kind(args)
            ));
        };
        for it in items {
            let Value::Mapping(m) = it else {
                return Err(format!("{path}: each item must be {{name, value}}"));
            };
            for k in m.keys() {
                match k.as_str() {
                    Some("name") | Some("value") => {}
                    _ => {
                        return Err(format!(
                            "strict decoding error: {path}: unknown field {k:?}"
                        ))
                    }
                }
            }
            if !m.get("name").is_some_and(|n| n.is_string()) {
                return Err(format!("{path}: every item needs a string name"));
            }
        }
    } else {
        let Value::Mapping(m) = args else {
            return Err(format!(
                "strict decoding error: {path}: a map of string to string expected (v1beta3), got {}",
                kind(args)
            ));
        };
        for (k, v) in m {
            if !k.is_string() || !v.is_string() {
                return Err(format!("{path}: keys and values must be strings"));
            }
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Mapping(_) => "a map",
        Value::Sequence(_) => "a list",
        Value::String(_) => "a string",
        _ => "a scalar",
    }
}

/// kubeadm's bootstrap token format `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn check_token(t: &str) -> Result<(), String> {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match t.split_once('.') {
        Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(()),
        _ => Err(format!(
            "the bootstrap token {t:?} was not of the form \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\""
        )),
    }
}

//! Raw spec -> resolved [`Cluster`]: field parsing, role-profile defaults,
//! cross-field checks. Errors carry the field path of the offending value.

use super::model::*;
use super::raw::*;
use super::types::*;
use super::SpecError;
use hakube_node_profile::{EndpointMode, EtcdTopology, Role, Runtime, Taint};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Collects the file name so every error can name it.
pub(crate) struct Ctx {
    pub file: String,
}

impl Ctx {
    pub fn err(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
    /// Parses `value` with `FromStr`, mapping the refusal to `field`.
    pub fn parse<T: std::str::FromStr<Err = String>>(
        &self,
        field: impl Into<String>,
        value: &str,
    ) -> Result<T, SpecError> {
        value.parse::<T>().map_err(|m| self.err(field, m))
    }
}

pub(crate) fn resolve(text: &str, source: SpecSource) -> Result<Cluster, SpecError> {
    let ctx = Ctx {
        file: source.to_string(),
    };
    let raw: RawCluster = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&ctx, e))?;
    let profiles = RoleProfiles::embedded();
    let cluster = resolve_raw(&ctx, raw, &profiles, source)?;
    super::validate::check(&ctx, &cluster).map(|warnings| Cluster {
        warnings,
        ..cluster
    })
}

/// serde_yaml_ng reports `nodes[2].network: unknown field ...` style paths in
/// its message; keep its text but make the file explicit.
fn yaml_error(ctx: &Ctx, e: serde_yaml_ng::Error) -> SpecError {
    let msg = e.to_string();
    // Messages look like "nodes[0].network: unknown field `adress`, expected one of ..."
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() && path != "invalid type" => {
            ctx.err(path, rest)
        }
        _ => ctx.err("", msg),
    }
}

pub(crate) struct RoleProfiles {
    pub master: RawRoleProfile,
    pub worker: RawRoleProfile,
    pub etcd: RawRoleProfile,
}

impl RoleProfiles {
    pub fn embedded() -> Self {
        let load = |text: &str, name: &str| -> RawRoleProfile {
            serde_yaml_ng::from_str(text)
                .unwrap_or_else(|e| panic!("embedded profiles/{name}.yaml is invalid: {e}"))
        };
        RoleProfiles {
            master: load(super::MASTER_PROFILE_YAML, "master"),
            worker: load(super::WORKER_PROFILE_YAML, "worker"),
            etcd: load(super::ETCD_PROFILE_YAML, "etcd"),
        }
    }
    fn for_role(&self, role: Role) -> &RawRoleProfile {
        match role {
            Role::Master => &self.master,
            Role::Worker => &self.worker,
            Role::Etcd => &self.etcd,
        }
    }
}

fn resolve_raw(
    ctx: &Ctx,
    raw: RawCluster,
    profiles: &RoleProfiles,
    source: SpecSource,
) -> Result<Cluster, SpecError> {
    let name: ClusterName = ctx.parse("name", &raw.name)?;
    let kubernetes_version: KubeVersion =
        ctx.parse("kubernetesVersion", &raw.kubernetes_version)?;

    let etcd_topology = match raw.etcd.as_ref().map(|e| e.topology.as_str()) {
        None | Some("stacked") => EtcdTopology::Stacked,
        Some("external") => EtcdTopology::External,
        Some(other) => {
            return Err(ctx.err(
                "etcd.topology",
                format!("{other:?} is not a topology: stacked or external expected"),
            ))
        }
    };

    let net = raw.networking.unwrap_or(RawNetworking {
        pod_cidr: None,
        service_cidr: None,
        dns_domain: None,
    });
    let networking = Networking {
        pod_cidr: parse_cidr(
            ctx,
            "networking.podCIDR",
            net.pod_cidr.as_deref().unwrap_or("10.244.0.0/16"),
        )?,
        service_cidr: parse_cidr(
            ctx,
            "networking.serviceCIDR",
            net.service_cidr.as_deref().unwrap_or("10.96.0.0/12"),
        )?,
        dns_domain: {
            let d = net.dns_domain.unwrap_or_else(|| "cluster.local".into());
            check_rfc1123_subdomain(&d).map_err(|m| ctx.err("networking.dnsDomain", m))?;
            d
        },
    };

    let cni = match raw.cni.as_deref() {
        None | Some("flannel") => Cni::Flannel,
        Some("calico") => Cni::Calico,
        Some(o) => {
            return Err(ctx.err(
                "cni",
                format!("{o:?} is not a CNI: flannel or calico expected"),
            ))
        }
    };
    let runtime = match raw.container_runtime.as_deref() {
        None | Some("containerd") => Runtime::Containerd,
        Some("cri-o") => Runtime::CriO,
        Some(o) => {
            return Err(ctx.err(
                "containerRuntime",
                format!("{o:?} is not a container runtime: containerd or cri-o expected"),
            ))
        }
    };

    for (i, key) in raw.ssh_authorized_keys.iter().enumerate() {
        check_ssh_key(key).map_err(|m| ctx.err(format!("sshAuthorizedKeys[{i}]"), m))?;
    }
    let api_server_extra_sans = raw
        .api_server_extra_sans
        .iter()
        .enumerate()
        .map(|(i, s)| ctx.parse(format!("apiServerExtraSANs[{i}]"), s))
        .collect::<Result<Vec<San>, _>>()?;

    let certs = raw.certificates.unwrap_or(RawCertificates {
        ca_validity: None,
        leaf_validity: None,
        key_algorithm: None,
    });
    let certificates = Certificates {
        ca_validity: ctx.parse(
            "certificates.caValidity",
            certs.ca_validity.as_deref().unwrap_or("10y"),
        )?,
        leaf_validity: ctx.parse(
            "certificates.leafValidity",
            certs.leaf_validity.as_deref().unwrap_or("1y"),
        )?,
        key_algorithm: ctx.parse(
            "certificates.keyAlgorithm",
            certs.key_algorithm.as_deref().unwrap_or("ecdsa-p256"),
        )?,
    };

    let nodes = raw
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| resolve_node(ctx, i, n, name.as_str(), profiles))
        .collect::<Result<Vec<_>, _>>()?;

    let endpoint = resolve_endpoint(ctx, &raw.control_plane_endpoint, &nodes)?;
    let lb = raw.node_local_load_balancer.unwrap_or(RawLocalLb {
        enabled: None,
        port: None,
    });
    let local_lb = LocalLb {
        enabled: lb.enabled.unwrap_or(true),
        port: lb.port.unwrap_or(7443),
    };

    Ok(Cluster {
        source,
        name,
        kubernetes_version,
        etcd_topology,
        endpoint,
        local_lb,
        networking,
        cni,
        runtime,
        ssh_authorized_keys: raw.ssh_authorized_keys,
        api_server_extra_sans,
        certificates,
        nodes,
        warnings: Vec::new(),
    })
}

pub(crate) fn parse_cidr(ctx: &Ctx, field: &str, s: &str) -> Result<Ipv4Net, SpecError> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        ctx.err(
            field,
            format!("{s:?} is not an IPv4 CIDR: NETWORK/PREFIX like 10.244.0.0/16 expected"),
        )
    })?;
    if net.network() != net.addr() {
        return Err(ctx.err(
            field,
            format!(
                "{s:?} has host bits set: the network address {} expected",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

fn check_ssh_key(key: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return Err("is not an SSH public key: \"TYPE BASE64 [COMMENT]\" expected".into());
    };
    if !TYPES.contains(&kind) {
        return Err(format!(
            "{kind:?} is not an SSH key type: one of {} expected",
            TYPES.join(", ")
        ));
    }
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the key body is not valid base64".to_string())?;
    // The blob starts with the length-prefixed key type again.
    let ok = blob.len() > 4 && {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        blob.get(4..4 + n) == Some(kind.as_bytes())
    };
    if !ok {
        return Err(format!("the key body does not hold a {kind} key"));
    }
    Ok(())
}

fn resolve_node(
    ctx: &Ctx,
    i: usize,
    n: &RawNode,
    cluster: &str,
    profiles: &RoleProfiles,
) -> Result<Node, SpecError> {
    let at = |f: &str| format!("nodes[{i}].{f}");
    let name: NodeName = ctx.parse(at("name"), &n.name)?;
    let role: Role = n
        .role
        .parse()
        .map_err(|e: hakube_node_profile::UnknownRole| ctx.err(at("role"), e.to_string()))?;
    let mac = match &n.mac {
        Some(m) => ctx.parse(at("mac"), m)?,
        None => MacAddr::derived(cluster, name.as_str()),
    };
    let network = resolve_network(ctx, i, &n.network)?;
    let profile = profiles.for_role(role);

    let mut labels = profile.labels.clone();
    labels.extend(n.labels.clone());
    let mut sysctls = profile.sysctls.clone();
    sysctls.extend(n.sysctls.clone());
    let mut kernel_modules = profile.kernel_modules.clone();
    for m in &n.kernel_modules {
        if !kernel_modules.contains(m) {
            kernel_modules.push(m.clone());
        }
    }
    let raw_taints = n.taints.as_ref().unwrap_or(&profile.taints);
    let taints = raw_taints
        .iter()
        .enumerate()
        .map(|(t, raw)| resolve_taint(ctx, &format!("nodes[{i}].taints[{t}]"), raw))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Node {
        name,
        role,
        mac,
        network,
        labels,
        taints,
        sysctls,
        kernel_modules,
        services: profile.services.clone(),
    })
}

fn resolve_taint(ctx: &Ctx, field: &str, t: &RawTaint) -> Result<Taint, SpecError> {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    if !EFFECTS.contains(&t.effect.as_str()) {
        return Err(ctx.err(
            format!("{field}.effect"),
            format!(
                "{:?} is not a taint effect: NoSchedule, PreferNoSchedule or NoExecute expected",
                t.effect
            ),
        ));
    }
    if t.key.is_empty() {
        return Err(ctx.err(format!("{field}.key"), "is empty: a label key expected"));
    }
    Ok(Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
    })
}

fn resolve_network(ctx: &Ctx, i: usize, n: &RawNodeNetwork) -> Result<NodeNetwork, SpecError> {
    let at = |f: &str| format!("nodes[{i}].network.{f}");
    if n.dhcp == Some(true) {
        if n.address.is_some() || n.gateway.is_some() {
            return Err(ctx.err(
                at("dhcp"),
                "dhcp: true cannot be combined with address or gateway: give one or the other",
            ));
        }
        return Ok(NodeNetwork::Dhcp);
    }
    let Some(addr) = &n.address else {
        return Err(ctx.err(
            at("address"),
            "is missing: ADDRESS/PREFIX like 192.168.122.11/24 expected (or dhcp: true)",
        ));
    };
    let address: Ipv4Net = addr.parse().map_err(|_| {
        ctx.err(
            at("address"),
            format!("{addr:?} is not ADDRESS/PREFIX like 192.168.122.11/24"),
        )
    })?;
    if address.prefix_len() < 32
        && (address.addr() == address.network() || address.addr() == address.broadcast())
    {
        return Err(ctx.err(
            at("address"),
            format!(
                "{addr} is the network or broadcast address of its prefix {}: a host address expected",
                address.trunc()
            ),
        ));
    }
    let gateway = match &n.gateway {
        None => None,
        Some(g) => {
            let gw: Ipv4Addr = g
                .parse()
                .map_err(|_| ctx.err(at("gateway"), format!("{g:?} is not an IPv4 address")))?;
            if !address.contains(&gw) {
                return Err(ctx.err(
                    at("gateway"),
                    format!(
                        "{gw} is outside the node's subnet {}: a gateway on that subnet expected",
                        address.trunc()
                    ),
                ));
            }
            if gw == address.addr() {
                return Err(ctx.err(at("gateway"), format!("{gw} is the node's own address")));
            }
            Some(gw)
        }
    };
    let dns = n
        .dns
        .iter()
        .enumerate()
        .map(|(d, s)| {
            s.parse::<Ipv4Addr>().map_err(|_| {
                ctx.err(
                    format!("nodes[{i}].network.dns[{d}]"),
                    format!("{s:?} is not an IPv4 address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeNetwork::Static {
        address,
        gateway,
        dns,
    })
}

fn resolve_endpoint(ctx: &Ctx, e: &RawEndpoint, nodes: &[Node]) -> Result<Endpoint, SpecError> {
    let f = |x: &str| format!("controlPlaneEndpoint.{x}");
    match e.mode.as_str() {
        "vip" => {
            if e.host.is_some() {
                return Err(ctx.err(
                    f("host"),
                    "is not used in vip mode: give the VIP as address",
                ));
            }
            let Some(a) = &e.address else {
                return Err(ctx.err(
                    f("address"),
                    "is missing: the virtual IPv4 address keepalived holds expected",
                ));
            };
            let vip: Ipv4Addr = a
                .parse()
                .map_err(|_| ctx.err(f("address"), format!("{a:?} is not an IPv4 address")))?;
            // The VIP takes the prefix of the first master's subnet; validation
            // checks that every master shares it.
            let prefix = nodes
                .iter()
                .filter(|n| n.role == Role::Master)
                .find_map(|n| match &n.network {
                    NodeNetwork::Static { address, .. } => Some(address.prefix_len()),
                    NodeNetwork::Dhcp => None,
                })
                .unwrap_or(32);
            Ok(Endpoint {
                mode: EndpointMode::Vip,
                host: vip.to_string(),
                port: e.port.unwrap_or(8443),
                vip: Some(Ipv4Net::new(vip, prefix).expect("prefix <= 32")),
            })
        }
        "dns" | "external" => {
            if e.address.is_some() {
                return Err(ctx.err(
                    f("address"),
                    format!("is only for vip mode: give host in {} mode", e.mode),
                ));
            }
            let Some(h) = &e.host else {
                return Err(ctx.err(
                    f("host"),
                    "is missing: the name or address clients connect to expected",
                ));
            };
            if e.mode == "dns" {
                check_rfc1123_subdomain(h).map_err(|m| ctx.err(f("host"), m))?;
            } else if h.parse::<Ipv4Addr>().is_err() {
                check_rfc1123_subdomain(h).map_err(|m| {
                    ctx.err(
                        f("host"),
                        format!("{m}; an IPv4 address or DNS name expected"),
                    )
                })?;
            }
            Ok(Endpoint {
                mode: if e.mode == "dns" {
                    EndpointMode::Dns
                } else {
                    EndpointMode::External
                },
                host: h.clone(),
                port: e.port.unwrap_or(6443),
                vip: None,
            })
        }
        other => Err(ctx.err(
            f("mode"),
            format!("{other:?} is not an endpoint mode: vip, dns or external expected"),
        )),
    }
}

/// Merged label map helper for callers that need role defaults only.
pub fn role_defaults(role: Role) -> BTreeMap<String, String> {
    RoleProfiles::embedded().for_role(role).labels.clone()
}

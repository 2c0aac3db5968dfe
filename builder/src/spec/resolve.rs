//! Raw spec -> resolved [`Cluster`]: field parsing, role-profile defaults,
//! cross-field checks. Errors carry the field path of the offending value.

use super::model::*;
use super::node::{resolve_node, RoleProfiles};
use super::raw::*;
use super::types::*;
use super::SpecError;
use hakube_node_profile::{EndpointMode, EtcdTopology, Role, Runtime};
use ipnet::Ipv4Net;
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
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(ctx.err("", NO_DOCUMENT));
    }
    let raw: RawCluster = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&ctx, e))?;
    let profiles = RoleProfiles::embedded();
    let cluster = resolve_raw(&ctx, raw, &profiles, source)?;
    super::validate::check(&ctx, &cluster).map(|warnings| Cluster {
        warnings,
        ..cluster
    })
}

const NO_DOCUMENT: &str = "holds no YAML document: a cluster spec (a mapping with name, \
     kubernetesVersion, controlPlaneEndpoint and nodes) expected";

/// Turns a serde_yaml_ng error into a [`SpecError`] with a field path.
///
/// serde_yaml_ng has no public accessor for the path; its message reads
/// `PATH: MESSAGE at line L column C`, with no `PATH: ` at the document root.
/// For unknown and missing fields the path is the enclosing mapping, so the
/// field's own name is appended to point at the offending field itself.
fn yaml_error(ctx: &Ctx, e: serde_yaml_ng::Error) -> SpecError {
    let mut text = e.to_string();
    let mut location = String::new();
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(t) = text.strip_suffix(&suffix) {
            text = t.to_string();
        }
        // libyaml syntax errors carry their own position in the text.
        if !text.contains(" at line ") {
            location = format!(" (line {}, column {})", l.line(), l.column());
        }
    }
    if text.starts_with("EOF while parsing") {
        return ctx.err("", NO_DOCUMENT);
    }
    let is_path =
        |p: &str| !p.is_empty() && !p.contains(|c: char| c.is_whitespace() || c == '`' || c == '"');
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if is_path(p) => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    let named = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string());
    let field = match named {
        Some(name) if path.is_empty() => name,
        Some(name) => format!("{path}.{name}"),
        None => path,
    };
    // serde says what it expected for wrong types and unknown fields; for
    // missing and repeated fields, say it here.
    let hint = if message.starts_with("missing field") {
        ": the field is required (profiles/examples/annotated.yaml documents every field)"
    } else if message.starts_with("duplicate field") {
        ": each field once expected"
    } else {
        ""
    };
    ctx.err(field, format!("{message}{hint}{location}"))
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
        .map(|(i, s)| ctx.parse(format!("apiServerExtraSans[{i}]"), s))
        .collect::<Result<Vec<San>, _>>()?;
    for (i, san) in api_server_extra_sans.iter().enumerate() {
        if let Some(first) = api_server_extra_sans[..i].iter().position(|o| o == san) {
            return Err(ctx.err(
                format!("apiServerExtraSans[{i}]"),
                format!(
                    "repeats {san} (already apiServerExtraSans[{first}]): each name once expected"
                ),
            ));
        }
    }

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

    if certificates.leaf_validity > certificates.ca_validity {
        return Err(ctx.err(
            "certificates.leafValidity",
            format!(
                "{} days is longer than caValidity ({} days): a leaf certificate cannot outlive its CA; \
                 a validity at most the CA's expected",
                certificates.leaf_validity.days, certificates.ca_validity.days
            ),
        ));
    }

    let os_update = resolve_os_update(ctx, raw.os_update.as_ref())?;

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
        os_update,
        nodes,
        warnings: Vec::new(),
    })
}

fn resolve_os_update(ctx: &Ctx, raw: Option<&RawOsUpdate>) -> Result<OsUpdate, SpecError> {
    let d = OsUpdate::DEFAULT_HEALTH_DEADLINES;
    let given = raw.and_then(|r| r.health_deadline_seconds.as_ref());
    let pick = |role: &str, v: Option<u64>, default: u64| -> Result<u64, SpecError> {
        let range = OsUpdate::HEALTH_DEADLINE_RANGE;
        match v {
            None => Ok(default),
            Some(s) if range.contains(&s) => Ok(s),
            Some(s) => Err(ctx.err(
                format!("osUpdate.healthDeadlineSeconds.{role}"),
                format!(
                    "{s} is out of range: between {} and {} seconds expected",
                    range.start(),
                    range.end()
                ),
            )),
        }
    };
    Ok(OsUpdate {
        health_deadline_seconds: RoleSeconds {
            master: pick("master", given.and_then(|g| g.master), d.master)?,
            worker: pick("worker", given.and_then(|g| g.worker), d.worker)?,
            etcd: pick("etcd", given.and_then(|g| g.etcd), d.etcd)?,
        },
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
            let vip: Ipv4Addr = a.parse().map_err(|_| {
                ctx.err(
                    f("address"),
                    format!("{a:?} is not an IPv4 address: the virtual IPv4 address keepalived holds expected"),
                )
            })?;
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
                vip: Some(Ipv4Net::new(vip, prefix).unwrap_or_else(|_| Ipv4Net::from(vip))),
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
                if looks_like_ipv4(h) {
                    return Err(ctx.err(
                        f("host"),
                        format!("{h:?} is an address, not a name: dns mode needs a DNS name that resolves to the masters (for an address use mode vip or external)"),
                    ));
                }
                check_rfc1123_subdomain(h).map_err(|m| ctx.err(f("host"), m))?;
            } else if looks_like_ipv4(h) {
                h.parse::<Ipv4Addr>().map_err(|_| {
                    ctx.err(f("host"), format!("{h:?} is not a valid IPv4 address"))
                })?;
            } else {
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

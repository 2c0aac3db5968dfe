//! One node of the spec -> [`Node`]: its name, role, MAC and network, merged
//! with its role profile. Checks that need only this node live here;
//! checks across nodes live in `validate`.

use super::model::{Node, NodeNetwork};
use super::raw::{RawNode, RawNodeNetwork, RawRoleProfile, RawTaint};
use super::resolve::Ctx;
use super::types::*;
use super::SpecError;
use hakube_node_profile::{Role, Taint};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Role profiles, parsed from the embedded `profiles/<role>.yaml`.
pub(crate) struct RoleProfiles {
    pub master: RawRoleProfile,
    pub worker: RawRoleProfile,
    pub etcd: RawRoleProfile,
}

impl RoleProfiles {
    pub fn embedded() -> Self {
        // The profiles are compiled in and covered by a test; a broken one is
        // a build defect, not user input.
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
    pub fn for_role(&self, role: Role) -> &RawRoleProfile {
        match role {
            Role::Master => &self.master,
            Role::Worker => &self.worker,
            Role::Etcd => &self.etcd,
        }
    }
}

pub(crate) fn resolve_node(
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
    if role != Role::Worker && network == NodeNetwork::Dhcp {
        return Err(ctx.err(
            at("network.dhcp"),
            format!(
                "a {role} node needs a static address: its certificates and the other nodes' \
                 configuration name its IP, so it cannot change; give network.address (ADDRESS/PREFIX)"
            ),
        ));
    }
    let profile = profiles.for_role(role);

    for (k, v) in &n.labels {
        check_label_key(k).map_err(|m| ctx.err(at(&format!("labels.{k}")), m))?;
        check_label_value(v).map_err(|m| ctx.err(at(&format!("labels.{k}")), m))?;
    }
    let mut labels = profile.labels.clone();
    labels.extend(n.labels.clone());
    // A worker has no admin credentials: its kubelet sets its labels at
    // registration (`node-labels`), and may set only some.
    if role == Role::Worker {
        if let Some(k) = labels.keys().find(|k| !kubelet_may_set_label(k)) {
            return Err(ctx.err(
                at(&format!("labels.{k}")),
                format!(
                    "a worker's kubelet may not set {k:?} on its own node (NodeRestriction allows only \
                     labels outside kubernetes.io and k8s.io, the node.kubernetes.io and \
                     kubelet.kubernetes.io namespaces and the well-known topology/os/arch labels); \
                     use another prefix, or label the node with kubectl once it has joined"
                ),
            ));
        }
    }

    for (k, v) in &n.sysctls {
        check_sysctl_name(k).map_err(|m| ctx.err(at(&format!("sysctls.{k}")), m))?;
        check_sysctl_value(v).map_err(|m| ctx.err(at(&format!("sysctls.{k}")), m))?;
    }
    let mut sysctls: BTreeMap<String, String> = profile.sysctls.clone();
    sysctls.extend(n.sysctls.clone());

    let mut kernel_modules = profile.kernel_modules.clone();
    for (m, module) in n.kernel_modules.iter().enumerate() {
        check_kernel_module(module).map_err(|e| ctx.err(at(&format!("kernelModules[{m}]")), e))?;
        if !kernel_modules.contains(module) {
            kernel_modules.push(module.clone());
        }
    }

    // Taints given on the node replace the profile's (so `taints: []` on a
    // master makes it schedulable); absent means the profile's.
    let raw_taints = n.taints.as_ref().unwrap_or(&profile.taints);
    let mut taints: Vec<Taint> = Vec::new();
    for (t, raw) in raw_taints.iter().enumerate() {
        let field = format!("nodes[{i}].taints[{t}]");
        let taint = resolve_taint(ctx, &field, raw)?;
        if taints
            .iter()
            .any(|o| o.key == taint.key && o.effect == taint.effect)
        {
            return Err(ctx.err(
                field,
                format!(
                    "repeats the taint {}:{}: the API server refuses two taints with the same key and effect",
                    taint.key, taint.effect
                ),
            ));
        }
        taints.push(taint);
    }
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

pub(crate) fn resolve_taint(ctx: &Ctx, field: &str, t: &RawTaint) -> Result<Taint, SpecError> {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    check_label_key(&t.key).map_err(|m| ctx.err(format!("{field}.key"), m))?;
    if let Some(v) = &t.value {
        check_label_value(v).map_err(|m| ctx.err(format!("{field}.value"), m))?;
    }
    if !EFFECTS.contains(&t.effect.as_str()) {
        return Err(ctx.err(
            format!("{field}.effect"),
            format!(
                "{:?} is not a taint effect: NoSchedule, PreferNoSchedule or NoExecute expected",
                t.effect
            ),
        ));
    }
    Ok(Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
    })
}

fn parse_ipv4(ctx: &Ctx, field: &str, s: &str) -> Result<Ipv4Addr, SpecError> {
    s.parse::<Ipv4Addr>().map_err(|_| {
        ctx.err(
            field,
            format!("{s:?} is not an IPv4 address: dotted quad like 192.168.122.1 expected"),
        )
    })
}

fn resolve_network(ctx: &Ctx, i: usize, n: &RawNodeNetwork) -> Result<NodeNetwork, SpecError> {
    let at = |f: &str| format!("nodes[{i}].network.{f}");
    let dns = n
        .dns
        .iter()
        .enumerate()
        .map(|(d, s)| parse_ipv4(ctx, &at(&format!("dns[{d}]")), s))
        .collect::<Result<Vec<_>, _>>()?;
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
            format!("{addr:?} is not ADDRESS/PREFIX: an IPv4 address with its subnet prefix like 192.168.122.11/24 expected"),
        )
    })?;
    if address.prefix_len() > 30 || address.prefix_len() < 8 {
        return Err(ctx.err(
            at("address"),
            format!(
                "{addr} has prefix /{}: the node's subnet prefix, /8 to /30, expected",
                address.prefix_len()
            ),
        ));
    }
    if address.addr() == address.network() || address.addr() == address.broadcast() {
        return Err(ctx.err(
            at("address"),
            format!(
                "{addr} is the network or broadcast address of {}: a host address inside it expected",
                address.trunc()
            ),
        ));
    }
    let gateway = match &n.gateway {
        None => None,
        Some(g) => {
            let gw = parse_ipv4(ctx, &at("gateway"), g)?;
            let subnet = address.trunc();
            if !subnet.contains(&gw) || gw == subnet.network() || gw == subnet.broadcast() {
                return Err(ctx.err(
                    at("gateway"),
                    format!(
                        "{gw} is outside the node's subnet {subnet}: a host address in that subnet expected"
                    ),
                ));
            }
            if gw == address.addr() {
                return Err(ctx.err(
                    at("gateway"),
                    format!("{gw} is the node's own address: the router's address expected"),
                ));
            }
            Some(gw)
        }
    };
    Ok(NodeNetwork::Static {
        address,
        gateway,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_role_profiles_are_valid() {
        let p = RoleProfiles::embedded();
        for role in Role::ALL {
            let prof = p.for_role(role);
            assert_eq!(prof.role, role.as_str());
            assert!(!prof.swap, "{role}: swap must be off for the kubelet");
            assert!(prof.services.iter().any(|s| s == "hakube-firstboot"));
            for m in &prof.kernel_modules {
                check_kernel_module(m).unwrap();
            }
            for (k, v) in &prof.sysctls {
                check_sysctl_name(k).unwrap();
                check_sysctl_value(v).unwrap();
            }
            for (k, v) in &prof.labels {
                check_label_key(k).unwrap();
                check_label_value(v).unwrap();
            }
            let ctx = Ctx {
                file: "profile".into(),
            };
            for t in &prof.taints {
                resolve_taint(&ctx, "taints", t).unwrap();
            }
        }
        assert!(p.master.kernel_modules.iter().any(|m| m == "br_netfilter"));
        assert!(p.worker.services.iter().any(|s| s == "kubelet"));
        assert!(!p.etcd.services.iter().any(|s| s == "kubelet"));
    }
}

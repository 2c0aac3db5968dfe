//! Cross-field checks on a resolved cluster: things no single field can be
//! wrong about. Returns warnings; refusals are [`SpecError`]s naming the
//! field a user should change.

use super::model::*;
use super::resolve::Ctx;
use super::SpecError;
use hakube_node_profile::{EndpointMode, EtcdTopology, Role};
use ipnet::Ipv4Net;

/// Ports something else already binds on a node, so neither the node-local
/// load balancer nor the VIP's haproxy may use them.
const RESERVED_PORTS: &[(u16, &str)] = &[
    (2379, "etcd clients"),
    (2380, "etcd peers"),
    (2381, "etcd metrics (stacked etcd)"),
    (6443, "kube-apiserver"),
    (10248, "kubelet healthz"),
    (10249, "kube-proxy metrics"),
    (10250, "kubelet"),
    (10256, "kube-proxy healthz"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
];

/// kube-controller-manager gives each node a /24 of the pod CIDR (its default
/// node-cidr-mask-size for IPv4, which flannel relies on).
const NODE_POD_PREFIX: u8 = 24;

pub(crate) fn check(ctx: &Ctx, c: &Cluster) -> Result<Vec<String>, SpecError> {
    let mut warnings = Vec::new();
    check_nodes_unique(ctx, c)?;
    check_roles(ctx, c, &mut warnings)?;
    check_networks(ctx, c)?;
    check_endpoint(ctx, c)?;
    check_ports(ctx, c)?;
    Ok(warnings)
}

fn node_field(c: &Cluster, node: &Node, field: &str) -> String {
    let i = c
        .nodes
        .iter()
        .position(|n| std::ptr::eq(n, node))
        .unwrap_or_default();
    format!("nodes[{i}].{field}")
}

fn check_nodes_unique(ctx: &Ctx, c: &Cluster) -> Result<(), SpecError> {
    if c.nodes.is_empty() {
        return Err(ctx.err(
            "nodes",
            "is empty: a list of nodes with at least one master expected",
        ));
    }
    for (j, n) in c.nodes.iter().enumerate() {
        for (i, o) in c.nodes[..j].iter().enumerate() {
            if o.name == n.name {
                return Err(ctx.err(
                    format!("nodes[{j}].name"),
                    format!(
                        "{} is already the name of nodes[{i}]: unique node names expected",
                        n.name
                    ),
                ));
            }
            if o.mac == n.mac {
                return Err(ctx.err(
                    format!("nodes[{j}].mac"),
                    format!(
                        "{} is already the MAC address of nodes[{i}] ({}): unique MAC addresses expected \
                         (set mac explicitly if two derived ones collide)",
                        n.mac, o.name
                    ),
                ));
            }
            if let (Some(a), Some(b)) = (n.address(), o.address()) {
                if a == b {
                    return Err(ctx.err(
                        format!("nodes[{j}].network.address"),
                        format!("{a} is already the address of nodes[{i}] ({}): unique addresses expected", o.name),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_roles(ctx: &Ctx, c: &Cluster, warnings: &mut Vec<String>) -> Result<(), SpecError> {
    if c.masters().next().is_none() {
        return Err(ctx.err(
            "nodes",
            "has no node with role master: at least one master expected",
        ));
    }
    let etcd_nodes: Vec<usize> = (0..c.nodes.len())
        .filter(|&i| c.nodes[i].role == Role::Etcd)
        .collect();
    match c.etcd_topology {
        EtcdTopology::External if etcd_nodes.is_empty() => {
            return Err(ctx.err(
                "etcd.topology",
                "is external but no node has role etcd: etcd nodes expected (or topology: stacked, \
                 which runs etcd on the masters)",
            ));
        }
        EtcdTopology::Stacked => {
            if let Some(i) = etcd_nodes.first() {
                return Err(ctx.err(
                    format!("nodes[{i}].role"),
                    "is etcd but etcd.topology is stacked (etcd runs on the masters): \
                     set etcd.topology: external, or give this node role master or worker",
                ));
            }
        }
        EtcdTopology::External => {}
    }
    let members = c.etcd_member_nodes().count();
    if members % 2 == 0 {
        warnings.push(format!(
            "etcd has {members} members: an odd count is recommended, since {members} members \
             tolerate no more failures than {} do",
            members - 1
        ));
    } else if members == 1 {
        warnings.push(
            "etcd has a single member: losing that node loses the cluster; 3 or 5 members are recommended"
                .to_string(),
        );
    }
    Ok(())
}

fn check_networks(ctx: &Ctx, c: &Cluster) -> Result<(), SpecError> {
    let net = &c.networking;
    let svc = net.service_cidr;
    // kubeadm (and the apiserver) refuse service ranges of more than 2^20
    // addresses, and need at least 10 (the DNS service is the tenth address).
    if !(12..=28).contains(&svc.prefix_len()) {
        return Err(ctx.err(
            "networking.serviceCIDR",
            format!(
                "{svc} has prefix /{}: /12 (kubeadm's largest service range) to /28 (at least 10 \
                 addresses, the DNS service is the tenth) expected",
                svc.prefix_len()
            ),
        ));
    }
    let pod = net.pod_cidr;
    // Each node takes a /24 of the pod CIDR; kubeadm refuses more than 16 bits
    // between the pod prefix and the node prefix.
    if pod.prefix_len() > NODE_POD_PREFIX || NODE_POD_PREFIX - pod.prefix_len() > 16 {
        return Err(ctx.err(
            "networking.podCIDR",
            format!(
                "{pod} has prefix /{}: /8 to /24 expected, since every node gets a /{NODE_POD_PREFIX} of it",
                pod.prefix_len()
            ),
        ));
    }
    let kube_nodes = c.nodes.iter().filter(|n| n.role != Role::Etcd).count();
    let per_node = 1usize << (NODE_POD_PREFIX - pod.prefix_len());
    if kube_nodes > per_node {
        return Err(ctx.err(
            "networking.podCIDR",
            format!(
                "{pod} holds {per_node} node ranges of /{NODE_POD_PREFIX} but the cluster has {kube_nodes} \
                 Kubernetes nodes: a larger pod CIDR expected"
            ),
        ));
    }
    if overlaps(pod, svc) {
        return Err(ctx.err(
            "networking.serviceCIDR",
            format!("{svc} overlaps podCIDR {pod}: disjoint ranges expected"),
        ));
    }
    for (i, n) in c.nodes.iter().enumerate() {
        if let NodeNetwork::Static { address, .. } = &n.network {
            let subnet = address.trunc();
            for (what, range) in [("podCIDR", pod), ("serviceCIDR", svc)] {
                if overlaps(subnet, range) {
                    return Err(ctx.err(
                        format!("nodes[{i}].network.address"),
                        format!(
                            "{address}: the node subnet {subnet} overlaps networking.{what} {range}: \
                             node, pod and service networks must be disjoint"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_endpoint(ctx: &Ctx, c: &Cluster) -> Result<(), SpecError> {
    let e = &c.endpoint;
    if e.mode != EndpointMode::Vip {
        return Ok(());
    }
    let vip = match e.vip {
        Some(v) => v.addr(),
        None => return Ok(()),
    };
    // Masters are static (node resolution refuses DHCP for them).
    let mut masters = c.masters();
    let Some(first) = masters.next() else {
        return Ok(());
    };
    let NodeNetwork::Static { address, .. } = &first.network else {
        return Ok(());
    };
    let subnet = address.trunc();
    for m in c.masters() {
        if let NodeNetwork::Static { address, .. } = &m.network {
            if address.trunc() != subnet {
                return Err(ctx.err(
                    node_field(c, m, "network.address"),
                    format!(
                        "{address} is not in {subnet}, the subnet of the first master {}: in vip mode all \
                         masters share one subnet, since keepalived moves the VIP between them",
                        first.name
                    ),
                ));
            }
        }
    }
    if !subnet.contains(&vip) || vip == subnet.network() || vip == subnet.broadcast() {
        return Err(ctx.err(
            "controlPlaneEndpoint.address",
            format!(
                "{vip} is outside the masters' subnet {subnet}: a free host address in that subnet expected"
            ),
        ));
    }
    for n in &c.nodes {
        if let NodeNetwork::Static { gateway, .. } = &n.network {
            if n.address() == Some(vip) {
                return Err(ctx.err(
                    "controlPlaneEndpoint.address",
                    format!(
                        "{vip} is the address of node {} ({}): a free address, not a node's, expected",
                        n.name,
                        node_field(c, n, "network.address")
                    ),
                ));
            }
            if *gateway == Some(vip) {
                return Err(ctx.err(
                    "controlPlaneEndpoint.address",
                    format!(
                        "{vip} is the gateway of node {}: a free address, not the router's, expected",
                        n.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn reserved(port: u16) -> Option<&'static str> {
    RESERVED_PORTS
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, what)| *what)
}

fn check_ports(ctx: &Ctx, c: &Cluster) -> Result<(), SpecError> {
    let e = &c.endpoint;
    if e.port == 0 {
        return Err(ctx.err(
            "controlPlaneEndpoint.port",
            "is 0: a TCP port 1-65535 expected",
        ));
    }
    match e.mode {
        EndpointMode::Vip => {
            if let Some(what) = reserved(e.port) {
                return Err(ctx.err(
                    "controlPlaneEndpoint.port",
                    format!(
                        "{} is taken on masters by {what}: in vip mode haproxy listens on *:{} on every \
                         master and balances to the apiservers on :6443, so another port (default 8443) expected",
                        e.port, e.port
                    ),
                ));
            }
        }
        EndpointMode::Dns if e.port != 6443 => {
            return Err(ctx.err(
                "controlPlaneEndpoint.port",
                format!(
                    "{} is not 6443: in dns mode the name resolves straight to the masters, whose \
                     apiservers listen on 6443, so 6443 (or no port) expected",
                    e.port
                ),
            ));
        }
        _ => {}
    }
    let lb = &c.local_lb;
    if !lb.enabled {
        return Ok(());
    }
    if lb.port == 0 {
        return Err(ctx.err(
            "nodeLocalLoadBalancer.port",
            "is 0: a TCP port 1-65535 expected",
        ));
    }
    if let Some(what) = reserved(lb.port) {
        return Err(ctx.err(
            "nodeLocalLoadBalancer.port",
            format!(
                "{} is taken by {what}: a free port for haproxy on 127.0.0.1 (default 7443) expected",
                lb.port
            ),
        ));
    }
    if e.mode == EndpointMode::Vip && lb.port == e.port {
        return Err(ctx.err(
            "nodeLocalLoadBalancer.port",
            format!(
                "{} is also controlPlaneEndpoint.port: the masters' haproxy already binds *:{} for the \
                 VIP, so a different port (default 7443) expected",
                lb.port, e.port
            ),
        ));
    }
    Ok(())
}

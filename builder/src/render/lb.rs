//! API load balancing: haproxy (the node-local balancer on 127.0.0.1 and, in
//! `vip` mode, the masters' frontend behind the VIP) and keepalived (VRRP for
//! the VIP on the masters).
//!
//! Health checks are HTTPS `GET /readyz` against each apiserver rather than a
//! TCP connect: an apiserver that accepts connections but has lost etcd (or
//! is still starting) answers `/readyz` with 500 and is taken out of rotation,
//! which a TCP check cannot see. `/readyz` is readable without credentials
//! (the system:public-info-viewer role), so no client certificate is needed;
//! `verify none` because the check carries no secret and only decides
//! routing - client traffic itself is passed through untouched (mode tcp) and
//! verified end to end by the clients against the cluster CA.
//!
//! When no API server is ready, the backend falls back to all of them
//! unchecked (`backup no-check` twins with `option allbackups`) rather than
//! closing every connection: with one master, or with every master slow, a
//! /readyz that fails on a 2-second etcd check would otherwise cut the
//! kubelets and kube-proxy off an API server that still serves (seen on a
//! first boot under QEMU's TCG: "backend has no server available", and the
//! VIP answered EOF). A dead API server refuses the connection either way.

use super::kubeadm::APISERVER_PORT;
use super::system::IFACE;
use crate::spec::{Cluster, Node};
use anyhow::{anyhow, Result};
use hakube_node_profile::{EndpointMode, Role};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

pub const HAPROXY_CONFIG: &str = "etc/haproxy/haproxy.cfg";
pub const KEEPALIVED_CONFIG: &str = "etc/keepalived/keepalived.conf";

/// Whether this node runs keepalived: masters in `vip` mode.
pub fn wants_keepalived(cluster: &Cluster, node: &Node) -> bool {
    node.role == Role::Master && cluster.endpoint.mode == EndpointMode::Vip
}

/// Whether this node runs haproxy: Kubernetes nodes with the local balancer,
/// and masters in `vip` mode (the VIP frontend).
pub fn wants_haproxy(cluster: &Cluster, node: &Node) -> bool {
    let kube_node = matches!(node.role, Role::Master | Role::Worker);
    (kube_node && cluster.local_lb.enabled) || wants_keepalived(cluster, node)
}

fn masters(cluster: &Cluster) -> Result<Vec<(String, std::net::Ipv4Addr)>> {
    cluster
        .masters()
        .map(|m| {
            m.address()
                .map(|ip| (m.name.to_string(), ip))
                .ok_or_else(|| anyhow!("master {} has no static address", m.name))
        })
        .collect()
}

/// haproxy.cfg for `node` (call only when [`wants_haproxy`]).
pub fn haproxy_config(cluster: &Cluster, node: &Node) -> Result<String> {
    let mut s = String::from(
        "# haproxy configuration written by hakube-build render.\n\
         global\n\
         \x20   log /dev/log local0 notice\n\
         \x20   maxconn 4096\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   option dontlognull\n\
         \x20   retries 3\n\
         \x20   timeout connect 5s\n\
         \x20   # watch streams and exec sessions stay open for a long time\n\
         \x20   timeout client 1h\n\
         \x20   timeout server 1h\n\
         \x20   timeout check 5s\n\
         \n",
    );
    if cluster.local_lb.enabled && node.role != Role::Etcd {
        let _ = write!(
            s,
            "# Node-local API balancer for the kubelet and kube-proxy.\n\
             frontend kube-apiserver-local\n\
             \x20   bind 127.0.0.1:{}\n\
             \x20   default_backend kube-apiservers\n\n",
            cluster.local_lb.port
        );
    }
    if wants_keepalived(cluster, node) {
        let _ = write!(
            s,
            "# The control-plane endpoint: keepalived moves the VIP between masters.\n\
             frontend kube-apiserver-vip\n\
             \x20   bind *:{}\n\
             \x20   default_backend kube-apiservers\n\n",
            cluster.endpoint.port
        );
    }
    s.push_str(
        "backend kube-apiservers\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk\n\
         \x20   http-check send meth GET uri /readyz\n\
         \x20   http-check expect status 200\n\
         \x20   default-server inter 5s fall 3 rise 2 slowstart 30s check check-ssl verify none\n\
         \x20   # With no API server ready, every one of them is tried anyway.\n\
         \x20   option allbackups\n",
    );
    let masters = masters(cluster)?;
    for (name, ip) in &masters {
        let _ = writeln!(s, "    server {name} {ip}:{APISERVER_PORT}");
    }
    for (name, ip) in &masters {
        let _ = writeln!(
            s,
            "    server {name}-unready {ip}:{APISERVER_PORT} backup no-check"
        );
    }
    Ok(s)
}

/// VRRP router id (1-255) from the cluster name, so two hakube clusters on one
/// L2 segment with different names do not (usually) collide.
pub fn virtual_router_id(cluster_name: &str) -> u8 {
    let h = Sha256::digest(cluster_name.as_bytes());
    (h[0] % 255) + 1
}

/// keepalived.conf for a master in `vip` mode.
pub fn keepalived_config(cluster: &Cluster, node: &Node) -> Result<String> {
    let vip = cluster
        .endpoint
        .vip
        .ok_or_else(|| anyhow!("endpoint mode vip without a VIP"))?;
    let masters = masters(cluster)?;
    let index = masters
        .iter()
        .position(|(n, _)| n == node.name.as_str())
        .ok_or_else(|| anyhow!("{} is not a master", node.name))?;
    let own = masters[index].1;
    // First master highest; distinct priorities make the election deterministic.
    let priority = 200usize.saturating_sub(index).max(1);
    let mut peers = String::new();
    for (i, (_, ip)) in masters.iter().enumerate() {
        if i != index {
            let _ = writeln!(peers, "        {ip}");
        }
    }
    Ok(format!(
        "# keepalived configuration written by hakube-build render.\n\
         global_defs {{\n\
         \x20   router_id {name}\n\
         \x20   enable_script_security\n\
         \x20   script_user root\n\
         }}\n\
         \n\
         # The VIP follows a running haproxy (which balances to all apiservers),\n\
         # watched through the kernel's process events: nothing is spawned, so a\n\
         # loaded node cannot time the check out and drop the VIP.\n\
         vrrp_track_process track_haproxy {{\n\
         \x20   process haproxy\n\
         \x20   weight 0\n\
         \x20   delay 2\n\
         }}\n\
         \n\
         vrrp_instance {cluster}_api {{\n\
         \x20   state BACKUP\n\
         \x20   interface {IFACE}\n\
         \x20   virtual_router_id {vrid}\n\
         \x20   priority {priority}\n\
         \x20   advert_int 1\n\
         \x20   # Unicast: works on networks that filter multicast.\n\
         \x20   unicast_src_ip {own}\n\
         \x20   unicast_peer {{\n\
         {peers}\
         \x20   }}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip} dev {IFACE}\n\
         \x20   }}\n\
         \x20   track_process {{\n\
         \x20       track_haproxy\n\
         \x20   }}\n\
         }}\n",
        name = node.name,
        cluster = cluster.name.as_str().replace('-', "_"),
        vrid = virtual_router_id(cluster.name.as_str()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_id_is_stable_and_in_range() {
        assert_eq!(virtual_router_id("hakube"), virtual_router_id("hakube"));
        for name in ["a", "b", "hakube", "prod-eu-1", "x".repeat(63).as_str()] {
            let id = virtual_router_id(name);
            assert!((1..=255).contains(&id), "{name}: {id}");
        }
    }
}

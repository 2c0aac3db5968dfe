//! Host basics: hostname, /etc/hosts, systemd-networkd files, kernel modules,
//! sysctls, SSH access and the first-boot unit.

use crate::spec::{Cluster, Node, NodeNetwork};
use crate::tree::FileTree;
use hakube_node_profile::Role;
use std::fmt::Write as _;

pub const HOSTNAME: &str = "etc/hostname";
pub const HOSTS: &str = "etc/hosts";
pub const LINK_FILE: &str = "etc/systemd/network/10-hakube.link";
pub const NETWORK_FILE: &str = "etc/systemd/network/10-hakube.network";
pub const MODULES: &str = "etc/modules-load.d/hakube.conf";
pub const SYSCTLS: &str = "etc/sysctl.d/90-hakube.conf";
/// Kubernetes nodes: logind lets the kubelet delay a shutdown as long as its
/// graceful node shutdown needs (KubeletConfiguration's
/// shutdownGracePeriod, 60 s; logind's own default is 5 s).
pub const LOGIND_DROPIN: &str = "etc/systemd/logind.conf.d/90-hakube.conf";
pub const SSH_KEYS: &str = "etc/ssh/authorized_keys/root";
pub const SSHD_DROPIN: &str = "etc/ssh/sshd_config.d/hakube.conf";
pub const RESOLV_CONF: &str = "etc/resolv.conf";
pub const FIRSTBOOT_UNIT: &str = "etc/systemd/system/hakube-firstboot.service";
/// Masters: the daily run of the every-boot steps (the join token) and the
/// certificate renewal (`hakube-firstboot certs --renew`).
pub const CERTS_SERVICE: &str = "etc/systemd/system/hakube-certs.service";
pub const CERTS_TIMER: &str = "etc/systemd/system/hakube-certs.timer";

const CERTS_SERVICE_TEXT: &str = "\
[Unit]
Description=hakube: renew this master's certificates before they expire
# Only once the node is in its cluster; never beside a first boot still
# forming it (that run renews nothing kubeadm has not written yet).
After=hakube-firstboot.service
ConditionPathExists=/etc/kubernetes/kubelet.conf

[Service]
Type=oneshot
# The every-boot steps first (the join token pushed out once less than half
# of its lifetime is left; any first-boot step still failing is retried),
# one run at a time with the first-boot unit's.
ExecStart=/usr/local/bin/hakube-firstboot run
ExecStart=/usr/local/bin/hakube-firstboot certs --renew
";

const CERTS_TIMER_TEXT: &str = "\
[Unit]
Description=hakube: daily certificate renewal check

[Timer]
OnBootSec=15min
OnUnitActiveSec=1d
# Masters built from one spec do not restart their control planes at once.
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
";
/// The interface name every node's uplink gets (keepalived binds to it).
pub const IFACE: &str = "lan0";

const FIRSTBOOT_UNIT_TEXT: &str = "\
[Unit]
Description=hakube first boot: form or join the cluster
# No default dependencies: a target waits for the units it wants unless they
# opt out, and this one may wait hours for its peers. multi-user.target (and
# boot blessing) must not hang on cluster formation; `hakube-firstboot status`
# tells how far it got. The default dependencies it still needs are below.
DefaultDependencies=no
Requires=sysinit.target
Wants=network-online.target
After=sysinit.target basic.target network-online.target time-sync.target
Conflicts=shutdown.target
Before=shutdown.target
# Restarted however often a step fails (see Restart= below).
StartLimitIntervalSec=0

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/hakube-firstboot run
StandardOutput=journal+console
TimeoutStartSec=infinity
# A failed step is retried after 30 s, as the next boot would retry it: a
# join that timed out because the control plane was still settling (slow
# hardware, masters booted minutes apart) must not leave the node out until
# someone reboots it. The journal says which steps are done; a run resumes
# after them. Exit 2 is a wrong disk (profile, images of another node): no
# retry can mend that, so the unit stays failed and status says why.
Restart=on-failure
RestartSec=30s
RestartPreventExitStatus=2

[Install]
WantedBy=multi-user.target
";

fn hosts(cluster: &Cluster) -> String {
    let mut s = String::from(
        "# Written by hakube-build render.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    for n in &cluster.nodes {
        if let Some(ip) = n.address() {
            let _ = writeln!(s, "{ip}\t{}", n.name);
        }
    }
    s
}

fn link_file(node: &Node) -> String {
    format!(
        "# Written by hakube-build render: name the NIC with this node's MAC {IFACE}.\n\
         [Match]\nMACAddress={}\n\n[Link]\nName={IFACE}\n",
        node.mac
    )
}

fn network_file(cluster: &Cluster, node: &Node) -> String {
    let mut s = format!("# Written by hakube-build render.\n[Match]\nName={IFACE}\n\n[Network]\n");
    match &node.network {
        NodeNetwork::Static {
            address,
            gateway,
            dns,
        } => {
            let _ = writeln!(s, "Address={address}");
            if let Some(gw) = gateway {
                let _ = writeln!(s, "Gateway={gw}");
            }
            for d in dns {
                let _ = writeln!(s, "DNS={d}");
            }
        }
        NodeNetwork::Dhcp => s.push_str("DHCP=ipv4\n"),
    }
    // The cluster is IPv4-only; no IPv6 autoconfiguration on the uplink.
    s.push_str("LinkLocalAddressing=no\nIPv6AcceptRA=no\n");
    if super::lb::wants_keepalived(cluster, node) {
        // keepalived adds the VIP to lan0 behind networkd's back; networkd
        // drops such foreign addresses when it restarts or reconfigures the
        // link unless told to keep them (systemd.network(5), KeepConfiguration=).
        s.push_str("KeepConfiguration=static\n");
    }
    s
}

/// Where systemd-resolved lists the upstream servers it learnt (from DHCP):
/// the real servers, not its 127.0.0.53 stub, which a pod cannot reach.
pub const RESOLVED_UPLINK: &str = "/run/systemd/resolve/resolv.conf";

/// `/etc/resolv.conf` for a node with static DNS servers: networkd's DNS=
/// lines alone would reach nobody without systemd-resolved; the kubelet
/// hands this file to pods as their upstream resolvers. DHCP nodes get a
/// link to [`RESOLVED_UPLINK`] instead (see [`add`]).
fn resolv_conf(node: &Node) -> Option<String> {
    let NodeNetwork::Static { dns, .. } = &node.network else {
        return None;
    };
    if dns.is_empty() {
        return None;
    }
    let mut s = String::from("# Written by hakube-build render from the cluster spec.\n");
    for d in dns {
        let _ = writeln!(s, "nameserver {d}");
    }
    Some(s)
}

fn modules(node: &Node) -> String {
    let mut s = String::from("# Written by hakube-build render.\n");
    for m in &node.kernel_modules {
        let _ = writeln!(s, "{m}");
    }
    s
}

fn sysctls(node: &Node) -> String {
    let mut s = String::from("# Written by hakube-build render.\n");
    for (k, v) in &node.sysctls {
        let _ = writeln!(s, "{k} = {v}");
    }
    s
}

/// Adds host files; returns whether SSH is configured (so sshd gets enabled).
pub fn add(tree: &mut FileTree, cluster: &Cluster, node: &Node) -> bool {
    tree.add_public(HOSTNAME, format!("{}\n", node.name));
    tree.add_public(HOSTS, hosts(cluster));
    tree.add_public(LINK_FILE, link_file(node));
    tree.add_public(NETWORK_FILE, network_file(cluster, node));
    if let Some(text) = resolv_conf(node) {
        tree.add_public(RESOLV_CONF, text);
    } else if node.network == NodeNetwork::Dhcp {
        // The servers come with the lease: systemd-resolved takes them from
        // networkd and keeps the file current across renewals.
        tree.add_symlink(RESOLV_CONF, RESOLVED_UPLINK);
        tree.enable_unit("systemd-resolved.service", "multi-user.target", true);
    }
    tree.add_public(MODULES, modules(node));
    tree.add_public(SYSCTLS, sysctls(node));
    if node.role != Role::Etcd {
        tree.add_public(
            LOGIND_DROPIN,
            "# Written by hakube-build render: the kubelet's graceful node shutdown\n\
             # (shutdownGracePeriod 60s) holds a delay inhibitor this long at most.\n\
             [Login]\nInhibitDelayMaxSec=90\n",
        );
    }
    tree.add_public(FIRSTBOOT_UNIT, FIRSTBOOT_UNIT_TEXT);
    if node.role == Role::Master {
        tree.add_public(CERTS_SERVICE, CERTS_SERVICE_TEXT);
        tree.add_public(CERTS_TIMER, CERTS_TIMER_TEXT);
        tree.enable_unit("hakube-certs.timer", "timers.target", false);
    }
    if cluster.ssh_authorized_keys.is_empty() {
        return false;
    }
    let mut keys = String::new();
    for k in &cluster.ssh_authorized_keys {
        let _ = writeln!(keys, "{}", k.trim());
    }
    tree.add(SSH_KEYS, keys, 0o600);
    tree.add_public(
        SSHD_DROPIN,
        "# Written by hakube-build render: keys from the cluster spec only.\n\
         AuthorizedKeysFile /etc/ssh/authorized_keys/%u\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n",
    );
    true
}

//! What each node's certificates must look like: kubeadm's certificate list
//! (cmd/kubeadm/app/phases/certs/certlist.go) and kubeconfig specs
//! (phases/kubeconfig/kubeconfig.go) as of Kubernetes 1.29+, applied to one
//! node of the spec. Pure data; issuing lives in `issue.rs`.

use crate::spec::types::San;
use crate::spec::{Cluster, Node};
use anyhow::Result;
use hakube_node_profile::{EtcdTopology, Role};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The three cluster CAs, each with kubeadm's file base name and CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaKind {
    Kubernetes,
    FrontProxy,
    Etcd,
}

impl CaKind {
    pub const ALL: [CaKind; 3] = [CaKind::Kubernetes, CaKind::FrontProxy, CaKind::Etcd];

    /// Path stem under `pki/` (and in the state directory).
    pub fn base(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "ca",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd/ca",
        }
    }

    /// kubeadm's CommonName for this CA.
    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "kubernetes",
            CaKind::FrontProxy => "front-proxy-ca",
            CaKind::Etcd => "etcd-ca",
        }
    }
}

/// Extended key usages a leaf carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    /// serverAuth only (kube-apiserver).
    Server,
    /// clientAuth only.
    Client,
    /// serverAuth + clientAuth (etcd server and peer; etcd needs clientAuth
    /// on its server certificate, see etcd-io/etcd#9785).
    ServerAndClient,
}

impl Usage {
    pub fn server_auth(self) -> bool {
        matches!(self, Usage::Server | Usage::ServerAndClient)
    }
    pub fn client_auth(self) -> bool {
        matches!(self, Usage::Client | Usage::ServerAndClient)
    }
}

/// Where a leaf ends up in the node's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `etc/kubernetes/pki/<id>.crt` and `.key`.
    Pki,
    /// Embedded in `etc/kubernetes/<file>` with this API server URL.
    Kubeconfig { file: &'static str, server: String },
}

/// The desired shape of one leaf certificate of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafProfile {
    /// Stable id: the pki path stem (`apiserver`, `etcd/server`) or
    /// `kubeconfig/<name>` for kubeconfig client certificates.
    pub id: String,
    pub ca: CaKind,
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
    pub output: Output,
}

impl LeafProfile {
    fn client(id: &str, ca: CaKind, cn: &str, org: Option<&str>) -> LeafProfile {
        LeafProfile {
            id: id.to_string(),
            ca,
            common_name: cn.to_string(),
            organizations: org.map(|o| vec![o.to_string()]).unwrap_or_default(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
            output: Output::Pki,
        }
    }
}

/// kubeadm's group bound to cluster-admin by a ClusterRoleBinding (1.29+);
/// admin.conf uses it instead of system:masters.
pub const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";
/// The built-in super-user group, only for super-admin.conf.
pub const SYSTEM_MASTERS_GROUP: &str = "system:masters";
/// kube-apiserver's secure port on each master (kubeadm's default bind port).
pub const APISERVER_PORT: u16 = 6443;

/// Every leaf this node needs, in a stable order.
pub fn leaf_profiles(cluster: &Cluster, node: &Node) -> Result<Vec<LeafProfile>> {
    let mut out = Vec::new();
    match node.role {
        Role::Worker => {}
        Role::Etcd => out.extend(etcd_member_leaves(node)?),
        Role::Master => {
            let ip = static_ip(node)?;
            out.push(LeafProfile {
                id: "apiserver".into(),
                ca: CaKind::Kubernetes,
                common_name: "kube-apiserver".into(),
                organizations: vec![],
                dns_names: apiserver_dns_names(cluster, node),
                ips: apiserver_ips(cluster, node),
                usage: Usage::Server,
                output: Output::Pki,
            });
            out.push(LeafProfile::client(
                "apiserver-kubelet-client",
                CaKind::Kubernetes,
                "kube-apiserver-kubelet-client",
                // No group, as kubeadm 1.37 issues it (certlist.go
                // KubeadmCertKubeletClient): its bootstrap-token phase binds
                // this CN to system:kubelet-api-admin; kubeadm:cluster-admins
                // would make this key a cluster-admin credential.
                None,
            ));
            out.push(LeafProfile::client(
                "front-proxy-client",
                CaKind::FrontProxy,
                "front-proxy-client",
                None,
            ));
            out.push(LeafProfile::client(
                "apiserver-etcd-client",
                CaKind::Etcd,
                "kube-apiserver-etcd-client",
                None,
            ));
            if cluster.etcd_topology == EtcdTopology::Stacked {
                out.extend(etcd_member_leaves(node)?);
            }
            let endpoint = format!("https://{}", cluster.endpoint.host_port());
            let local = format!("https://{ip}:{APISERVER_PORT}");
            let mut kubeconfig = |file: &'static str, cn: &str, org: Option<&str>, server: &str| {
                let stem = file.trim_end_matches(".conf");
                let mut p =
                    LeafProfile::client(&format!("kubeconfig/{stem}"), CaKind::Kubernetes, cn, org);
                p.output = Output::Kubeconfig {
                    file,
                    server: server.to_string(),
                };
                out.push(p);
            };
            // admin.conf and super-admin.conf use the control-plane endpoint;
            // controller-manager.conf and scheduler.conf the local API server
            // (kubeadm's getKubeConfigSpecsBase).
            kubeconfig(
                "admin.conf",
                "kubernetes-admin",
                Some(CLUSTER_ADMINS_GROUP),
                &endpoint,
            );
            // kubeadm (1.29 and newer: every supported minor) writes
            // super-admin.conf on `kubeadm init` only, never on join.
            if cluster.init_node().name == node.name {
                kubeconfig(
                    "super-admin.conf",
                    "kubernetes-super-admin",
                    Some(SYSTEM_MASTERS_GROUP),
                    &endpoint,
                );
            }
            kubeconfig(
                "controller-manager.conf",
                "system:kube-controller-manager",
                None,
                &local,
            );
            kubeconfig("scheduler.conf", "system:kube-scheduler", None, &local);
        }
    }
    Ok(out)
}

/// etcd server, peer and healthcheck-client certificates of one member.
fn etcd_member_leaves(node: &Node) -> Result<Vec<LeafProfile>> {
    let ip = static_ip(node)?;
    // kubeadm's getAltNames: node name, localhost, advertise address, 127.0.0.1, ::1.
    let dns_names = vec![node.name.to_string(), "localhost".to_string()];
    let ips = vec![
        IpAddr::V4(ip),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let member = |id: &str| LeafProfile {
        id: id.to_string(),
        ca: CaKind::Etcd,
        common_name: node.name.to_string(),
        organizations: vec![],
        dns_names: dns_names.clone(),
        ips: ips.clone(),
        usage: Usage::ServerAndClient,
        output: Output::Pki,
    };
    Ok(vec![
        member("etcd/server"),
        member("etcd/peer"),
        LeafProfile::client(
            "etcd/healthcheck-client",
            CaKind::Etcd,
            "kube-etcd-healthcheck-client",
            None,
        ),
    ])
}

fn static_ip(node: &Node) -> Result<Ipv4Addr> {
    match node.address() {
        Some(ip) => Ok(ip),
        None => Err(crate::errors::bad_input(format!(
            "node {} (role {}) uses DHCP, but its certificates name its address: give it a static network.address",
            node.name,
            node.role.as_str()
        ))),
    }
}

/// DNS SANs of a master's apiserver certificate: what kubeadm's
/// GetAPIServerAltNames computes, plus the endpoint name and extra SANs.
pub fn apiserver_dns_names(cluster: &Cluster, node: &Node) -> Vec<String> {
    let domain = &cluster.networking.dns_domain;
    let mut names = vec![
        node.name.to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{domain}"),
    ];
    let extra = std::iter::once(cluster.endpoint.san())
        .chain(cluster.api_server_extra_sans.iter().cloned());
    for san in extra {
        if let San::Dns(d) = san {
            push_unique(&mut names, d);
        }
    }
    names
}

/// IP SANs of a master's apiserver certificate: the `kubernetes` service IP,
/// the node address, the endpoint address, 127.0.0.1 (the node-local load
/// balancer and kubelets on masters connect there) and extra IP SANs.
pub fn apiserver_ips(cluster: &Cluster, node: &Node) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::V4(cluster.networking.kubernetes_service_ip())];
    if let Some(ip) = node.address() {
        push_unique(&mut ips, IpAddr::V4(ip));
    }
    if let San::Ip(ip) = cluster.endpoint.san() {
        push_unique(&mut ips, IpAddr::V4(ip));
    }
    push_unique(&mut ips, IpAddr::V4(Ipv4Addr::LOCALHOST));
    for san in &cluster.api_server_extra_sans {
        if let San::Ip(ip) = san {
            push_unique(&mut ips, IpAddr::V4(*ip));
        }
    }
    ips
}

/// The SANs hakube adds on top of kubeadm's defaults, for the kubeadm
/// config's `apiServer.certSANs`: kubeadm then expects exactly the names the
/// pre-made certificate carries.
pub fn apiserver_cert_sans(cluster: &Cluster) -> Vec<String> {
    let mut sans = vec![Ipv4Addr::LOCALHOST.to_string()];
    for s in &cluster.api_server_extra_sans {
        push_unique(&mut sans, s.to_string());
    }
    sans
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

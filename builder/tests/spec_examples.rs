//! The shipped examples (profiles/examples/), the embedded default cluster and
//! the good-spec fixtures load, and resolve to what they say they are.

use hakube_build::spec::{self, model::NodeNetwork, types::KeyAlgorithm, Cluster};
use hakube_node_profile::{EndpointMode, EtcdTopology, Role, Runtime};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ has a parent")
        .to_path_buf()
}

fn load(rel: &str) -> Cluster {
    let path = repo().join(rel);
    spec::load(Some(&path)).unwrap_or_else(|e| panic!("{rel} is refused: {e}"))
}

fn count(c: &Cluster, role: Role) -> usize {
    c.nodes_with_role(role).count()
}

#[test]
fn every_example_loads_without_warnings() {
    let dir = repo().join("profiles/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("profiles/examples exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let c = spec::load(Some(&path))
                .unwrap_or_else(|e| panic!("{} is refused: {e}", path.display()));
            assert!(
                c.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                c.warnings
            );
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} examples in {}", dir.display());
}

#[test]
fn embedded_default_cluster() {
    let c = spec::load(None).expect("embedded default loads");
    assert_eq!(c.name.as_str(), "hakube");
    assert_eq!(c.source, spec::SpecSource::Embedded);
    assert_eq!(count(&c, Role::Master), 3);
    assert_eq!(count(&c, Role::Worker), 1);
    assert_eq!(count(&c, Role::Etcd), 0);
    assert_eq!(c.etcd_topology, EtcdTopology::Stacked);
    assert_eq!(c.endpoint.mode, EndpointMode::Vip);
    assert_eq!(c.endpoint.host_port(), "192.168.122.10:8443");
    assert_eq!(
        c.endpoint.vip.map(|v| v.to_string()).as_deref(),
        Some("192.168.122.10/24")
    );
    assert!(c.local_lb.enabled);
    assert_eq!(c.local_lb.port, 7443);
    assert_eq!(c.networking.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(c.networking.service_cidr.to_string(), "10.96.0.0/12");
    assert_eq!(c.networking.dns_domain, "cluster.local");
    assert_eq!(c.init_node().name.as_str(), "master-1");
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["master-1", "master-2", "master-3", "worker-1"]);
    let addrs: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.address().map(|a| a.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(
        addrs,
        [
            "192.168.122.11",
            "192.168.122.12",
            "192.168.122.13",
            "192.168.122.21"
        ]
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Role profiles applied: masters tainted, workers not, both load br_netfilter.
    let m = c.node("master-2").expect("master-2");
    assert_eq!(m.taints.len(), 1);
    assert_eq!(m.taints[0].key, "node-role.kubernetes.io/control-plane");
    assert!(m.kernel_modules.iter().any(|k| k == "br_netfilter"));
    assert_eq!(
        m.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
        Some("1")
    );
    assert!(c.node("worker-1").expect("worker-1").taints.is_empty());
}

#[test]
fn external_etcd_example() {
    let c = load("profiles/examples/external-etcd.yaml");
    assert_eq!(c.etcd_topology, EtcdTopology::External);
    assert_eq!(count(&c, Role::Master), 3);
    assert_eq!(count(&c, Role::Worker), 3);
    assert_eq!(count(&c, Role::Etcd), 3);
    let members: Vec<&str> = c.etcd_member_nodes().map(|n| n.name.as_str()).collect();
    assert_eq!(members, ["etcd-1", "etcd-2", "etcd-3"]);
    assert_eq!(c.endpoint.mode, EndpointMode::Vip);
    assert_eq!(c.endpoint.host_port(), "192.168.122.100:8443");
    assert_eq!(c.init_node().name.as_str(), "master-1");
    // etcd nodes get the etcd profile: no kubelet, no taints.
    let e = c.node("etcd-2").expect("etcd-2");
    assert!(e.services.iter().any(|s| s == "etcd"));
    assert!(!e.services.iter().any(|s| s == "kubelet"));
}

#[test]
fn dns_endpoint_example() {
    let c = load("profiles/examples/dns-endpoint.yaml");
    assert_eq!(c.etcd_topology, EtcdTopology::Stacked);
    assert_eq!(c.endpoint.mode, EndpointMode::Dns);
    assert_eq!(
        c.endpoint.host_port(),
        "api.hakube-dns.example.internal:6443"
    );
    assert_eq!(c.endpoint.vip, None);
    assert_eq!(count(&c, Role::Master), 3);
    assert_eq!(count(&c, Role::Worker), 2);
    assert_eq!(c.etcd_member_nodes().count(), 3);
}

#[test]
fn annotated_example_uses_every_optional_field() {
    let c = load("profiles/examples/annotated.yaml");
    assert_eq!(c.nodes.len(), 5);
    assert_eq!(c.ssh_authorized_keys.len(), 1);
    assert_eq!(c.api_server_extra_sans.len(), 2);
    let m1 = c.node("master-1").expect("master-1");
    assert_eq!(m1.mac.to_string(), "52:54:00:0a:00:11");
    let w1 = c.node("worker-1").expect("worker-1");
    assert_eq!(
        w1.labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("rack-1")
    );
    assert_eq!(
        w1.sysctls.get("vm.max_map_count").map(String::as_str),
        Some("262144")
    );
    // Node sysctls merge over the profile's rather than replacing them.
    assert!(w1.sysctls.contains_key("net.ipv4.ip_forward"));
    assert!(w1.kernel_modules.iter().any(|m| m == "ip_vs"));
    assert!(w1.kernel_modules.iter().any(|m| m == "overlay"));
    let w2 = c.node("worker-2").expect("worker-2");
    assert_eq!(w2.network, NodeNetwork::Dhcp);
    assert_eq!(w2.taints.len(), 1);
    assert_eq!(w2.taints[0].value.as_deref(), Some("batch"));
}

#[test]
fn even_etcd_member_count_warns() {
    let c = load("builder/tests/fixtures/good-specs/even-etcd.yaml");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("2 members"), "{:?}", c.warnings);
    assert!(c.warnings[0].contains("odd"), "{:?}", c.warnings);
    assert_eq!(c.kubernetes_version.to_string(), "1.35.0");
}

#[test]
fn minimal_spec_gets_defaults_and_choices() {
    let c = load("builder/tests/fixtures/good-specs/external-lb-minimal.yaml");
    assert_eq!(c.endpoint.mode, EndpointMode::External);
    assert_eq!(c.endpoint.host_port(), "lb.lab.example.com:6443");
    assert_eq!(c.runtime, Runtime::CriO);
    assert_eq!(c.cni.as_str(), "calico");
    assert_eq!(c.certificates.key_algorithm, KeyAlgorithm::Rsa2048);
    assert_eq!(c.certificates.ca_validity.days, 730);
    assert_eq!(c.certificates.leaf_validity.days, 365);
    assert_eq!(c.networking.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(c.kubernetes_version.to_string(), "1.36.3");
    assert!(c.local_lb.enabled);
    // `taints: []` clears the profile's taints; a derived MAC is stable.
    assert!(c.node("w").expect("w").taints.is_empty());
    let cp = c.node("cp").expect("cp");
    assert_eq!(cp.mac, spec::types::MacAddr::derived("lab", "cp"));
    assert_eq!(cp.taints.len(), 1);
    assert!(
        c.warnings.iter().any(|w| w.contains("single member")),
        "{:?}",
        c.warnings
    );
}

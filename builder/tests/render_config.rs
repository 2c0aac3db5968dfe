//! Rendered configuration files (everything but the PKI), checked against
//! golden files, parsed back, and validated with the real haproxy,
//! keepalived and containerd where this machine has them.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test -p hakube-build --test render_config`.

use hakube_build::render::{self, paths, JoinCredentials};
use hakube_build::spec::{self, Cluster};
use hakube_build::tree::{FileEntry, FileTree};
use hakube_node_profile::{NodeProfile, Role};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/render")
        .join(name)
}

fn load(name: &str) -> Cluster {
    spec::load(Some(&fixture(name))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Fixed credentials, so golden files do not depend on a state directory.
fn creds() -> JoinCredentials {
    JoinCredentials {
        token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "0f".repeat(32)),
    }
}

fn tree(cluster: &Cluster, node: &str) -> FileTree {
    let node = cluster
        .node(node)
        .unwrap_or_else(|| panic!("no node {node}"));
    render::config_tree(cluster, node, &creds()).unwrap()
}

fn text(tree: &FileTree, path: &str) -> String {
    match tree.get(path) {
        Some(FileEntry::File { contents, .. }) => String::from_utf8(contents.clone()).unwrap(),
        other => panic!("{path}: expected a file, found {other:?}"),
    }
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from its golden file (UPDATE_GOLDEN=1 regenerates it after review)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

#[test]
fn kubeadm_configs_match_golden_files() {
    for (spec_file, dir) in [("v1beta3.yaml", "v1beta3"), ("v1beta4.yaml", "v1beta4")] {
        let c = load(spec_file);
        let m1 = tree(&c, "master-1");
        check_golden(
            &format!("{dir}/master-1-init.yaml"),
            &text(&m1, paths::KUBEADM_INIT),
        );
        check_golden(
            &format!("{dir}/master-1-join.yaml"),
            &text(&m1, paths::KUBEADM_JOIN),
        );
        let m2 = tree(&c, "master-2");
        check_golden(
            &format!("{dir}/master-2-join.yaml"),
            &text(&m2, paths::KUBEADM_JOIN),
        );
        let w1 = tree(&c, "worker-1");
        check_golden(
            &format!("{dir}/worker-1-join.yaml"),
            &text(&w1, paths::KUBEADM_JOIN),
        );
    }
    let c = load("external-etcd.yaml");
    let m1 = tree(&c, "master-1");
    check_golden(
        "external-etcd/master-1-init.yaml",
        &text(&m1, paths::KUBEADM_INIT),
    );
    check_golden(
        "external-etcd/master-2-join.yaml",
        &text(&tree(&c, "master-2"), paths::KUBEADM_JOIN),
    );
    check_golden(
        "external-etcd/etcd-1.conf.yml",
        &text(&tree(&c, "etcd-1"), paths::ETCD_CONFIG),
    );
}

/// Parses a multi-document YAML file (as kubeadm does) into JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<(String, String)> {
    docs.iter()
        .map(|d| {
            (
                d["apiVersion"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn kubeadm_configs_parse_with_the_expected_kinds_and_values() {
    for (spec_file, api) in [
        ("v1beta3.yaml", "kubeadm.k8s.io/v1beta3"),
        ("v1beta4.yaml", "kubeadm.k8s.io/v1beta4"),
        ("external-etcd.yaml", "kubeadm.k8s.io/v1beta4"),
        ("dns-nolb.yaml", "kubeadm.k8s.io/v1beta4"),
    ] {
        let c = load(spec_file);
        let init_node = c.init_node().name.to_string();
        for node in c.nodes.iter().filter(|n| n.role != Role::Etcd) {
            let t = tree(&c, node.name.as_str());
            let is_init = node.name.as_str() == init_node;
            assert_eq!(t.contains(paths::KUBEADM_INIT), is_init, "{}", node.name);
            let join = documents(&text(&t, paths::KUBEADM_JOIN));
            assert_eq!(
                kinds(&join),
                vec![(api.to_string(), "JoinConfiguration".to_string())]
            );
            let j = &join[0];
            let bt = &j["discovery"]["bootstrapToken"];
            assert_eq!(bt["apiServerEndpoint"], c.endpoint.host_port().as_str());
            assert_eq!(bt["token"], creds().token.as_str());
            assert_eq!(bt["caCertHashes"][0], creds().ca_cert_hash.as_str());
            assert_eq!(j["discovery"]["tlsBootstrapToken"], creds().token.as_str());
            let reg = &j["nodeRegistration"];
            assert_eq!(reg["name"], node.name.as_str());
            assert_eq!(reg["criSocket"], c.runtime.cri_socket());
            assert_eq!(reg["taints"].as_array().unwrap().len(), node.taints.len());
            let node_ip = match &reg["kubeletExtraArgs"] {
                Value::Array(a) => a
                    .iter()
                    .find(|kv| kv["name"] == "node-ip")
                    .map(|kv| kv["value"].clone()),
                Value::Object(m) => m.get("node-ip").cloned(),
                _ => None,
            };
            assert_eq!(
                node_ip,
                node.address().map(|a| Value::String(a.to_string())),
                "{}",
                node.name
            );
            assert_eq!(
                j.get("controlPlane").is_some(),
                node.role == Role::Master,
                "{}",
                node.name
            );
            if !is_init {
                continue;
            }
            let init = documents(&text(&t, paths::KUBEADM_INIT));
            assert_eq!(
                kinds(&init),
                vec![
                    (api.to_string(), "InitConfiguration".to_string()),
                    (api.to_string(), "ClusterConfiguration".to_string()),
                    (
                        "kubelet.config.k8s.io/v1beta1".into(),
                        "KubeletConfiguration".into()
                    ),
                    (
                        "kubeproxy.config.k8s.io/v1alpha1".into(),
                        "KubeProxyConfiguration".into()
                    ),
                ]
            );
            let tok = &init[0]["bootstrapTokens"][0];
            assert_eq!(tok["token"], creds().token.as_str());
            let hours = u64::from(c.certificates.leaf_validity.days) * 24;
            assert_eq!(tok["ttl"], format!("{hours}h0m0s").as_str());
            assert_eq!(init[0]["localAPIEndpoint"]["bindPort"], 6443);
            let cc = &init[1];
            assert_eq!(cc["controlPlaneEndpoint"], c.endpoint.host_port().as_str());
            assert_eq!(cc["kubernetesVersion"], c.kubernetes_version.tag().as_str());
            assert_eq!(
                cc["networking"]["podSubnet"],
                c.networking.pod_cidr.to_string().as_str()
            );
            let sans: Vec<&str> = cc["apiServer"]["certSANs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            assert!(sans.contains(&c.endpoint.host.as_str()) && sans.contains(&"127.0.0.1"));
            for extra in &c.api_server_extra_sans {
                assert!(sans.contains(&extra.to_string().as_str()), "{extra}");
            }
            match c.etcd_topology {
                hakube_node_profile::EtcdTopology::Stacked => {
                    assert_eq!(cc["etcd"]["local"]["dataDir"], "/var/lib/etcd")
                }
                hakube_node_profile::EtcdTopology::External => {
                    let ext = &cc["etcd"]["external"];
                    assert_eq!(ext["endpoints"].as_array().unwrap().len(), 3);
                    assert_eq!(
                        ext["certFile"],
                        "/etc/kubernetes/pki/apiserver-etcd-client.crt"
                    );
                }
            }
            if api.ends_with("v1beta4") {
                assert_eq!(
                    cc["encryptionAlgorithm"],
                    c.certificates.key_algorithm.kubeadm_name()
                );
            } else {
                assert_eq!(cc["featureGates"]["PublicKeysECDSA"], true);
                assert!(cc.get("encryptionAlgorithm").is_none());
            }
            assert_eq!(init[2]["cgroupDriver"], "systemd");
            assert_eq!(
                init[2]["clusterDNS"][0],
                c.networking.cluster_dns_ip().to_string().as_str()
            );
            assert_eq!(
                init[3]["clusterCIDR"],
                c.networking.pod_cidr.to_string().as_str()
            );
        }
    }
}

#[test]
fn trees_hold_what_each_role_needs_and_nothing_else() {
    for spec_file in [
        "v1beta3.yaml",
        "v1beta4.yaml",
        "external-etcd.yaml",
        "dns-nolb.yaml",
    ] {
        let c = load(spec_file);
        for node in &c.nodes {
            let t = tree(&c, node.name.as_str());
            let name = format!("{spec_file}:{}", node.name);
            for (path, _) in t.iter() {
                assert!(
                    path.starts_with("etc") || path.starts_with("var"),
                    "{name}: {} is outside etc/ and var/",
                    path.display()
                );
            }
            assert_eq!(text(&t, paths::HOSTNAME), format!("{}\n", node.name));
            assert!(text(&t, paths::LINK_FILE).contains(&format!("MACAddress={}", node.mac)));
            let network = text(&t, paths::NETWORK_FILE);
            match node.address() {
                Some(ip) => assert!(network.contains(&format!("Address={ip}/")), "{name}"),
                None => assert!(network.contains("DHCP=ipv4"), "{name}"),
            }
            let hosts = text(&t, paths::HOSTS);
            for other in c
                .nodes
                .iter()
                .filter_map(|n| n.address().map(|a| (a, &n.name)))
            {
                assert!(
                    hosts.contains(&format!("{}\t{}\n", other.0, other.1)),
                    "{name}"
                );
            }
            let kube = node.role != Role::Etcd;
            let vip_master = node.role == Role::Master
                && c.endpoint.mode == hakube_node_profile::EndpointMode::Vip;
            let haproxy = vip_master || (kube && c.local_lb.enabled);
            assert_eq!(t.contains(paths::KEEPALIVED_CONFIG), vip_master, "{name}");
            assert_eq!(t.contains(paths::HAPROXY_CONFIG), haproxy, "{name}");
            assert_eq!(t.contains(paths::KUBEADM_JOIN), kube, "{name}");
            assert_eq!(t.contains(paths::ETCD_CONFIG), !kube, "{name}");
            assert_eq!(
                t.contains(paths::BOOTSTRAP_TOKEN),
                node.role == Role::Master
            );
            assert_eq!(
                t.contains(paths::cni_manifest(c.cni)),
                node.role == Role::Master
            );
            let runtime_cfg = match c.runtime {
                hakube_node_profile::Runtime::Containerd => paths::CONTAINERD_CONFIG,
                hakube_node_profile::Runtime::CriO => paths::CRIO_DROPIN,
            };
            assert_eq!(t.contains(runtime_cfg), kube, "{name}");
            let wants = |unit: &str| {
                t.contains(format!("etc/systemd/system/multi-user.target.wants/{unit}"))
            };
            assert!(wants("hakube-firstboot.service"), "{name}");
            assert_eq!(wants("keepalived.service"), vip_master, "{name}");
            assert_eq!(wants("haproxy.service"), haproxy, "{name}");
            assert_eq!(wants("kubelet.service"), kube, "{name}");
            assert_eq!(wants(c.runtime.unit()), kube, "{name}");
            assert_eq!(wants("etcd.service"), !kube, "{name}");
            assert_eq!(
                wants("ssh.service"),
                !c.ssh_authorized_keys.is_empty(),
                "{name}"
            );
            assert_eq!(
                t.contains(paths::SSH_KEYS),
                !c.ssh_authorized_keys.is_empty()
            );
            let unit = text(&t, paths::FIRSTBOOT_UNIT);
            for line in [
                "Type=oneshot\n",
                "RemainAfterExit=yes\n",
                "After=sysinit.target basic.target network-online.target time-sync.target\n",
                // Opts out of the implicit After= a target adds to the units it
                // wants: firstboot may wait hours for its peers, and must not
                // hold up multi-user.target (or boot blessing) meanwhile.
                "DefaultDependencies=no\n",
                "Conflicts=shutdown.target\n",
                "Wants=network-online.target\n",
                "ExecStart=/usr/local/bin/hakube-firstboot run\n",
                "StandardOutput=journal+console\n",
                "TimeoutStartSec=infinity\n",
                "WantedBy=multi-user.target\n",
            ] {
                assert!(unit.contains(line), "{name}: unit lacks {line}");
            }
            // The profile reads back, and every config path it names is in the tree.
            let p = NodeProfile::from_json(&text(&t, paths::NODE_PROFILE)).unwrap();
            assert_eq!(p.node_name, node.name.as_str());
            assert_eq!(p.init_node, c.init_node().name == node.name);
            for path in [
                &p.paths.kubeadm_config,
                &p.paths.kubeadm_join_config,
                &p.paths.cni_manifest,
                &p.paths.etcd_config,
                &p.paths.bootstrap_token,
            ]
            .into_iter()
            .flatten()
            {
                assert!(
                    t.contains(path.trim_start_matches('/')),
                    "{name}: profile names {path}"
                );
            }
        }
    }
}

#[test]
fn secrets_bearing_configs_are_private() {
    let c = load("v1beta4.yaml");
    let t = tree(&c, "master-1");
    for path in [
        paths::KUBEADM_INIT,
        paths::KUBEADM_JOIN,
        paths::BOOTSTRAP_TOKEN,
    ] {
        match t.get(path) {
            Some(FileEntry::File { mode, .. }) => assert_eq!(*mode, 0o600, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[test]
fn cni_manifests_carry_the_pod_cidr() {
    let c = load("v1beta4.yaml");
    let flannel = documents(&text(&tree(&c, "master-2"), "etc/hakube/cni/flannel.yaml"));
    let kinds: Vec<String> = flannel
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    let net: Value =
        serde_json::from_str(flannel[4]["data"]["net-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(net["Network"], "10.244.0.0/16");
    assert_eq!(net["Backend"]["Type"], "vxlan");
    let cni: Value =
        serde_json::from_str(flannel[4]["data"]["cni-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(cni["plugins"][0]["type"], "flannel");
    let init: Vec<&str> = flannel[5]["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["install-cni-plugin", "install-cni"]);

    let c = load("external-etcd.yaml");
    let calico = documents(&text(&tree(&c, "master-1"), "etc/hakube/cni/calico.yaml"));
    assert_eq!(calico[0]["kind"], "Installation");
    let pool = &calico[0]["spec"]["calicoNetwork"]["ipPools"][0];
    assert_eq!(pool["cidr"], "10.244.0.0/16");
    assert_eq!(pool["encapsulation"], "VXLANCrossSubnet");
    assert_eq!(calico[1]["kind"], "APIServer");
}

#[test]
fn etcd_config_lists_every_member_with_tls() {
    let c = load("external-etcd.yaml");
    let docs = documents(&text(&tree(&c, "etcd-2"), paths::ETCD_CONFIG));
    let e = &docs[0];
    assert_eq!(e["name"], "etcd-2");
    assert_eq!(e["initial-cluster-state"], "new");
    assert_eq!(
        e["initial-cluster"],
        "etcd-1=https://10.20.0.21:2380,etcd-2=https://10.20.0.22:2380,etcd-3=https://10.20.0.23:2380"
    );
    assert_eq!(
        e["listen-client-urls"],
        "https://10.20.0.22:2379,https://127.0.0.1:2379"
    );
    for side in ["client-transport-security", "peer-transport-security"] {
        assert_eq!(e[side]["client-cert-auth"], true, "{side}");
        assert_eq!(
            e[side]["trusted-ca-file"],
            "/etc/kubernetes/pki/etcd/ca.crt"
        );
    }
}

#[test]
fn ignition_holds_exactly_the_tree() {
    let c = load("v1beta4.yaml");
    let t = tree(&c, "master-1");
    let ign = render::ignition(&t);
    assert_eq!(ign, render::ignition(&t), "deterministic");
    let (config, warnings) = ignition_config::Config::parse_str(&ign).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let ignition_config::Config::V3_4(config) = config else {
        panic!("expected an Ignition 3.4 config");
    };
    let storage = config.storage.unwrap();
    let files = storage.files.unwrap();
    let links = storage.links.unwrap();
    assert_eq!(files.len() + links.len(), t.len());
    for f in &files {
        let rel = f.path.strip_prefix('/').unwrap();
        let Some(FileEntry::File { contents, mode }) = t.get(rel) else {
            panic!("{} not a file in the tree", f.path);
        };
        assert_eq!(f.mode, Some(i64::from(*mode)));
        assert_eq!(f.overwrite, Some(true));
        let src = f.contents.as_ref().unwrap().source.as_ref().unwrap();
        let b64 = src.strip_prefix("data:;base64,").unwrap();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(&decoded, contents, "{}", f.path);
    }
    for l in &links {
        let Some(FileEntry::Symlink { target }) = t.get(l.path.strip_prefix('/').unwrap()) else {
            panic!("{} not a link in the tree", l.path);
        };
        assert_eq!(l.target.as_ref(), Some(target));
    }
}

/// Fails the test (never skips it) when `tool` is not on PATH, naming the
/// Debian package that scripts/setup-host installs it from.
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not on PATH: this test needs the real {tool} (Debian package {package}; scripts/setup-host installs it)"
    );
}

fn write_temp(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn haproxy_accepts_its_configs() {
    require("haproxy", "haproxy");
    let dir = tempfile::tempdir().unwrap();
    for (spec_file, node) in [
        ("v1beta4.yaml", "master-1"),
        ("v1beta4.yaml", "worker-1"),
        ("external-etcd.yaml", "master-3"),
    ] {
        let c = load(spec_file);
        let cfg = text(&tree(&c, node), paths::HAPROXY_CONFIG);
        let p = write_temp(dir.path(), "haproxy.cfg", &cfg);
        let out = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{spec_file}:{node}: haproxy -c failed:\n{}{}\n{cfg}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let servers = cfg
            .lines()
            .filter(|l| l.trim_start().starts_with("server "))
            .count();
        assert_eq!(servers, 3);
        assert_eq!(
            cfg.contains("bind *:8443"),
            node.starts_with("master"),
            "{node}"
        );
        assert!(cfg.contains("bind 127.0.0.1:7443"), "{node}");
    }
}

#[test]
fn keepalived_accepts_its_configs() {
    require("keepalived", "keepalived");
    let dir = tempfile::tempdir().unwrap();
    let mut ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo" && !n.starts_with("ifb"))
        .collect();
    ifaces.sort();
    let iface = ifaces.first().expect(
        "this machine has no network interface but lo: keepalived -t needs one to check keepalived.conf against",
    );
    let c = load("v1beta4.yaml");
    let mut priorities = Vec::new();
    for node in ["master-1", "master-2", "master-3"] {
        let cfg = text(&tree(&c, node), paths::KEEPALIVED_CONFIG);
        // lan0 exists only on the node (and keepalived refuses loopback):
        // check the file against one of this machine's interfaces.
        let p = write_temp(
            dir.path(),
            "keepalived.conf",
            &cfg.replace(" lan0", &format!(" {iface}")),
        );
        let out = Command::new("keepalived")
            .arg("-t")
            .arg("-f")
            .arg(&p)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{node}: keepalived -t failed:\n{log}\n{cfg}"
        );
        assert!(!log.contains("WARNING"), "{node}: keepalived warns:\n{log}");
        assert!(cfg.contains("192.168.122.10/24 dev lan0"), "{cfg}");
        let own = c.node(node).unwrap().address().unwrap().to_string();
        let peers: Vec<&str> = cfg
            .split("unicast_peer {")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(peers.len(), 2);
        assert!(!peers.contains(&own.as_str()));
        let prio: u32 = cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("priority "))
            .unwrap()
            .parse()
            .unwrap();
        priorities.push(prio);
    }
    assert!(priorities.windows(2).all(|w| w[0] > w[1]), "{priorities:?}");
}

#[test]
fn containerd_accepts_its_config() {
    require("containerd", "containerd");
    let dir = tempfile::tempdir().unwrap();
    let c = load("v1beta4.yaml");
    let cfg = text(&tree(&c, "worker-1"), paths::CONTAINERD_CONFIG);
    let p = write_temp(dir.path(), "config.toml", &cfg);
    let out = Command::new("containerd")
        .arg("--config")
        .arg(&p)
        .args(["config", "dump"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dump.contains("SystemdCgroup = true"), "{dump}");
    assert!(
        dump.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""),
        "{dump}"
    );
}

#[test]
fn static_nodes_get_their_resolvers_and_dhcp_nodes_none() {
    let c = load("v1beta4.yaml");
    let t = tree(&c, "worker-1");
    let want: String = match &c.node("worker-1").unwrap().network {
        spec::NodeNetwork::Static { dns, .. } => {
            dns.iter().map(|d| format!("nameserver {d}\n")).collect()
        }
        spec::NodeNetwork::Dhcp => panic!("fixture worker-1 is static"),
    };
    assert!(!want.is_empty());
    assert!(text(&t, paths::RESOLV_CONF).ends_with(&want));
    let mut dhcp = c.clone();
    dhcp.nodes
        .iter_mut()
        .find(|n| n.name.as_str() == "worker-1")
        .unwrap()
        .network = spec::NodeNetwork::Dhcp;
    assert!(!tree(&dhcp, "worker-1").contains(paths::RESOLV_CONF));
}

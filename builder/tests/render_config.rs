//! Rendered configuration files (everything but the PKI), checked against
//! golden files, parsed back, and validated with the real haproxy and
//! keepalived, and the real containerd 2 built from source
//! (`HAKUBE_SRCBUILD_BIN`).
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test -p hakube-build --test render_config`.

#[path = "common/host.rs"]
mod host;
#[path = "common/render.rs"]
mod render_support;
#[path = "common/srcbuild.rs"]
mod srcbuild;

use hakube_build::render::{self, paths};
use hakube_build::spec::{self, Cluster};
use hakube_build::tree::{FileEntry, FileTree};
use hakube_node_profile::{NodeProfile, Role};
use host::require;
use render_support::fixed_creds;
use serde::Deserialize;
use serde_json::Value;
use srcbuild::srcbuild_bin;
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

fn tree(cluster: &Cluster, node: &str) -> FileTree {
    let node = cluster
        .node(node)
        .unwrap_or_else(|| panic!("no node {node}"));
    render::config_tree(cluster, node, &fixed_creds(), &render_support::upstream()).unwrap()
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
    for (spec_file, dir) in [("k8s-1.35.yaml", "k8s-1.35"), ("k8s-1.37.yaml", "k8s-1.37")] {
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
        check_golden(
            &format!("{dir}/master-1-kube-proxy.yaml"),
            &text(&m1, paths::KUBEADM_KUBE_PROXY),
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
        check_golden(
            &format!("{dir}/containerd-config.toml"),
            &text(&w1, paths::CONTAINERD_CONFIG),
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
    let api = "kubeadm.k8s.io/v1beta4";
    for spec_file in [
        "k8s-1.35.yaml",
        "k8s-1.37.yaml",
        "external-etcd.yaml",
        "dns-nolb.yaml",
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
            assert_eq!(bt["token"], fixed_creds().token.as_str());
            assert_eq!(bt["caCertHashes"][0], fixed_creds().ca_cert_hash.as_str());
            assert_eq!(
                j["discovery"]["tlsBootstrapToken"],
                fixed_creds().token.as_str()
            );
            let reg = &j["nodeRegistration"];
            assert_eq!(reg["name"], node.name.as_str());
            assert_eq!(reg["criSocket"], c.runtime.cri_socket());
            assert_eq!(reg["taints"].as_array().unwrap().len(), node.taints.len());
            let node_ip = reg["kubeletExtraArgs"].as_array().and_then(|a| {
                a.iter()
                    .find(|kv| kv["name"] == "node-ip")
                    .map(|kv| kv["value"].clone())
            });
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
            assert_eq!(tok["token"], fixed_creds().token.as_str());
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
            assert_eq!(
                cc["encryptionAlgorithm"],
                c.certificates.key_algorithm.kubeadm_name()
            );
            assert_eq!(init[2]["cgroupDriver"], "systemd");
            assert_eq!(init[2]["failCgroupV1"], true);
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
        "k8s-1.35.yaml",
        "k8s-1.37.yaml",
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
                // A failed step is retried, a wrong disk (exit 2) is not.
                "Restart=on-failure\n",
                "RestartSec=30s\n",
                "RestartPreventExitStatus=2\n",
                "StartLimitIntervalSec=0\n",
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
    let c = load("k8s-1.37.yaml");
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
    let c = load("k8s-1.37.yaml");
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
    let node = calico
        .iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "calico-node")
        .unwrap();
    let env = &node["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env_value(env, "CALICO_IPV4POOL_CIDR"),
        Some("10.244.0.0/16")
    );
    assert_eq!(
        env_value(env, "IP_AUTODETECTION_METHOD"),
        Some("kubernetes-internal-ip")
    );
}

/// The value of `name` in a container's env list; panics when it is there twice.
fn env_value<'v>(env: &'v Value, name: &str) -> Option<&'v str> {
    let found: Vec<&Value> = env
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == name)
        .collect();
    assert!(found.len() < 2, "{name} set {} times", found.len());
    found.first().map(|e| e["value"].as_str().unwrap())
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
    let c = load("k8s-1.37.yaml");
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
        ("k8s-1.37.yaml", "master-1"),
        ("k8s-1.37.yaml", "worker-1"),
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
        let servers: Vec<&str> = cfg
            .lines()
            .filter(|l| l.trim_start().starts_with("server "))
            .collect();
        // Each master checked, and each again as an unchecked last resort.
        let backups = servers
            .iter()
            .filter(|l| l.ends_with(" backup no-check"))
            .count();
        assert_eq!((servers.len(), backups), (6, 3), "{cfg}");
        assert!(cfg.contains("option allbackups"), "{cfg}");
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
    let c = load("k8s-1.37.yaml");
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

/// containerd 2 reads the rendered config (version 3) and its `config dump`
/// (the merged effective config) carries our settings under the 2.x plugin
/// names; containerd migrates a version 2 file silently, so the dump's
/// `version = 3` alone would prove nothing.
#[test]
fn containerd_2_accepts_its_config() {
    let containerd = srcbuild_bin("containerd");
    let dir = tempfile::tempdir().unwrap();
    for (spec_file, pause) in [("k8s-1.35.yaml", "3.10.1"), ("k8s-1.37.yaml", "3.10.2")] {
        let c = load(spec_file);
        let cfg = text(&tree(&c, "worker-1"), paths::CONTAINERD_CONFIG);
        assert!(cfg.contains("\nversion = 3\n"), "{cfg}");
        let p = write_temp(dir.path(), "config.toml", &cfg);
        let out = Command::new(&containerd)
            .arg("--config")
            .arg(&p)
            .args(["config", "dump"])
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{spec_file}: {stderr}");
        assert!(
            !stderr.to_ascii_lowercase().contains("deprecat"),
            "{spec_file}: containerd warns:\n{stderr}"
        );
        let get = |table: &str, key: &str| {
            toml_value(&dump, table, key)
                .unwrap_or_else(|| panic!("{spec_file}: no {key} in [{table}] of\n{dump}"))
        };
        const IMAGES: &str = "plugins.'io.containerd.cri.v1.images'";
        const RUNTIME: &str = "plugins.'io.containerd.cri.v1.runtime'";
        // The file is version 3 (what containerd 2.2, the 1.35 runtime, reads
        // natively). containerd 2.3 (1.36/1.37) loads it and migrates it to its
        // version 4 in memory (server sections become plugins:
        // cmd/containerd/server/config/config.go, serviceMigrate), so the dump
        // says 3 or 4; the keys below are what must survive either way.
        let version: u32 = get("", "version").parse().unwrap();
        assert!(
            (3..=4).contains(&version),
            "{spec_file}: dump version {version}"
        );
        assert_eq!(
            get(&format!("{IMAGES}.pinned_images"), "sandbox"),
            format!("'registry.k8s.io/pause:{pause}'")
        );
        assert_eq!(
            get(&format!("{RUNTIME}.containerd"), "default_runtime_name"),
            "'runc'"
        );
        let runc = format!("{RUNTIME}.containerd.runtimes.runc");
        assert_eq!(get(&runc, "runtime_type"), "'io.containerd.runc.v2'");
        assert_eq!(get(&format!("{runc}.options"), "SystemdCgroup"), "true");
        assert_eq!(
            get(&format!("{RUNTIME}.cni"), "bin_dirs"),
            "['/opt/cni/bin']"
        );
        assert_eq!(
            get(&format!("{RUNTIME}.cni"), "conf_dir"),
            "'/etc/cni/net.d'"
        );
    }
}

/// The raw value of `key` in table `[table]` ("" for the top level) of a
/// TOML document as containerd's `config dump` writes it: one `key = value`
/// per line, tables as `[a.'b'.c]` headers.
fn toml_value(doc: &str, table: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in doc.lines().map(str::trim) {
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = h.to_string();
        } else if current == table {
            if let Some((k, v)) = line.split_once(" = ") {
                if k == key {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

#[test]
fn static_nodes_get_their_resolvers() {
    let c = load("k8s-1.37.yaml");
    let t = tree(&c, "worker-1");
    let want: String = match &c.node("worker-1").unwrap().network {
        spec::NodeNetwork::Static { dns, .. } => {
            dns.iter().map(|d| format!("nameserver {d}\n")).collect()
        }
        spec::NodeNetwork::Dhcp => panic!("fixture worker-1 is static"),
    };
    assert!(!want.is_empty());
    assert!(text(&t, paths::RESOLV_CONF).ends_with(&want));
}

// ---- issue 9: defects a real cluster would hit ----------------------------

/// `name`'s value in an `extraArgs`/`kubeletExtraArgs` of either API version.
fn extra_arg(args: &Value, name: &str) -> Option<String> {
    match args {
        Value::Array(a) => a
            .iter()
            .find(|kv| kv["name"] == name)
            .and_then(|kv| kv["value"].as_str().map(String::from)),
        Value::Object(m) => m.get(name).and_then(|v| v.as_str().map(String::from)),
        _ => None,
    }
}

fn doc_of_kind<'d>(docs: &'d [Value], kind: &str) -> &'d Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

#[test]
fn flexvolume_dirs_point_at_var_not_the_read_only_usr() {
    for spec_file in ["k8s-1.35.yaml", "k8s-1.37.yaml", "external-etcd.yaml"] {
        let c = load(spec_file);
        let t = tree(&c, c.init_node().name.as_str());
        let docs = documents(&text(&t, paths::KUBEADM_INIT));
        let cc = doc_of_kind(&docs, "ClusterConfiguration");
        let dir = extra_arg(
            &cc["controllerManager"]["extraArgs"],
            "flex-volume-plugin-dir",
        );
        assert_eq!(
            dir.as_deref(),
            Some("/var/lib/kubelet/volumeplugins"),
            "{spec_file}"
        );
        let kc = doc_of_kind(&docs, "KubeletConfiguration");
        assert_eq!(
            kc["volumePluginDir"], "/var/lib/kubelet/volumeplugins",
            "{spec_file}"
        );
    }
}

/// Every hostPath in a manifest: (path, type).
fn host_paths(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(p) = m.get("hostPath").and_then(|h| h["path"].as_str()) {
                out.push(p.to_string());
            }
            m.values().for_each(|x| host_paths(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| host_paths(x, out)),
        _ => {}
    }
}

#[test]
fn cni_manifests_create_nothing_on_the_read_only_root() {
    for spec_file in ["k8s-1.37.yaml", "external-etcd.yaml"] {
        let c = load(spec_file);
        let docs = documents(&text(&tree(&c, "master-1"), &paths::cni_manifest(c.cni)));
        let mut paths_seen = Vec::new();
        docs.iter().for_each(|d| host_paths(d, &mut paths_seen));
        assert!(!paths_seen.is_empty());
        // Writable at runtime: /etc (overlay), /var, /run (tmpfs), /opt/cni/bin
        // (overlay); kernel filesystems; calico's /lib/modules, mounted read-only.
        for p in &paths_seen {
            let writable = ["/etc/", "/var/", "/run/", "/opt/cni/bin", "/proc", "/sys/"]
                .iter()
                .any(|w| p.starts_with(w));
            assert!(
                writable || (c.cni.as_str() == "calico" && p == "/lib/modules"),
                "{spec_file}: {p} is on the read-only root"
            );
        }
    }
}

#[test]
fn worker_labels_reach_the_kubelet_at_registration() {
    let c = load("k8s-1.37.yaml");
    let t = tree(&c, "worker-1");
    let join = documents(&text(&t, paths::KUBEADM_JOIN));
    let args = &join[0]["nodeRegistration"]["kubeletExtraArgs"];
    assert_eq!(
        extra_arg(args, "node-labels").as_deref(),
        Some("node.example.test/pool=no")
    );
    assert_eq!(
        extra_arg(args, "node-ip").as_deref(),
        Some("192.168.122.21")
    );
    // the annotated example's worker-1 label
    let ex = spec::load(Some(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples/annotated.yaml"),
    ))
    .unwrap();
    let w = ex.nodes.iter().find(|n| n.role == Role::Worker).unwrap();
    let t = render::config_tree(&ex, w, &fixed_creds(), &render_support::upstream()).unwrap();
    let join = documents(&text(&t, paths::KUBEADM_JOIN));
    let labels = extra_arg(
        &join[0]["nodeRegistration"]["kubeletExtraArgs"],
        "node-labels",
    );
    assert_eq!(
        labels.as_deref(),
        Some("topology.kubernetes.io/zone=rack-1")
    );
}

/// The calico stand-in with `from` replaced by `to` (a test of what the
/// build does with another upstream manifest).
fn calico_variant(from: &str, to: &str) -> String {
    let text = render_support::CALICO_FIXTURE;
    assert!(text.contains(from), "the fixture has no {from:?}");
    text.replacen(from, to, 1)
}

fn calico_tree(text: &str) -> anyhow::Result<FileTree> {
    let c = load("external-etcd.yaml");
    let up = render::Upstream {
        calico: Some(render::UpstreamFile {
            origin: "calico-variant.yaml",
            text,
        }),
    };
    render::config_tree(&c, c.node("master-1").unwrap(), &fixed_creds(), &up)
}

#[test]
fn calico_manifest_is_upstreams_with_documents_kept_or_patched() {
    let c = load("external-etcd.yaml");
    let t = tree(&c, "master-1");
    let manifest = text(&t, &paths::cni_manifest(c.cni));
    // The profile names it; workers and etcd members carry none.
    let p = NodeProfile::from_json(&text(&t, paths::NODE_PROFILE)).unwrap();
    assert_eq!(
        p.paths.cni_manifest.as_deref(),
        Some("/etc/hakube/cni/calico.yaml")
    );
    for other in ["worker-1", "etcd-1"] {
        assert!(tree(&c, other).get(paths::cni_manifest(c.cni)).is_none());
    }
    // Every upstream document is there, in order; the ones not patched are
    // kept byte for byte (their comments too).
    let up: Vec<Value> = documents(render_support::CALICO_FIXTURE)
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let got = documents(&manifest);
    assert_eq!(got.len(), up.len());
    for (g, u) in got.iter().zip(&up) {
        assert_eq!(
            (&g["kind"], &g["metadata"]["name"]),
            (&u["kind"], &u["metadata"]["name"])
        );
        if u["metadata"]["name"] != "calico-node" || u["kind"] != "DaemonSet" {
            assert_eq!(g, u);
        }
    }
    assert!(manifest.contains("# The CNI config the install container writes"));
    assert!(manifest.contains("  cni_network_config: |-\n    {\n"));
    // The images are upstream's, untouched.
    let images = hakube_build::images::list::manifest_images(&manifest).unwrap();
    assert_eq!(
        images.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        [
            "quay.io/calico/cni:v3.33.0",
            "quay.io/calico/kube-controllers:v3.33.0",
            "quay.io/calico/node:v3.33.0"
        ]
    );
    // calico-node: upstream's env kept, two set.
    let node = got.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let env = &node["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env_value(env, "CALICO_IPV4POOL_IPIP"), Some("Always"));
    assert_eq!(
        env_value(env, "CALICO_IPV4POOL_CIDR"),
        Some("10.244.0.0/16")
    );
    // An upstream that already sets one gets it replaced, not doubled.
    let t = calico_tree(&calico_variant(
        "            # - name: CALICO_IPV4POOL_CIDR\n            #   value: \"192.168.0.0/16\"\n",
        "            - name: CALICO_IPV4POOL_CIDR\n              value: \"192.168.0.0/16\"\n",
    ))
    .unwrap();
    let docs = documents(&text(&t, "etc/hakube/cni/calico.yaml"));
    let node = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let env = &node["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env_value(env, "CALICO_IPV4POOL_CIDR"),
        Some("10.244.0.0/16")
    );
}

#[test]
fn calico_flexvolume_driver_moves_off_the_read_only_root() {
    // Releases before calico's CSI driver install a flexvolume driver into
    // the kubelet's default directory, under the read-only /usr.
    let flexvol = "        - name: flexvol-driver\n          image: quay.io/calico/pod2daemon-flexvol:v3.33.0\n          \
                   volumeMounts:\n            - mountPath: /host/driver\n              name: flexvol-driver-host\n";
    let volume = "        - name: flexvol-driver-host\n          hostPath:\n            type: DirectoryOrCreate\n            \
                  path: /usr/libexec/kubernetes/kubelet-plugins/volume/exec/nodeagent~uds\n";
    let text = calico_variant(
        "        - name: ebpf-bootstrap\n",
        &format!("{flexvol}        - name: ebpf-bootstrap\n"),
    )
    .replacen(
        "        - name: lib-modules\n",
        &format!("{volume}        - name: lib-modules\n"),
        1,
    );
    let t = calico_tree(&text).unwrap();
    let docs = documents(&text_of(&t));
    let mut seen = Vec::new();
    docs.iter().for_each(|d| host_paths(d, &mut seen));
    assert!(seen.contains(&"/var/lib/kubelet/volumeplugins/nodeagent~uds".to_string()));
    assert!(!seen.iter().any(|p| p.starts_with("/usr/")), "{seen:?}");
    // The header says so (and only when something moved).
    let header = |t: &FileTree| text_of(t).lines().take(3).collect::<Vec<_>>().join("\n");
    assert!(header(&t).contains("flexvolume hostPaths moved to /var/lib/kubelet/volumeplugins"));
    let plain = tree(&load("external-etcd.yaml"), "master-1");
    assert!(!header(&plain).contains("flexvolume"), "{}", header(&plain));
}

fn text_of(t: &FileTree) -> String {
    text(t, "etc/hakube/cni/calico.yaml")
}

#[test]
fn calico_manifests_the_node_cannot_run_are_refused() {
    use hakube_build::errors::exit_code;
    let refused = |text: String, want: &[&str]| {
        let err = calico_tree(&text).unwrap_err();
        let msg = format!("{err:#}");
        assert_eq!(exit_code(&err), 2, "{msg}");
        for w in want {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
    };
    // Something the kubelet would have to create on the read-only root.
    refused(
        calico_variant("path: /var/lib/calico\n", "path: /usr/lib/calico\n"),
        &[
            "calico-variant.yaml",
            "DaemonSet calico-node",
            "volume \"var-lib-calico\"",
            "/usr/lib/calico",
            "DirectoryOrCreate",
        ],
    );
    // A read-only-root path a container mounts writable.
    refused(
        calico_variant(
            "              name: lib-modules\n              readOnly: true\n",
            "              name: lib-modules\n",
        ),
        &[
            "volume \"lib-modules\"",
            "/lib/modules",
            "mounts it writable",
        ],
    );
    // Not a manifest install (the operator's manifest, say).
    refused(
        calico_variant(
            "  name: calico-node\n  namespace: kube-system\n  labels:",
            "  name: tigera-operator\n  namespace: kube-system\n  labels:",
        ),
        &["calico-variant.yaml", "no DaemonSet named calico-node"],
    );
    refused(
        calico_variant(
            "        - name: calico-node\n          image:",
            "        - name: node\n          image:",
        ),
        &["DaemonSet calico-node has no container named calico-node"],
    );
    refused(
        calico_variant("kind: DaemonSet\n", "kind: DaemonSet\n  bad: [\n"),
        &["calico-variant.yaml", "is not YAML"],
    );
    // Without the manifest a calico master cannot be rendered at all.
    let c = load("external-etcd.yaml");
    let err = render::config_tree(
        &c,
        c.node("master-1").unwrap(),
        &fixed_creds(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("calico-manifest"), "{err:#}");
}

#[test]
fn dhcp_nodes_get_resolved_and_its_uplink_resolv_conf() {
    let c = load("k8s-1.37.yaml");
    let t = tree(&c, "worker-2");
    match t.get(paths::RESOLV_CONF) {
        Some(FileEntry::Symlink { target }) => {
            assert_eq!(target, "/run/systemd/resolve/resolv.conf")
        }
        other => panic!("resolv.conf of a DHCP node: {other:?}"),
    }
    assert!(t.contains("etc/systemd/system/multi-user.target.wants/systemd-resolved.service"));
    let t = tree(&c, "worker-1");
    assert!(!t.contains("etc/systemd/system/multi-user.target.wants/systemd-resolved.service"));
}

#[test]
fn vip_masters_keep_keepalived_addresses_across_networkd_restarts() {
    let c = load("k8s-1.37.yaml");
    assert!(text(&tree(&c, "master-1"), paths::NETWORK_FILE).contains("KeepConfiguration=static\n"));
    assert!(!text(&tree(&c, "worker-1"), paths::NETWORK_FILE).contains("KeepConfiguration"));
}

#[test]
fn crio_nodes_get_a_containers_policy() {
    let c = load("external-etcd.yaml");
    assert_eq!(c.runtime, hakube_node_profile::Runtime::CriO);
    for node in ["master-1", "worker-1"] {
        let policy: Value =
            serde_json::from_str(&text(&tree(&c, node), paths::CONTAINERS_POLICY)).unwrap();
        assert_eq!(
            policy["default"][0]["type"], "insecureAcceptAnything",
            "{node}"
        );
    }
    assert!(!tree(&c, "etcd-1").contains(paths::CONTAINERS_POLICY));
    let c = load("k8s-1.37.yaml");
    assert!(!tree(&c, "worker-1").contains(paths::CONTAINERS_POLICY));
}

//! Per-node PKI: every certificate of every node verifies against its CA,
//! subjects/SANs/usages/validity match kubeadm's, and each role holds only
//! the files (and private keys) it needs.

mod pki_support;

use base64::Engine;
use hakube_build::pki::{node_files, ClusterSecrets, PKI_DIR, WORKER_CA_PATH};
use hakube_build::spec::Cluster;
use hakube_build::tree::FileTree;
use hakube_node_profile::Role;
use pki_support::*;
use std::collections::BTreeSet;
use std::net::IpAddr;

fn render_all(
    cluster: &Cluster,
) -> (
    tempfile::TempDir,
    ClusterSecrets,
    Vec<(String, Role, FileTree)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let secrets = ClusterSecrets::load_or_create(cluster, &dir.path().join("state")).unwrap();
    let trees = cluster
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.to_string(),
                n.role,
                node_files(cluster, &secrets, n).unwrap(),
            )
        })
        .collect();
    (dir, secrets, trees)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pki_set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| format!("{PKI_DIR}/{s}")).collect()
}

const MASTER_COMMON: &[&str] = &[
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
    "sa.key",
    "sa.pub",
    "apiserver.crt",
    "apiserver.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
    "etcd/ca.crt",
];
const ETCD_MEMBER: &[&str] = &[
    "etcd/server.crt",
    "etcd/server.key",
    "etcd/peer.crt",
    "etcd/peer.key",
    "etcd/healthcheck-client.crt",
    "etcd/healthcheck-client.key",
];

fn expected_files(cluster: &Cluster, name: &str, role: Role) -> BTreeSet<String> {
    let stacked = cluster.etcd_topology == hakube_node_profile::EtcdTopology::Stacked;
    match role {
        Role::Worker => set(&[WORKER_CA_PATH]),
        Role::Etcd => {
            let mut s = pki_set(ETCD_MEMBER);
            s.insert(format!("{PKI_DIR}/etcd/ca.crt"));
            s
        }
        Role::Master => {
            let mut s = pki_set(MASTER_COMMON);
            if stacked {
                s.extend(pki_set(ETCD_MEMBER));
                s.insert(format!("{PKI_DIR}/etcd/ca.key"));
            }
            for k in ["admin.conf", "controller-manager.conf", "scheduler.conf"] {
                s.insert(format!("etc/kubernetes/{k}"));
            }
            if cluster.init_node().name.as_str() == name {
                s.insert("etc/kubernetes/super-admin.conf".into());
            }
            s
        }
    }
}

#[test]
fn each_role_gets_exactly_its_files() {
    for cluster in [default_cluster(), external_cluster()] {
        let (_d, _s, trees) = render_all(&cluster);
        for (name, role, tree) in &trees {
            assert_eq!(
                paths(tree),
                expected_files(&cluster, name, *role),
                "{}/{name}",
                cluster.name
            );
            for p in paths(tree) {
                let want = if p.ends_with(".key") || p.ends_with(".conf") {
                    0o600
                } else {
                    0o644
                };
                assert_eq!(mode(tree, &p), want, "{name}: {p}");
            }
            assert!(!tree.contains("etc/kubernetes/kubelet.conf"), "{name}");
            if *role != Role::Master {
                for secret in ["ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"] {
                    assert!(
                        !tree.contains(format!("{PKI_DIR}/{secret}")),
                        "{name} holds {secret}"
                    );
                }
                let private_keys: Vec<_> = paths(tree)
                    .into_iter()
                    .filter(|p| p.ends_with(".key"))
                    .collect();
                if *role == Role::Worker {
                    assert!(private_keys.is_empty(), "{name}: {private_keys:?}");
                    // kubeadm join's preflight refuses a pre-existing pki/ca.crt on workers.
                    assert!(!tree.contains(format!("{PKI_DIR}/ca.crt")));
                }
            }
        }
    }
}

/// Verifies one PEM certificate from a tree against the CA at `ca_path`.
fn verify(tree: &FileTree, ca_path: &str, cert: &[u8], purpose: &str, what: &str) {
    let ca = contents(tree, ca_path);
    openssl_verify(&ca, cert, Some(purpose)).unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn every_certificate_verifies_against_its_ca_with_openssl() {
    for cluster in [default_cluster(), external_cluster()] {
        let (_d, secrets, trees) = render_all(&cluster);
        let mut checked = 0;
        for (name, _role, tree) in &trees {
            for p in paths(tree) {
                let what = format!("{}/{name}:{p}", cluster.name);
                if let Some(stem) = p.strip_suffix(".crt") {
                    let bytes = contents(tree, &p);
                    let info = cert_info(&bytes);
                    if info.is_ca {
                        openssl_verify(&bytes, &bytes, None)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        continue;
                    }
                    let ca = if stem.contains("/etcd/") || stem.ends_with("apiserver-etcd-client") {
                        format!("{PKI_DIR}/etcd/ca.crt")
                    } else if stem.ends_with("front-proxy-client") {
                        format!("{PKI_DIR}/front-proxy-ca.crt")
                    } else {
                        format!("{PKI_DIR}/ca.crt")
                    };
                    let purpose = if info.server_auth {
                        "sslserver"
                    } else {
                        "sslclient"
                    };
                    verify(tree, &ca, &bytes, purpose, &what);
                    if info.server_auth && info.client_auth {
                        verify(tree, &ca, &bytes, "sslclient", &what);
                    }
                    checked += 1;
                } else if p.ends_with(".conf") {
                    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&contents(tree, &p))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let b64 = |v: &serde_yaml_ng::Value| {
                        base64::engine::general_purpose::STANDARD
                            .decode(
                                v.as_str()
                                    .unwrap_or_else(|| panic!("{what}: missing field")),
                            )
                            .unwrap()
                    };
                    let ca = b64(&yaml["clusters"][0]["cluster"]["certificate-authority-data"]);
                    assert_eq!(ca, secrets.ca_cert_pem().as_bytes(), "{what}: embedded CA");
                    let cert = b64(&yaml["users"][0]["user"]["client-certificate-data"]);
                    openssl_verify(&ca, &cert, Some("sslclient"))
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let key = b64(&yaml["users"][0]["user"]["client-key-data"]);
                    assert!(
                        String::from_utf8_lossy(&key).contains("PRIVATE KEY"),
                        "{what}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} certificates checked");
    }
}

/// (CN, O, issuer CN, serverAuth, clientAuth) per pki path, as kubeadm 1.29+ makes them.
fn kubeadm_identity(
    stem: &str,
    node: &str,
) -> (String, Vec<&'static str>, &'static str, bool, bool) {
    let s = |x: &str| x.to_string();
    match stem {
        "apiserver" => (s("kube-apiserver"), vec![], "kubernetes", true, false),
        "apiserver-kubelet-client" => (
            s("kube-apiserver-kubelet-client"),
            vec![],
            "kubernetes",
            false,
            true,
        ),
        "front-proxy-client" => (
            s("front-proxy-client"),
            vec![],
            "front-proxy-ca",
            false,
            true,
        ),
        "apiserver-etcd-client" => (
            s("kube-apiserver-etcd-client"),
            vec![],
            "etcd-ca",
            false,
            true,
        ),
        "etcd/server" | "etcd/peer" => (s(node), vec![], "etcd-ca", true, true),
        "etcd/healthcheck-client" => (
            s("kube-etcd-healthcheck-client"),
            vec![],
            "etcd-ca",
            false,
            true,
        ),
        other => panic!("unexpected certificate {other}"),
    }
}

#[test]
fn subjects_usages_and_validity_match_kubeadm() {
    let cluster = default_cluster();
    let (_d, _s, trees) = render_all(&cluster);
    let leaf_days = i64::from(cluster.certificates.leaf_validity.days);
    let ca_days = i64::from(cluster.certificates.ca_validity.days);
    let mut serials = BTreeSet::new();
    for (name, _role, tree) in &trees {
        for p in paths(tree) {
            let Some(stem) = p
                .strip_suffix(".crt")
                .and_then(|s| s.strip_prefix(&format!("{PKI_DIR}/")))
            else {
                continue;
            };
            let info = cert_info(&contents(tree, &p));
            assert!(
                serials.insert((info.issuer_cn.clone(), info.serial.clone())) || info.is_ca,
                "{p}: serial reused"
            );
            assert!(!info.key_is_rsa, "{p}: ecdsa-p256 expected");
            // kubeadm backdates NotBefore by 5 minutes and counts validity from issuing time.
            let span = info.not_after - info.not_before;
            if info.is_ca {
                let (cn, issuer) = match stem {
                    "ca" => ("kubernetes", "kubernetes"),
                    "front-proxy-ca" => ("front-proxy-ca", "front-proxy-ca"),
                    "etcd/ca" => ("etcd-ca", "etcd-ca"),
                    other => panic!("{other} is a CA?"),
                };
                assert_eq!(
                    (info.cn.as_str(), info.issuer_cn.as_str()),
                    (cn, issuer),
                    "{p}"
                );
                assert_eq!(
                    info.dns,
                    vec![cn.to_string()],
                    "{p}: kubeadm puts the CN in as a SAN"
                );
                assert!(
                    info.digital_signature && info.key_encipherment && info.key_cert_sign,
                    "{p}"
                );
                assert!(!info.server_auth && !info.client_auth, "{p}");
                assert_eq!(span, ca_days * 86400 + 300, "{p}");
                continue;
            }
            let (cn, orgs, issuer, server, client) = kubeadm_identity(stem, name);
            assert_eq!(info.cn, cn, "{name}:{p}");
            assert_eq!(info.orgs, orgs, "{name}:{p}");
            assert_eq!(info.issuer_cn, issuer, "{name}:{p}");
            assert_eq!(
                (info.server_auth, info.client_auth),
                (server, client),
                "{name}:{p}"
            );
            assert!(
                info.digital_signature && info.key_encipherment && !info.key_cert_sign,
                "{name}:{p}"
            );
            assert_eq!(span, leaf_days * 86400 + 300, "{name}:{p}");
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            assert!(
                info.not_before <= now - 290 && info.not_before >= now - 400,
                "{name}:{p}: backdated ~5 min"
            );
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn master_san_lists_are_exact() {
    let cluster = default_cluster();
    let (_d, _s, trees) = render_all(&cluster);
    for (name, role, tree) in &trees {
        if *role != Role::Master {
            continue;
        }
        let node_ip = cluster.node(name).unwrap().address().unwrap().to_string();
        let api = cert_info(&contents(tree, &format!("{PKI_DIR}/apiserver.crt")));
        assert_eq!(
            api.dns,
            vec![
                name.clone(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ],
            "{name}"
        );
        assert_eq!(
            api.ips,
            vec![
                ip("10.96.0.1"),
                ip(&node_ip),
                ip("192.168.122.10"),
                ip("127.0.0.1")
            ],
            "{name}"
        );
        for etcd in ["etcd/server", "etcd/peer"] {
            let info = cert_info(&contents(tree, &format!("{PKI_DIR}/{etcd}.crt")));
            assert_eq!(
                info.dns,
                vec![name.clone(), "localhost".into()],
                "{name}:{etcd}"
            );
            assert_eq!(
                info.ips,
                vec![ip(&node_ip), ip("127.0.0.1"), ip("::1")],
                "{name}:{etcd}"
            );
        }
        for client in [
            "apiserver-kubelet-client",
            "front-proxy-client",
            "apiserver-etcd-client",
            "etcd/healthcheck-client",
        ] {
            let info = cert_info(&contents(tree, &format!("{PKI_DIR}/{client}.crt")));
            assert!(
                info.dns.is_empty() && info.ips.is_empty(),
                "{name}:{client} has SANs"
            );
        }
    }

    // External etcd with extra SANs: the extra names and addresses are included, once.
    let ext = external_cluster();
    let (_d, _s, trees) = render_all(&ext);
    let (_, _, m1) = trees.iter().find(|(n, _, _)| n == "master-1").unwrap();
    let api = cert_info(&contents(m1, &format!("{PKI_DIR}/apiserver.crt")));
    for san in &ext.api_server_extra_sans {
        let s = san.to_string();
        assert!(
            api.dns.contains(&s) || api.ips.iter().any(|i| i.to_string() == s),
            "{s} missing"
        );
    }
    let uniq: BTreeSet<_> = api.dns.iter().collect();
    assert_eq!(
        uniq.len(),
        api.dns.len(),
        "duplicate DNS SANs {:?}",
        api.dns
    );
    let (_, _, e1) = trees.iter().find(|(n, _, _)| n == "etcd-1").unwrap();
    let server = cert_info(&contents(e1, &format!("{PKI_DIR}/etcd/server.crt")));
    let e1_ip = ext.node("etcd-1").unwrap().address().unwrap().to_string();
    assert_eq!(server.dns, vec!["etcd-1".to_string(), "localhost".into()]);
    assert_eq!(server.ips, vec![ip(&e1_ip), ip("127.0.0.1"), ip("::1")]);
}

#[test]
fn kubeconfigs_name_the_right_users_and_servers() {
    let cluster = default_cluster();
    let (_d, _s, trees) = render_all(&cluster);
    for (name, role, tree) in &trees {
        if *role != Role::Master {
            continue;
        }
        let node_ip = cluster.node(name).unwrap().address().unwrap();
        let mut want = vec![
            (
                "admin.conf",
                "kubernetes-admin",
                vec!["kubeadm:cluster-admins"],
                "https://192.168.122.10:8443".to_string(),
            ),
            (
                "controller-manager.conf",
                "system:kube-controller-manager",
                vec![],
                format!("https://{node_ip}:6443"),
            ),
            (
                "scheduler.conf",
                "system:kube-scheduler",
                vec![],
                format!("https://{node_ip}:6443"),
            ),
        ];
        if cluster.init_node().name.as_str() == name {
            want.push((
                "super-admin.conf",
                "kubernetes-super-admin",
                vec!["system:masters"],
                "https://192.168.122.10:8443".to_string(),
            ));
        }
        for (file, user, orgs, server) in want {
            let y: serde_yaml_ng::Value =
                serde_yaml_ng::from_slice(&contents(tree, &format!("etc/kubernetes/{file}")))
                    .unwrap();
            assert_eq!(
                y["clusters"][0]["cluster"]["server"].as_str(),
                Some(server.as_str()),
                "{name}:{file}"
            );
            assert_eq!(y["users"][0]["name"].as_str(), Some(user), "{name}:{file}");
            let cert = base64::engine::general_purpose::STANDARD
                .decode(
                    y["users"][0]["user"]["client-certificate-data"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
            let info = cert_info(&cert);
            assert_eq!(info.cn, user, "{name}:{file}");
            assert_eq!(info.orgs, orgs, "{name}:{file}");
            assert!(info.client_auth && !info.server_auth, "{name}:{file}");
        }
    }
}

#[test]
fn ca_cert_hash_matches_openssl() {
    let cluster = default_cluster();
    let (dir, secrets, _) = render_all(&cluster);
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, secrets.ca_cert_pem()).unwrap();
    let out = sh(&format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
        ca.display()
    ));
    let hex = out.split_whitespace().next().unwrap();
    assert_eq!(secrets.ca_cert_hash(), format!("sha256:{hex}"));
    assert_eq!(hex.len(), 64);
}

//! The cluster state directory: created private, reused byte for byte,
//! leaves re-issued only when their profile changes or they near expiry,
//! CAs never re-created, other clusters' directories refused.

mod pki_support;

use hakube_build::errors::exit_code;
use hakube_build::pki::{node_files, ClusterSecrets, FixedClock, PKI_DIR};
use hakube_build::spec::{self, Cluster, SpecSource};
use hakube_build::tree::FileTree;
use pki_support::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

fn trees(cluster: &Cluster, secrets: &ClusterSecrets) -> BTreeMap<String, FileTree> {
    cluster
        .nodes
        .iter()
        .map(|n| (n.name.to_string(), node_files(cluster, secrets, n).unwrap()))
        .collect()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn state_dir_is_private_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    // A nested, not yet existing path: every directory created is 0700.
    let state = dir.path().join(".hakube/hakube");
    let cluster = default_cluster();
    let secrets = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    assert_eq!(secrets.state_dir(), state);
    let files = snapshot(&state);
    for want in [
        "state.json",
        "ca.crt",
        "ca.key",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
        "sa.key",
        "sa.pub",
        "bootstrap-token",
        "nodes/master-2/apiserver.crt",
        "nodes/master-2/kubeconfig/admin.key",
    ] {
        assert!(
            files.contains_key(want),
            "{want} missing from {:?}",
            files.keys()
        );
    }
    let mut stack = vec![state.clone()];
    assert_eq!(mode_of(&dir.path().join(".hakube")), 0o700);
    while let Some(d) = stack.pop() {
        assert_eq!(mode_of(&d), 0o700, "{}", d.display());
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(mode_of(&p), 0o600, "{}", p.display());
                assert!(
                    !p.file_name().unwrap().to_string_lossy().starts_with(".tmp"),
                    "leftover {}",
                    p.display()
                );
            }
        }
    }
    let marker: serde_json::Value = serde_json::from_slice(&files["state.json"]).unwrap();
    assert_eq!(marker["cluster"], "hakube");
    let token = String::from_utf8(files["bootstrap-token"].clone()).unwrap();
    assert_eq!(token.trim(), secrets.bootstrap_token());
    assert!(token
        .trim()
        .parse::<hakube_build::pki::BootstrapToken>()
        .is_ok());
}

#[test]
fn second_load_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    let first = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let trees1 = trees(&cluster, &first);
    let files1 = snapshot(&state);
    drop(first);
    let second = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let trees2 = trees(&cluster, &second);
    assert_eq!(trees1, trees2);
    assert_eq!(files1, snapshot(&state));
    // And node_files itself is a pure function of the state.
    assert_eq!(trees(&cluster, &second), trees2);
}

#[test]
fn changed_sans_reissue_only_the_affected_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let before_cluster = default_cluster();
    let before = trees(
        &before_cluster,
        &ClusterSecrets::load_or_create(&before_cluster, &state).unwrap(),
    );
    let after_cluster = default_cluster_with(
        "nodes:\n",
        "apiServerExtraSans: [api.example.test]\nnodes:\n",
    );
    let secrets = ClusterSecrets::load_or_create(&after_cluster, &state).unwrap();
    let after = trees(&after_cluster, &secrets);
    for (node, t_after) in &after {
        let t_before = &before[node];
        assert_eq!(paths(t_before), paths(t_after), "{node}");
        for p in paths(t_after) {
            let same = contents(t_before, &p) == contents(t_after, &p);
            let apiserver =
                p.starts_with(&format!("{PKI_DIR}/apiserver.")) && !p.contains("client");
            assert_eq!(same, !apiserver, "{node}: {p} changed={}", !same);
        }
        if let Some(crt) = t_after
            .get(format!("{PKI_DIR}/apiserver.crt"))
            .map(|_| contents(t_after, &format!("{PKI_DIR}/apiserver.crt")))
        {
            assert!(
                cert_info(&crt)
                    .dns
                    .contains(&"api.example.test".to_string()),
                "{node}"
            );
        }
    }
}

#[test]
fn leaves_near_expiry_are_renewed_but_cas_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    let now = OffsetDateTime::now_utc();
    // Issued 340 days ago: the 1-year leaves expire in 25 days.
    let past = Arc::new(FixedClock(now - Duration::days(340)));
    let old = ClusterSecrets::load_or_create_with_clock(&cluster, &state, past.clone()).unwrap();
    let old_trees = trees(&cluster, &old);
    let old_ca = old.ca_cert_pem();
    drop(old);
    // Still within the window seen from 340 days ago: nothing changes.
    let again = ClusterSecrets::load_or_create_with_clock(&cluster, &state, past).unwrap();
    assert_eq!(trees(&cluster, &again), old_trees);
    drop(again);

    let fresh = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    assert_eq!(fresh.ca_cert_pem(), old_ca, "CA re-created");
    let new_trees = trees(&cluster, &fresh);
    let m1_old = &old_trees["master-1"];
    let m1_new = &new_trees["master-1"];
    for unchanged in [
        "ca.crt",
        "ca.key",
        "etcd/ca.key",
        "front-proxy-ca.crt",
        "sa.key",
        "sa.pub",
    ] {
        let p = format!("{PKI_DIR}/{unchanged}");
        assert_eq!(contents(m1_old, &p), contents(m1_new, &p), "{p}");
    }
    let p = format!("{PKI_DIR}/apiserver.crt");
    assert_ne!(
        contents(m1_old, &p),
        contents(m1_new, &p),
        "apiserver not renewed"
    );
    let renewed = cert_info(&contents(m1_new, &p));
    assert!(renewed.not_after - now.unix_timestamp() > 360 * 86400);
    let ca = contents(m1_new, &format!("{PKI_DIR}/ca.crt"));
    openssl_verify(&ca, &contents(m1_new, &p), Some("sslserver")).unwrap();
}

#[test]
fn state_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let before = snapshot(&state);
    let other = default_cluster_with("name: hakube", "name: other");
    let err = ClusterSecrets::load_or_create(&other, &state)
        .err()
        .expect("accepted another cluster's state");
    assert_eq!(exit_code(&err), 2, "{err:#}");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("\"hakube\"") && msg.contains("\"other\""),
        "{msg}"
    );
    assert_eq!(snapshot(&state), before, "refusal wrote something");

    // A non-empty directory without state.json is not ours either.
    let foreign = dir.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "x").unwrap();
    let err = ClusterSecrets::load_or_create(&cluster, &foreign)
        .err()
        .expect("accepted a foreign dir");
    assert_eq!(exit_code(&err), 2, "{err:#}");
    assert!(!foreign.join("ca.key").exists());
}

#[test]
fn loose_permissions_are_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(state.join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(state.join("etcd"), fs::Permissions::from_mode(0o777)).unwrap();
    ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("ca.key")), 0o600);
    assert_eq!(mode_of(&state.join("etcd")), 0o700);
}

#[test]
fn a_missing_ca_key_is_an_error_not_a_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let ca = fs::read(state.join("ca.crt")).unwrap();
    fs::remove_file(state.join("ca.key")).unwrap();
    let err = ClusterSecrets::load_or_create(&cluster, &state)
        .err()
        .expect("re-created a CA");
    assert!(
        format!("{err:#}").contains("refusing to re-create"),
        "{err:#}"
    );
    assert_eq!(fs::read(state.join("ca.crt")).unwrap(), ca);
}

#[test]
fn a_ca_key_without_its_certificate_is_finished_with_the_same_key() {
    // A run killed between writing a CA's key and its certificate.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let key = fs::read(state.join("front-proxy-ca.key")).unwrap();
    fs::remove_file(state.join("front-proxy-ca.crt")).unwrap();
    let secrets = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    assert_eq!(fs::read(state.join("front-proxy-ca.key")).unwrap(), key);
    let crt = fs::read(state.join("front-proxy-ca.crt")).unwrap();
    assert_eq!(mode_of(&state.join("front-proxy-ca.crt")), 0o600);
    // The new certificate is for the stored key, and the leaf issued under
    // it verifies against it.
    let m1 = node_files(&cluster, &secrets, cluster.node("master-1").unwrap()).unwrap();
    assert_eq!(contents(&m1, &format!("{PKI_DIR}/front-proxy-ca.crt")), crt);
    openssl_verify(
        &crt,
        &contents(&m1, &format!("{PKI_DIR}/front-proxy-client.crt")),
        Some("sslclient"),
    )
    .unwrap();
    let pub_of = |args: &str| {
        sh(&format!(
            "openssl {args} | openssl pkey -pubin -outform DER | sha256sum"
        ))
    };
    assert_eq!(
        pub_of(&format!(
            "x509 -in {} -noout -pubkey",
            state.join("front-proxy-ca.crt").display()
        )),
        pub_of(&format!(
            "pkey -in {} -pubout",
            state.join("front-proxy-ca.key").display()
        )),
    );
}

#[test]
fn rsa_mode_makes_rsa_keys() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster_with("keyAlgorithm: ecdsa-p256", "keyAlgorithm: rsa-2048");
    let secrets = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let m1 = node_files(&cluster, &secrets, cluster.node("master-1").unwrap()).unwrap();
    for crt in [
        "ca.crt",
        "apiserver.crt",
        "etcd/ca.crt",
        "etcd/peer.crt",
        "front-proxy-client.crt",
    ] {
        let bytes = contents(&m1, &format!("{PKI_DIR}/{crt}"));
        assert!(cert_info(&bytes).key_is_rsa, "{crt}");
    }
    let ca = contents(&m1, &format!("{PKI_DIR}/ca.crt"));
    openssl_verify(
        &ca,
        &contents(&m1, &format!("{PKI_DIR}/apiserver.crt")),
        Some("sslserver"),
    )
    .unwrap();
    let sa = state.join("sa.key");
    let text = sh(&format!(
        "openssl pkey -in {} -noout -text | head -1",
        sa.display()
    ));
    assert!(text.contains("2048 bit"), "sa.key: {text}");
    // The public key file matches the private key.
    let derived = sh(&format!("openssl pkey -in {} -pubout", sa.display()));
    assert_eq!(derived, fs::read_to_string(state.join("sa.pub")).unwrap());
}

#[test]
fn short_validities_stay_stable_and_leaves_never_outlive_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Leaves longer than the CA are refused by the spec itself, so the PKI
    // never has to silently cap them.
    let text = spec::DEFAULT_CLUSTER_YAML.replacen(
        "caValidity: 10y\n  leafValidity: 1y",
        "caValidity: 100d\n  leafValidity: 1y",
        1,
    );
    let err = spec::parse(&text, SpecSource::Embedded).unwrap_err();
    assert_eq!(err.field, "certificates.leafValidity", "{err}");

    // 20-day leaves renew 1/3 before expiry, not 30 days before: a second
    // build right away must not re-issue them.
    let state2 = dir.path().join("s2");
    let short = default_cluster_with("leafValidity: 1y", "leafValidity: 20d");
    let a = trees(
        &short,
        &ClusterSecrets::load_or_create(&short, &state2).unwrap(),
    );
    let b = trees(
        &short,
        &ClusterSecrets::load_or_create(&short, &state2).unwrap(),
    );
    assert_eq!(a, b);
    let api = cert_info(&contents(
        &a["master-1"],
        &format!("{PKI_DIR}/apiserver.crt"),
    ));
    assert_eq!(api.not_after - api.not_before, 20 * 86400 + 300);
}

#[test]
fn a_dhcp_master_is_bad_input() {
    // A master's certificates name its address, so the spec refuses DHCP
    // masters before any PKI is issued.
    let text = spec::DEFAULT_CLUSTER_YAML.replacen(
        "network: {address: 192.168.122.13/24, gateway: 192.168.122.1, dns: [192.168.122.1]}",
        "network: {dhcp: true}",
        1,
    );
    let err = spec::parse(&text, SpecSource::Embedded).unwrap_err();
    assert_eq!(err.field, "nodes[2].network.dhcp", "{err}");
}

#[test]
fn a_second_user_of_the_state_dir_waits_for_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let cluster = default_cluster();
    let first = ClusterSecrets::load_or_create(&cluster, &state).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (c2, s2) = (cluster.clone(), state.clone());
    let waiter = std::thread::spawn(move || {
        let second = ClusterSecrets::load_or_create(&c2, &s2).unwrap();
        tx.send(second.bootstrap_token()).unwrap();
    });
    // While `first` holds the lock the second load cannot finish.
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(500))
        .is_err());
    let token = first.bootstrap_token();
    drop(first);
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap(),
        token
    );
    waiter.join().unwrap();
}

//! Shared helpers for the pki_* integration tests: specs, openssl calls and
//! certificate inspection with x509-parser.
#![allow(dead_code)]

use hakube_build::spec::{self, Cluster, SpecSource};
use hakube_build::tree::{FileEntry, FileTree};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use x509_parser::extensions::GeneralName;

pub fn default_cluster() -> Cluster {
    spec::load(None).expect("embedded default cluster")
}

/// The classic kubeadm HA guide layout: 3 external etcd, 3 masters, 3 workers.
pub const EXTERNAL_ETCD_YAML: &str = r#"
name: ext
kubernetesVersion: 1.37.2
etcd: {topology: external}
controlPlaneEndpoint: {mode: vip, address: 10.0.0.10, port: 8443}
networking: {podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12, dnsDomain: cluster.local}
apiServerExtraSans: [api.example.test, 203.0.113.7]
nodes:
  - {name: etcd-1, role: etcd, network: {address: 10.0.0.21/24, gateway: 10.0.0.1}}
  - {name: etcd-2, role: etcd, network: {address: 10.0.0.22/24, gateway: 10.0.0.1}}
  - {name: etcd-3, role: etcd, network: {address: 10.0.0.23/24, gateway: 10.0.0.1}}
  - {name: master-1, role: master, network: {address: 10.0.0.11/24, gateway: 10.0.0.1}}
  - {name: master-2, role: master, network: {address: 10.0.0.12/24, gateway: 10.0.0.1}}
  - {name: master-3, role: master, network: {address: 10.0.0.13/24, gateway: 10.0.0.1}}
  - {name: worker-1, role: worker, network: {address: 10.0.0.31/24, gateway: 10.0.0.1}}
  - {name: worker-2, role: worker, network: {address: 10.0.0.32/24, gateway: 10.0.0.1}}
  - {name: worker-3, role: worker, network: {address: 10.0.0.33/24, gateway: 10.0.0.1}}
"#;

/// The external-etcd example from profiles/examples when it exists, else the inline one.
pub fn external_cluster() -> Cluster {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples/external-etcd.yaml");
    if example.exists() {
        return spec::load(Some(&example)).expect("profiles/examples/external-etcd.yaml");
    }
    spec::parse(EXTERNAL_ETCD_YAML, SpecSource::Embedded).expect("inline external-etcd spec")
}

/// The default cluster with one text substitution in its YAML.
pub fn default_cluster_with(from: &str, to: &str) -> Cluster {
    let text = spec::DEFAULT_CLUSTER_YAML;
    assert!(text.contains(from), "default cluster has no {from:?}");
    spec::parse(&text.replacen(from, to, 1), SpecSource::Embedded)
        .expect("modified default cluster")
}

pub fn contents(tree: &FileTree, path: &str) -> Vec<u8> {
    match tree.get(path) {
        Some(FileEntry::File { contents, .. }) => contents.clone(),
        other => panic!("{path}: expected a file, got {other:?}"),
    }
}

pub fn mode(tree: &FileTree, path: &str) -> u32 {
    match tree.get(path) {
        Some(FileEntry::File { mode, .. }) => *mode,
        other => panic!("{path}: expected a file, got {other:?}"),
    }
}

pub fn paths(tree: &FileTree) -> BTreeSet<String> {
    tree.iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

/// `openssl verify -CAfile ca cert`, with an optional `-purpose`.
pub fn openssl_verify(ca_pem: &[u8], cert_pem: &[u8], purpose: Option<&str>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let cert = dir.path().join("cert.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-x509_strict")
        .arg("-CAfile")
        .arg(&ca);
    if let Some(p) = purpose {
        cmd.arg("-purpose").arg(p);
    }
    let out = cmd.arg(&cert).output().expect("running openssl");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What the tests check about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub cn: String,
    pub orgs: Vec<String>,
    pub issuer_cn: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub key_cert_sign: bool,
    pub is_ca: bool,
    pub not_before: i64,
    pub not_after: i64,
    pub serial: Vec<u8>,
    pub key_is_rsa: bool,
    pub spki: Vec<u8>,
}

pub fn cert_info(pem: &[u8]) -> CertInfo {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).expect("PEM");
    let c = p.parse_x509().expect("X.509");
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.map(|a| a.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Some(san) = c.subject_alternative_name().unwrap() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                    n => panic!("IP SAN of {n} bytes"),
                }),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
    }
    let eku = c.extended_key_usage().unwrap().map(|e| e.value.clone());
    let ku = c.key_usage().unwrap().expect("key usage present").value;
    let cn = first(&mut c.subject().iter_common_name()).join(",");
    let orgs = first(&mut c.subject().iter_organization());
    let issuer_cn = first(&mut c.issuer().iter_common_name()).join(",");
    let info = CertInfo {
        cn,
        orgs,
        issuer_cn,
        dns,
        ips,
        server_auth: eku.as_ref().is_some_and(|e| e.server_auth),
        client_auth: eku.as_ref().is_some_and(|e| e.client_auth),
        digital_signature: ku.digital_signature(),
        key_encipherment: ku.key_encipherment(),
        key_cert_sign: ku.key_cert_sign(),
        is_ca: c.is_ca(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        serial: c.raw_serial().to_vec(),
        key_is_rsa: c.public_key().algorithm.algorithm
            == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION,
        spki: c.public_key().raw.to_vec(),
    };
    info
}

/// Runs a shell pipeline and returns its stdout.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

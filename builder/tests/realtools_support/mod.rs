//! Shared helpers for the `realtools_*` targets, where the real Kubernetes
//! binaries built from source (`HAKUBE_SRCBUILD_BIN`, see srcbuild/) judge
//! what `hakube-build render` writes: rendering specs, running kubeadm in a
//! scratch copy of a node's tree, hashing trees, reading certificates.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use x509_parser::extensions::GeneralName;

#[path = "../common/render.rs"]
pub mod render_support;
#[path = "../common/srcbuild.rs"]
mod srcbuild;
/// A real binary built from source (see `common/srcbuild.rs`).
pub use srcbuild::srcbuild_bin as tool;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A spec to render: its label and file (`None`: the embedded default).
#[derive(Debug, Clone)]
pub struct SpecCase {
    pub label: String,
    pub file: Option<PathBuf>,
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

/// The embedded default cluster, every example (profiles/examples) and every
/// spec of the golden render tests (builder/tests/fixtures/render).
pub fn every_spec() -> Vec<SpecCase> {
    let mut v = vec![SpecCase {
        label: "default cluster".into(),
        file: None,
    }];
    for dir in [
        repo().join("profiles/examples"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render"),
    ] {
        for f in yaml_files(&dir) {
            v.push(SpecCase {
                label: f.strip_prefix(repo()).unwrap_or(&f).display().to_string(),
                file: Some(f),
            });
        }
    }
    v
}

/// One rendered node: its name, role and tree.
#[derive(Debug, Clone)]
pub struct RenderedNode {
    pub name: String,
    pub role: String,
    pub dir: PathBuf,
}

impl RenderedNode {
    pub fn init_config(&self) -> PathBuf {
        self.dir.join("etc/hakube/kubeadm/init.yaml")
    }
    pub fn join_config(&self) -> PathBuf {
        self.dir.join("etc/hakube/kubeadm/join.yaml")
    }
    /// The init node's kube-proxy addon config (node-local balancer only).
    pub fn kube_proxy_config(&self) -> PathBuf {
        self.dir.join("etc/hakube/kubeadm/kube-proxy.yaml")
    }
}

/// `hakube-build render` of `spec` into `work/out` (state in `work/state`).
pub fn render(spec: &SpecCase, work: &Path) -> Vec<RenderedNode> {
    let out = work.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hakube-build"));
    cmd.current_dir(work).arg("render");
    if let Some(f) = &spec.file {
        cmd.arg("--cluster").arg(f);
        // A calico cluster's masters are made from calico's manifest, which a
        // first build pins and caches: the stand-in is pinned the same way.
        let c = hakube_build::spec::load(Some(f)).expect("a valid spec");
        if c.cni.as_str() == "calico" {
            let (lock, cache) = (work.join("hakube.lock"), work.join("cache"));
            render_support::pin_calico_fixture(&c, &lock, &cache);
            cmd.arg("--lock").arg(lock).arg("--cache-dir").arg(cache);
        }
    }
    cmd.arg("--state")
        .arg(work.join("state"))
        .arg("--out")
        .arg(&out);
    let stdout = ok(
        &cmd.output().expect("running hakube-build render"),
        &spec.label,
    );
    stdout
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_string();
            let role = f.next().unwrap().to_string();
            RenderedNode {
                dir: out.join(&name),
                name,
                role,
            }
        })
        .collect()
}

/// stdout of a successful command; panics with everything otherwise.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubeadm --rootfs ROOT ARGS...`: kubeadm chroots into the scratch tree
/// first (cmd/kubeadm/app/cmd/cmd.go), so paths in ARGS and in the config
/// are the node's own (`/etc/kubernetes/pki`), exactly as on the node.
pub fn kubeadm_in(root: &Path, args: &[&str]) -> Output {
    Command::new(tool("kubeadm"))
        .arg("--rootfs")
        .arg(root)
        .args(args)
        .output()
        .expect("running kubeadm")
}

/// Copies a directory tree (files, symlinks, modes).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&from).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if meta.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
            std::fs::set_permissions(&to, meta.permissions()).unwrap();
        }
    }
}

/// Every file, directory and symlink under `root` with its mode and the
/// SHA-256 of its contents (or its target).
pub fn hash_tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("link {}", t.display()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), format!("dir {mode:o}"));
                walk(root, &p, out);
            } else {
                let h = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                out.insert(rel, format!("file {mode:o} {h}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What differs between two [`hash_tree`]s, one line per path.
pub fn tree_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect()
}

/// The identity fields of a certificate that kubeadm derives from its
/// configuration: subject CN and O, SANs, extended key usages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_name: String,
    pub organizations: BTreeSet<String>,
    pub sans: BTreeSet<String>,
    pub ext_key_usage: BTreeSet<String>,
}

pub fn cert_identity(pem_path: &Path) -> CertIdentity {
    let text = std::fs::read(pem_path).unwrap_or_else(|e| panic!("{}: {e}", pem_path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
        .unwrap_or_else(|e| panic!("{}: not PEM: {e}", pem_path.display()));
    let cert = pem
        .parse_x509()
        .unwrap_or_else(|e| panic!("{}: not X.509: {e}", pem_path.display()));
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => {
                    sans.insert(format!("DNS:{d}"));
                }
                GeneralName::IPAddress(b) => {
                    let ip: std::net::IpAddr = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).unwrap().into(),
                        16 => <[u8; 16]>::try_from(*b).unwrap().into(),
                        _ => panic!("{}: bad IP SAN", pem_path.display()),
                    };
                    sans.insert(format!("IP:{ip}"));
                }
                other => {
                    sans.insert(format!("{other:?}"));
                }
            }
        }
    }
    let mut ext_key_usage = BTreeSet::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if eku.value.server_auth {
            ext_key_usage.insert("serverAuth".to_string());
        }
        if eku.value.client_auth {
            ext_key_usage.insert("clientAuth".to_string());
        }
    }
    CertIdentity {
        common_name,
        organizations,
        sans,
        ext_key_usage,
    }
}

/// Every `*.crt` under `dir` (relative paths), CAs included.
pub fn certs_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    fn walk(base: &Path, dir: &Path, v: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, v);
            } else if p.extension().is_some_and(|x| x == "crt") {
                v.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// The YAML documents of a multi-document file.
pub fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).expect("kubeadm config YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn yaml_text(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml_ng::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The kubeadm init configuration a master other than the init node ends up
/// with when it joins: kubeadm fetches the cluster's ClusterConfiguration and
/// overlays the JoinConfiguration's `nodeRegistration` and
/// `controlPlane.localAPIEndpoint` (`fetchInitConfigurationFromJoinConfiguration`,
/// cmd/kubeadm/app/cmd/join.go). So: the init node's documents with the
/// InitConfiguration's node fields taken from `join`, and no bootstrap token.
pub fn init_config_for_joiner(init_yaml: &str, join_yaml: &str) -> String {
    let join = yaml_docs(join_yaml)
        .into_iter()
        .find(|d| d["kind"] == "JoinConfiguration")
        .expect("a JoinConfiguration");
    let mut docs = yaml_docs(init_yaml);
    for d in &mut docs {
        if d["kind"] == "InitConfiguration" {
            let obj = d.as_object_mut().unwrap();
            obj.remove("bootstrapTokens");
            obj.insert("nodeRegistration".into(), join["nodeRegistration"].clone());
            obj.insert(
                "localAPIEndpoint".into(),
                join["controlPlane"]["localAPIEndpoint"].clone(),
            );
        }
    }
    yaml_text(&docs)
}

/// `kubeadm version -o short`, e.g. `v1.37.2`.
pub fn kubeadm_version() -> String {
    let out = Command::new(tool("kubeadm"))
        .args(["version", "-o", "short"])
        .output()
        .expect("running kubeadm version");
    ok(&out, "kubeadm version").trim().to_string()
}

/// `v1.37.2` -> 37
fn minor(v: &str) -> u32 {
    v.trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{v:?}: not a Kubernetes version"))
}

/// kubeadm deploys its own minor and the one before (kubeadm 1.37: control
/// planes >= 1.36). A configuration for an older control plane (a 1.35
/// spec) is judged with `kubernetesVersion` set to kubeadm's own, so every
/// other field still meets kubeadm's validation. Returns the text to give
/// kubeadm and, when it changed, a note saying so.
pub fn in_skew(config: &str, kubeadm_version: &str) -> (String, Option<String>) {
    let mut docs = yaml_docs(config);
    let mut note = None;
    for d in &mut docs {
        if d["kind"] != "ClusterConfiguration" {
            continue;
        }
        let Some(v) = d["kubernetesVersion"].as_str().map(str::to_string) else {
            continue;
        };
        if minor(&v) + 1 < minor(kubeadm_version) {
            d["kubernetesVersion"] = serde_json::Value::from(kubeadm_version);
            note = Some(format!(
                "kubernetesVersion {v} judged as {kubeadm_version} (kubeadm {kubeadm_version} deploys only its own minor and the one before)"
            ));
        }
    }
    match note {
        Some(n) => (yaml_text(&docs), Some(n)),
        None => (config.to_string(), None),
    }
}

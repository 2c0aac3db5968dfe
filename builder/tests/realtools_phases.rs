//! The real kubeadm (`HAKUBE_SRCBUILD_BIN`) takes every master's baked PKI
//! and kubeconfigs as its own. On a scratch copy of each master's rendered
//! tree (kubeadm chroots into it with `--rootfs`):
//!
//! - `kubeadm init phase certs all` and `kubeadm init phase kubeconfig ...`
//!   (`all` on the init node; on the other masters the three a control-plane
//!   join writes: admin, controller-manager, scheduler) say "Using existing"
//!   for every file and change no byte of the tree. The one file kubeadm
//!   writes is the init node's kubelet.conf, which render leaves to it (the
//!   node's own kubelet identity; joiners get theirs by TLS bootstrap);
//! - kubeadm's own certificates and kubeconfigs for the same configuration
//!   (generated in a second scratch root holding only the baked CAs) are
//!   covered by the baked ones: same subject, same key usages, every SAN
//!   kubeadm would put in, same API server URL.
//!
//! The second check exists because `init phase certs` only checks that an
//! existing certificate chains to its CA (`runCertPhase`,
//! cmd/kubeadm/app/cmd/phases/init/certs.go); the SAN check
//! (`validateCertificateWithConfig`) runs on the join path only. A baked
//! certificate missing a SAN must fail here: the tampered-certificate test
//! shows it does.
//!
//! Masters other than the init node get the configuration kubeadm builds
//! when they join (see `init_config_for_joiner`).

mod realtools_support;

use base64::Engine as _;
use realtools_support::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the configuration kubeadm reads lives inside the scratch root.
const SCRATCH_CONFIG: &str = "tmp/realtools-init.yaml";
const KUBELET_CONF: &str = "kubelet.conf";
const CA_FILES: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "sa.key",
    "sa.pub",
];

/// The configuration kubeadm uses on `node` (init.yaml on the init node).
/// Judged within kubeadm's version skew (see `in_skew`).
fn master_config(init_node: &RenderedNode, node: &RenderedNode) -> String {
    let init = std::fs::read_to_string(init_node.init_config()).unwrap();
    let cfg = if node.name == init_node.name {
        init
    } else {
        let join = std::fs::read_to_string(node.join_config()).unwrap();
        init_config_for_joiner(&init, &join)
    };
    let (cfg, note) = in_skew(&cfg, &kubeadm_version());
    if let Some(n) = note {
        eprintln!("note: {}: {n}", node.dir.display());
    }
    cfg
}

fn is_external_etcd(config: &str) -> bool {
    yaml_docs(config)
        .iter()
        .any(|d| d["kind"] == "ClusterConfiguration" && d["etcd"]["external"].is_object())
}

/// A scratch root holding `tree` (if any) and `config` at [`SCRATCH_CONFIG`].
fn scratch_root(dir: &Path, tree: Option<&Path>, config: &str) -> PathBuf {
    let root = dir.to_path_buf();
    if let Some(t) = tree {
        copy_tree(t, &root);
    }
    let cfg = root.join(SCRATCH_CONFIG);
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, config).unwrap();
    root
}

fn kubeadm_phase(root: &Path, phase: &[&str]) -> (bool, String) {
    let mut args = vec!["init", "phase"];
    args.extend(phase);
    let cfg = format!("/{SCRATCH_CONFIG}");
    args.extend(["--config", &cfg]);
    let out = kubeadm_in(root, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The kubeconfig phases kubeadm runs on this master.
fn kubeconfig_phases(is_init_node: bool) -> Vec<&'static str> {
    if is_init_node {
        vec!["all"]
    } else {
        vec!["admin", "controller-manager", "scheduler"]
    }
}

/// Everything kubeadm finds wrong with `node`'s baked files, one line each.
fn judge_master(
    init_node: &RenderedNode,
    node: &RenderedNode,
    work: &Path,
    tree: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let config = master_config(init_node, node);
    let external = is_external_etcd(&config);
    let is_init = node.name == init_node.name;
    let root = scratch_root(&work.join("baked"), Some(tree), &config);
    let before = hash_tree(&root);

    // 1. kubeadm's phases take every baked file as it is.
    let mut runs = vec![(vec!["certs", "all"], "[certs]")];
    for k in kubeconfig_phases(is_init) {
        runs.push((vec!["kubeconfig", k], "[kubeconfig]"));
    }
    for (phase, tag) in &runs {
        let (ok, text) = kubeadm_phase(&root, phase);
        if !ok {
            problems.push(format!("init phase {}: failed:\n{text}", phase.join(" ")));
            continue;
        }
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(tag)).collect();
        if lines.is_empty() {
            problems.push(format!(
                "init phase {}: said nothing:\n{text}",
                phase.join(" ")
            ));
        }
        for l in lines {
            let fine = l.contains("Using existing")
                || l.contains("Using the existing")
                || l.contains("Using certificateDir folder")
                || l.contains("Using kubeconfig folder")
                || (is_init && l.contains(&format!("Writing \"{KUBELET_CONF}\"")))
                || (external && l.contains("External etcd mode: Skipping"));
            if !fine {
                problems.push(format!("init phase {}: {l}", phase.join(" ")));
            }
        }
        for l in text
            .lines()
            .filter(|l| l.contains("unexpected API Server URL"))
        {
            problems.push(format!("init phase {}: {l}", phase.join(" ")));
        }
    }
    let kubelet_conf = format!("etc/kubernetes/{KUBELET_CONF}");
    for d in tree_diff(&before, &hash_tree(&root)) {
        if is_init && d.starts_with(&format!("{kubelet_conf}: None -> ")) {
            continue;
        }
        problems.push(format!("kubeadm changed the baked tree: {d}"));
    }

    // 2. What kubeadm itself would issue for this configuration, from the
    // baked CAs alone.
    let fresh = scratch_root(&work.join("fresh"), None, &config);
    let pki = Path::new("etc/kubernetes/pki");
    for f in CA_FILES {
        let from = tree.join(pki).join(f);
        if from.exists() {
            let to = fresh.join(pki).join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    for (phase, _) in &runs {
        let (ok, text) = kubeadm_phase(&fresh, phase);
        if !ok {
            problems.push(format!(
                "kubeadm could not issue its own files (init phase {}):\n{text}",
                phase.join(" ")
            ));
        }
    }
    for rel in certs_under(&fresh.join(pki)) {
        if CA_FILES.contains(&rel.as_str()) {
            continue;
        }
        let baked = tree.join(pki).join(&rel);
        if !baked.exists() {
            problems.push(format!("{rel}: kubeadm issues it, render does not bake it"));
            continue;
        }
        compare_identity(
            &rel,
            &cert_identity(&fresh.join(pki).join(&rel)),
            &cert_identity(&baked),
            &mut problems,
        );
    }
    for phase in kubeconfig_phases(is_init) {
        let files: Vec<&str> = match phase {
            "all" => vec![
                "admin.conf",
                "super-admin.conf",
                "kubelet.conf",
                "controller-manager.conf",
                "scheduler.conf",
            ],
            "admin" => vec!["admin.conf"],
            other => vec![if other == "controller-manager" {
                "controller-manager.conf"
            } else {
                "scheduler.conf"
            }],
        };
        for f in files {
            let ours = tree.join("etc/kubernetes").join(f);
            let theirs = fresh.join("etc/kubernetes").join(f);
            if f == KUBELET_CONF {
                // The node's own kubelet identity: not baked; kubeadm init
                // issues it on the init node, TLS bootstrap on the others.
                assert!(!ours.exists(), "{f} is baked now: judge it");
                continue;
            }
            if !ours.exists() {
                problems.push(format!("{f}: kubeadm writes it, render does not bake it"));
                continue;
            }
            compare_kubeconfig(f, &theirs, &ours, work, &mut problems);
        }
    }
    problems
}

fn compare_identity(
    what: &str,
    kubeadm: &CertIdentity,
    baked: &CertIdentity,
    problems: &mut Vec<String>,
) {
    if kubeadm.common_name != baked.common_name {
        problems.push(format!(
            "{what}: CN {:?}, kubeadm's is {:?}",
            baked.common_name, kubeadm.common_name
        ));
    }
    if kubeadm.organizations != baked.organizations {
        problems.push(format!(
            "{what}: O {:?}, kubeadm's is {:?}",
            baked.organizations, kubeadm.organizations
        ));
    }
    if kubeadm.ext_key_usage != baked.ext_key_usage {
        problems.push(format!(
            "{what}: extended key usage {:?}, kubeadm's is {:?}",
            baked.ext_key_usage, kubeadm.ext_key_usage
        ));
    }
    let missing: BTreeSet<_> = kubeadm.sans.difference(&baked.sans).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{what}: SANs {missing:?} are missing (kubeadm's: {:?}; baked: {:?})",
            kubeadm.sans, baked.sans
        ));
    }
}

/// The current context's server, CA and client certificate of a kubeconfig.
fn kubeconfig_parts(path: &Path) -> (String, Vec<u8>, Vec<u8>) {
    let docs = yaml_docs(&std::fs::read_to_string(path).unwrap());
    let kc = &docs[0];
    let ctx_name = kc["current-context"].as_str().unwrap_or_default();
    let ctx = kc["contexts"]
        .as_array()
        .and_then(|v| v.iter().find(|c| c["name"] == ctx_name))
        .unwrap_or_else(|| panic!("{}: no current context", path.display()));
    let named = |list: &str, name: &serde_json::Value| {
        kc[list]
            .as_array()
            .and_then(|v| v.iter().find(|c| &c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {list} entry {name}", path.display()))
    };
    let cluster = named("clusters", &ctx["context"]["cluster"]);
    let user = named("users", &ctx["context"]["user"]);
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default()
    };
    (
        cluster["cluster"]["server"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        b64(&cluster["cluster"]["certificate-authority-data"]),
        b64(&user["user"]["client-certificate-data"]),
    )
}

fn compare_kubeconfig(
    file: &str,
    kubeadm: &Path,
    baked: &Path,
    work: &Path,
    problems: &mut Vec<String>,
) {
    let (k_server, k_ca, k_cert) = kubeconfig_parts(kubeadm);
    let (b_server, b_ca, b_cert) = kubeconfig_parts(baked);
    if k_server != b_server {
        problems.push(format!(
            "{file}: server {b_server}, kubeadm's is {k_server}"
        ));
    }
    if k_ca != b_ca {
        problems.push(format!("{file}: another CA than kubeadm's"));
    }
    if b_cert.is_empty() {
        problems.push(format!("{file}: no client-certificate-data"));
        return;
    }
    let pem = |name: &str, bytes: &[u8]| {
        let p = work.join(format!("{file}.{name}.crt"));
        std::fs::write(&p, bytes).unwrap();
        cert_identity(&p)
    };
    compare_identity(
        &format!("{file} client certificate"),
        &pem("kubeadm", &k_cert),
        &pem("baked", &b_cert),
        problems,
    );
}

/// Every master of every spec, judged by kubeadm.
#[test]
fn kubeadm_takes_every_baked_master_pki_and_kubeconfig_as_its_own() {
    tool("kubeadm");
    let mut problems = Vec::new();
    let mut judged = 0;
    for spec in every_spec() {
        let work = tempfile::tempdir().unwrap();
        let nodes = render(&spec, work.path());
        let init_node = nodes
            .iter()
            .find(|n| n.init_config().exists())
            .unwrap_or_else(|| panic!("{}: no init node", spec.label))
            .clone();
        for node in nodes.iter().filter(|n| n.role == "master") {
            let scratch = work.path().join("scratch").join(&node.name);
            for p in judge_master(&init_node, node, &scratch, &node.dir) {
                problems.push(format!("{} / {}: {p}", spec.label, node.name));
            }
            judged += 1;
        }
    }
    assert!(judged >= 6, "only {judged} masters judged");
    assert!(
        problems.is_empty(),
        "kubeadm found {} problems in {judged} masters:\n\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!("kubeadm took the PKI and kubeconfigs of {judged} masters as its own");
}

/// `names` as an openssl subjectAltName value.
fn openssl_sans(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(",")
}

/// A baked apiserver certificate re-issued by the right CA without the
/// control-plane endpoint's address: the chain is fine (kubeadm's phase still
/// says "Using existing"), and the judgement must still fail, naming it.
#[test]
fn a_baked_certificate_missing_a_san_is_caught() {
    tool("kubeadm");
    let work = tempfile::tempdir().unwrap();
    let spec = SpecCase {
        label: "default cluster".into(),
        file: None,
    };
    let nodes = render(&spec, work.path());
    let m1 = nodes.iter().find(|n| n.init_config().exists()).unwrap();
    let tree = work.path().join("tampered-tree");
    copy_tree(&m1.dir, &tree);
    let pki = tree.join("etc/kubernetes/pki");
    let endpoint = yaml_docs(&std::fs::read_to_string(m1.init_config()).unwrap())
        .into_iter()
        .find(|d| d["kind"] == "ClusterConfiguration")
        .unwrap()["controlPlaneEndpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let host = endpoint.rsplit_once(':').unwrap().0.to_string();
    let want_gone = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("IP:{host}")
    } else {
        format!("DNS:{host}")
    };
    let mut ident = cert_identity(&pki.join("apiserver.crt"));
    assert!(
        ident.sans.remove(&want_gone),
        "{want_gone} not in {ident:?}"
    );
    let ext = work.path().join("ext.cnf");
    std::fs::write(
        &ext,
        format!(
            "[v3]\nsubjectAltName={}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
            openssl_sans(&ident.sans)
        ),
    )
    .unwrap();
    let csr = work.path().join("apiserver.csr");
    let run = |args: &[&std::ffi::OsStr]| {
        ok(
            &Command::new("openssl").args(args).output().unwrap(),
            "openssl",
        )
    };
    run(&[
        "req".as_ref(),
        "-new".as_ref(),
        "-key".as_ref(),
        pki.join("apiserver.key").as_os_str(),
        "-subj".as_ref(),
        "/CN=kube-apiserver".as_ref(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    run(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr.as_os_str(),
        "-CA".as_ref(),
        pki.join("ca.crt").as_os_str(),
        "-CAkey".as_ref(),
        pki.join("ca.key").as_os_str(),
        "-set_serial".as_ref(),
        "4242".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-extensions".as_ref(),
        "v3".as_ref(),
        "-out".as_ref(),
        pki.join("apiserver.crt").as_os_str(),
    ]);
    let problems = judge_master(m1, m1, &work.path().join("scratch"), &tree);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("apiserver.crt") && p.contains(&want_gone)),
        "the missing {want_gone} went unnoticed: {problems:#?}"
    );
    // Only that: everything else of the tampered tree is still kubeadm's.
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

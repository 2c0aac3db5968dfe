//! One set of versions everywhere: the catalogue (builder/src/artifacts/
//! catalog.rs), the embedded default cluster and the examples, the wrapper
//! go.mods the from-source build compiles (srcbuild/*/go.mod) and the golden
//! files. tests/make-mirror's versions are checked in artifacts_make_mirror.rs.

use hakube_build::artifacts::catalog::{self, FLANNEL_CNI_PLUGIN_BUILT_FROM};
use hakube_build::spec::{self, types::KubeVersion, types::SUPPORTED_MINORS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The default: the newest checked patch of the newest supported minor.
fn default_version() -> KubeVersion {
    let newest = SUPPORTED_MINORS[SUPPORTED_MINORS.len() - 1];
    format!("1.{}.{}", newest.minor, newest.newest_patch)
        .parse()
        .unwrap()
}

#[test]
fn the_default_cluster_and_the_examples_use_the_default_version() {
    assert_eq!(default_version().to_string(), "1.37.2");
    let c = spec::load(None).unwrap();
    assert_eq!(c.kubernetes_version, default_version());
    let dir = repo().join("profiles/examples");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let c = spec::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            c.kubernetes_version,
            default_version(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 3, "examples in {}", dir.display());
}

/// `module -> version` of the direct `require` lines of a go.mod (block and
/// single-line forms; `// indirect` ones name only what the built module
/// needs), and of the right-hand sides of its `replace` lines.
fn go_mod_versions(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut requires = BTreeMap::new();
    let mut replaces = BTreeMap::new();
    let mut block = "";
    for raw in text.lines() {
        let indirect = raw.contains("// indirect");
        let line = raw.split("//").next().unwrap().trim();
        if line == ")" {
            block = "";
            continue;
        }
        let (kind, rest) = match line.split_once(' ') {
            Some(("require", r)) => ("require", r.trim()),
            Some(("replace", r)) => ("replace", r.trim()),
            _ => (block, line),
        };
        if rest == "(" {
            block = kind;
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        match (kind, words.as_slice()) {
            ("require", [m, v]) if !indirect => {
                requires.insert(m.to_string(), v.to_string());
            }
            ("replace", [m, "=>", _, v]) | ("replace", [m, _, "=>", _, v]) => {
                replaces.insert(m.to_string(), v.to_string());
            }
            _ => {}
        }
    }
    (requires, replaces)
}

#[test]
fn go_mod_parser_reads_both_forms() {
    let (req, rep) = go_mod_versions(
        "module x\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.37.2\n\nrequire (\n\
         \tgithub.com/a/b v1.0.0 // indirect\n)\n\nreplace (\n\tk8s.io/api => k8s.io/api v0.37.2\n)\n\
         replace k8s.io/kms v0.0.0 => k8s.io/kms v0.37.2\n",
    );
    assert_eq!(req["k8s.io/kubernetes"], "v1.37.2");
    assert!(!req.contains_key("github.com/a/b"), "indirect");
    assert_eq!(rep["k8s.io/api"], "v0.37.2");
    assert_eq!(rep["k8s.io/kms"], "v0.37.2");
}

#[test]
fn srcbuild_go_mods_build_the_catalogue_versions() {
    let k8s = default_version();
    let c = catalog::companions_for(k8s);
    let v = |s: &str| format!("v{s}");
    // Module -> the versions the catalogue allows for it (a module may be
    // built at two versions, by two wrapper modules).
    let expected: BTreeMap<&str, Vec<String>> = [
        ("k8s.io/kubernetes", vec![k8s.tag()]),
        ("go.etcd.io/etcd/server/v3", vec![v(c.etcd.version)]),
        ("go.etcd.io/etcd/etcdctl/v3", vec![v(c.etcd.version)]),
        ("go.etcd.io/etcd/etcdutl/v3", vec![v(c.etcd.version)]),
        ("go.etcd.io/etcd/v3", vec![v(c.etcd.version)]),
        ("sigs.k8s.io/cri-tools", vec![v(c.crictl.version)]),
        (
            "github.com/containerd/containerd/v2",
            vec![v(c.containerd.version)],
        ),
        ("github.com/opencontainers/runc", vec![v(c.runc.version)]),
        (
            "github.com/containernetworking/plugins",
            vec![
                v(c.cni_plugins.version),
                v(FLANNEL_CNI_PLUGIN_BUILT_FROM.version),
            ],
        ),
        ("github.com/flannel-io/flannel", vec![v(c.flannel.version)]),
        ("github.com/coredns/coredns", vec![v(c.coredns.version)]),
    ]
    .into_iter()
    .collect();
    let staging = format!("v0.{}.{}", k8s.minor, k8s.patch);
    let dir = repo().join("srcbuild");
    let mut checked = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path().join("go.mod"))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for go_mod in &entries {
        let text = std::fs::read_to_string(go_mod).unwrap();
        let (requires, replaces) = go_mod_versions(&text);
        let module = text
            .lines()
            .find_map(|l| l.strip_prefix("module "))
            .unwrap_or_default()
            .trim()
            .to_string();
        for (m, allowed) in &expected {
            if let Some(got) = requires.get(*m) {
                assert!(
                    allowed.contains(got),
                    "{}: requires {m} {got}, the catalogue pins {allowed:?}",
                    go_mod.display()
                );
                checked.push(format!("{module}: {m} {got}"));
            }
        }
        if requires.contains_key("k8s.io/kubernetes") {
            // Every staging module at the release's v0.Y.Z.
            let k8s_io: Vec<(&String, &String)> = replaces
                .iter()
                .filter(|(m, _)| m.starts_with("k8s.io/"))
                .collect();
            assert!(k8s_io.len() > 20, "{}: staging replaces", go_mod.display());
            for (m, got) in k8s_io {
                if ["k8s.io/kube-openapi", "k8s.io/utils", "k8s.io/klog/v2"].contains(&m.as_str()) {
                    continue;
                }
                assert_eq!(got, &staging, "{}: replace {m}", go_mod.display());
            }
        }
    }
    assert!(
        checked
            .iter()
            .any(|c| c.contains("k8s.io/kubernetes v1.37.2")),
        "no srcbuild go.mod builds Kubernetes {k8s}: {checked:?}"
    );
    eprintln!("checked: {checked:#?}");
}

#[test]
fn golden_files_carry_the_catalogue_versions() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for m in SUPPORTED_MINORS {
        let dir = golden.join(format!("k8s-1.{}", m.minor));
        if !dir.is_dir() {
            // 1.36 has no golden files: its configs differ from 1.37's only in
            // the versions (render_config checks them all by parsing).
            assert_eq!(m.minor, 36, "{} missing", dir.display());
            continue;
        }
        let k8s: KubeVersion = format!("1.{}.{}", m.minor, m.newest_patch).parse().unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let init = read("master-1-init.yaml");
        assert!(
            init.contains(&format!("kubernetesVersion: \"{}\"\n", k8s.tag())),
            "{}: {init}",
            dir.display()
        );
        assert!(init.contains("apiVersion: \"kubeadm.k8s.io/v1beta4\""));
        assert!(!init.contains("v1beta3"));
        let containerd = read("containerd-config.toml");
        assert!(
            containerd.contains(&format!("sandbox = '{}'\n", catalog::pause_image(k8s))),
            "{}: {containerd}",
            dir.display()
        );
    }
    assert!(!golden.join("v1beta3").exists());
}

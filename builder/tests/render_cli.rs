//! `hakube-build render` end to end, with the real PKI: the embedded default
//! with no other argument, determinism across runs, Ignition equal to the
//! tree, and nothing written on bad input.

#[path = "common/render.rs"]
mod render_support;

use hakube_node_profile::{NodeProfile, Role};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hakube-build"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/render")
        .join(name)
}

/// `hakube-build render ARGS` in `cwd`. A calico cluster's masters are made
/// from calico's manifest, which a first build pins and caches: the stand-in
/// is pinned in `cwd` the same way and named with --lock and --cache-dir.
fn render(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.current_dir(cwd).arg("render").args(args);
    let spec = args
        .iter()
        .position(|a| *a == "--cluster")
        .map(|i| cwd.join(args[i + 1]));
    if let Some(Ok(c)) = spec.map(|f| hakube_build::spec::load(Some(&f))) {
        if c.cni.as_str() == "calico" {
            let (lock, cache) = (cwd.join("hakube.lock"), cwd.join("cache"));
            render_support::pin_calico_fixture(&c, &lock, &cache);
            cmd.arg("--lock").arg(lock).arg("--cache-dir").arg(cache);
        }
    }
    cmd.output().expect("running hakube-build")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>, u32),
    Link(PathBuf),
}

/// Every file and symlink under `root`, keyed by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Link(std::fs::read_link(&p).unwrap()));
            } else if meta.is_dir() {
                walk(root, &p, out);
            } else {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel, Entry::File(std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn default_cluster_renders_with_no_other_argument() {
    let cwd = tempfile::tempdir().unwrap();
    let stdout = ok(&render(cwd.path(), &["--out", "out"]));
    let nodes = ["master-1", "master-2", "master-3", "worker-1"];
    assert_eq!(stdout.lines().count(), nodes.len(), "{stdout}");
    for n in nodes {
        assert!(stdout.contains(n), "{stdout}");
        let dir = cwd.path().join("out").join(n);
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/hostname")).unwrap(),
            format!("{n}\n")
        );
        assert!(cwd.path().join(format!("out/{n}.ign")).is_file());
    }
    // The state landed in the working directory, private.
    let state = cwd.path().join(".hakube/hakube");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // The per-node apiserver certificate exists where kubeadm looks for it.
    assert!(cwd
        .path()
        .join("out/master-2/etc/kubernetes/pki/apiserver.crt")
        .is_file());
}

#[test]
fn rendering_twice_gives_identical_trees() {
    let cwd = tempfile::tempdir().unwrap();
    let spec = fixture("external-etcd.yaml");
    let spec = spec.to_str().unwrap();
    ok(&render(
        cwd.path(),
        &["--cluster", spec, "--state", "st", "--out", "a"],
    ));
    ok(&render(
        cwd.path(),
        &["--cluster", spec, "--state", "st", "--out", "b"],
    ));
    let a = snapshot(&cwd.path().join("a"));
    let b = snapshot(&cwd.path().join("b"));
    assert_eq!(a.len(), b.len());
    for (path, entry) in &a {
        assert_eq!(Some(entry), b.get(path), "{path} differs between runs");
    }
    // Rendering again into the same directory replaces it cleanly.
    ok(&render(
        cwd.path(),
        &["--cluster", spec, "--state", "st", "--out", "a"],
    ));
    assert_eq!(snapshot(&cwd.path().join("a")), b);
}

#[test]
fn ignition_holds_exactly_the_written_tree() {
    use base64::Engine as _;
    let cwd = tempfile::tempdir().unwrap();
    ok(&render(cwd.path(), &["--out", "out", "--node", "master-1"]));
    let out = cwd.path().join("out");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        2,
        "--node renders only that node"
    );
    let tree = snapshot(&out.join("master-1"));
    let text = std::fs::read_to_string(out.join("master-1.ign")).unwrap();
    let (config, _) = ignition_config::Config::parse_str(&text).unwrap();
    let ignition_config::Config::V3_4(config) = config else {
        panic!("expected Ignition 3.4");
    };
    let storage = config.storage.unwrap();
    let mut from_ign = BTreeMap::new();
    for f in storage.files.unwrap_or_default() {
        let src = f.contents.unwrap().source.unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(src.strip_prefix("data:;base64,").unwrap())
            .unwrap();
        let mode = u32::try_from(f.mode.unwrap()).unwrap();
        from_ign.insert(f.path[1..].to_string(), Entry::File(data, mode));
    }
    for l in storage.links.unwrap_or_default() {
        from_ign.insert(
            l.path[1..].to_string(),
            Entry::Link(l.target.unwrap().into()),
        );
    }
    assert_eq!(from_ign, tree);
}

#[test]
fn every_file_a_profile_names_is_in_its_tree_and_roles_hold_no_foreign_keys() {
    let ext = fixture("external-etcd.yaml");
    check_profiles(&["--cluster", ext.to_str().unwrap()], 9);
    check_profiles(&[], 4);
}

/// Every shipped example renders.
#[test]
fn every_example_cluster_renders() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let spec = e.unwrap().path();
        if spec.extension().is_some_and(|x| x == "yaml") {
            let cwd = tempfile::tempdir().unwrap();
            ok(&render(
                cwd.path(),
                &["--cluster", spec.to_str().unwrap(), "--out", "out"],
            ));
            n += 1;
        }
    }
    assert!(n >= 2, "no examples found in {}", dir.display());
}

fn check_profiles(spec_args: &[&str], expected_nodes: usize) {
    let cwd = tempfile::tempdir().unwrap();
    let mut args = spec_args.to_vec();
    args.extend(["--out", "out"]);
    ok(&render(cwd.path(), &args));
    let out = cwd.path().join("out");
    let mut roles = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let tree = snapshot(&dir);
        let profile = NodeProfile::from_json(
            &std::fs::read_to_string(dir.join("etc/hakube/node.json")).unwrap(),
        )
        .unwrap();
        roles.push(profile.role);
        let p = &profile.paths;
        let mut named: Vec<&String> = [
            &p.kubeadm_config,
            &p.kubeadm_join_config,
            &p.cni_manifest,
            &p.etcd_config,
            &p.admin_kubeconfig,
            &p.bootstrap_token,
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(c) = &p.etcd_client {
            named.extend([&c.ca_file, &c.cert_file, &c.key_file]);
        }
        for path in named {
            assert!(
                tree.contains_key(path.trim_start_matches('/')),
                "{}: profile names {path}, not in the tree",
                profile.node_name
            );
        }
        if profile.role != Role::Master {
            for key in ["ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"] {
                let path = format!("etc/kubernetes/pki/{key}");
                assert!(
                    !tree.contains_key(&path),
                    "{}: holds {path}",
                    profile.node_name
                );
            }
        }
        // The etcd config points at certificates the member holds.
        if profile.role == Role::Etcd {
            let conf = std::fs::read_to_string(dir.join("etc/etcd/etcd.conf.yml")).unwrap();
            for f in ["server.crt", "server.key", "peer.crt", "peer.key", "ca.crt"] {
                assert!(conf.contains(&format!("/etc/kubernetes/pki/etcd/{f}")));
                assert!(
                    tree.contains_key(&format!("etc/kubernetes/pki/etcd/{f}")),
                    "{f}"
                );
            }
        }
    }
    assert_eq!(roles.len(), expected_nodes);
}

#[test]
fn bad_spec_writes_nothing_and_exits_2() {
    let cwd = tempfile::tempdir().unwrap();
    let spec = cwd.path().join("bad.yaml");
    let good = std::fs::read_to_string(fixture("k8s-1.37.yaml")).unwrap();
    std::fs::write(&spec, good.replace("name: master-2", "name: Master_2")).unwrap();
    let out = render(cwd.path(), &["--cluster", "bad.yaml", "--out", "out"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("nodes[1]"),
        "{stderr}"
    );
    assert!(!cwd.path().join("out").exists());
    assert!(!cwd.path().join(".hakube").exists());
}

#[test]
fn calico_before_its_manifest_is_pinned_writes_nothing_and_exits_2() {
    let cwd = tempfile::tempdir().unwrap();
    // Lock and cache named, neither holding calico's manifest.
    let unpinned = |extra: &[&str]| {
        bin()
            .current_dir(cwd.path())
            .arg("render")
            .arg("--cluster")
            .arg(fixture("external-etcd.yaml"))
            .args([
                "--out",
                "out",
                "--lock",
                "none.lock",
                "--cache-dir",
                "cache",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = unpinned(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("calico-manifest")
            && stderr.contains("none.lock")
            && stderr.contains("a build"),
        "{stderr}"
    );
    assert!(!cwd.path().join("out").exists());
    assert!(!cwd.path().join(".hakube").exists());
    // A worker's tree needs no CNI manifest: it renders.
    ok(&unpinned(&["--node", "worker-1"]));
    assert!(cwd
        .path()
        .join("out/worker-1/etc/hakube/node.json")
        .is_file());
}

#[test]
fn unknown_node_names_the_nodes_and_writes_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let out = render(cwd.path(), &["--out", "out", "--node", "master-9"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master-9") && stderr.contains("master-1, master-2, master-3, worker-1"),
        "{stderr}"
    );
    assert!(!cwd.path().join("out").exists());
    assert!(!cwd.path().join(".hakube").exists());
}

//! tests/make-mirror against the real catalogue: its versions match the
//! default cluster's artifact set, and the mirror it builds resolves and
//! installs, giving a root whose Debian binaries run and whose doubles say
//! they are doubles.
//!
//! The mirror is built in `$HAKUBE_TEST_MIRROR` when set, else under cargo's
//! per-target temporary directory (kept between runs; the script is
//! idempotent, so a warm re-run only repacks).

use hakube_build::artifacts::{catalog, resolve, Request, Source};
use hakube_build::spec;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn script_var(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("tests/make-mirror sets no {name}"))
        .to_string()
}

#[test]
fn make_mirror_versions_match_the_catalogue() {
    let text = std::fs::read_to_string(repo().join("tests/make-mirror")).unwrap();
    let c = spec::load(None).unwrap();
    let set = catalog::for_cluster(&c);
    let version = |n: &str| set.iter().find(|a| a.name == n).unwrap().version.clone();
    assert_eq!(script_var(&text, "K8S_VERSION"), version("kubeadm"));
    assert_eq!(script_var(&text, "CRICTL_VERSION"), version("crictl"));
    assert_eq!(script_var(&text, "CNI_VERSION"), version("cni-plugins"));
    assert_eq!(
        script_var(&text, "CONTAINERD_VERSION"),
        version("containerd")
    );
    assert_eq!(script_var(&text, "RUNC_VERSION"), version("runc"));
    assert_eq!(script_var(&text, "ETCD_VERSION"), version("etcd"));
}

fn mirror() -> PathBuf {
    if let Some(m) = std::env::var_os("HAKUBE_TEST_MIRROR") {
        return PathBuf::from(m);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hakube-test-mirror");
    let status = Command::new(repo().join("tests/make-mirror"))
        .arg(&dir)
        .status()
        .expect("running tests/make-mirror");
    assert!(status.success(), "tests/make-mirror failed");
    dir
}

fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env(
            "HAKUBE_DOUBLE_LOG",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("double.log"),
        )
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(out.status.success(), "{} {args:?}: {out:?}", bin.display());
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_made_mirror_resolves_and_installs_runnable_binaries() {
    let m = mirror();
    let readme = std::fs::read_to_string(m.join("MIRROR-README.txt")).unwrap();
    assert!(readme.contains("TEST DOUBLE") && readme.contains("Debian containerd"));
    let c = spec::load(None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let req = Request {
        cluster: &c,
        source: Source::Mirror(m.display().to_string()),
        lock_path: tmp.path().join("hakube.lock"),
        cache_dir: tmp.path().join("cache"),
    };
    let resolved = resolve(&req).unwrap();
    assert_eq!(resolved.artifacts.len(), 8);
    let root = tmp.path().join("root");
    resolved.install_into(&root).unwrap();

    // Debian's real binaries, under the upstream paths.
    assert!(run(&root.join("usr/local/bin/etcd"), &["--version"]).contains("etcd Version: 3.4"));
    assert!(run(&root.join("usr/local/bin/etcdctl"), &["version"]).contains("3.4"));
    assert!(run(&root.join("usr/local/bin/ctr"), &["--version"]).contains("1.6"));
    assert!(run(&root.join("usr/local/sbin/runc"), &["--version"]).contains("runc version 1.1"));
    assert!(root.join("usr/local/bin/containerd-shim-runc-v2").is_file());
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(root.join("opt/cni/bin").join(p).is_file(), "{p}");
    }
    // The doubles answer by name and say what they are.
    assert_eq!(
        run(&root.join("usr/bin/kubeadm"), &["version", "-o", "short"]),
        "v1.37.2\n"
    );
    assert!(run(&root.join("usr/bin/kubelet"), &["--version"]).contains("TEST DOUBLE"));
    assert!(run(&root.join("usr/bin/kubectl"), &["version", "--client"]).contains("TEST DOUBLE"));
    assert!(run(&root.join("usr/local/bin/crictl"), &["version"]).contains("TEST DOUBLE"));
}

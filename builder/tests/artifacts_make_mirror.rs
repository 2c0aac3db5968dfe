//! tests/make-mirror against the real catalogue: the mirror it lays out from
//! the binaries srcbuild/build made from source resolves (URLs, checksum
//! files, archive layouts) and installs, and every installed binary is the
//! real tool at the catalogue's version.
//!
//! Needs `HAKUBE_TEST_MIRROR` (a mirror made by tests/make-mirror, as
//! scripts/test-all exports it) or `HAKUBE_SRCBUILD_BIN` (srcbuild/build's
//! output directory; the mirror is then made under cargo's per-target
//! temporary directory, kept between runs: a warm re-run changes nothing).

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

fn mirror() -> PathBuf {
    if let Some(m) = std::env::var_os("HAKUBE_TEST_MIRROR") {
        return PathBuf::from(m);
    }
    assert!(
        std::env::var_os("HAKUBE_SRCBUILD_BIN").is_some(),
        "set HAKUBE_TEST_MIRROR (tests/make-mirror DIR) or HAKUBE_SRCBUILD_BIN \
         (the directory srcbuild/build prints): this test runs the real binaries"
    );
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
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(out.status.success(), "{} {args:?}: {out:?}", bin.display());
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_contains(text: &str, want: &str, what: &str) {
    assert!(text.contains(want), "{what}: {want:?} not in {text:?}");
}

#[test]
fn the_mirror_resolves_and_installs_the_real_tools_at_the_catalogue_versions() {
    let m = mirror();
    let c = spec::load(None).unwrap();
    let set = catalog::for_cluster(&c);
    let version = |n: &str| {
        set.iter()
            .find(|a| a.name == n)
            .unwrap_or_else(|| panic!("the default cluster has no {n}"))
            .version
            .clone()
    };

    let readme = std::fs::read_to_string(m.join("MIRROR-README.txt")).unwrap();
    assert_contains(&readme, "BUILT FROM SOURCE", "MIRROR-README.txt");
    assert_contains(&readme, "h1:", "MIRROR-README.txt (module hashes)");
    assert!(!readme.contains("DOUBLE"), "the mirror names a double");

    let tmp = tempfile::tempdir().unwrap();
    let req = Request {
        cluster: &c,
        source: Source::Mirror(m.display().to_string()),
        lock_path: tmp.path().join("hakube.lock"),
        cache_dir: tmp.path().join("cache"),
    };
    let resolved = resolve(&req).unwrap();
    assert_eq!(resolved.artifacts.len(), set.len());
    let root = tmp.path().join("root");
    resolved.install_into(&root).unwrap();
    let bin = |p: &str| root.join(p);

    let k8s = format!("v{}", version("kubeadm"));
    assert_eq!(
        run(&bin("usr/bin/kubeadm"), &["version", "-o", "short"]),
        format!("{k8s}\n")
    );
    assert_eq!(
        run(&bin("usr/bin/kubelet"), &["--version"]),
        format!("Kubernetes {k8s}\n")
    );
    assert_contains(
        &run(&bin("usr/bin/kubectl"), &["version", "--client"]),
        &format!("Client Version: {k8s}"),
        "kubectl version",
    );
    assert_eq!(
        run(&bin("usr/local/bin/crictl"), &["--version"]),
        format!("crictl version v{}\n", version("crictl"))
    );
    let etcd = version("etcd");
    assert_contains(
        &run(&bin("usr/local/bin/etcd"), &["--version"]),
        &format!("etcd Version: {etcd}\n"),
        "etcd --version",
    );
    assert_contains(
        &run(&bin("usr/local/bin/etcdctl"), &["version"]),
        &format!("etcdctl version: {etcd}\n"),
        "etcdctl version",
    );
    let containerd = format!(" v{} ", version("containerd"));
    assert_contains(
        &run(&bin("usr/local/bin/containerd"), &["--version"]),
        &containerd,
        "containerd --version",
    );
    assert_contains(
        &run(&bin("usr/local/bin/ctr"), &["--version"]),
        &format!(
            "ctr github.com/containerd/containerd/v2{}",
            containerd.trim_end()
        ),
        "ctr --version",
    );
    assert!(bin("usr/local/bin/containerd-shim-runc-v2").is_file());
    let runc = run(&bin("usr/local/sbin/runc"), &["--version"]);
    assert_contains(
        &runc,
        &format!("runc version {}\n", version("runc")),
        "runc --version",
    );
    // kubeadm's static pods ask for the RuntimeDefault seccomp profile.
    assert_contains(&runc, "libseccomp: ", "runc --version (seccomp)");
    let cni = version("cni-plugins");
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        assert_contains(
            &run(&bin(&format!("opt/cni/bin/{p}")), &["--version"]),
            &format!("CNI {p} plugin v{cni}"),
            p,
        );
    }
}

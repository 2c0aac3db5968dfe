//! `Resolved::install_into`: paths, modes and times in the root filesystem,
//! and refusal of tarballs that try to escape it.

mod artifacts_support;

use artifacts_support::{tar_gz, Content};
use hakube_build::artifacts::catalog::{self, Layout};
use hakube_build::artifacts::{install, resolve, Request, Resolved, ResolvedArtifact, Source};
use hakube_build::spec;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn resolved_default(dir: &Path) -> Resolved {
    let c = spec::load(None).unwrap();
    let content = Content::for_specs(&catalog::for_cluster(&c));
    let mirror = dir.join("mirror");
    content.write_to(&mirror);
    resolve(&Request {
        cluster: &c,
        source: Source::Mirror(mirror.display().to_string()),
        lock_path: dir.join("hakube.lock"),
        cache_dir: dir.join("cache"),
    })
    .unwrap()
}

#[test]
fn installs_the_default_set_at_the_documented_paths() {
    let dir = tempfile::tempdir().unwrap();
    let r = resolved_default(dir.path());
    let root = dir.path().join("root");
    let written = r.install_listing(&root).unwrap();
    let got: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    let expected = [
        "opt/cni/bin/bridge",
        "opt/cni/bin/extra-tool",
        "opt/cni/bin/host-local",
        "opt/cni/bin/loopback",
        "opt/cni/bin/portmap",
        "usr/bin/kubeadm",
        "usr/bin/kubectl",
        "usr/bin/kubelet",
        "usr/local/bin/containerd",
        "usr/local/bin/containerd-shim-runc-v2",
        "usr/local/bin/crictl",
        "usr/local/bin/ctr",
        "usr/local/bin/etcd",
        "usr/local/bin/etcdctl",
        // Every binary of containerd's bin/ (upstream also ships containerd-stress and more).
        "usr/local/bin/extra-tool",
        "usr/local/sbin/runc",
    ];
    assert_eq!(got, expected);
    // LICENSE/README.md of the CNI tarball and files outside the prefix stay out.
    assert!(!root.join("opt/cni/bin/LICENSE").exists());
    assert!(!root.join("usr/local/bin/README").exists());
    for p in &written {
        let m = std::fs::metadata(root.join(p)).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755, "{}", p.display());
    }
    assert_eq!(
        std::fs::read(root.join("usr/bin/kubeadm")).unwrap(),
        std::fs::read(&r.get("kubeadm").unwrap().path).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/local/bin/etcd")).unwrap(),
        "#!/bin/sh\necho etcd 3.7.0\n"
    );
    // Installing again (a re-run over the same root) replaces, not fails.
    assert_eq!(r.install_listing(&root).unwrap(), written);
}

#[test]
fn times_are_clamped_to_source_date_epoch_or_zero() {
    let dir = tempfile::tempdir().unwrap();
    let r = resolved_default(dir.path());
    let kubeadm = r.get("kubeadm").unwrap();
    let etcd = r.get("etcd").unwrap();
    let layout = |a: &ResolvedArtifact| catalog::layout_for(&a.name, &a.version).unwrap();

    let root = dir.path().join("a");
    install::install(kubeadm, &layout(kubeadm), &root, None).unwrap();
    install::install(etcd, &layout(etcd), &root, None).unwrap();
    assert_eq!(
        std::fs::metadata(root.join("usr/bin/kubeadm"))
            .unwrap()
            .mtime(),
        0
    );
    // The archive's own time (the fixtures use 1700000000) when no epoch is set...
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin/etcd"))
            .unwrap()
            .mtime(),
        1_700_000_000
    );
    let root = dir.path().join("b");
    install::install(kubeadm, &layout(kubeadm), &root, Some(1_600_000_000)).unwrap();
    install::install(etcd, &layout(etcd), &root, Some(1_600_000_000)).unwrap();
    assert_eq!(
        std::fs::metadata(root.join("usr/bin/kubeadm"))
            .unwrap()
            .mtime(),
        1_600_000_000
    );
    // ...clamped down to SOURCE_DATE_EPOCH when it is older.
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin/etcd"))
            .unwrap()
            .mtime(),
        1_600_000_000
    );
}

fn crafted(dir: &Path, name: &str, version: &str, entries: &[(&str, &str)]) -> ResolvedArtifact {
    let entries: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(p, d)| (p.to_string(), d.as_bytes().to_vec()))
        .collect();
    let path: PathBuf = dir.join(format!("{name}.tgz"));
    std::fs::write(&path, tar_gz(&entries)).unwrap();
    ResolvedArtifact {
        name: name.into(),
        version: version.into(),
        url: format!("https://example.org/{name}.tgz"),
        sha256: "0".repeat(64),
        path,
    }
}

#[test]
fn tar_entries_escaping_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for evil in [
        "../../escaped",
        "/tmp/hakube-absolute-escape",
        "./bin/../../escaped",
    ] {
        let art = crafted(
            dir.path(),
            "cni-plugins",
            "1.9.1",
            &[("./bridge", "ok"), (evil, "owned")],
        );
        let root = dir.path().join("root/inner");
        let err = Resolved {
            artifacts: vec![art],
        }
        .install_into(&root)
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("absolute path or '..'"), "{evil}: {msg}");
        assert!(!dir.path().join("escaped").exists());
        assert!(!dir.path().join("root/escaped").exists());
    }
}

#[test]
fn a_tarball_missing_a_required_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let art = crafted(
        dir.path(),
        "containerd",
        "2.2.9",
        &[("bin/containerd", "x"), ("bin/ctr", "y")],
    );
    let err = Resolved {
        artifacts: vec![art],
    }
    .install_into(&dir.path().join("root"))
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("has no containerd-shim-runc-v2 under bin/"),
        "{err:#}"
    );
}

#[test]
fn every_catalogue_layout_targets_the_os_root_only() {
    let c = spec::load(None).unwrap();
    for a in catalog::for_versions(
        c.kubernetes_version,
        hakube_node_profile::Runtime::CriO,
        spec::model::Cni::Calico,
    ) {
        let dest = match &a.layout {
            Layout::File { dest, .. } => *dest,
            Layout::TarGz { dest_dir, .. } => *dest_dir,
        };
        // Relative, and never under etc/ or var/ (those belong to the per-node tree).
        assert!(!dest.starts_with('/') && !dest.contains(".."), "{dest}");
        assert!(
            dest.starts_with("usr/") || dest.starts_with("opt/"),
            "{dest}"
        );
    }
}

//! Artifact resolution against a fake upstream served on 127.0.0.1:
//! pinning, the offline cache, refusal of tampered and partial downloads,
//! concurrency, mirror layouts and the unreachable-upstream message.

mod artifacts_support;

use artifacts_support::{cache_names, fake_body, sha256_hex, Content, Reply, Server};
use hakube_build::artifacts::catalog::{self, ArtifactSpec};
use hakube_build::artifacts::fetch::{DefaultTransport, Location, Transport};
use hakube_build::artifacts::{resolve, resolve_with, Request, Resolved, Source};
use hakube_build::spec::{self, Cluster};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn default_cluster() -> Cluster {
    spec::load(None).unwrap()
}

fn cluster_with_version(dir: &Path, version: &str) -> Cluster {
    let yaml = spec::DEFAULT_CLUSTER_YAML.replace(
        "kubernetesVersion: 1.37.2",
        &format!("kubernetesVersion: {version}"),
    );
    assert_ne!(yaml, spec::DEFAULT_CLUSTER_YAML);
    let p = dir.join(format!("cluster-{version}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    spec::load(Some(&p)).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    lock: PathBuf,
    cache: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    Setup {
        lock: dir.path().join("hakube.lock"),
        cache: dir.path().join("cache"),
        root: dir.path().to_path_buf(),
        _dir: dir,
    }
}

fn request<'a>(c: &'a Cluster, s: &Setup, source: Source) -> Request<'a> {
    Request {
        cluster: c,
        source,
        lock_path: s.lock.clone(),
        cache_dir: s.cache.clone(),
    }
}

fn specs(c: &Cluster) -> Vec<ArtifactSpec> {
    catalog::for_cluster(c)
}

fn lock_json(s: &Setup) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&s.lock).unwrap()).unwrap()
}

fn assert_resolved_matches(r: &Resolved, content: &Content) {
    for a in &r.artifacts {
        let body = content.body(&a.url);
        assert_eq!(a.sha256, sha256_hex(body), "{}", a.name);
        assert_eq!(std::fs::read(&a.path).unwrap(), body, "{}", a.name);
    }
}

#[test]
fn first_resolution_pins_from_checksum_files_and_a_rebuild_needs_no_network() {
    let c = default_cluster();
    let content = Content::for_specs(&specs(&c));
    let server = Server::start(&content);
    let s = setup();
    let r = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap();
    let names: Vec<&str> = r.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kubeadm",
            "kubelet",
            "kubectl",
            "crictl",
            "cni-plugins",
            "containerd",
            "runc",
            "etcd"
        ]
    );
    assert_resolved_matches(&r, &content);
    // Every checksum file was read once, every artifact downloaded once.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 16, "{reqs:#?}");
    assert!(reqs.contains(&"/dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm.sha256".into()));
    assert!(reqs.contains(&"/github.com/etcd-io/etcd/releases/download/v3.7.0/SHA256SUMS".into()));

    let lock = lock_json(&s);
    let entries = lock["artifacts"].as_array().unwrap();
    assert_eq!(entries.len(), 8);
    for a in &r.artifacts {
        let e = entries.iter().find(|e| e["url"] == a.url.as_str()).unwrap();
        assert_eq!(e["sha256"], a.sha256.as_str());
        assert_eq!(e["version"], a.version.as_str());
        assert_eq!(e["size"], content.body(&a.url).len() as u64);
        assert!(e["pinnedFrom"].as_str().unwrap().starts_with("https://"));
        // ... and where the pin was really read: this mirror.
        let from = e["resolvedFrom"].as_str().unwrap();
        assert!(
            from.starts_with(server.url().trim_end_matches('/')),
            "{from}"
        );
    }
    let lock_text = std::fs::read_to_string(&s.lock).unwrap();

    // The server is gone: the rebuild is served from lock and cache alone.
    server.stop();
    let again = resolve(&request(
        &c,
        &s,
        Source::Mirror("http://127.0.0.1:9/".into()),
    ))
    .unwrap();
    assert_eq!(
        again
            .artifacts
            .iter()
            .map(|a| (&a.sha256, &a.path))
            .collect::<Vec<_>>(),
        r.artifacts
            .iter()
            .map(|a| (&a.sha256, &a.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read_to_string(&s.lock).unwrap(), lock_text);
    // Upstream source too: no request is made at all.
    resolve(&request(&c, &s, Source::Upstream)).unwrap();
}

#[test]
fn pinned_artifacts_never_reread_the_checksum_file() {
    let c = default_cluster();
    let content = Content::for_specs(&specs(&c));
    let server = Server::start(&content);
    let s = setup();
    resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap();
    // Empty the cache and poison every checksum file: the pins still rule.
    std::fs::remove_dir_all(&s.cache).unwrap();
    for spec in specs(&c) {
        if let catalog::Checksum::File { url, .. } = &spec.checksum {
            server.set(
                url,
                Reply::Full(format!("{}\n", "f".repeat(64)).into_bytes()),
            );
        }
    }
    let before = server.requests().len();
    let r = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap();
    assert_resolved_matches(&r, &content);
    let later = &server.requests()[before..];
    assert_eq!(later.len(), 8, "{later:#?}");
    assert!(later.iter().all(|p| !p.ends_with(".sha256")
        && !p.ends_with(".sha256sum")
        && !p.ends_with("SHA256SUMS")));
}

#[test]
fn a_tampered_download_is_refused_and_not_cached() {
    let c = default_cluster();
    let all = specs(&c);
    let content = Content::for_specs(&all);
    let server = Server::start(&content);
    let s = setup();
    resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap();
    std::fs::remove_dir_all(&s.cache).unwrap();

    let kubeadm = &all[0];
    let good = sha256_hex(content.body(&kubeadm.url));
    let evil = b"#!/bin/sh\necho owned\n".to_vec();
    let evil_hex = sha256_hex(&evil);
    server.set(&kubeadm.url, Reply::Full(evil));
    let err = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing kubeadm v1.37.2"), "{msg}");
    assert!(msg.contains(&kubeadm.url), "{msg}");
    assert!(msg.contains(&good) && msg.contains(&evil_hex), "{msg}");
    assert!(msg.contains(&s.lock.display().to_string()), "{msg}");
    // The refusal names where the pin was first resolved from.
    let sums = format!("{}.sha256", kubeadm.url);
    let read_at = format!("{}/dl.k8s.io/", server.url().trim_end_matches('/'));
    assert!(
        msg.contains(&format!("pinned from {sums} as read from {read_at}")),
        "{msg}"
    );
    assert!(
        cache_names(&s.cache).is_empty(),
        "{:?}",
        cache_names(&s.cache)
    );
}

#[test]
fn a_download_that_contradicts_the_checksum_file_is_refused_on_first_resolution() {
    let c = default_cluster();
    let all = specs(&c);
    let content = Content::for_specs(&all);
    let server = Server::start(&content);
    let runc = all.iter().find(|a| a.name == "runc").unwrap();
    server.set(&runc.url, Reply::Full(b"not runc".to_vec()));
    let s = setup();
    let err = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing runc v1.5.2"), "{msg}");
    assert!(msg.contains("runc.sha256sum"), "{msg}");
    assert!(!cache_names(&s.cache).contains(&sha256_hex(b"not runc")));
    // The pin from the checksum file is kept, so the next try checks the same.
    let lock = lock_json(&s);
    let pinned = lock["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "runc")
        .unwrap()
        .clone();
    assert_eq!(pinned["sha256"], sha256_hex(content.body(&runc.url)));
}

#[test]
fn a_partial_download_leaves_no_cache_entry() {
    let c = default_cluster();
    let all = specs(&c);
    let content = Content::for_specs(&all);
    let server = Server::start(&content);
    let kubelet = all.iter().find(|a| a.name == "kubelet").unwrap();
    let body = content.body(&kubelet.url).to_vec();
    let cut = body.len() / 2;
    server.set(&kubelet.url, Reply::Truncated(body.clone(), cut));
    let s = setup();
    let err = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot download kubelet v1.37.2"), "{msg}");
    assert!(msg.contains("--artifacts"), "{msg}");
    let names = cache_names(&s.cache);
    assert!(!names.contains(&sha256_hex(&body)));
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temporary left: {names:?}"
    );
    // The interrupted file is fetched whole next time.
    server.set(&kubelet.url, Reply::Full(body.clone()));
    let r = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap();
    assert_resolved_matches(&r, &content);
}

#[test]
fn concurrent_resolves_share_the_cache_safely() {
    let c = default_cluster();
    let content = Content::for_specs(&specs(&c));
    let server = Server::start(&content);
    let s = setup();
    let url = server.url();
    let results: Vec<Resolved> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let req = request(&c, &s, Source::Mirror(url.clone()));
                scope.spawn(move || resolve(&req).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_resolved_matches(r, &content);
    }
    for name in cache_names(&s.cache) {
        assert!(!name.starts_with('.'), "temporary left: {name}");
        let bytes = std::fs::read(s.cache.join("artifacts/sha256").join(&name)).unwrap();
        assert_eq!(sha256_hex(&bytes), name);
    }
    assert_eq!(lock_json(&s)["artifacts"].as_array().unwrap().len(), 8);
}

#[test]
fn a_directory_mirror_and_a_file_url_mirror_work() {
    let c = default_cluster();
    let content = Content::for_specs(&specs(&c));
    let s = setup();
    let mirror = s.root.join("mirror");
    content.write_to(&mirror);
    let r = resolve(&request(
        &c,
        &s,
        Source::Mirror(mirror.display().to_string()),
    ))
    .unwrap();
    assert_resolved_matches(&r, &content);
    // The lock records upstream URLs, not the mirror's.
    assert!(std::fs::read_to_string(&s.lock)
        .unwrap()
        .contains("\"url\": \"https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm\""));
    // ... and the mirror's path as where each pin was read.
    let lock = lock_json(&s);
    for e in lock["artifacts"].as_array().unwrap() {
        let from = e["resolvedFrom"].as_str().unwrap();
        assert!(from.starts_with(&mirror.display().to_string()), "{from}");
    }

    let s2 = setup();
    let r2 = resolve(&request(
        &c,
        &s2,
        Source::Mirror(format!("file://{}", mirror.display())),
    ))
    .unwrap();
    assert_resolved_matches(&r2, &content);
}

#[test]
fn a_mirror_without_the_file_names_it_and_the_layout() {
    let c = default_cluster();
    let mut content = Content::for_specs(&specs(&c));
    content
        .files
        .remove("github.com/opencontainers/runc/releases/download/v1.5.2/runc.amd64");
    let s = setup();
    let mirror = s.root.join("mirror");
    content.write_to(&mirror);
    let err = resolve(&request(
        &c,
        &s,
        Source::Mirror(mirror.display().to_string()),
    ))
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "cannot download runc v1.5.2 from {}/github.com/opencontainers/runc/releases/download/v1.5.2/runc.amd64",
            mirror.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("<mirror>/<host>/<path>"), "{msg}");
}

#[test]
fn changing_the_kubernetes_version_adds_entries_and_keeps_the_others() {
    let s = setup();
    let c37 = default_cluster();
    let c36 = cluster_with_version(&s.root, "1.36.3");
    let mut both = specs(&c37);
    both.extend(specs(&c36));
    let content = Content::for_specs(&both);
    let server = Server::start(&content);
    resolve(&request(&c37, &s, Source::Mirror(server.url()))).unwrap();
    let first = lock_json(&s)["artifacts"].as_array().unwrap().clone();
    resolve(&request(&c36, &s, Source::Mirror(server.url()))).unwrap();
    let second = lock_json(&s)["artifacts"].as_array().unwrap().clone();
    for e in &first {
        assert!(second.contains(e), "entry changed or lost: {e}");
    }
    // cni-plugins, containerd and runc are shared by 1.36 and 1.37: one
    // entry each. kubeadm, kubelet, kubectl, crictl and etcd are new.
    assert_eq!(second.len(), first.len() + 5);
    assert!(second
        .iter()
        .any(|e| e["name"] == "kubeadm" && e["version"] == "1.36.3"));
    // Sorted by name, then version.
    let keys: Vec<(String, String)> = second
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

/// Sends requests for `https://HOST/PATH` to a closed local port, standing in
/// for a machine without access to the upstream hosts.
struct Offline {
    port: u16,
    inner: DefaultTransport,
}

impl Transport for Offline {
    fn get(
        &self,
        loc: &Location,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> anyhow::Result<u64> {
        let Location::Http(u) = loc else {
            panic!("upstream is http")
        };
        let redirected = u.replacen("https://", &format!("http://127.0.0.1:{}/", self.port), 1);
        self.inner.get(&Location::Http(redirected), out, progress)
    }
}

#[test]
fn an_unreachable_upstream_fails_fast_naming_the_artifacts_option() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let c = default_cluster();
    let s = setup();
    let t = Instant::now();
    let err = resolve_with(
        &request(&c, &s, Source::Upstream),
        &Offline {
            port,
            inner: DefaultTransport::new(),
        },
    )
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10));
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with("cannot download the checksum file of kubeadm v1.37.2 from https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm.sha256: "),
        "{msg}"
    );
    assert!(
        msg.contains("hint: this machine cannot reach the upstream release locations"),
        "{msg}"
    );
    assert!(msg.contains("--artifacts DIR_OR_URL"), "{msg}");
    // Nothing pinned, nothing cached.
    assert!(!s.lock.exists());
    assert!(cache_names(&s.cache).is_empty());
}

#[test]
fn calico_manifest_is_pinned_on_first_use() {
    let s = setup();
    let yaml = spec::DEFAULT_CLUSTER_YAML.replace("cni: flannel", "cni: calico");
    let p = s.root.join("calico.yaml");
    std::fs::write(&p, yaml).unwrap();
    let c = spec::load(Some(&p)).unwrap();
    let all = specs(&c);
    let content = Content::for_specs(&all);
    let server = Server::start(&content);
    let r = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap();
    let calico = r.get("calico-manifest").unwrap();
    let spec = all.iter().find(|a| a.name == "calico-manifest").unwrap();
    assert_eq!(calico.sha256, sha256_hex(&fake_body(spec)));
    let lock = lock_json(&s);
    let e = lock["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "calico-manifest")
        .unwrap()
        .clone();
    assert_eq!(e["pinnedFrom"], "trust-on-first-use");
    // From then on the pin is enforced like any other.
    std::fs::remove_dir_all(&s.cache).unwrap();
    server.set(&spec.url, Reply::Full(b"kind: Changed\n".to_vec()));
    let err = resolve(&request(&c, &s, Source::Mirror(server.url()))).unwrap_err();
    assert!(format!("{err:#}").contains("refusing calico-manifest"));
}

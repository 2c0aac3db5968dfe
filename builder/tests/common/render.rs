//! Rendering for tests: fixed join credentials, so rendered files (and the
//! golden files compared with them) never depend on a state directory.

// Each test crate that includes this file uses part of it.
#![allow(dead_code)]

use hakube_build::render::{JoinCredentials, Upstream, UpstreamFile};

pub fn fixed_creds() -> JoinCredentials {
    JoinCredentials {
        token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "0f".repeat(32)),
        cluster_initialised: false,
    }
}

/// calico's manifest install as the tests have it: a stand-in written for
/// them (GitHub, where calico publishes it, is unreachable here).
pub const CALICO_FIXTURE: &str = include_str!("../fixtures/cni/calico.yaml");

/// The upstream files trees are made from, as the tests have them.
pub fn upstream() -> Upstream<'static> {
    Upstream {
        calico: Some(UpstreamFile {
            origin: "tests/fixtures/cni/calico.yaml",
            text: CALICO_FIXTURE,
        }),
    }
}

/// Pins the calico stand-in in `lock` and stores it in `cache` the way a
/// first build does (trusted on first use), so `hakube-build render` and
/// `summary` find it there.
pub fn pin_calico_fixture(
    cluster: &hakube_build::spec::Cluster,
    lock: &std::path::Path,
    cache: &std::path::Path,
) {
    pin_artifact(
        cluster,
        hakube_build::render::CALICO_MANIFEST_ARTIFACT,
        CALICO_FIXTURE.as_bytes(),
        "tests/fixtures/cni/calico.yaml",
        lock,
        cache,
    );
}

/// Pins `bytes` as `cluster`'s artifact `name` in `lock` and stores them in
/// `cache`, as a build does once it has fetched them from `origin`.
pub fn pin_artifact(
    cluster: &hakube_build::spec::Cluster,
    name: &str,
    bytes: &[u8],
    origin: &str,
    lock: &std::path::Path,
    cache: &std::path::Path,
) {
    use hakube_build::artifacts::{cache::Cache, catalog, lock};
    use std::io::Write;
    let spec = catalog::for_cluster(cluster)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not an artifact of the cluster"));
    let stored = Cache::new(cache)
        .store(None, |w: &mut dyn Write| Ok(w.write_all(bytes)?))
        .unwrap()
        .unwrap();
    let mut l = lock::Lock::load(lock).unwrap();
    l.upsert(lock::LockEntry {
        name: spec.name.into(),
        version: spec.version.clone(),
        url: spec.url.clone(),
        sha256: stored.sha256,
        size: Some(stored.size),
        pinned_from: lock::FROM_TRUST_ON_FIRST_USE.into(),
        resolved_from: Some(origin.into()),
    });
    l.merge_and_save(lock).unwrap();
}

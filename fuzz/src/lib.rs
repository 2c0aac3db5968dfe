//! One harness per parser of outside data. Each takes arbitrary bytes and
//! must return without panicking; where a parser has an inverse, the harness
//! also checks the round trip. The fuzz targets (fuzz_targets/*.rs) and the
//! regression replay (tests/regressions.rs) call the same functions.

use hakube_build::artifacts::fetch::{self, Location};
use hakube_build::artifacts::lock::{self, Lock};
use hakube_build::artifacts::Source;
use hakube_build::errors::exit_code;
use hakube_build::spec::{self, SpecSource};
use hakube_node_profile::NodeProfile;
use std::path::Path;
use std::sync::OnceLock;

/// A harness: arbitrary bytes in, a panic on a defect.
pub type Harness = fn(&[u8]);

/// Every harness, by name (the fuzz target's and the regression directory's).
pub const HARNESSES: &[(&str, Harness)] = &[
    ("spec", spec),
    ("lock", lock),
    ("checksum", checksum),
    ("mirror", mirror),
    ("node_profile", node_profile),
    ("journal", journal),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The cluster spec: parser, role-profile defaults and cross-field
/// validation. A refusal is bad input (exit 2) naming the file.
pub fn spec(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let source = SpecSource::File("fuzz.yaml".into());
    match spec::parse(t, source) {
        Ok(c) => {
            // A spec that resolves must also summarise.
            let _ = hakube_build::summary::to_json(&c);
            let _ = hakube_build::summary::to_text(&c);
        }
        Err(e) => {
            assert_eq!(e.file, "fuzz.yaml", "{e}");
            let err = anyhow::Error::from(e);
            assert_eq!(exit_code(&err), 2, "{err:#}");
        }
    }
}

/// `hakube.lock`: bad input or a lock whose text parses back to itself.
pub fn lock(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let path = Path::new("fuzz.lock");
    match Lock::parse(t, path) {
        Ok(l) => {
            let again = Lock::parse(&l.to_text(), path).expect("a lock's own text parses");
            assert_eq!(again, l);
            for e in l.entries() {
                let _ = e.origin();
            }
        }
        Err(e) => {
            assert_eq!(exit_code(&e), 2, "{e:#}");
            assert!(format!("{e}").contains("fuzz.lock"), "{e:#}");
        }
    }
}

/// A checksum file (`hex`, or `hex  name` lines): first line is the entry
/// looked up, the rest the file. A digest found is 64 lower-case hex digits.
pub fn checksum(data: &[u8]) {
    let t = String::from_utf8_lossy(data);
    let (entry, body) = t.split_once('\n').unwrap_or((&t, ""));
    if let Ok(hex) = lock::parse_checksum_file(body, entry) {
        assert!(lock::is_sha256_hex(&hex), "{hex:?}");
    }
}

/// Mirror locations: `--artifacts` value (first line) and a catalogue URL
/// (second line) mapped to where the build reads it. A mirror path never
/// escapes the mirror through the URL.
pub fn mirror(data: &[u8]) {
    let t = String::from_utf8_lossy(data);
    let mut lines = t.splitn(2, '\n');
    let (m, url) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    for source in [Source::Upstream, Source::Mirror(m.to_string())] {
        if let Ok(loc) = fetch::locate(&source, url) {
            let _ = loc.to_string();
            if let (Source::Mirror(m), Location::File(p)) = (&source, &loc) {
                let dir = m.strip_prefix("file://").unwrap_or(m);
                assert!(p.starts_with(dir), "{} outside {dir}", p.display());
            }
        }
    }
}

/// The node profile firstboot reads: refused, or round-trips through its
/// own JSON.
pub fn node_profile(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(p) = NodeProfile::from_json(t) {
        let again = NodeProfile::from_json(&p.to_json()).expect("a profile's own JSON parses");
        assert_eq!(again.to_json(), p.to_json());
    }
}

/// A valid node profile, for the journal harness.
const PROFILE: &str = r#"{
  "profileVersion": 1, "clusterName": "t", "kubernetesVersion": "1.31.4",
  "nodeName": "e1", "role": "etcd", "address": "127.0.0.11", "initNode": false,
  "runtime": "containerd", "etcdTopology": "external",
  "endpoint": {"mode": "vip", "host": "127.0.0.30", "port": 8443},
  "localLb": {"enabled": false, "port": 7443},
  "masters": [{"name": "m1", "address": "127.0.0.21"}],
  "etcdMembers": [{"name": "e1", "address": "127.0.0.11",
    "peerUrl": "https://127.0.0.11:2380", "clientUrl": "https://127.0.0.11:2379"}],
  "labels": {}, "taints": [],
  "paths": {"etcdConfig": "/etc/etcd/etcd.conf.yml", "etcdDataDir": "/var/lib/etcd",
    "kubeletKubeconfig": "/etc/kubernetes/kubelet.conf"}
}"#;

/// A node root holding [`PROFILE`]; the journal harness rewrites its journal.
fn node_root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let d = tempfile::tempdir().expect("a temporary directory");
        let p = d.path().join("etc/hakube/node.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, PROFILE).unwrap();
        d
    })
    .path()
}

/// The firstboot journal as `hakube-firstboot status` reads it after a
/// power cut: whatever is on disk, status reports or refuses it.
pub fn journal(data: &[u8]) {
    let root = node_root();
    let path = hakube_firstboot::journal::Journal::path_under(root);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    // No boot disk under the root: the OS slots part says it is unavailable
    // (no command is run; the fake runner answers none).
    let cmd = hakube_firstboot::fakes::FakeRunner::new();
    let os = hakube_firstboot::update::platform(root, &cmd, &hakube_firstboot::system::SystemClock);
    for json in [false, true] {
        if let Ok(s) = hakube_firstboot::status(root, json, &os) {
            assert!(!s.is_empty());
        }
    }
}

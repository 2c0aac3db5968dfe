//! The TEST DOUBLE as a process: dispatch on argv[0], files written under
//! $HAKUBE_DOUBLE_ROOT, the invocation log, and the state file that stands
//! in for the API server.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hakube-test-double");

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let s = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(s.root()).unwrap();
        // argv[0] dispatch: the double under the real tools' names.
        for t in ["kubeadm", "kubelet", "kubectl", "crictl"] {
            std::os::unix::fs::symlink(BIN, s.dir.path().join(t)).unwrap();
        }
        s
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("log/double.log")
    }
    fn put(&self, path: &str, text: &str) {
        let p = self.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn run(&self, tool: &str, args: &[&str], state: bool) -> Output {
        let mut c = Command::new(self.dir.path().join(tool));
        c.args(args)
            .env("HAKUBE_DOUBLE_ROOT", self.root())
            .env("HAKUBE_DOUBLE_LOG", self.log());
        if state {
            c.env("HAKUBE_DOUBLE_STATE", self.dir.path().join("state.json"));
        }
        c.output().unwrap()
    }
    fn exists(&self, path: &str) -> bool {
        self.root().join(path.trim_start_matches('/')).exists()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
// A placeholder, split so no tracked file carries a PEM private-key header.
const KEY: &str = concat!(
    "-----BEGIN PRIVATE",
    " KEY-----\nMIG\n-----END PRIVATE",
    " KEY-----\n"
);

const INIT: &str = "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  ttl: 8760h
nodeRegistration:
  name: master-1
  criSocket: unix:///run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.4
controlPlaneEndpoint: 192.168.122.10:8443
";

fn with_pki(s: &Sandbox) {
    for c in ["ca.crt", "front-proxy-ca.crt", "etcd/ca.crt"] {
        s.put(&format!("/etc/kubernetes/pki/{c}"), CERT);
    }
    s.put("/etc/kubernetes/pki/ca.key", KEY);
}

#[test]
fn kubeadm_init_writes_what_later_steps_need_and_refuses_a_second_init() {
    let s = Sandbox::new();
    with_pki(&s);
    s.put("/etc/hakube/kubeadm/init.yaml", INIT);
    let o = s.run(
        "kubeadm",
        &[
            "init",
            "--config",
            "/etc/hakube/kubeadm/init.yaml",
            "--skip-phases=addon/kube-proxy",
        ],
        true,
    );
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/manifests/kube-controller-manager.yaml",
        "/etc/kubernetes/manifests/kube-scheduler.yaml",
        "/etc/kubernetes/manifests/etcd.yaml",
        "/var/lib/kubelet/config.yaml",
    ] {
        assert!(s.exists(f), "{f}");
    }
    let manifest = std::fs::read_to_string(
        s.root()
            .join("etc/kubernetes/manifests/kube-apiserver.yaml"),
    )
    .unwrap();
    assert!(manifest.contains("TEST DOUBLE"));

    // The log holds argv and the config's hash.
    let log = std::fs::read_to_string(s.log()).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(line["tool"], "kubeadm");
    assert_eq!(line["argv"][0], "init");
    assert_eq!(line["ok"], true);
    assert_eq!(
        line["files"]["/etc/hakube/kubeadm/init.yaml"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // kubeadm's preflight refuses to initialise twice.
    let o = s.run(
        "kubeadm",
        &["init", "--config", "/etc/hakube/kubeadm/init.yaml"],
        true,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml"),
        "{}",
        text(&o)
    );

    // The state stands in for the API server.
    let o = s.run("kubectl", &["get", "node", "master-1", "-o", "json"], true);
    assert!(o.status.success(), "{}", text(&o));
    let node: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(node["status"]["conditions"][0]["type"], "Ready");
    assert!(s
        .run(
            "kubectl",
            &["label", "node", "master-1", "hakube.io/role=master"],
            true
        )
        .status
        .success());
    assert!(s
        .run(
            "kubectl",
            &["taint", "node", "master-1", "dedicated=etcd:NoSchedule"],
            true
        )
        .status
        .success());
    let node: serde_json::Value = serde_json::from_slice(
        &s.run("kubectl", &["get", "node", "master-1", "-o", "json"], true)
            .stdout,
    )
    .unwrap();
    assert_eq!(node["metadata"]["labels"]["hakube.io/role"], "master");
    assert!(node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "dedicated"));
    let tokens = text(&s.run("kubeadm", &["token", "list"], true));
    assert!(tokens.contains("abcdef.0123456789abcdef"), "{tokens}");

    assert!(s.run("kubeadm", &["reset", "-f"], true).status.success());
    assert!(!s.exists("/etc/kubernetes/manifests/kube-apiserver.yaml"));
}

#[test]
fn kubeadm_refuses_bad_configs_and_missing_certificates() {
    let s = Sandbox::new();
    s.put("/init.yaml", INIT);
    let o = s.run("kubeadm", &["init", "--config", "/init.yaml"], false);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("/etc/kubernetes/pki/ca.crt"),
        "{}",
        text(&o)
    );
    assert!(!s.exists("/etc/kubernetes/kubelet.conf"));

    with_pki(&s);
    s.put(
        "/bad.yaml",
        &INIT.replace("controlPlaneEndpoint", "controlPlaneEndPoint"),
    );
    let o = s.run("kubeadm", &["init", "--config", "/bad.yaml"], false);
    assert!(
        text(&o).contains("unknown field") && text(&o).contains("controlPlaneEndPoint"),
        "{}",
        text(&o)
    );
    let o = s.run(
        "kubeadm",
        &[
            "init",
            "--config",
            "/init.yaml",
            "--cri-socket",
            "unix:///run/containerd/containerd.sock",
        ],
        false,
    );
    assert!(text(&o).contains("can not mix '--config'"), "{}", text(&o));
    // Without a state file the API is unreachable, as for the real kubectl.
    let o = s.run("kubectl", &["get", "node", "x", "-o", "json"], false);
    assert!(text(&o).contains("was refused"), "{}", text(&o));
}

#[test]
fn kubeadm_join_checks_discovery_and_control_plane_certificates() {
    let s = Sandbox::new();
    let hash = format!("sha256:{}", "a".repeat(64));
    let join = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\nnodeRegistration:\n  name: worker-1\n  kubeletExtraArgs:\n  - name: node-ip\n    value: 192.168.122.21\ndiscovery:\n  bootstrapToken:\n    token: abcdef.0123456789abcdef\n    apiServerEndpoint: 127.0.0.1:7443\n    caCertHashes: [\"{hash}\"]\n"
    );
    s.put("/join.yaml", &join);
    let o = s.run("kubeadm", &["join", "--config", "/join.yaml"], true);
    assert!(o.status.success(), "{}", text(&o));
    assert!(s.exists("/etc/kubernetes/kubelet.conf"));
    assert!(!s.exists("/etc/kubernetes/manifests/kube-apiserver.yaml"));

    s.put(
        "/nohash.yaml",
        &join.replace(&format!("    caCertHashes: [\"{hash}\"]\n"), ""),
    );
    let o = s.run("kubeadm", &["join", "--config", "/nohash.yaml"], false);
    assert!(text(&o).contains("caCertHashes"), "{}", text(&o));

    let cp =
        format!("{join}controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: 192.168.122.12\n");
    s.put("/cp.yaml", &cp);
    let o = s.run(
        "kubeadm",
        &[
            "join",
            "--config",
            "/cp.yaml",
            "--ignore-preflight-errors=all",
        ],
        false,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("/etc/kubernetes/pki/ca.key") || text(&o).contains("ca.crt"),
        "{}",
        text(&o)
    );
}

#[test]
fn kubelet_and_crictl_identify_as_doubles() {
    let s = Sandbox::new();
    let o = s.run("kubelet", &["--version"], false);
    assert!(text(&o).contains("TEST DOUBLE"));
    let o = s.run(
        "kubelet",
        &["--config", "/var/lib/kubelet/config.yaml"],
        false,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("/var/lib/kubelet/config.yaml"));
    let o = s.run("crictl", &["info"], false);
    assert!(o.status.success());
}

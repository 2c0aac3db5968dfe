//! Shared harness of firstboot's integration tests: a cluster rendered by
//! `hakube-build render` into per-node trees (each tree is a node's --root),
//! and a real three-member etcd (built from source: `HAKUBE_SRCBUILD_BIN`) on 127.0.0.11-13
//! with unique ports per scenario. See etcd_real.rs for what is real.

// Each test target uses a different part of the harness.
#![allow(dead_code)]

use hakube_firstboot::fakes::{FakeProbe, FakeRunner, FakeServices};
use hakube_firstboot::steps::{Env, Waits};
use hakube_firstboot::system::{Output, ServiceManager, SystemClock};
use hakube_node_profile::{NodeProfile, PROFILE_PATH};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A real binary built from source (`HAKUBE_SRCBUILD_BIN`, the directory
/// `srcbuild/build` prints): the test fails, never skips, without it.
pub fn srcbuild_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("HAKUBE_SRCBUILD_BIN").unwrap_or_else(|| {
        panic!(
            "HAKUBE_SRCBUILD_BIN is not set: point it at the directory of the binaries built \
             from source (`srcbuild/build` prints it) to run this test; it needs {name}"
        )
    });
    let path = Path::new(&dir).join(name);
    assert!(
        path.is_file(),
        "HAKUBE_SRCBUILD_BIN={}: no {name} there",
        Path::new(&dir).display()
    );
    path
}

pub const MEMBERS: [(&str, &str); 3] = [
    ("etcd-1", "127.0.0.11"),
    ("etcd-2", "127.0.0.12"),
    ("etcd-3", "127.0.0.13"),
];

/// The cluster: three external etcd members, master-1 (the init node) and `extra_nodes` (YAML list items).
pub fn spec(extra_nodes: &str) -> String {
    let mut s = String::from(
        "name: itest\nkubernetesVersion: 1.37.2\netcd:\n  topology: external\n\
controlPlaneEndpoint:\n  mode: vip\n  address: 127.0.0.30\n  port: 8443\n\
networking:\n  podCIDR: 10.244.0.0/16\n  serviceCIDR: 10.96.0.0/12\n  dnsDomain: cluster.local\n\
cni: flannel\ncontainerRuntime: containerd\nnodes:\n",
    );
    for (name, ip) in MEMBERS {
        s.push_str(&format!(
            "  - {{name: {name}, role: etcd, network: {{address: {ip}/8, gateway: 127.0.0.1, dns: [127.0.0.1]}}}}\n"
        ));
    }
    s.push_str("  - {name: master-1, role: master, network: {address: 127.0.0.21/8, gateway: 127.0.0.1, dns: [127.0.0.1]}}\n");
    s.push_str(extra_nodes);
    s
}

/// `hakube-build` from this workspace: next to this test's target dir, built on demand.
pub fn hakube_build() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = dir.join("hakube-build");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "hakube-build"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "building hakube-build");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// On a master or worker: starting the container runtime makes its CRI
/// socket appear under the root, as containerd would.
pub fn runtime_socket_on_start(svc: &FakeServices, root: &Path, p: &NodeProfile) {
    let root = root.to_path_buf();
    let sock = p
        .runtime
        .cri_socket()
        .trim_start_matches("unix://")
        .to_string();
    svc.on_start(p.runtime.unit(), move || {
        let path = root.join(sock.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    });
}

/// Child etcd processes of one scenario; all killed when dropped.
#[derive(Clone, Default)]
pub struct Procs(pub Arc<Mutex<BTreeMap<String, Child>>>);

impl Procs {
    pub fn stop(&self, name: &str) {
        if let Some(mut c) = self.0.lock().unwrap().remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            for (_, mut c) in std::mem::take(&mut *self.0.lock().unwrap()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// systemd for an etcd node in a test: `etcd.service` is
/// `etcd --config-file <root>/var/lib/hakube/etcd/etcd.conf.yml`, as the unit's ExecStart.
pub struct EtcdUnit {
    pub name: String,
    pub root: PathBuf,
    pub procs: Procs,
}

impl ServiceManager for EtcdUnit {
    fn start(&self, unit: &str) -> anyhow::Result<()> {
        anyhow::ensure!(unit == "etcd.service", "unexpected unit {unit}");
        let mut procs = self.procs.0.lock().unwrap();
        if let Some(c) = procs.get_mut(&self.name) {
            if c.try_wait()?.is_none() {
                return Ok(());
            }
        }
        let log = fs::File::create(self.root.join("etcd.log"))?;
        let child = Command::new(srcbuild_bin("etcd"))
            .arg("--config-file")
            .arg(self.root.join("var/lib/hakube/etcd/etcd.conf.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        procs.insert(self.name.clone(), child);
        Ok(())
    }
    /// The spawn never waits for readiness, so both starts are the same.
    fn start_no_block(&self, unit: &str) -> anyhow::Result<()> {
        self.start(unit)
    }
    fn restart(&self, unit: &str) -> anyhow::Result<()> {
        self.procs.stop(&self.name);
        self.start(unit)
    }
    fn is_active(&self, _unit: &str) -> bool {
        let mut procs = self.procs.0.lock().unwrap();
        procs
            .get_mut(&self.name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
    /// A process, not a unit: nothing restarts it by itself.
    fn restarts(&self, _unit: &str) -> u32 {
        0
    }
}

/// One scenario: rendered trees (each node's tree is its --root) and its etcd processes.
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    pub procs: Procs,
}

impl Scenario {
    pub fn new(index: u16) -> Scenario {
        Scenario::with_nodes(index, "")
    }

    /// Renders [`spec`]`(extra_nodes)`; `index` picks this scenario's ports (0..=4).
    pub fn with_nodes(index: u16, extra_nodes: &str) -> Scenario {
        Scenario::from_spec(index, &spec(extra_nodes))
    }

    /// Renders the cluster spec `text`; `index` picks this scenario's ports (0..=4).
    pub fn from_spec(index: u16, text: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cluster.yaml"), text).unwrap();
        let out = Command::new(hakube_build())
            .arg("render")
            .arg("--cluster")
            .arg(dir.path().join("cluster.yaml"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hakube-build render failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = 21000 + (std::process::id() % 400) as u16 * 20 + index * 4;
        let (client, peer, metrics) = (base, base + 1, base + 2);
        for entry in fs::read_dir(dir.path().join("out")).unwrap() {
            let root = entry.unwrap().path();
            if !root.is_dir() {
                continue;
            }
            let node = root.file_name().unwrap().to_string_lossy().into_owned();
            for rel in [PROFILE_PATH, "etc/etcd/etcd.conf.yml"] {
                let p = root.join(rel);
                let Ok(text) = fs::read_to_string(&p) else {
                    continue;
                };
                let ip = MEMBERS
                    .iter()
                    .find(|(n, _)| *n == node)
                    .map(|(_, ip)| *ip)
                    .unwrap_or("127.0.0.21");
                // Through placeholders: a port put in by one replacement
                // must not match the next (client 23800 would turn into
                // peer 23801 followed by "0" when replaced in turn).
                let text = text
                    .replace(",https://127.0.0.1:2379", "")
                    .replace("http://127.0.0.1:2381", &format!("http://{ip}:@METRICS@"))
                    .replace(":2379", ":@CLIENT@")
                    .replace(":2380", ":@PEER@")
                    .replace("@METRICS@", &metrics.to_string())
                    .replace("@CLIENT@", &client.to_string())
                    .replace("@PEER@", &peer.to_string());
                fs::write(&p, text).unwrap();
            }
        }
        Scenario {
            dir,
            client_port: client,
            procs: Procs::default(),
        }
    }

    pub fn root(&self, node: &str) -> PathBuf {
        self.dir.path().join("out").join(node)
    }

    pub fn profile(&self, node: &str) -> NodeProfile {
        NodeProfile::from_json(&fs::read_to_string(self.root(node).join(PROFILE_PATH)).unwrap())
            .unwrap()
    }

    pub fn endpoint(&self, ip: &str) -> String {
        format!("https://{ip}:{}", self.client_port)
    }

    /// `hakube-firstboot run` for an etcd member, with real etcd behind it.
    pub fn run_member(&self, node: &str) -> anyhow::Result<()> {
        let root = self.root(node);
        let p = self.profile(node);
        let runner = FakeRunner::new();
        node_identity(&runner, &p);
        let svc = EtcdUnit {
            name: node.to_string(),
            root: root.clone(),
            procs: self.procs.clone(),
        };
        let etcd = hakube_firstboot::etcd_client_for(&root)?;
        let probe = FakeProbe::default();
        let env = Env {
            root,
            cmd: &runner,
            svc: &svc,
            etcd: &etcd,
            probe: &probe,
            clock: &SystemClock,
            waits: waits(),
        };
        let r = hakube_firstboot::run(&env, None);
        assert_eq!(runner.count("kubeadm"), 0);
        r
    }

    /// All three members boot at the same time.
    pub fn form(&self) {
        std::thread::scope(|s| {
            let hs: Vec<_> = MEMBERS
                .iter()
                .map(|(n, _)| s.spawn(move || self.run_member(n)))
                .collect();
            for (h, (n, _)) in hs.into_iter().zip(MEMBERS) {
                h.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{n}: {e:#}\n{}", self.etcd_log(n)));
            }
        });
    }

    pub fn etcd_log(&self, node: &str) -> String {
        fs::read_to_string(self.root(node).join("etcd.log"))
            .map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Real etcdctl with a member's client certificate.
    pub fn etcdctl(&self, node: &str, args: &[&str]) -> Output {
        let root = self.root(node);
        let pki = root.join("etc/kubernetes/pki/etcd");
        let ip = MEMBERS.iter().find(|(n, _)| *n == node).unwrap().1;
        let out = Command::new(srcbuild_bin("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint(ip)))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!(
                "--cert={}",
                pki.join("healthcheck-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                pki.join("healthcheck-client.key").display()
            ))
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .unwrap();
        Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// A reimaged disk: etcd's data and firstboot's journal are gone.
    pub fn wipe(&self, node: &str) {
        self.procs.stop(node);
        let root = self.root(node);
        fs::remove_dir_all(root.join("var/lib/etcd")).unwrap();
        fs::remove_dir_all(root.join("var/lib/hakube")).unwrap();
    }
}

pub fn waits() -> Waits {
    Waits {
        remote: Some(Duration::from_secs(40)),
        local: Duration::from_secs(40),
        promote: Duration::from_secs(40),
        settle: Duration::from_secs(8),
        max_backoff: Duration::from_millis(500),
    }
}

/// The node's `hostname` and `ip -j addr` as the image would report them.
pub fn node_identity(runner: &FakeRunner, p: &NodeProfile) {
    runner.on("hostname", Output::ok(&format!("{}\n", p.node_name)));
    let addr = p.address.unwrap();
    runner.on(
        "ip -j -4 addr show",
        Output::ok(&format!(
            r#"[{{"ifname":"lan0","addr_info":[{{"local":"{addr}"}}]}}]"#
        )),
    );
}

/// `hakube-firstboot status` of a node tree (no boot disk here: the OS
/// slots part reports why it is unavailable).
pub fn status(root: &Path, json: bool) -> String {
    let cmd = FakeRunner::new();
    let os = hakube_firstboot::update::platform(root, &cmd, &SystemClock);
    hakube_firstboot::status(root, json, &os).unwrap()
}

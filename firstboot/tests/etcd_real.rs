//! The etcd steps of hakube-firstboot against a REAL etcd: Debian's
//! /usr/bin/etcd (3.4) as three processes on 127.0.0.11-13, with the TLS
//! certificates, etcd config templates and node profiles that
//! `hakube-build render` produces for a cluster with external etcd.
//!
//! Real here: etcd (server and its TLS, membership, learners, quorum), the
//! etcd client of firstboot, `etcdctl` for writing and reading keys, render's
//! certificates and templates. Doubles: the command runner (answers
//! `hostname` and `ip` as the node would; records that `kubeadm` is never
//! called), and, for the master, systemd and network probes.
//!
//! What this test changes in render's output, and why: every member gets
//! unique ports per scenario (so scenarios run in parallel and never meet
//! another etcd on this machine), and the 127.0.0.1 client and metrics
//! listeners are dropped, because three members on one host cannot all bind
//! 127.0.0.1:2379. Certificates are untouched (ports are not in them).

use hakube_firstboot::fakes::{FakeProbe, FakeRunner, FakeServices};
use hakube_firstboot::steps::{Env, Waits};
use hakube_firstboot::system::{Clock, Output, ServiceManager, SystemClock};
use hakube_node_profile::{NodeProfile, PROFILE_PATH};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ETCD: &str = "/usr/bin/etcd";
const MEMBERS: [(&str, &str); 3] = [
    ("etcd-1", "127.0.0.11"),
    ("etcd-2", "127.0.0.12"),
    ("etcd-3", "127.0.0.13"),
];

fn spec() -> String {
    let mut s = String::from(
        "name: itest\nkubernetesVersion: 1.31.4\netcd:\n  topology: external\n\
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
    s
}

/// `hakube-build` from this workspace: next to this test's target dir, built on demand.
fn hakube_build() -> PathBuf {
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

/// Child etcd processes of one scenario; all killed when dropped.
#[derive(Clone, Default)]
struct Procs(Arc<Mutex<BTreeMap<String, Child>>>);

impl Procs {
    fn stop(&self, name: &str) {
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
struct EtcdUnit {
    name: String,
    root: PathBuf,
    procs: Procs,
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
        let child = Command::new(ETCD)
            .arg("--config-file")
            .arg(self.root.join("var/lib/hakube/etcd/etcd.conf.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        procs.insert(self.name.clone(), child);
        Ok(())
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
}

/// One scenario: rendered trees (each node's tree is its --root) and its etcd processes.
struct Scenario {
    dir: tempfile::TempDir,
    client_port: u16,
    procs: Procs,
}

impl Scenario {
    fn new(index: u16) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cluster.yaml"), spec()).unwrap();
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
        for node in ["etcd-1", "etcd-2", "etcd-3", "master-1"] {
            let root = dir.path().join("out").join(node);
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
                let text = text
                    .replace(",https://127.0.0.1:2379", "")
                    .replace("http://127.0.0.1:2381", &format!("http://{ip}:{metrics}"))
                    .replace(":2379", &format!(":{client}"))
                    .replace(":2380", &format!(":{peer}"));
                fs::write(&p, text).unwrap();
            }
        }
        Scenario {
            dir,
            client_port: client,
            procs: Procs::default(),
        }
    }

    fn root(&self, node: &str) -> PathBuf {
        self.dir.path().join("out").join(node)
    }

    fn profile(&self, node: &str) -> NodeProfile {
        NodeProfile::from_json(&fs::read_to_string(self.root(node).join(PROFILE_PATH)).unwrap())
            .unwrap()
    }

    fn endpoint(&self, ip: &str) -> String {
        format!("https://{ip}:{}", self.client_port)
    }

    /// `hakube-firstboot run` for an etcd member, with real etcd behind it.
    fn run_member(&self, node: &str) -> anyhow::Result<()> {
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
    fn form(&self) {
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

    fn etcd_log(&self, node: &str) -> String {
        fs::read_to_string(self.root(node).join("etcd.log"))
            .map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Real etcdctl with a member's client certificate.
    fn etcdctl(&self, node: &str, args: &[&str]) -> Output {
        let root = self.root(node);
        let pki = root.join("etc/kubernetes/pki/etcd");
        let ip = MEMBERS.iter().find(|(n, _)| *n == node).unwrap().1;
        let out = Command::new("etcdctl")
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
    fn wipe(&self, node: &str) {
        self.procs.stop(node);
        let root = self.root(node);
        fs::remove_dir_all(root.join("var/lib/etcd")).unwrap();
        fs::remove_dir_all(root.join("var/lib/hakube")).unwrap();
    }
}

fn waits() -> Waits {
    Waits {
        remote: Some(Duration::from_secs(40)),
        local: Duration::from_secs(40),
        promote: Duration::from_secs(40),
        settle: Duration::from_secs(8),
        max_backoff: Duration::from_millis(500),
    }
}

/// The node's `hostname` and `ip -j addr` as the image would report them.
fn node_identity(runner: &FakeRunner, p: &NodeProfile) {
    runner.on("hostname", Output::ok(&format!("{}\n", p.node_name)));
    let addr = p.address.unwrap();
    runner.on(
        "ip -j -4 addr show",
        Output::ok(&format!(
            r#"[{{"ifname":"lan0","addr_info":[{{"local":"{addr}"}}]}}]"#
        )),
    );
}

fn member_ids(s: &Scenario, via: &str) -> Vec<(String, u64, bool)> {
    let root = s.root(via);
    let etcd = hakube_firstboot::etcd_client_for(&root).unwrap();
    let ip = MEMBERS.iter().find(|(n, _)| *n == via).unwrap().1;
    use hakube_firstboot::etcd::EtcdApi;
    let mut v: Vec<_> = etcd
        .member_list(&[s.endpoint(ip)])
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.id, m.is_learner))
        .collect();
    v.sort();
    v
}

#[test]
fn forms_a_three_member_cluster() {
    let s = Scenario::new(0);
    let t = SystemClock.now();
    s.form();
    eprintln!(
        "formation took {}s",
        (SystemClock.now() - t).as_seconds_f32()
    );
    let members = member_ids(&s, "etcd-1");
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["etcd-1", "etcd-2", "etcd-3"]);
    assert!(members.iter().all(|m| !m.2));
    for (n, _) in MEMBERS {
        let st = hakube_firstboot::status(&s.root(n), true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&st).unwrap();
        assert_eq!(v["overall"], "done", "{st}");
        let out = s.etcdctl(n, &["endpoint", "health"]);
        assert!(out.success(), "{}", out.combined());
        let cfg = fs::read_to_string(s.root(n).join("var/lib/hakube/etcd/etcd.conf.yml")).unwrap();
        assert!(cfg.contains("initial-cluster-state: new"), "{cfg}");
    }
    // health of the etcd role through the real client
    let root = s.root("etcd-2");
    let runner = FakeRunner::new();
    let (svc, probe) = (FakeServices::default(), FakeProbe::default());
    let etcd = hakube_firstboot::etcd_client_for(&root).unwrap();
    let env = Env {
        root,
        cmd: &runner,
        svc: &svc,
        etcd: &etcd,
        probe: &probe,
        clock: &SystemClock,
        waits: waits(),
    };
    let h = hakube_firstboot::health(&env).unwrap();
    assert!(h.contains("3 of 3 voting members healthy"), "{h}");
    // running again changes nothing: every step is done
    s.run_member("etcd-1").unwrap();
}

#[test]
fn replaces_a_wiped_member_while_the_others_hold_quorum() {
    let s = Scenario::new(1);
    s.form();
    for i in 0..20 {
        let out = s.etcdctl(
            "etcd-2",
            &["put", &format!("/before/{i}"), &format!("v{i}")],
        );
        assert!(out.success(), "{}", out.combined());
    }
    let old = member_ids(&s, "etcd-2");
    s.wipe("etcd-1");
    let t = SystemClock.now();
    s.run_member("etcd-1")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.etcd_log("etcd-1")));
    eprintln!(
        "replacement took {}s",
        (SystemClock.now() - t).as_seconds_f32()
    );
    let new = member_ids(&s, "etcd-2");
    assert_eq!(new.len(), 3);
    assert!(
        new.iter().all(|m| !m.2),
        "all voting after promotion: {new:?}"
    );
    assert_ne!(old[0].1, new[0].1, "etcd-1 has a new member id");
    let cfg =
        fs::read_to_string(s.root("etcd-1").join("var/lib/hakube/etcd/etcd.conf.yml")).unwrap();
    assert!(cfg.contains("initial-cluster-state: existing"), "{cfg}");
    // the keys written before are served by the new member
    let out = s.etcdctl("etcd-1", &["get", "--prefix", "/before/", "--keys-only"]);
    assert!(out.success(), "{}", out.combined());
    assert_eq!(
        out.stdout.lines().filter(|l| !l.is_empty()).count(),
        20,
        "{}",
        out.stdout
    );
    let out = s.etcdctl("etcd-1", &["get", "/before/7", "--print-value-only"]);
    assert_eq!(out.stdout.trim(), "v7");
    let st = hakube_firstboot::status(&s.root("etcd-1"), false).unwrap();
    assert!(st.contains("removed stale member etcd-1"), "{st}");
    assert!(st.contains("promoted"), "{st}");
}

#[test]
fn refuses_to_replace_when_quorum_would_be_lost() {
    let s = Scenario::new(2);
    s.form();
    let before = member_ids(&s, "etcd-3");
    s.procs.stop("etcd-2");
    s.wipe("etcd-1");
    let err = s.run_member("etcd-1").unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("refusing to replace etcd member etcd-1"),
        "{msg}"
    );
    assert!(msg.contains("below the quorum of 2"), "{msg}");
    assert!(msg.contains("Nothing was changed"), "{msg}");
    assert_eq!(hakube_firstboot::exit_code(&err), 1);
    assert!(
        !s.root("etcd-1").join("var/lib/etcd/member").exists(),
        "etcd-1 was not started"
    );
    // membership untouched, as seen by the surviving member
    assert_eq!(member_ids(&s, "etcd-3"), before);
    let st = hakube_firstboot::status(&s.root("etcd-1"), true).unwrap();
    assert!(st.contains("\"state\": \"failed\""), "{st}");
}

#[test]
fn refuses_to_init_a_first_master_over_a_registry_keyspace() {
    let s = Scenario::new(3);
    s.form();
    for k in ["/registry/pods/default/old", "/registry/namespaces/default"] {
        let out = s.etcdctl("etcd-1", &["put", k, "stale"]);
        assert!(out.success(), "{}", out.combined());
    }
    let root = s.root("master-1");
    let p = s.profile("master-1");
    assert!(p.init_node);
    // kubeadm and the rest of the node's tools: the recording runner.
    let runner = FakeRunner::new();
    node_identity(&runner, &p);
    let svc = FakeServices::default();
    let r2 = root.clone();
    let sock = p
        .runtime
        .cri_socket()
        .trim_start_matches("unix://")
        .to_string();
    svc.on_start(p.runtime.unit(), move || {
        let path = r2.join(sock.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    });
    let probe = FakeProbe::default();
    probe
        .tcp
        .borrow_mut()
        .insert(format!("127.0.0.1:{}", p.local_lb.port));
    let etcd = hakube_firstboot::etcd_client_for(&root).unwrap();
    let env = Env {
        root: root.clone(),
        cmd: &runner,
        svc: &svc,
        etcd: &etcd,
        probe: &probe,
        clock: &SystemClock,
        waits: waits(),
    };
    let err = hakube_firstboot::run(&env, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("already holds 2 keys under /registry/"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("https://127.0.0.11:{}", s.client_port)),
        "{msg}"
    );
    assert!(msg.contains("etcdctl del --prefix /registry/"), "{msg}");
    assert_eq!(runner.count("kubeadm"), 0, "{:?}", runner.calls());
    // and the keys are still there
    let out = s.etcdctl("etcd-2", &["get", "--prefix", "/registry/", "--keys-only"]);
    assert_eq!(
        out.stdout.lines().filter(|l| !l.is_empty()).count(),
        2,
        "{}",
        out.combined()
    );
    let st = hakube_firstboot::status(&root, false).unwrap();
    assert!(st.contains("wait-etcd            done"), "{st}");
    assert!(st.contains("etcd-keyspace        failed"), "{st}");
}

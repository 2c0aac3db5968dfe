//! What `hakube-build render` writes plus what hakube-firstboot passes, as
//! accepted by the strict kubeadm/kubectl test double (tests/doubles).
//!
//! Real here: render's trees and certificates; a three-member etcd 3.4
//! (Debian's, see support/) behind the first master; firstboot's steps,
//! journal and etcd client; `kubeadm`, `kubectl`, `kubelet` and `crictl` run
//! as processes found on PATH through firstboot's real `ProcessRunner`. On
//! PATH they are symlinks to `hakube-test-double`, which parses kubeadm's
//! config strictly (unknown fields, API versions, certificates named by the
//! config must exist under `HAKUBE_DOUBLE_ROOT`), refuses argv that kubeadm
//! refuses, keeps a JSON-lines log of every call (`HAKUBE_DOUBLE_LOG`) and a
//! state file standing in for the API server (`HAKUBE_DOUBLE_STATE`).
//!
//! Doubles in the firstboot process: systemd and the network probes (the
//! `hakube-firstboot` binary has no seam for these, so the test drives the
//! library entry `hakube_firstboot::run` with the real command runner), and
//! `hostname` / `ip` answering as the node would: the host's own hostname
//! must never be "fixed" by a test. The host has a real /usr/bin/kubectl:
//! every kubectl call asserted below is read from the double's log, so a
//! lookup that missed the PATH would fail the test.
//!
//! Scenarios: external etcd (first master's init, a second run that calls
//! nothing, a control-plane join and a worker join checked against init's
//! token and CA pin); a power cut right after `kubeadm init`, finished with
//! `kubeadm init phase ...`; stacked etcd (init and control-plane join).

mod support;

use hakube_firstboot::etcd::EtcdApi;
use hakube_firstboot::fakes::{FakeCluster, FakeEtcd, FakeProbe, FakeRunner, FakeServices};
use hakube_firstboot::steps::Env;
use hakube_firstboot::system::{Clock, Cmd, CommandRunner, Output, ProcessRunner, SystemClock};
use hakube_node_profile::NodeProfile;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use support::{node_identity, runtime_socket_on_start, test_double, waits, Scenario};

const JOINERS: &str = "  - {name: master-2, role: master, network: {address: 127.0.0.22/8, gateway: 127.0.0.1, dns: [127.0.0.1]}}\n  \
- {name: worker-1, role: worker, network: {address: 127.0.0.41/8, gateway: 127.0.0.1, dns: [127.0.0.1]}}\n";
const DOUBLED: [&str; 4] = ["kubeadm", "kubectl", "kubelet", "crictl"];

/// The doubled tools on PATH, their log and their "API server".
struct Tools {
    bin: PathBuf,
    log: PathBuf,
    state: PathBuf,
}

impl Tools {
    fn new(dir: &Path) -> Tools {
        let double = test_double();
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for t in DOUBLED {
            std::os::unix::fs::symlink(&double, bin.join(t)).unwrap();
        }
        Tools {
            bin,
            log: dir.join("double.log"),
            state: dir.join("double-state.json"),
        }
    }

    /// Every call the double recorded so far.
    fn calls(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn state(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(&self.state).unwrap()).unwrap()
    }
}

/// A node's programs: the doubled tools through firstboot's real
/// `ProcessRunner` with the double's bin dir first on PATH; `hostname` and
/// `ip` as the node reports them; anything else is a test failure.
struct NodeRunner<'a> {
    tools: &'a Tools,
    root: PathBuf,
    identity: FakeRunner,
    /// Power cut right after `kubeadm init` returns, before firstboot can
    /// record it (panics, like [`hakube_firstboot::fakes::PowerCut`]).
    cut_after_init: bool,
}

impl<'a> NodeRunner<'a> {
    fn new(tools: &'a Tools, root: &Path, p: &NodeProfile) -> NodeRunner<'a> {
        let identity = FakeRunner::new();
        node_identity(&identity, p);
        NodeRunner {
            tools,
            root: root.to_path_buf(),
            identity,
            cut_after_init: false,
        }
    }
}

impl CommandRunner for NodeRunner<'_> {
    fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        match cmd.program.as_str() {
            "hostname" | "ip" => self.identity.run(cmd),
            p if DOUBLED.contains(&p) => {
                let path = format!(
                    "{}:{}",
                    self.tools.bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                let mut c = cmd.clone();
                c.env.push(("PATH".into(), path));
                for (k, v) in [
                    ("HAKUBE_DOUBLE_ROOT", &self.root),
                    ("HAKUBE_DOUBLE_LOG", &self.tools.log),
                    ("HAKUBE_DOUBLE_STATE", &self.tools.state),
                ] {
                    c.env.push((k.into(), v.display().to_string()));
                }
                let out = ProcessRunner.run(&c);
                let full_init = p == "kubeadm"
                    && cmd.args.first().is_some_and(|a| a == "init")
                    && cmd.args.get(1).is_none_or(|a| a != "phase");
                if self.cut_after_init && full_init {
                    panic!("simulated power cut after: {cmd}");
                }
                out
            }
            other => anyhow::bail!("the test node has no program {other:?} ({cmd})"),
        }
    }
}

/// Runs every pending step of `node` with the doubled tools. `api_answers`:
/// the API endpoint and every master's apiserver answer.
fn run_node(s: &Scenario, tools: &Tools, node: &str, api_answers: bool) -> anyhow::Result<()> {
    run_node_with(s, tools, node, api_answers, false, None)
}

fn run_node_with(
    s: &Scenario,
    tools: &Tools,
    node: &str,
    api_answers: bool,
    cut_after_init: bool,
    etcd: Option<&dyn EtcdApi>,
) -> anyhow::Result<()> {
    let root = s.root(node);
    let p = s.profile(node);
    let mut runner = NodeRunner::new(tools, &root, &p);
    runner.cut_after_init = cut_after_init;
    let svc = FakeServices::default();
    runtime_socket_on_start(&svc, &root, &p);
    let probe = FakeProbe::default();
    probe
        .tcp
        .borrow_mut()
        .insert(format!("127.0.0.1:{}", p.local_lb.port));
    if api_answers {
        probe.answer(&format!("https://{}/readyz", p.endpoint.host_port()), 0);
        for m in &p.masters {
            probe.answer(&format!("https://{}:6443/readyz", m.address), 0);
        }
    }
    let real_etcd = hakube_firstboot::etcd_client_for(&root)?;
    let env = Env {
        root,
        cmd: &runner,
        svc: &svc,
        etcd: etcd.unwrap_or(&real_etcd),
        probe: &probe,
        clock: &SystemClock,
        waits: waits(),
    };
    hakube_firstboot::run(&env, None)
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// The calls of one tool whose argv starts with `prefix`.
fn calls_of<'a>(calls: &'a [Value], tool: &str, prefix: &[&str]) -> Vec<&'a Value> {
    calls
        .iter()
        .filter(|c| {
            c["tool"] == tool
                && c["argv"].as_array().is_some_and(|a| {
                    a.len() >= prefix.len() && a.iter().zip(prefix).all(|(x, p)| x == p)
                })
        })
        .collect()
}

fn argv(c: &Value) -> Vec<String> {
    c["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn rendered_configs_and_firstboot_argv_pass_the_strict_double() {
    let t0 = SystemClock.now();
    let s = Scenario::with_nodes(4, JOINERS);
    let tools = Tools::new(s.dir.path());
    s.form();
    let formed = SystemClock.now();

    // (a) The first master of an external-etcd cluster initialises it.
    let master = s.root("master-1");
    let init_yaml = master.join("etc/hakube/kubeadm/init.yaml");
    run_node(&s, &tools, "master-1", false).unwrap_or_else(|e| {
        panic!(
            "master-1: {e:#}\ndouble log:\n{}",
            fs::read_to_string(&tools.log).unwrap_or_default()
        )
    });
    let calls = tools.calls();
    let refused: Vec<_> = calls.iter().filter(|c| c["ok"] != true).collect();
    assert!(refused.is_empty(), "the double refused: {refused:#?}");
    let inits = calls_of(&calls, "kubeadm", &["init"]);
    assert_eq!(inits.len(), 1, "{inits:#?}");
    assert_eq!(
        argv(inits[0]),
        ["init", "--config", &path_str(&init_yaml)],
        "kubeadm init takes everything from the config (no --cri-socket etc.)"
    );
    // The double read exactly the file render wrote.
    assert_eq!(
        inits[0]["files"][path_str(&init_yaml)],
        sha256_of(&init_yaml).as_str()
    );
    assert!(calls_of(&calls, "kubeadm", &["join"]).is_empty());
    // The token render put in InitConfiguration.bootstrapTokens exists, so
    // firstboot found it and did not re-create it.
    let token = fs::read_to_string(master.join("etc/hakube/bootstrap-token")).unwrap();
    let id = &token.trim()[..6];
    let secret = calls_of(&calls, "kubectl", &["--kubeconfig"])
        .into_iter()
        .filter(|c| argv(c).contains(&format!("bootstrap-token-{id}")))
        .count();
    assert_eq!(secret, 1, "{calls:#?}");
    assert!(calls_of(&calls, "kubeadm", &["token", "create"]).is_empty());
    // CNI applied from the rendered manifest; kube-proxy and the kubelet
    // now go through the node-local load balancer.
    let applied = calls
        .iter()
        .filter(|c| c["tool"] == "kubectl" && argv(c).contains(&"apply".to_string()))
        .count();
    assert_eq!(applied, 1);
    let st = tools.state();
    let kp = st["configmaps"]["kube-system/kube-proxy"]["data"]["kubeconfig.conf"]
        .as_str()
        .unwrap();
    assert!(kp.contains("server: https://127.0.0.1:7443"), "{kp}");
    assert_eq!(st["daemonsets"]["kube-system/kube-proxy"], 1);
    let kubelet_conf = fs::read_to_string(master.join("etc/kubernetes/kubelet.conf")).unwrap();
    assert!(
        kubelet_conf.contains("server: https://127.0.0.1:7443"),
        "{kubelet_conf}"
    );
    let taints = &st["nodes"]["master-1"]["spec"]["taints"];
    assert!(
        taints
            .to_string()
            .contains("node-role.kubernetes.io/control-plane"),
        "{taints}"
    );

    // Running again (the unit on the next boot) calls no tool but the
    // every-boot check of the join token (one kubectl get).
    let before = calls.len();
    run_node(&s, &tools, "master-1", false).unwrap();
    let calls = tools.calls();
    assert_eq!(calls.len(), before + 1, "{:#?}", &calls[before..]);
    assert!(
        argv(&calls[before]).contains(&format!("bootstrap-token-{id}")),
        "{:#?}",
        &calls[before..]
    );
    let st = hakube_firstboot::status(&master, true).unwrap();
    let v: Value = serde_json::from_str(&st).unwrap();
    let init_step = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "kubeadm-init")
        .unwrap();
    assert_eq!(init_step["attempts"], 1, "{st}");
    let mastered = SystemClock.now();

    // (b) A second master and a worker join with their rendered join.yaml;
    // the double checks their token and CA pin against what init recorded
    // (its cluster-info), as kubeadm's token discovery does.
    let pin = tools.state()["clusterInfo"]["caCertHash"]
        .as_str()
        .expect("init recorded the cluster CA's pin")
        .to_string();
    for (node, control_plane) in [("master-2", true), ("worker-1", false)] {
        let root = s.root(node);
        let join_yaml = root.join("etc/hakube/kubeadm/join.yaml");
        let before = tools.calls().len();
        run_node(&s, &tools, node, true).unwrap_or_else(|e| {
            panic!(
                "{node}: {e:#}\ndouble log:\n{}",
                fs::read_to_string(&tools.log).unwrap_or_default()
            )
        });
        let calls = tools.calls();
        let new = &calls[before..];
        let refused: Vec<_> = new.iter().filter(|c| c["ok"] != true).collect();
        assert!(
            refused.is_empty(),
            "{node}: the double refused: {refused:#?}"
        );
        let joins = calls_of(new, "kubeadm", &["join"]);
        assert_eq!(joins.len(), 1, "{node}: {new:#?}");
        assert_eq!(argv(joins[0]), ["join", "--config", &path_str(&join_yaml)]);
        assert_eq!(
            joins[0]["files"][path_str(&join_yaml)],
            sha256_of(&join_yaml).as_str()
        );
        assert!(calls_of(new, "kubeadm", &["init"]).is_empty());
        let st = tools.state();
        let labels = &st["nodes"][node]["metadata"]["labels"];
        assert_eq!(
            labels
                .get("node-role.kubernetes.io/control-plane")
                .is_some(),
            control_plane,
            "{node}: {labels}"
        );
        let kubelet_conf = fs::read_to_string(root.join("etc/kubernetes/kubelet.conf")).unwrap();
        assert!(
            kubelet_conf.contains("server: https://127.0.0.1:7443"),
            "{node}: {kubelet_conf}"
        );
    }
    // Those checks bite: the worker's join.yaml with another pin or token is refused.
    let good = fs::read_to_string(s.root("worker-1").join("etc/hakube/kubeadm/join.yaml")).unwrap();
    let tampered = s.dir.path().join("tampered");
    fs::create_dir_all(&tampered).unwrap();
    for (bad, why) in [
        (
            good.replace(&pin, &format!("sha256:{}", "0".repeat(64))),
            "are pinned",
        ),
        (
            good.replace(token.trim(), "abcdef.0123456789abcdef"),
            "could not find a JWS signature",
        ),
        (
            good.replace(token.trim(), &format!("{id}.0123456789abcdef")),
            "failed to verify JWS signature",
        ),
    ] {
        assert_ne!(bad, good);
        fs::write(tampered.join("join.yaml"), bad).unwrap();
        let out = std::process::Command::new(tools.bin.join("kubeadm"))
            .args(["join", "--config"])
            .arg(tampered.join("join.yaml"))
            .env("HAKUBE_DOUBLE_ROOT", &tampered)
            .env("HAKUBE_DOUBLE_LOG", tampered.join("double.log"))
            .env("HAKUBE_DOUBLE_STATE", &tools.state)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{err}");
    }
    let done = SystemClock.now();
    eprintln!(
        "etcd formation {:.1}s, master-1 {:.1}s, master-2 and worker-1 {:.1}s, total {:.1}s",
        (formed - t0).as_seconds_f32(),
        (mastered - formed).as_seconds_f32(),
        (done - mastered).as_seconds_f32(),
        (done - t0).as_seconds_f32()
    );
}

#[test]
fn an_init_cut_short_is_finished_with_phases_the_double_accepts() {
    let s = Scenario::with_nodes(3, "");
    let tools = Tools::new(s.dir.path());
    s.form();
    let master = s.root("master-1");
    let init_yaml = path_str(&master.join("etc/hakube/kubeadm/init.yaml"));
    // Power is cut right after kubeadm init returned: the journal still says
    // kubeadm-init is running.
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_node_with(&s, &tools, "master-1", false, true, None)
    }));
    assert!(cut.is_err(), "the power cut happened");
    let st = hakube_firstboot::status(&master, false).unwrap();
    assert!(st.contains("kubeadm-init         running"), "{st}");
    // Next boot: the control plane came back (the API answers), firstboot
    // finishes the init with `kubeadm init phase ...` and never runs a
    // second full init.
    run_node(&s, &tools, "master-1", true).unwrap_or_else(|e| {
        panic!(
            "master-1: {e:#}\ndouble log:\n{}",
            fs::read_to_string(&tools.log).unwrap_or_default()
        )
    });
    let calls = tools.calls();
    let refused: Vec<_> = calls.iter().filter(|c| c["ok"] != true).collect();
    assert!(refused.is_empty(), "the double refused: {refused:#?}");
    let inits = calls_of(&calls, "kubeadm", &["init"]);
    let (phases, full): (Vec<&Value>, Vec<&Value>) =
        inits.iter().copied().partition(|c| c["argv"][1] == "phase");
    assert_eq!(full.len(), 1, "{inits:#?}");
    let ran: Vec<Vec<String>> = phases.iter().map(|c| argv(c)).collect();
    let want: Vec<Vec<String>> = [
        &["upload-config", "all"][..],
        &["mark-control-plane"],
        &["bootstrap-token"],
        &["kubelet-finalize", "all"],
        &["addon", "all"],
    ]
    .iter()
    .map(|ph| {
        let mut v = vec!["init".to_string(), "phase".to_string()];
        v.extend(ph.iter().map(|x| x.to_string()));
        v.extend(["--config".to_string(), init_yaml.clone()]);
        v
    })
    .collect();
    assert_eq!(ran, want);
    let st = hakube_firstboot::status(&master, true).unwrap();
    let v: Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["overall"], "done", "{st}");
    // addon all re-created kube-proxy's configmap; local-lb-clients, which
    // runs after it, still points it at the node-local load balancer.
    let kp = tools.state()["configmaps"]["kube-system/kube-proxy"]["data"]["kubeconfig.conf"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kp.contains("server: https://127.0.0.1:7443"), "{kp}");
}

#[test]
fn stacked_etcd_init_and_control_plane_join_pass_the_double() {
    // Stacked etcd lives in static pods kubeadm writes (here: the double's
    // placeholders), so firstboot's etcd client talks to an in-memory etcd
    // holding master-1's member.
    let text = support::spec("  - {name: master-2, role: master, network: {address: 127.0.0.22/8, gateway: 127.0.0.1, dns: [127.0.0.1]}}\n")
        .replace("topology: external", "topology: stacked")
        .lines()
        .filter(|l| !l.contains("role: etcd"))
        .collect::<Vec<_>>()
        .join("\n");
    let s = Scenario::from_spec(2, &format!("{text}\n"));
    let tools = Tools::new(s.dir.path());
    let cluster = {
        let p = s.profile("master-2");
        let mut c = FakeCluster::new(&[("master-1", "127.0.0.21")], true);
        let url = p
            .etcd_members
            .iter()
            .find(|m| m.name == "master-1")
            .unwrap()
            .client_url
            .clone();
        c.members[0].client_url = url.clone();
        c.members[0].member.client_urls = vec![url];
        c
    };
    let etcd = FakeEtcd::new(cluster);
    for (node, api) in [("master-1", false), ("master-2", true)] {
        run_node_with(&s, &tools, node, api, false, Some(&etcd)).unwrap_or_else(|e| {
            panic!(
                "{node}: {e:#}\ndouble log:\n{}",
                fs::read_to_string(&tools.log).unwrap_or_default()
            )
        });
    }
    let calls = tools.calls();
    let refused: Vec<_> = calls.iter().filter(|c| c["ok"] != true).collect();
    assert!(refused.is_empty(), "the double refused: {refused:#?}");
    assert_eq!(calls_of(&calls, "kubeadm", &["init"]).len(), 1);
    let joins = calls_of(&calls, "kubeadm", &["join"]);
    assert_eq!(joins.len(), 1);
    let join_yaml = s.root("master-2").join("etc/hakube/kubeadm/join.yaml");
    assert_eq!(argv(joins[0]), ["join", "--config", &path_str(&join_yaml)]);
    let st = tools.state();
    assert_eq!(st["etcd"], "local", "{st:#}");
    // master-2 got the stacked etcd static pod: its join went the control-plane way.
    assert!(s
        .root("master-2")
        .join("etc/kubernetes/manifests/etcd.yaml")
        .exists());
    // The double holds a stacked control-plane join to kubeadm's shared
    // certificates, the etcd CA included: without the key it is refused.
    fs::remove_file(s.root("master-2").join("etc/kubernetes/pki/etcd/ca.key")).unwrap();
    fs::remove_file(s.root("master-2").join("etc/kubernetes/kubelet.conf")).unwrap();
    let out = std::process::Command::new(tools.bin.join("kubeadm"))
        .args(["join", "--config"])
        .arg(&join_yaml)
        .env("HAKUBE_DOUBLE_ROOT", s.root("master-2"))
        .env("HAKUBE_DOUBLE_LOG", s.dir.path().join("scratch.log"))
        .env("HAKUBE_DOUBLE_STATE", &tools.state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("etcd/ca.key"),
        "{err}"
    );
}

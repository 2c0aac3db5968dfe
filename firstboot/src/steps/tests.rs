//! Scenario tests: every role and path, driven by the recording runner and
//! the fakes, including a simulated power cut after every side effect.

use super::*;
use crate::fakes::*;
use crate::journal::JournalData;
use crate::system::Output;
use hakube_node_profile::*;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

const VIP: &str = "10.0.0.100";
const TOKEN: &str = "abcdef.0123456789abcdef";

fn ip(last: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 0, 0, last)
}

fn etcd_member(name: &str, last: u8) -> EtcdMember {
    EtcdMember {
        name: name.into(),
        address: ip(last),
        peer_url: format!("https://{}:2380", ip(last)),
        client_url: format!("https://{}:2379", ip(last)),
    }
}

fn profile(name: &str, role: Role, topology: EtcdTopology) -> NodeProfile {
    let masters: Vec<MasterRef> = (1..=3)
        .map(|i| MasterRef {
            name: format!("m{i}"),
            address: ip(10 + i),
        })
        .collect();
    let etcd_members = match topology {
        EtcdTopology::External => (1..=3).map(|i| etcd_member(&format!("e{i}"), i)).collect(),
        EtcdTopology::Stacked => (1..=3)
            .map(|i| etcd_member(&format!("m{i}"), 10 + i))
            .collect(),
    };
    let address = match (role, name.as_bytes()[1] - b'0') {
        (Role::Etcd, n) => ip(n),
        (Role::Master, n) => ip(10 + n),
        (Role::Worker, n) => ip(20 + n),
    };
    let k8s = role != Role::Etcd;
    let init = name == "m1";
    let mut labels = BTreeMap::new();
    if role == Role::Master {
        labels.insert("hakube.io/pool".to_string(), "control".to_string());
    }
    NodeProfile {
        profile_version: PROFILE_VERSION,
        cluster_name: "test".into(),
        kubernetes_version: "1.37.2".into(),
        node_name: name.into(),
        role,
        address: Some(address),
        init_node: init,
        cluster_initialised: false,
        runtime: Runtime::Containerd,
        etcd_topology: topology,
        endpoint: Endpoint {
            mode: EndpointMode::Vip,
            host: VIP.into(),
            port: 8443,
            vip_prefix: Some(24),
        },
        local_lb: LocalLb {
            enabled: true,
            port: 7443,
        },
        masters,
        etcd_members,
        labels,
        bootstrap_token_ttl: (role == Role::Master).then(|| "8760h0m0s".into()),
        taints: if role == Role::Master {
            vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: None,
                effect: "NoSchedule".into(),
            }]
        } else {
            vec![]
        },
        paths: Paths {
            kubeadm_config: k8s.then(|| {
                if init {
                    "/etc/hakube/kubeadm/init.yaml".into()
                } else {
                    "/etc/hakube/kubeadm/join.yaml".into()
                }
            }),
            kubeadm_join_config: init.then(|| "/etc/hakube/kubeadm/join.yaml".into()),
            kube_proxy_addon_config: init.then(|| "/etc/hakube/kubeadm/kube-proxy.yaml".into()),
            cni_manifest: (role == Role::Master).then(|| "/etc/hakube/cni/flannel.yaml".into()),
            etcd_config: (role == Role::Etcd).then(|| "/etc/etcd/etcd.conf.yml".into()),
            etcd_data_dir: "/var/lib/etcd".into(),
            etcd_client: (role != Role::Worker).then(|| TlsClient {
                ca_file: "/etc/kubernetes/pki/etcd/ca.crt".into(),
                cert_file: "/etc/kubernetes/pki/apiserver-etcd-client.crt".into(),
                key_file: "/etc/kubernetes/pki/apiserver-etcd-client.key".into(),
            }),
            admin_kubeconfig: (role == Role::Master).then(|| "/etc/kubernetes/admin.conf".into()),
            kubelet_kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
            bootstrap_token: (role == Role::Master).then(|| "/etc/hakube/bootstrap-token".into()),
        },
        health_deadline_seconds: 600,
    }
}

const KUBECONFIG: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://10.0.0.100:8443\n  name: test\nkind: Config\n";

/// A node's root in a temp dir, and fakes that behave like the tools would.
struct World {
    root: tempfile::TempDir,
    p: NodeProfile,
    runner: Rc<FakeRunner>,
    svc: FakeServices,
    etcd: FakeEtcd,
    probe: Rc<FakeProbe>,
    clock: FakeClock,
    cut: PowerCut,
}

fn write(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

impl World {
    fn new(p: NodeProfile, cluster: FakeCluster) -> World {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_path_buf();
        write(&r, PROFILE_PATH, &p.to_json());
        let cri = "criSocket: unix:///run/containerd/containerd.sock\n";
        write(&r, "etc/hakube/kubeadm/init.yaml", &format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: {TOKEN}\n  ttl: 8760h0m0s\nnodeRegistration:\n  {cri}"));
        write(
            &r,
            "etc/hakube/kubeadm/join.yaml",
            &format!(
                "kind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: {VIP}:8443\n    \
                 token: {TOKEN}\n  tlsBootstrapToken: {TOKEN}\nnodeRegistration:\n  {cri}"
            ),
        );
        // The cluster CA as the image carries it.
        let ca = match p.role {
            Role::Worker => "etc/hakube/pki/ca.crt",
            _ => "etc/kubernetes/pki/ca.crt",
        };
        write(&r, ca, "BAKED CA\n");
        write(&r, "etc/hakube/cni/flannel.yaml", "kind: DaemonSet\n");
        write(&r, "etc/hakube/bootstrap-token", &format!("{TOKEN}\n"));
        write(
            &r,
            "etc/kubernetes/pki/apiserver.crt",
            "BAKED APISERVER CERT\n",
        );
        let members: Vec<String> = p
            .etcd_members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        write(&r, "etc/etcd/etcd.conf.yml", &format!(
            "name: {}\ndata-dir: /var/lib/etcd\ninitial-cluster: {}\ninitial-cluster-state: new\nclient-transport-security:\n  cert-file: /etc/kubernetes/pki/etcd/server.crt\n",
            p.node_name, members.join(",")));

        let cut = PowerCut::default();
        let runner = Rc::new(FakeRunner::with_cut(cut.clone()));
        let probe = Rc::new(FakeProbe::default());
        let mut etcd = FakeEtcd::new(cluster);
        etcd.cut = cut.clone();
        let svc = FakeServices::with_cut(cut.clone());
        probe.tcp.borrow_mut().insert("127.0.0.1:7443".into());

        runner.on("hostname", Output::ok(&format!("{}\n", p.node_name)));
        let addr = p.address.unwrap().to_string();
        runner.on(
            "ip -j -4 addr show",
            Output::ok(&format!(
                r#"[{{"ifname":"lo","addr_info":[{{"local":"127.0.0.1"}}]}},{{"ifname":"lan0","addr_info":[{{"local":"{addr}"}}]}}]"#
            )),
        );
        // kubeadm init and join write what the real tools write.
        let (r2, probe2, addr2) = (r.clone(), probe.clone(), addr.clone());
        runner.effect("kubeadm init --config", move |_| {
            write(&r2, "etc/kubernetes/admin.conf", KUBECONFIG);
            write(&r2, "etc/kubernetes/kubelet.conf", KUBECONFIG);
            write(
                &r2,
                "etc/kubernetes/manifests/kube-apiserver.yaml",
                "kind: Pod\n",
            );
            probe2.answer(&format!("https://{addr2}:6443/readyz"), 0);
            Output::ok("Your Kubernetes control-plane has initialized successfully!\n")
        });
        let (r3, master) = (r.clone(), p.role == Role::Master);
        runner.effect("kubeadm join --config", move |_| {
            write(
                &r3,
                "var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\n",
            );
            write(&r3, "etc/kubernetes/kubelet.conf", KUBECONFIG);
            if master {
                write(&r3, "etc/kubernetes/admin.conf", KUBECONFIG);
                write(
                    &r3,
                    "etc/kubernetes/manifests/kube-apiserver.yaml",
                    "kind: Pod\n",
                );
            }
            Output::ok("This node has joined the cluster\n")
        });
        // kube-proxy's kubeconfig names the endpoint kubeadm deployed it
        // with: the control-plane endpoint, or the local balancer when
        // firstboot ran kubeadm's kube-proxy phase with its own config.
        let proxy_server = Rc::new(std::cell::RefCell::new(KUBECONFIG.to_string()));
        let ps = proxy_server.clone();
        runner.effect("kubeadm init phase addon kube-proxy --config", move |_| {
            *ps.borrow_mut() =
                KUBECONFIG.replace("https://10.0.0.100:8443", "https://127.0.0.1:7443");
            Output::ok("[addons] Applied essential addon: kube-proxy\n")
        });
        runner.effect(
            &format!(
                "kubectl --kubeconfig {} -n kube-system get configmap kube-proxy",
                r.join("etc/kubernetes/admin.conf").display()
            ),
            move |_| {
                let cm = serde_json::json!({"apiVersion":"v1","kind":"ConfigMap",
                    "metadata":{"name":"kube-proxy","namespace":"kube-system"},
                    "data":{"kubeconfig.conf": *proxy_server.borrow(), "config.conf": "mode: iptables\n"}});
                Output::ok(&cm.to_string())
            },
        );
        runner.on("kubectl --kubeconfig", Output::ok(""));
        // Read with the join token before a join: no Node of this name yet.
        runner.on(
            "kubectl --server",
            Output::fail(
                1,
                &format!(
                    "Error from server (NotFound): nodes \"{}\" not found",
                    p.node_name
                ),
            ),
        );
        // (more specific rules first: the first match wins)
        let w = World {
            root,
            p,
            runner,
            svc,
            etcd,
            probe,
            clock: FakeClock::default(),
            cut,
        };
        w.runner.rules_front(vec![(
            format!(
                "kubectl --kubeconfig {} -n kube-system get secret",
                w.path("etc/kubernetes/admin.conf")
            ),
            Output::fail(
                1,
                "Error from server (NotFound): secrets \"bootstrap-token-abcdef\" not found",
            ),
        )]);
        let rs = r.clone();
        w.svc.on_start("containerd.service", move || {
            write(&rs, "run/containerd/containerd.sock", "")
        });
        if let Some(me) = w.p.own_etcd_member().cloned() {
            if w.p.role == Role::Etcd {
                let (c, r4) = (w.etcd.cluster.clone(), r.clone());
                w.svc.on_start("etcd.service", move || {
                    fs::create_dir_all(r4.join("var/lib/etcd/member/wal")).unwrap();
                    c.borrow_mut().start(&me.name, &me.peer_url);
                });
            }
        }
        w
    }

    fn path(&self, rel: &str) -> String {
        self.root.path().join(rel).to_string_lossy().into_owned()
    }

    fn env(&self) -> Env<'_> {
        Env {
            root: self.root.path().to_path_buf(),
            cmd: &*self.runner,
            svc: &self.svc,
            etcd: &self.etcd,
            probe: &*self.probe,
            clock: &self.clock,
            waits: Waits {
                remote: Some(Duration::from_secs(3600)),
                ..Default::default()
            },
        }
    }

    fn run(&self) -> Result<()> {
        crate::run(&self.env(), None)
    }

    fn journal(&self) -> JournalData {
        let text = fs::read_to_string(Journal::path_under(self.root.path())).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The journal's record of one step.
    fn step(&self, name: &str) -> crate::journal::StepRecord {
        let steps = self.journal().steps;
        steps
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no step {name} in the journal"))
    }

    fn state(&self, step: &str) -> StepState {
        self.step(step).state
    }

    fn effective_etcd(&self) -> serde_yaml_ng::Value {
        let text =
            fs::read_to_string(self.root.path().join(crate::etcd_config::EFFECTIVE_PATH)).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    }
}

impl FakeRunner {
    fn rules_front(&self, rules: Vec<(String, Output)>) {
        for (prefix, out) in rules.into_iter().rev() {
            self.on_front(&prefix, out);
        }
    }
}

fn etcd_nodes() -> Vec<(&'static str, &'static str)> {
    vec![("e1", "10.0.0.1"), ("e2", "10.0.0.2"), ("e3", "10.0.0.3")]
}

fn stacked_nodes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("m1", "10.0.0.11"),
        ("m2", "10.0.0.12"),
        ("m3", "10.0.0.13"),
    ]
}

// ---- plans -------------------------------------------------------------

#[test]
fn plan_per_role() {
    let names = |p: &NodeProfile| plan_names(p).join(" ");
    assert_eq!(
        names(&profile("e1", Role::Etcd, EtcdTopology::External)),
        "identity etcd-member"
    );
    assert_eq!(
        names(&profile("m1", Role::Master, EtcdTopology::External)),
        "identity container-runtime container-images load-balancer vip wait-etcd init-or-join etcd-keyspace kubeadm-init \
         kube-proxy kubeadm-join local-lb-clients cni labels-taints bootstrap-token"
    );
    assert_eq!(
        names(&profile("m2", Role::Master, EtcdTopology::Stacked)),
        "identity container-runtime container-images load-balancer vip wait-api stale-etcd-member etcd-learners kubeadm-join \
         local-lb-clients labels-taints bootstrap-token"
    );
    let mut w = profile("w1", Role::Worker, EtcdTopology::Stacked);
    assert_eq!(
        names(&w),
        "identity container-runtime container-images load-balancer wait-api kubeadm-join local-lb-clients"
    );
    w.local_lb.enabled = false;
    assert_eq!(
        names(&w),
        "identity container-runtime container-images wait-api kubeadm-join"
    );
}

// ---- external etcd members ---------------------------------------------

#[test]
fn etcd_fresh_formation() {
    let mut c = FakeCluster::new(&etcd_nodes(), false);
    // e2 is booting at the same time: up, but no cluster yet, so it serves no clients.
    c.start("e2", "https://10.0.0.2:2380");
    let w = World::new(profile("e1", Role::Etcd, EtcdTopology::External), c);
    w.run().unwrap();
    assert_eq!(w.state("etcd-member"), StepState::Done);
    let cfg = w.effective_etcd();
    assert_eq!(cfg["initial-cluster-state"].as_str(), Some("new"));
    assert_eq!(cfg["data-dir"].as_str().unwrap(), w.path("var/lib/etcd"));
    assert_eq!(w.svc.calls(), ["start --no-block etcd.service"]);
    assert_eq!(
        w.etcd.log(),
        ["start e2", "start e1"],
        "formation changes no membership"
    );
    // the effective config keeps the template's members
    assert!(cfg["initial-cluster"]
        .as_str()
        .unwrap()
        .contains("e3=https://10.0.0.3:2380"));
}

#[test]
fn etcd_first_member_waits_for_peers_that_boot_minutes_later() {
    // e1 boots first and alone; e2 boots 5 minutes later, e3 an hour later.
    // etcd.service is Type=notify and notifies only with quorum, so a start
    // that waits for it times out (issue 9, item 2).
    let c = FakeCluster::new(&etcd_nodes(), false);
    let w = World::new(profile("e1", Role::Etcd, EtcdTopology::External), c);
    let cl = w.etcd.cluster.clone();
    w.svc
        .notify_when("etcd.service", move || cl.borrow().quorum_ok());
    let cl = w.etcd.cluster.clone();
    w.clock.at(Duration::from_secs(300), move || {
        cl.borrow_mut().start("e2", "https://10.0.0.2:2380")
    });
    let cl = w.etcd.cluster.clone();
    w.clock.at(Duration::from_secs(3600), move || {
        cl.borrow_mut().start("e3", "https://10.0.0.3:2380")
    });
    w.run().unwrap();
    assert_eq!(w.state("etcd-member"), StepState::Done);
    assert_eq!(w.svc.calls(), ["start --no-block etcd.service"]);
    assert!(w.clock.slept.get() >= Duration::from_secs(300));
    assert_eq!(
        w.effective_etcd()["initial-cluster-state"].as_str(),
        Some("new")
    );
}

#[test]
fn etcd_replacement_keeps_quorum_removes_adds_learner_promotes() {
    let mut c = FakeCluster::new(&etcd_nodes(), true);
    c.keys.insert("/registry/pods/a".into(), "x".into());
    c.members[0].up = false; // the old e1 is gone; this is its reimaged disk
    c.promote_refusals = 2; // the learner needs time to catch up
    let w = World::new(profile("e1", Role::Etcd, EtcdTopology::External), c);
    w.run().unwrap();
    let log = w.etcd.log();
    assert_eq!(log[0], "remove 10");
    assert_eq!(log[1], "add learner https://10.0.0.1:2380");
    assert_eq!(log[2], "start e1");
    assert_eq!(log[3], "promote 100");
    let cfg = w.effective_etcd();
    assert_eq!(cfg["initial-cluster-state"].as_str(), Some("existing"));
    let ic = cfg["initial-cluster"].as_str().unwrap();
    for m in [
        "e1=https://10.0.0.1:2380",
        "e2=https://10.0.0.2:2380",
        "e3=https://10.0.0.3:2380",
    ] {
        assert!(ic.contains(m), "{ic}");
    }
    let cl = w.etcd.cluster.borrow();
    assert!(cl.members.iter().all(|m| !m.member.is_learner && m.up));
    assert_eq!(cl.keys.len(), 1, "keys are never deleted");
    assert!(
        w.clock.slept.get() > Duration::ZERO,
        "promote was retried with backoff"
    );
}

#[test]
fn etcd_replacement_refused_when_quorum_would_be_lost() {
    let mut c = FakeCluster::new(&etcd_nodes(), true);
    c.members[0].up = false;
    c.members[1].up = false; // two of three down: only e3 answers
    let w = World::new(profile("e1", Role::Etcd, EtcdTopology::External), c);
    let err = w.run().unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing to replace etcd member e1"), "{msg}");
    // e3 still answers, but alone it cannot serve a linearizable read
    assert!(
        msg.contains("0 healthy of 2 voting members, below the quorum of 2"),
        "{msg}"
    );
    assert!(
        msg.contains("Not healthy: [e2 (id 11), e3 (id 12)]"),
        "{msg}"
    );
    assert!(msg.contains("Nothing was changed"), "{msg}");
    assert_eq!(crate::exit_code(&err), 1);
    assert!(
        w.etcd.log().is_empty(),
        "no membership change: {:?}",
        w.etcd.log()
    );
    assert!(w.svc.calls().is_empty(), "etcd not started");
    assert_eq!(w.state("etcd-member"), StepState::Failed);
    assert!(w.journal().steps[1]
        .last_error
        .as_deref()
        .unwrap()
        .contains("refusing"));
}

#[test]
fn etcd_member_that_booted_late_joins_the_forming_cluster() {
    let mut c = FakeCluster::new(&etcd_nodes(), false);
    c.start("e2", "https://10.0.0.2:2380");
    c.start("e3", "https://10.0.0.3:2380");
    let w = World::new(profile("e1", Role::Etcd, EtcdTopology::External), c);
    w.run().unwrap();
    assert_eq!(
        w.effective_etcd()["initial-cluster-state"].as_str(),
        Some("new")
    );
    assert!(!w
        .etcd
        .log()
        .iter()
        .any(|l| l.starts_with("add") || l.starts_with("remove")));
}

// ---- first master ------------------------------------------------------

fn init_world(topology: EtcdTopology) -> World {
    let c = match topology {
        EtcdTopology::External => FakeCluster::new(&etcd_nodes(), true),
        EtcdTopology::Stacked => FakeCluster::default(),
    };
    World::new(profile("m1", Role::Master, topology), c)
}

#[test]
fn init_node_initialises_over_external_etcd() {
    let w = init_world(EtcdTopology::External);
    w.run().unwrap();
    let init = w.path("etc/hakube/kubeadm/init.yaml");
    let admin = w.path("etc/kubernetes/admin.conf");
    let calls = w.runner.calls();
    assert_eq!(w.runner.count(&format!("kubeadm init --config {init}")), 1);
    assert_eq!(w.runner.count("kubeadm join"), 0);
    let pos = |needle: &str| {
        calls
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {calls:#?}"))
    };
    assert!(pos("kubeadm init --config") < pos("apply --server-side"));
    assert!(calls.contains(&format!(
        "kubectl --kubeconfig {admin} apply --server-side --force-conflicts -f {}",
        w.path("etc/hakube/cni/flannel.yaml")
    )));
    assert!(calls.contains(&format!(
        "kubectl --kubeconfig {admin} label node m1 --overwrite hakube.io/pool=control"
    )));
    assert!(calls.contains(&format!("kubectl --kubeconfig {admin} taint node m1 node-role.kubernetes.io/control-plane:NoSchedule --overwrite")));
    assert!(calls.contains(&format!(
        "kubeadm token create {TOKEN} --ttl 8760h0m0s --kubeconfig {admin}"
    )));
    // kube-proxy is deployed by kubeadm's own phase with the local balancer
    // as its endpoint, right after init: never re-pointed, never restarted.
    let addon = format!(
        "kubeadm init phase addon kube-proxy --config {}",
        w.path("etc/hakube/kubeadm/kube-proxy.yaml")
    );
    assert_eq!(w.runner.count(&addon), 1, "{calls:#?}");
    assert!(pos("kubeadm init --config") < pos(&addon));
    assert!(!calls
        .iter()
        .any(|c| c.contains("replace -f") || c.contains("rollout restart")));
    // The CNI goes in after kube-proxy's DaemonSet exists.
    assert!(pos(&addon) < pos("apply --server-side"));
    let kubelet = fs::read_to_string(w.path("etc/kubernetes/kubelet.conf")).unwrap();
    assert!(
        kubelet.contains("server: https://127.0.0.1:7443"),
        "{kubelet}"
    );
    let svc = w.svc.calls();
    for u in [
        "start --no-block containerd.service",
        "start haproxy.service",
        "start keepalived.service",
        "restart kubelet.service",
    ] {
        assert!(svc.contains(&u.to_string()), "{u} in {svc:?}");
    }
    // keepalived holds the VIP before kubeadm init needs the endpoint
    let j = w.journal();
    assert_eq!(j.notes.get("decision").map(String::as_str), Some("init"));
    assert!(j
        .steps
        .iter()
        .all(|s| s.state == StepState::Done && s.attempts == 1));
    assert_eq!(
        j.steps
            .iter()
            .find(|s| s.name == "kubeadm-join")
            .unwrap()
            .outcome
            .as_deref(),
        Some("skipped: this node initialised the cluster")
    );
}

#[test]
fn init_refused_over_existing_registry_keyspace() {
    let w = init_world(EtcdTopology::External);
    {
        let mut c = w.etcd.cluster.borrow_mut();
        for k in [
            "/registry/pods/default/a",
            "/registry/secrets/x",
            "/other/key",
        ] {
            c.keys.insert(k.into(), "v".into());
        }
    }
    let err = w.run().unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("already holds 2 keys under /registry/"),
        "{msg}"
    );
    assert!(msg.contains("https://10.0.0.1:2379"), "{msg}");
    assert!(msg.contains("etcdctl del --prefix /registry/"), "{msg}");
    assert!(msg.contains("Nothing was deleted"), "{msg}");
    assert_eq!(w.runner.count("kubeadm"), 0);
    assert_eq!(w.etcd.cluster.borrow().keys.len(), 3);
    assert_eq!(w.state("etcd-keyspace"), StepState::Failed);
}

#[test]
fn init_node_that_misses_the_cluster_once_keeps_looking_and_joins_it() {
    // A reimaged init master (built before the cluster formed) whose first
    // look finds m2's API server restarting: one probe must not decide.
    let w = init_world(EtcdTopology::Stacked);
    w.probe.answer("https://10.0.0.12:6443/readyz", 2);
    *w.etcd.cluster.borrow_mut() =
        FakeCluster::new(&[("m2", "10.0.0.12"), ("m3", "10.0.0.13")], true);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(
        w.journal().notes.get("decision").map(String::as_str),
        Some("join")
    );
    assert_eq!(
        w.step("init-or-join").outcome.as_deref(),
        Some("a cluster already answers at https://10.0.0.12:6443/readyz: joining it")
    );
}

#[test]
fn init_is_decided_only_after_the_settle_window_without_any_sign_of_a_cluster() {
    let w = init_world(EtcdTopology::Stacked);
    w.run().unwrap();
    let outcome = w.step("init-or-join").outcome.unwrap();
    assert!(
        outcome.contains("in 30s (7 looks): this node initialises the cluster"),
        "{outcome}"
    );
    assert!(w.clock.slept.get() >= crate::steps::kubeadm::INIT_SETTLE);
    assert_eq!(w.runner.count("kubeadm init --config"), 1);
}

#[test]
fn init_decided_while_the_api_was_unreachable_is_re_made_once_it_answers() {
    // External etcd holding a live cluster's keyspace; its API did not
    // answer while this init master decided: refused (it may be a stale
    // keyspace), and on the next attempt, the API answering, joined.
    let w = init_world(EtcdTopology::External);
    w.etcd
        .cluster
        .borrow_mut()
        .keys
        .insert("/registry/pods/default/a".into(), "v".into());
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(msg.contains("refusing to run kubeadm init"), "{msg}");
    assert_eq!(
        w.journal().notes.get("decision").map(String::as_str),
        Some("init")
    );
    w.probe.answer(&format!("https://{VIP}:8443/readyz"), 0);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(
        w.journal().notes.get("decision").map(String::as_str),
        Some("join")
    );
    let outcome = w.step("etcd-keyspace").outcome.unwrap();
    assert!(
        outcome.contains("1 keys under /registry/: re-decided: a cluster already answers at https://10.0.0.100:8443/readyz"),
        "{outcome}"
    );
}

#[test]
fn init_node_sees_the_cluster_come_back_before_kubeadm_init_and_joins() {
    // Decided "init" (nothing answered for the whole window), then, before
    // kubeadm init starts, an API server answers: joined, never initialised.
    let w = init_world(EtcdTopology::Stacked);
    *w.etcd.cluster.borrow_mut() =
        FakeCluster::new(&[("m2", "10.0.0.12"), ("m3", "10.0.0.13")], true);
    // 7 looks of 3 URLs each in init-or-join, then the look of kubeadm-init.
    w.probe.answer("https://10.0.0.12:6443/readyz", 7);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    let outcome = w.step("kubeadm-init").outcome.unwrap();
    assert!(
        outcome.starts_with("skipped: re-decided: a cluster already answers"),
        "{outcome}"
    );
}

#[test]
fn an_init_node_of_an_older_image_re_points_kube_proxy_after_init() {
    // A profile without the kube-proxy addon config (an image built before
    // it): kubeadm init deployed kube-proxy against the endpoint, so
    // local-lb-clients re-points its configmap and restarts it.
    let mut p = profile("m1", Role::Master, EtcdTopology::External);
    p.paths.kube_proxy_addon_config = None;
    let w = World::new(p, FakeCluster::new(&etcd_nodes(), true));
    w.run().unwrap();
    let calls = w.runner.calls();
    assert_eq!(w.runner.count("kubeadm init phase addon kube-proxy"), 0);
    assert!(calls.iter().any(|c| c.contains("replace -f")), "{calls:#?}");
    assert!(calls
        .iter()
        .any(|c| c.contains("rollout restart daemonset kube-proxy")));
    let cm =
        fs::read_to_string(w.path("var/lib/hakube/firstboot/kube-proxy-configmap.json")).unwrap();
    assert!(cm.contains("https://127.0.0.1:7443"), "{cm}");
}

#[test]
fn init_node_finding_a_cluster_joins_it() {
    let w = init_world(EtcdTopology::Stacked);
    w.probe.answer("https://10.0.0.12:6443/readyz", 0); // m2 already runs an API server
    *w.etcd.cluster.borrow_mut() =
        FakeCluster::new(&[("m2", "10.0.0.12"), ("m3", "10.0.0.13")], true);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(
        w.runner.count(&format!(
            "kubeadm join --config {}",
            w.path("etc/hakube/kubeadm/join.yaml")
        )),
        1
    );
    assert!(!w
        .runner
        .calls()
        .iter()
        .any(|c| c.contains("apply --server-side")));
    // Every master keeps the join token alive, this one too (the fake
    // cluster has none, so it is re-created with its lifetime).
    assert_eq!(w.runner.count("kubeadm token create"), 1);
    let j = w.journal();
    assert_eq!(j.notes.get("decision").map(String::as_str), Some("join"));
    assert!(j
        .steps
        .iter()
        .find(|s| s.name == "cni")
        .unwrap()
        .outcome
        .as_deref()
        .unwrap()
        .starts_with("skipped"));
}

#[test]
fn reimaged_init_node_seeing_peer_etcd_waits_and_joins_never_inits() {
    // m1 rebuilt; m2's etcd runs but its API server is not up yet (the
    // masters are recovering). One probe of the API alone would init.
    let w = init_world(EtcdTopology::Stacked);
    w.probe.tcp.borrow_mut().insert("10.0.0.12:2379".into());
    w.probe.answer("https://10.0.0.12:6443/readyz", 5);
    *w.etcd.cluster.borrow_mut() =
        FakeCluster::new(&[("m2", "10.0.0.12"), ("m3", "10.0.0.13")], true);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    let j = w.journal();
    assert_eq!(j.notes.get("decision").map(String::as_str), Some("join"));
    let rec = j.steps.iter().find(|s| s.name == "init-or-join").unwrap();
    assert!(
        rec.outcome
            .as_deref()
            .unwrap()
            .contains("etcd answers on 10.0.0.12:2379"),
        "{rec:?}"
    );
}

#[test]
fn init_node_built_after_the_cluster_formed_only_joins() {
    // Every other master is down; the image says the cluster exists.
    let mut p = profile("m1", Role::Master, EtcdTopology::Stacked);
    p.cluster_initialised = true;
    let w = World::new(
        p,
        FakeCluster::new(&[("m2", "10.0.0.12"), ("m3", "10.0.0.13")], true),
    );
    w.probe.answer(&format!("https://{VIP}:8443/readyz"), 20);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert!(w.clock.slept.get() > Duration::from_secs(60), "it waited");
    let j = w.journal();
    assert_eq!(j.notes.get("decision").map(String::as_str), Some("join"));
}

#[test]
fn init_node_built_after_the_cluster_formed_gives_up_saying_why() {
    let mut p = profile("m1", Role::Master, EtcdTopology::Stacked);
    p.cluster_initialised = true;
    let w = World::new(p, FakeCluster::default());
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("the image says the cluster was formed already"),
        "{msg}"
    );
    assert_eq!(w.runner.count("kubeadm init"), 0);
    assert_eq!(w.journal().notes.get("decision"), None, "nothing decided");
}

// ---- other masters and workers -----------------------------------------

#[test]
fn rebuilt_master_removes_stale_stacked_member_then_joins() {
    let mut c = FakeCluster::new(&stacked_nodes(), true);
    c.members[1].up = false; // the old m2
    let w = joining("m2", Role::Master, c);
    w.run().unwrap();
    assert_eq!(w.etcd.log(), ["remove 11"]);
    let calls = w.runner.calls();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert!(
        !calls.iter().any(|c| c.contains("--control-plane")),
        "join.yaml carries controlPlane"
    );
}

/// A node that joins: its world, with the API answering through the VIP.
fn joining(name: &str, role: Role, cluster: FakeCluster) -> World {
    let w = World::new(profile(name, role, EtcdTopology::Stacked), cluster);
    w.probe.answer(&format!("https://{VIP}:8443/readyz"), 0);
    w
}

/// `kubeadm join` writes `files` (paths under the node root), adds `member`
/// to etcd if given, then fails with `error`.
fn join_fails_after(w: &World, files: &[&'static str], member: Option<FakeMember>, error: &str) {
    let r = w.root.path().to_path_buf();
    let cluster = w.etcd.cluster.clone();
    let member = RefCell::new(member);
    let files = files.to_vec();
    let error = error.to_string();
    w.runner.effect_front("kubeadm join --config", move |_| {
        for f in &files {
            let body = if f.ends_with(".yaml") {
                "kind: Pod\n"
            } else {
                KUBECONFIG
            };
            write(&r, f, body);
        }
        // Past kubelet-start's Ready-Node check, kubeadm configured the
        // kubelet before starting it.
        if files
            .iter()
            .any(|f| *f == KUBELET_STARTED || *f == KUBELET_CONF)
        {
            write(&r, KUBELET_CONFIG, "kind: KubeletConfiguration\n");
        }
        if let Some(m) = member.borrow_mut().take() {
            cluster.borrow_mut().members.push(m);
        }
        Output::fail(1, &error)
    });
}

const KUBELET_STARTED: &str = "etc/kubernetes/bootstrap-kubelet.conf";
const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
const KUBELET_CLIENT_PEM: &str = "var/lib/kubelet/pki/kubelet-client-current.pem";
const KUBELET_CONF: &str = "etc/kubernetes/kubelet.conf";
const APISERVER_POD: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";
const ETCD_POD: &str = "etc/kubernetes/manifests/etcd.yaml";
const ETCD_JOIN_TIMED_OUT: &str =
    "error execution phase etcd-join: error creating local etcd static \
                                   pod manifest file: context deadline exceeded";

/// What kubeadm join did on master-3 of the HA VM test: control plane and
/// kubelet written (and, with `etcd_manifest`, the node's etcd manifest),
/// its etcd member announced, then the promotion ran out of time ("error
/// execution phase etcd-join: ... context deadline exceeded"). `member`, if
/// given, is the member kubeadm added (m2, a learner or already voting); the
/// tests that pass one start from a cluster without m2, as the stale-member
/// step saw it.
fn join_failing_in_etcd_join(w: &World, etcd_manifest: bool, member: Option<FakeMember>) {
    let mut files = vec![
        KUBELET_STARTED,
        KUBELET_CONF,
        "etc/kubernetes/admin.conf",
        APISERVER_POD,
    ];
    if etcd_manifest {
        files.push(ETCD_POD);
    }
    join_fails_after(w, &files, member, ETCD_JOIN_TIMED_OUT);
}

fn join_phases(w: &World) -> Vec<String> {
    w.runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kubeadm join phase"))
        .collect()
}

#[test]
fn master_join_failing_in_etcd_join_is_finished_by_phases_in_the_same_run() {
    let w = joining("m2", Role::Master, FakeCluster::new(&stacked_nodes(), true));
    join_failing_in_etcd_join(&w, false, None);
    w.run().unwrap();
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(
        join_phases(&w),
        [
            format!("kubeadm join phase etcd-join --config {config}"),
            format!("kubeadm join phase control-plane-join all --config {config}"),
        ]
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
    let rec = w.step("kubeadm-join");
    assert!(
        rec.outcome
            .as_deref()
            .unwrap()
            .contains("ran phases etcd-join, control-plane-join all"),
        "{:?}",
        rec.outcome
    );
}

#[test]
fn master_join_cut_after_the_kubelet_bootstrap_is_finished_by_phases_on_the_next_boot() {
    let w = joining("m2", Role::Master, FakeCluster::new(&stacked_nodes(), true));
    let r = w.root.path().to_path_buf();
    w.runner.effect_front("kubeadm join --config", move |_| {
        write(&r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
        write(
            &r,
            "etc/kubernetes/manifests/kube-apiserver.yaml",
            "kind: Pod\n",
        );
        panic!("simulated power cut during kubeadm join");
    });
    assert!(catch_unwind(AssertUnwindSafe(|| w.run())).is_err());
    assert_eq!(w.state("kubeadm-join"), StepState::Running);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(w.runner.count("kubeadm join phase etcd-join --config"), 1);
    assert_eq!(
        w.runner
            .count("kubeadm join phase control-plane-join all --config"),
        1
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_join_whose_phases_fail_too_is_left_failed_for_the_next_attempt() {
    let w = joining("m2", Role::Master, FakeCluster::new(&stacked_nodes(), true));
    join_failing_in_etcd_join(&w, false, None);
    w.runner.push_front(
        "kubeadm join phase etcd-join",
        Output::fail(
            1,
            "error execution phase etcd-join: too many learner members in cluster\n",
        ),
    );
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("finishing the control-plane join: kubeadm join phase etcd-join"),
        "{msg}"
    );
    assert!(msg.contains("too many learner members"), "{msg}");
    assert_eq!(w.state("kubeadm-join"), StepState::Failed);
    // The next attempt (the unit restarts) runs the phases again, not the join.
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(w.runner.count("kubeadm join phase etcd-join --config"), 2);
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_join_failing_in_mark_control_plane_waits_for_its_node_before_the_phases() {
    // HA VM runs 2 and 5: the join's etcd part went through, then
    // mark-control-plane gave up on a Node the kubelet had not registered yet.
    let w = m2_voting_then_join_failing();
    let get = format!(
        "kubectl --kubeconfig {} --request-timeout=20s get node m2 -o name",
        w.path("etc/kubernetes/kubelet.conf")
    );
    let not_found = Output::fail(1, "Error from server (NotFound): nodes \"m2\" not found");
    w.runner.push_front(&get, not_found.clone());
    w.runner.push_front(&get, not_found);
    w.run().unwrap();
    let calls = w.runner.calls();
    let gets: Vec<usize> = (0..calls.len()).filter(|&i| calls[i] == get).collect();
    assert_eq!(gets.len(), 3, "two refusals, then the node: {calls:#?}");
    let phase = calls
        .iter()
        .position(|c| c.starts_with("kubeadm join phase control-plane-join all"))
        .expect("control-plane-join ran");
    assert!(
        phase > gets[2],
        "the phase ran before the node was there: {calls:#?}"
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_whose_node_never_registers_fails_the_join_naming_it() {
    let w = m2_voting_then_join_failing();
    w.runner.on_front(
        "kubectl --kubeconfig",
        Output::fail(1, "Error from server (NotFound): nodes \"m2\" not found"),
    );
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("the kubelet to register node m2") && msg.contains("nodes \"m2\" not found"),
        "{msg}"
    );
    assert_eq!(w.runner.count("kubeadm join phase control-plane-join"), 0);
    assert_eq!(w.state("kubeadm-join"), StepState::Failed);
}

#[test]
fn master_join_whose_kubelet_bootstrap_wait_gave_up_writes_the_bootstrap_kubeconfig_again() {
    // HA run 6, master-2: etcd member voting, then kubeadm's 10-minute wait
    // for the kubelet's TLS bootstrap (against this master's own API server)
    // ran out and kubeadm deleted bootstrap-kubelet.conf: kubelet.conf
    // points at a client certificate that never came.
    let (c, m2) = cluster_without_m2();
    let w = joining("m2", Role::Master, c);
    join_fails_after(
        &w,
        &[KUBELET_CONF, APISERVER_POD, ETCD_POD],
        Some(m2),
        "error execution phase kubelet-wait-bootstrap: failed while waiting for TLS bootstrap: \
         context deadline exceeded",
    );
    let r = w.root.path().to_path_buf();
    w.runner
        .effect_front("kubeadm join phase kubelet-start", move |_| {
            write(&r, KUBELET_STARTED, KUBECONFIG);
            Output::default()
        });
    w.run().unwrap();
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(
        join_phases(&w),
        [
            format!("kubeadm join phase kubelet-start --config {config}"),
            format!("kubeadm join phase control-plane-join all --config {config}"),
        ]
    );
    assert!(
        !w.root.path().join(KUBELET_STARTED).exists(),
        "the bootstrap token credential is removed once the node is registered"
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_join_failing_in_etcd_join_before_the_kubelet_bootstrap_is_finished_in_the_same_run() {
    // kubeadm 1.37 runs etcd-join between kubelet-start and the kubelet's
    // bootstrap: only bootstrap-kubelet.conf is there when etcd-join fails.
    let w = joining("m2", Role::Master, FakeCluster::new(&stacked_nodes(), true));
    join_fails_after(
        &w,
        &[KUBELET_STARTED, APISERVER_POD],
        None,
        ETCD_JOIN_TIMED_OUT,
    );
    // Once its etcd member votes, the local API server answers and the
    // kubelet bootstraps (writing kubelet.conf).
    let r = w.root.path().to_path_buf();
    w.runner
        .effect_front("kubeadm join phase etcd-join", move |_| {
            write(&r, KUBELET_CONF, KUBECONFIG);
            Output::default()
        });
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(
        join_phases(&w),
        [
            format!("kubeadm join phase etcd-join --config {config}"),
            format!("kubeadm join phase control-plane-join all --config {config}"),
        ]
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

// ---- a disk reimaged while the Node of the machine it replaced reads Ready --

/// kubeadm 1.37's kubelet-start refusal, as `kubeadm join` prints it.
fn ready_node_refusal(name: &str) -> String {
    format!(
        "error execution phase kubelet-start: a Node with name \"{name}\" and status \"Ready\" already exists \
         in the cluster. You must delete the existing Node or change the name of this new joining Node\n"
    )
}

/// `kubectl --server` (the join token) reads this node's Node: Ready
/// `ready` times, then as the node controller leaves it (Unknown).
fn old_node_ready_for(w: &World, ready: usize) {
    w.runner.push_front(
        "kubectl --server",
        Output::ok(&node_json("Unknown", OTHER_BOOT)),
    );
    for _ in 0..ready {
        w.runner.push_front(
            "kubectl --server",
            Output::ok(&node_json("True", OTHER_BOOT)),
        );
    }
}

#[test]
fn reimaged_worker_waits_for_the_node_it_replaced_to_leave_ready_then_joins() {
    let w = joining("w1", Role::Worker, FakeCluster::default());
    old_node_ready_for(&w, 3);
    w.run().unwrap();
    let reads: Vec<String> = w
        .runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kubectl --server"))
        .collect();
    assert_eq!(reads.len(), 4, "{reads:#?}");
    assert_eq!(
        reads[0],
        format!(
            "kubectl --server https://{VIP}:8443 --certificate-authority {} --token={TOKEN} \
             --request-timeout=20s get node w1 -o json",
            w.path("etc/hakube/pki/ca.crt")
        )
    );
    let calls = w.runner.calls();
    let join = calls
        .iter()
        .position(|c| c.starts_with("kubeadm join --config"))
        .unwrap();
    let last_read = calls
        .iter()
        .rposition(|c| c.starts_with("kubectl --server"))
        .unwrap();
    assert!(
        last_read < join,
        "kubeadm joins only once the old Node left Ready"
    );
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    let outcome = w.step("kubeadm-join").outcome.unwrap();
    assert!(
        outcome.contains("for the Node w1 of the machine it replaced to leave Ready")
            && outcome.ends_with("joined as a worker"),
        "{outcome}"
    );
    let journal = fs::read_to_string(Journal::path_under(w.root.path())).unwrap();
    assert!(
        !journal.contains("0123456789abcdef"),
        "the token stays out of the journal"
    );
}

#[test]
fn a_node_of_this_name_that_stays_ready_is_never_joined_over_and_named() {
    let w = joining("w1", Role::Worker, FakeCluster::default());
    w.runner.on_front(
        "kubectl --server",
        Output::ok(&node_json("True", OTHER_BOOT)),
    );
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("a Node named w1 stays Ready: a live machine seems to run as w1")
            && msg.contains(
                "gave up waiting for the Node w1 of an earlier machine to leave Ready after 3"
            ),
        "{msg}"
    );
    assert_eq!(w.runner.count("kubeadm join"), 0);
    assert_eq!(w.state("kubeadm-join"), StepState::Failed);
}

#[test]
fn worker_refused_by_kubeadm_for_a_ready_node_joins_afresh_on_the_retry() {
    // The Node went Ready again between firstboot's read and kubeadm's (or
    // could not be read): kubeadm wrote the bootstrap kubeconfig and its copy
    // of the CA, then refused. Left there, every retry's preflight would fail
    // on them (FileAvailable).
    let w = joining("w1", Role::Worker, FakeCluster::default());
    let r = w.root.path().to_path_buf();
    let bootstrap = r.join(KUBELET_STARTED);
    {
        let r = r.clone();
        w.runner.effect_front("kubeadm join --config", move |_| {
            write(&r, KUBELET_STARTED, KUBECONFIG);
            write(&r, "etc/kubernetes/pki/ca.crt", "CA\n");
            Output::fail(1, &ready_node_refusal("w1"))
        });
    }
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("kubeadm join refused: a Node named w1 reads Ready")
            && msg.contains("retried from scratch"),
        "{msg}"
    );
    assert!(!bootstrap.exists() && !r.join("etc/kubernetes/pki/ca.crt").exists());
    assert!(
        r.join("etc/hakube/pki/ca.crt").exists(),
        "the image's CA stays"
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Failed);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 2);
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_refused_by_kubeadm_for_a_ready_node_runs_no_etcd_join_and_joins_afresh() {
    // The wedge the review found: kubeadm's control-plane-prepare wrote the
    // manifests, kubelet-start wrote bootstrap-kubelet.conf and refused.
    // Taken for "failed after the kubelet's bootstrap", etcd-join would add a
    // learner with no kubelet to start it, blocking every other master.
    let w = joining("m2", Role::Master, FakeCluster::new(&stacked_nodes(), true));
    let manifests = [
        APISERVER_POD,
        "etc/kubernetes/manifests/kube-controller-manager.yaml",
        "etc/kubernetes/manifests/kube-scheduler.yaml",
    ];
    let r = w.root.path().to_path_buf();
    {
        let r = r.clone();
        w.runner.effect_front("kubeadm join --config", move |_| {
            for f in manifests {
                write(&r, f, "kind: Pod\n");
            }
            write(&r, KUBELET_STARTED, KUBECONFIG);
            Output::fail(1, &ready_node_refusal("m2"))
        });
    }
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(msg.contains("a Node named m2 reads Ready"), "{msg}");
    assert!(
        join_phases(&w).is_empty(),
        "no phase runs: {:?}",
        join_phases(&w)
    );
    assert!(
        !w.etcd.log().iter().any(|l| l.contains("add")),
        "{:?}",
        w.etcd.log()
    );
    for f in manifests.iter().chain([&KUBELET_STARTED]) {
        assert!(!r.join(f).exists(), "{f} left for the retry's preflight");
    }
    assert!(
        r.join("etc/kubernetes/pki/ca.crt").exists(),
        "the baked CA stays"
    );
    // The next attempt is a whole join again.
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 2);
    assert!(join_phases(&w).is_empty());
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

/// m2 joining, its `kubeadm join` failing after it wrote its etcd manifest
/// and added its member, which already votes.
fn m2_voting_then_join_failing() -> World {
    let (c, m2) = cluster_without_m2();
    let w = joining("m2", Role::Master, c);
    join_failing_in_etcd_join(&w, true, Some(m2));
    w
}

/// The stacked cluster without m2, and m2's member (started, up).
fn cluster_without_m2() -> (FakeCluster, FakeMember) {
    let mut c = FakeCluster::new(&stacked_nodes(), true);
    let m2 = c.members.remove(1);
    (c, m2)
}

#[test]
fn master_whose_learner_was_left_unpromoted_promotes_it_and_skips_etcd_join() {
    let (mut c, mut m2) = cluster_without_m2();
    m2.member.is_learner = true; // added and started, never promoted
    c.promote_refusals = 2; // not yet in sync with the leader, twice
    let w = joining("m2", Role::Master, c);
    join_failing_in_etcd_join(&w, true, Some(m2));
    w.run().unwrap();
    assert_eq!(w.etcd.log(), ["promote 11"]);
    assert!(
        w.etcd
            .cluster
            .borrow()
            .members
            .iter()
            .all(|m| !m.member.is_learner),
        "m2 votes"
    );
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(
        join_phases(&w),
        [format!(
            "kubeadm join phase control-plane-join all --config {config}"
        )]
    );
    let rec = w.step("kubeadm-join");
    let outcome = rec.outcome.unwrap_or_default();
    assert!(
        outcome.contains("promoted etcd learner m2 (id 11)")
            && outcome.contains("control-plane-join all"),
        "{outcome}"
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_whose_member_already_votes_skips_etcd_join() {
    let w = m2_voting_then_join_failing();
    w.run().unwrap();
    assert!(w.etcd.log().is_empty(), "{:?}", w.etcd.log());
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(
        join_phases(&w),
        [format!(
            "kubeadm join phase control-plane-join all --config {config}"
        )]
    );
}

#[test]
fn master_with_an_etcd_manifest_but_no_member_runs_etcd_join() {
    let (c, _) = cluster_without_m2();
    let w = joining("m2", Role::Master, c);
    join_failing_in_etcd_join(&w, true, None);
    w.run().unwrap();
    assert!(w.etcd.log().is_empty(), "{:?}", w.etcd.log());
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(
        join_phases(&w),
        [
            format!("kubeadm join phase etcd-join --config {config}"),
            format!("kubeadm join phase control-plane-join all --config {config}"),
        ]
    );
}

#[test]
fn worker_join_cut_after_the_kubelet_bootstrap_runs_no_control_plane_phase() {
    let w = joining("w1", Role::Worker, FakeCluster::default());
    let r = w.root.path().to_path_buf();
    w.runner.effect_front("kubeadm join --config", move |_| {
        write(&r, KUBELET_CONFIG, "kind: KubeletConfiguration\n");
        write(&r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
        write(&r, KUBELET_CLIENT_PEM, "CERT\n");
        panic!("simulated power cut during kubeadm join");
    });
    assert!(catch_unwind(AssertUnwindSafe(|| w.run())).is_err());
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(w.runner.count("kubeadm join phase"), 0);
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn worker_whose_tls_bootstrap_outlasted_kubeadm_gets_its_bootstrap_kubeconfig_again() {
    // The kubelet wrote kubelet.conf (pointing at a certificate still to
    // come), kubeadm's 10-minute wait gave up and removed the bootstrap
    // kubeconfig: a kubelet that can never get its certificate. Declared
    // joined, the worker would stay out of the cluster for good.
    let w = joining("w1", Role::Worker, FakeCluster::default());
    join_fails_after(
        &w,
        &[KUBELET_CONF],
        None,
        "error execution phase kubelet-wait-bootstrap: failed while waiting for TLS bootstrap: \
         context deadline exceeded",
    );
    let r = w.root.path().to_path_buf();
    w.runner
        .effect_front("kubeadm join phase kubelet-start", move |_| {
            write(&r, KUBELET_STARTED, KUBECONFIG);
            Output::default()
        });
    let get = format!(
        "kubectl --kubeconfig {} --request-timeout=20s get node w1 -o name",
        w.path("etc/kubernetes/kubelet.conf")
    );
    w.runner.push_front(
        &get,
        Output::fail(
            1,
            "error: You must be logged in to the server (Unauthorized)",
        ),
    );
    w.run().unwrap();
    let config = w.path("etc/hakube/kubeadm/join.yaml");
    assert_eq!(
        join_phases(&w),
        [format!(
            "kubeadm join phase kubelet-start --config {config}"
        )]
    );
    assert_eq!(w.runner.count(&get), 2, "waited for the node to register");
    assert!(!w.root.path().join(KUBELET_STARTED).exists());
    let outcome = w.step("kubeadm-join").outcome.unwrap();
    assert!(
        outcome.contains("bootstrap kubeconfig written again"),
        "{outcome}"
    );
    assert_eq!(w.state("kubeadm-join"), StepState::Done);
}

#[test]
fn master_joins_only_after_another_masters_etcd_learner_is_promoted() {
    let mut c = FakeCluster::new(&stacked_nodes(), true);
    c.members[2].member.is_learner = true; // m3 joined first, still catching up
    let w = joining("m2", Role::Master, c);
    // This m2 is new: it has no member yet.
    w.etcd.cluster.borrow_mut().members.remove(1);
    let cl = w.etcd.cluster.clone();
    w.clock.at(Duration::from_secs(240), move || {
        cl.borrow_mut().members[1].member.is_learner = false;
    });
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert!(w.clock.slept.get() >= Duration::from_secs(240));
    let rec = w.step("etcd-learners");
    assert_eq!(
        rec.outcome.as_deref(),
        Some("no other master's etcd learner among 2 members")
    );
}

#[test]
fn a_learner_that_never_catches_up_is_reported_by_name_and_nothing_joins() {
    let mut c = FakeCluster::new(&stacked_nodes(), true);
    c.members[2].member.is_learner = true;
    c.members.remove(1);
    let w = joining("m2", Role::Master, c);
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(msg.contains("etcd learners to be promoted"), "{msg}");
    assert!(msg.contains("learner m3"), "{msg}");
    assert!(msg.contains("still catching up"), "{msg}");
    assert_eq!(w.runner.count("kubeadm"), 0);
}

#[test]
fn rebuilt_master_refuses_when_removing_would_lose_quorum() {
    let mut c = FakeCluster::new(&stacked_nodes(), true);
    c.members[1].up = false;
    c.members[2].up = false;
    let w = joining("m2", Role::Master, c);
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("refusing to remove stale etcd member m2"),
        "{msg}"
    );
    assert_eq!(w.runner.count("kubeadm"), 0);
    assert!(w.etcd.log().is_empty());
}

#[test]
fn worker_waits_for_the_api_then_joins() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    w.probe.answer(&format!("https://{VIP}:8443/readyz"), 12);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    assert_eq!(w.probe.probes.get(), 13);
    // 12 failed probes: 1+2+4+8+16 then capped at 30 s
    assert_eq!(
        w.clock.slept.get(),
        Duration::from_secs(1 + 2 + 4 + 8 + 16 + 30 * 7)
    );
    let kubelet = fs::read_to_string(w.path("etc/kubernetes/kubelet.conf")).unwrap();
    assert!(kubelet.contains("https://127.0.0.1:7443"));
}

#[test]
fn unreachable_endpoint_is_waited_for_and_reported_not_skipped() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains(
            "gave up waiting for the Kubernetes API at https://10.0.0.100:8443/readyz after 3"
        ),
        "{msg}"
    );
    assert_eq!(w.runner.count("kubeadm"), 0);
    assert_eq!(w.state("wait-api"), StepState::Failed);
}

// ---- failures and resume ----------------------------------------------

#[test]
fn failed_kubeadm_init_is_reported_with_its_output_and_never_rerun() {
    let w = init_world(EtcdTopology::External);
    w.runner.push_front(
        "kubeadm init --config",
        Output {
            status: 1,
            stdout: "[preflight] Running pre-flight checks\n".into(),
            stderr: "error execution phase preflight: [ERROR Port-6443]: Port 6443 is in use\n"
                .into(),
        },
    );
    let err = w.run().unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("[ERROR Port-6443]: Port 6443 is in use"),
        "{msg}"
    );
    assert!(msg.contains("exited with status 1"), "{msg}");
    let rec = w.step("kubeadm-init");
    assert_eq!(rec.state, StepState::Failed);
    assert!(rec.last_error.unwrap().contains("Port 6443 is in use"));
    // next boot: no second kubeadm init, a message for the operator instead
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("a second full kubeadm init is never run"),
        "{msg}"
    );
    assert!(msg.contains("kubeadm reset -f"), "{msg}");
    assert_eq!(w.runner.count("kubeadm init --config"), 1);
    // the operator cleans up and retries deliberately
    crate::run(&w.env(), Some("kubeadm-init")).unwrap();
    assert_eq!(w.runner.count("kubeadm init --config"), 2);
}

#[test]
fn kubeadm_replacing_the_baked_certificate_is_an_error() {
    let w = init_world(EtcdTopology::External);
    let r = w.root.path().to_path_buf();
    w.runner.effect_front("kubeadm init --config", move |_| {
        write(&r, "etc/kubernetes/pki/apiserver.crt", "REGENERATED\n");
        Output::ok("")
    });
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(
        msg.contains("kubeadm replaced the baked API server certificate"),
        "{msg}"
    );
}

/// Runs `make()` once per side effect of a clean run, cutting power after
/// the n-th; then boots again and checks the node ends where a clean run does.
fn power_cut_everywhere(
    make: impl Fn() -> World,
    after_cut: impl Fn(&World),
    check: impl Fn(&World),
) {
    let mut n = 0;
    loop {
        let w = make();
        w.cut.arm(n);
        let first = catch_unwind(AssertUnwindSafe(|| w.run()));
        let crashed = first.is_err();
        w.cut.disarm();
        if !crashed {
            first.unwrap().unwrap();
            assert!(n >= 3, "the scenario has side effects");
            return;
        }
        let before = w.journal();
        let running: Vec<_> = before
            .steps
            .iter()
            .filter(|s| s.state == StepState::Running)
            .collect();
        assert_eq!(
            running.len(),
            1,
            "cut {n}: exactly the interrupted step is running: {before:#?}"
        );
        let done_before: Vec<String> = before
            .steps
            .iter()
            .filter(|s| s.state == StepState::Done)
            .map(|s| s.name.clone())
            .collect();
        after_cut(&w);
        w.run()
            .unwrap_or_else(|e| panic!("cut {n}: resume failed: {e:#}"));
        let after = w.journal();
        for s in &after.steps {
            assert_eq!(s.state, StepState::Done, "cut {n}: {}", s.name);
            if done_before.contains(&s.name) {
                assert_eq!(
                    s.attempts, 1,
                    "cut {n}: completed step {} was repeated",
                    s.name
                );
            }
        }
        assert_eq!(
            after
                .steps
                .iter()
                .find(|s| s.name == running[0].name)
                .unwrap()
                .attempts,
            2,
            "cut {n}: the interrupted step was re-checked"
        );
        check(&w);
        n += 1;
    }
}

#[test]
fn power_cut_at_every_step_of_the_init_node() {
    power_cut_everywhere(
        || init_world(EtcdTopology::External),
        |_| {},
        |w| {
            assert_eq!(
                w.runner.count("kubeadm init --config"),
                1,
                "{:#?}",
                w.runner.calls()
            )
        },
    );
}

#[test]
fn power_cut_at_every_step_of_a_worker() {
    power_cut_everywhere(
        || {
            let w = World::new(
                profile("w1", Role::Worker, EtcdTopology::Stacked),
                FakeCluster::default(),
            );
            w.probe.answer(&format!("https://{VIP}:8443/readyz"), 0);
            w
        },
        |_| {},
        |w| assert_eq!(w.runner.count("kubeadm join --config"), 1),
    );
}

#[test]
fn power_cut_at_every_step_of_a_replacement_etcd_member() {
    power_cut_everywhere(
        || {
            let mut c = FakeCluster::new(&etcd_nodes(), true);
            c.members[0].up = false;
            World::new(profile("e1", Role::Etcd, EtcdTopology::External), c)
        },
        // the power cut also stopped this node's etcd
        |w| w.etcd.cluster.borrow_mut().stop("e1"),
        |w| {
            let c = w.etcd.cluster.borrow();
            assert_eq!(c.members.len(), 3, "{:#?}", c.members);
            assert!(c.members.iter().all(|m| m.up && !m.member.is_learner));
        },
    );
}

#[test]
fn power_cut_at_every_step_of_a_forming_etcd_member() {
    power_cut_everywhere(
        || {
            let mut c = FakeCluster::new(&etcd_nodes(), false);
            c.start("e2", "https://10.0.0.2:2380");
            World::new(profile("e1", Role::Etcd, EtcdTopology::External), c)
        },
        |w| w.etcd.cluster.borrow_mut().stop("e1"),
        |w| assert!(w.etcd.log().iter().all(|l| l.starts_with("start"))),
    );
}

#[test]
fn interrupted_init_with_a_control_plane_is_finished_by_phases() {
    let w = init_world(EtcdTopology::External);
    // kubeadm init does its work, then the power goes.
    let (r, probe) = (w.root.path().to_path_buf(), w.probe.clone());
    w.runner.effect_front("kubeadm init --config", move |_| {
        write(&r, "etc/kubernetes/admin.conf", KUBECONFIG);
        write(&r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
        write(
            &r,
            "etc/kubernetes/manifests/kube-apiserver.yaml",
            "kind: Pod\n",
        );
        probe.answer("https://10.0.0.11:6443/readyz", 0);
        panic!("simulated power cut during kubeadm init");
    });
    let r = catch_unwind(AssertUnwindSafe(|| w.run()));
    assert!(r.is_err());
    assert_eq!(w.state("kubeadm-init"), StepState::Running);
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init --config"), 1);
    let config = w.path("etc/hakube/kubeadm/init.yaml");
    for phase in [
        "upload-config all",
        "mark-control-plane",
        "bootstrap-token",
        "kubelet-finalize all",
        "addon coredns",
    ] {
        assert_eq!(
            w.runner
                .count(&format!("kubeadm init phase {phase} --config {config}")),
            1,
            "{phase}"
        );
    }
    let rec = w.step("kubeadm-init");
    assert!(rec
        .outcome
        .unwrap()
        .starts_with("resumed an interrupted kubeadm init"));
}

#[test]
fn init_that_gives_up_after_the_control_plane_is_finished_by_phases_in_the_same_run() {
    // What a slow first boot did: kubeadm wrote the control plane, then its
    // API-call timeout ran out before the API server answered.
    let w = init_world(EtcdTopology::External);
    let (r, probe) = (w.root.path().to_path_buf(), w.probe.clone());
    w.runner.effect_front("kubeadm init --config", move |_| {
        write(&r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
        write(
            &r,
            "etc/kubernetes/manifests/kube-apiserver.yaml",
            "kind: Pod\n",
        );
        probe.answer("https://10.0.0.11:6443/readyz", 0);
        Output {
            status: 1,
            stdout: String::new(),
            stderr:
                "error execution phase wait-control-plane: unable to create ClusterRoleBinding: \
                     context deadline exceeded\n"
                    .into(),
        }
    });
    w.run().unwrap();
    assert_eq!(w.runner.count("kubeadm init --config"), 1);
    let config = w.path("etc/hakube/kubeadm/init.yaml");
    assert_eq!(
        w.runner.count(&format!(
            "kubeadm init phase addon coredns --config {config}"
        )),
        1
    );
    // kube-proxy comes from its own step, with the local balancer's config.
    assert_eq!(w.runner.count("kubeadm init phase addon all"), 0);
    assert_eq!(
        w.runner.count(&format!(
            "kubeadm init phase addon kube-proxy --config {}",
            w.path("etc/hakube/kubeadm/kube-proxy.yaml")
        )),
        1
    );
    assert_eq!(w.state("kubeadm-init"), StepState::Done);
}

#[test]
fn init_that_fails_before_the_control_plane_runs_no_phases() {
    let w = init_world(EtcdTopology::External);
    w.runner.push_front(
        "kubeadm init --config",
        Output {
            status: 1,
            stdout: String::new(),
            stderr: "error execution phase preflight: [ERROR Port-10250]: Port 10250 is in use\n"
                .into(),
        },
    );
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(msg.contains("will not be re-run automatically"), "{msg}");
    assert_eq!(w.runner.count("kubeadm init phase"), 0);
    assert_eq!(w.state("kubeadm-init"), StepState::Failed);
}

#[test]
fn interrupted_init_is_judged_by_what_kubeadm_wrote_not_the_baked_admin_conf() {
    let w = init_world(EtcdTopology::External);
    // Masters carry a baked admin.conf; kubeadm init got as far as the
    // control-plane manifests and was cut before writing kubelet.conf.
    write(w.root.path(), "etc/kubernetes/admin.conf", KUBECONFIG);
    let r = w.root.path().to_path_buf();
    w.runner.effect_front("kubeadm init --config", move |_| {
        write(
            &r,
            "etc/kubernetes/manifests/kube-apiserver.yaml",
            "kind: Pod\n",
        );
        panic!("simulated power cut during kubeadm init");
    });
    assert!(catch_unwind(AssertUnwindSafe(|| w.run())).is_err());
    let msg = format!("{:#}", w.run().unwrap_err());
    assert!(msg.contains("kubelet.conf missing"), "{msg}");
    assert!(
        msg.contains("a second full kubeadm init is never run"),
        "{msg}"
    );
    assert_eq!(w.runner.count("kubeadm init phase"), 0);
    assert_eq!(w.runner.count("kubeadm init --config"), 1);
}

#[test]
fn kubelet_conf_keeps_mode_0600_when_repointed() {
    use std::os::unix::fs::PermissionsExt;
    let w = joining("w1", Role::Worker, FakeCluster::default());
    let r = w.root.path().to_path_buf();
    w.runner.effect_front("kubeadm join --config", move |_| {
        write(&r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
        let p = r.join("etc/kubernetes/kubelet.conf");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        Output::ok("This node has joined the cluster\n")
    });
    w.run().unwrap();
    let p = w.root.path().join("etc/kubernetes/kubelet.conf");
    assert!(fs::read_to_string(&p).unwrap().contains("127.0.0.1:7443"));
    let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "kubelet.conf mode {mode:o}");
}

#[test]
fn join_token_is_checked_on_every_boot_of_every_master_and_renewed_before_expiry() {
    let w = World::new(
        profile("m2", Role::Master, EtcdTopology::Stacked),
        FakeCluster::new(&[("m1", "10.0.0.11"), ("m3", "10.0.0.13")], true),
    );
    w.probe.answer(&format!("https://{VIP}:8443/readyz"), 0);
    let admin = w.path("etc/kubernetes/admin.conf");
    let get =
        format!("kubectl --kubeconfig {admin} -n kube-system get secret bootstrap-token-abcdef");
    // First boot: valid for 300 more days (of 365): left alone.
    w.runner
        .push_front(&get, Output::ok("2027-11-11T08:00:00Z"));
    w.run().unwrap();
    assert_eq!(w.runner.count(&get), 1);
    assert_eq!(
        w.runner.count(&format!(
            "kubectl --kubeconfig {admin} -n kube-system patch"
        )),
        0
    );
    let j = w.journal();
    assert_eq!(
        j.notes.get("bootstrap-token.expires").map(String::as_str),
        Some("2027-11-11T08:00:00Z")
    );
    // A boot months later (the fake clock is at 2027-01-15T08:00:00Z): 17
    // days left, less than half the lifetime: renewed to now + 365 days.
    w.runner
        .push_front(&get, Output::ok("2027-02-01T00:00:00Z"));
    w.run().unwrap();
    assert_eq!(w.runner.count(&get), 2, "checked again on the next boot");
    let patch = format!(
        "kubectl --kubeconfig {admin} -n kube-system patch secret bootstrap-token-abcdef --type merge -p \
         {{\"stringData\":{{\"expiration\":\"2028-01-15T08:00:00Z\"}}}}"
    );
    assert_eq!(w.runner.count(&patch), 1, "{:#?}", w.runner.calls());
    assert_eq!(
        w.journal()
            .notes
            .get("bootstrap-token.expires")
            .map(String::as_str),
        Some("2028-01-15T08:00:00Z")
    );
    // Steps that are not every-boot checks ran once.
    assert_eq!(w.runner.count("kubeadm join --config"), 1);
    // Third boot: gone (deleted, or expired and cleaned up): re-created.
    w.run().unwrap();
    assert_eq!(
        w.runner.count(&format!(
            "kubeadm token create {TOKEN} --ttl 8760h0m0s --kubeconfig {admin}"
        )),
        1
    );
}

#[test]
fn go_durations_parse() {
    use super::cluster::parse_go_duration;
    assert_eq!(
        parse_go_duration("8760h0m0s"),
        Some(time::Duration::hours(8760))
    );
    assert_eq!(parse_go_duration("24h"), Some(time::Duration::hours(24)));
    assert_eq!(
        parse_go_duration("1h30m"),
        Some(time::Duration::minutes(90))
    );
    for bad in ["", "h", "10", "5d", "0s"] {
        assert_eq!(parse_go_duration(bad), None, "{bad}");
    }
}

// ---- status, health, bad input ------------------------------------------

/// `hakube-firstboot status` of the world's root, with no boot disk under
/// it (the OS slots say why) and commands answering nothing.
fn status_of(w: &World, json: bool) -> String {
    let (runner, clock) = (
        crate::fakes::FakeRunner::new(),
        crate::fakes::FakeClock::default(),
    );
    let os = crate::update::platform(w.root.path(), &runner, &clock);
    crate::status(w.root.path(), json, &os).unwrap()
}

#[test]
fn status_lists_every_certificate_with_its_expiry() {
    let w = World::new(
        profile("m2", Role::Master, EtcdTopology::Stacked),
        FakeCluster::new(&stacked_nodes(), true),
    );
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
    let apiserver = fs::read_to_string(fixtures.join("apiserver.crt")).unwrap();
    let client = fs::read_to_string(fixtures.join("admin-client.crt")).unwrap();
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(&client);
    write(
        w.root.path(),
        "etc/kubernetes/pki/apiserver.crt",
        &apiserver,
    );
    write(
        w.root.path(),
        "etc/kubernetes/admin.conf",
        &format!("apiVersion: v1\nkind: Config\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {data}\n"),
    );
    // The kubelet's kubeconfig names its rotated certificate file instead.
    write(
        w.root.path(),
        "var/lib/kubelet/pki/kubelet-client-current.pem",
        &client,
    );
    let v: serde_json::Value = serde_json::from_str(&status_of(&w, true)).unwrap();
    let certs = v["certificates"].as_array().unwrap();
    let find = |name: &str| {
        certs
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {certs:?}"))
    };
    assert_eq!(find("apiserver")["notAfter"], "2029-02-14T20:24:52Z");
    assert_eq!(find("apiserver")["daysLeft"], 761);
    assert_eq!(find("admin.conf")["notAfter"], "2028-01-11T20:24:52Z");
    assert_eq!(find("admin.conf")["daysLeft"], 361);
    assert_eq!(find("kubelet-client")["daysLeft"], 361);
    // The World's CA is a placeholder: named as unreadable, not skipped.
    assert_eq!(find("ca")["ca"], true);
    assert!(find("ca")["error"].is_string());
    let text = status_of(&w, false);
    assert!(
        text.contains("apiserver                  2029-02-14T20:24:52Z      761  /etc/kubernetes/pki/apiserver.crt"),
        "{text}"
    );
}

#[test]
fn a_master_renews_the_certificates_due_and_restarts_their_readers_one_by_one() {
    let w = World::new(
        profile("m2", Role::Master, EtcdTopology::Stacked),
        FakeCluster::new(&stacked_nodes(), true),
    );
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
    let long = fs::read_to_string(fixtures.join("apiserver.crt")).unwrap();
    let short = fs::read_to_string(fixtures.join("etcd-server-short.crt")).unwrap();
    let r = w.root.path().to_path_buf();
    write(&r, "etc/kubernetes/pki/apiserver.crt", &long);
    write(&r, "etc/kubernetes/pki/etcd/server.crt", &short);
    write(&r, "etc/kubernetes/kubelet.conf", KUBECONFIG);
    {
        let r2 = r.clone();
        w.runner
            .effect_front("kubeadm certs renew etcd-server", move |_| {
                write(&r2, "etc/kubernetes/pki/etcd/server.crt", &long);
                Output::ok("certificate for serving etcd renewed\n")
            });
    }
    let ps = "crictl --runtime-endpoint unix:///run/containerd/containerd.sock ps --state Running --name ^etcd$ -q";
    w.runner.push_front(ps, Output::ok("7e57\n"));
    w.runner.push_front(ps, Output::ok(""));
    w.runner.push_front(ps, Output::ok("e7c0\n"));
    let out = crate::certs::renew(&w.env(), &w.p).unwrap();
    assert_eq!(
        out,
        "renewed etcd-server; restarted etcd; next due: apiserver from 2028-05-24T04:24:52Z\n"
    );
    let calls: Vec<String> = w
        .runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kubeadm") || c.starts_with("crictl"))
        .collect();
    assert_eq!(
        calls,
        [
            "kubeadm certs renew etcd-server".to_string(),
            ps.to_string(),
            "crictl --runtime-endpoint unix:///run/containerd/containerd.sock stop e7c0"
                .to_string(),
            ps.to_string(),
            ps.to_string(),
        ]
    );
    // Renewed: the next run renews nothing.
    let out = crate::certs::renew(&w.env(), &w.p).unwrap();
    assert!(
        out.starts_with("no certificate due for renewal; next due:"),
        "{out}"
    );
}

#[test]
fn one_run_at_a_time_holds_the_run_lock() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    let lock = Journal::path_under(w.root.path())
        .parent()
        .unwrap()
        .join("run.lock");
    // While a step runs, another run could not take the lock.
    let seen = Rc::new(Cell::new(false));
    let (l, s) = (lock.clone(), seen.clone());
    w.runner.effect_front("hostname", move |_| {
        let other = fs::OpenOptions::new().write(true).open(&l).unwrap();
        s.set(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        Output::ok("w1\n")
    });
    let _ = w.run();
    assert!(seen.get(), "the run did not hold {}", lock.display());
    // Released when the run ends.
    let after = fs::OpenOptions::new().write(true).open(&lock).unwrap();
    after.try_lock().unwrap();
}

#[test]
fn certificates_are_due_once_a_third_of_their_lifetime_is_left() {
    let t = |h: i64| time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(h);
    assert!(!crate::certs::due(t(0), t(24), t(15)));
    assert!(crate::certs::due(t(0), t(24), t(17)));
    assert!(crate::certs::due(t(0), t(24), t(30)), "expired");
    // A year: due in its last four months.
    assert!(!crate::certs::due(t(0), t(8760), t(5800)));
    assert!(crate::certs::due(t(0), t(8760), t(5900)));
}

#[test]
fn a_worker_or_a_master_not_in_its_cluster_renews_nothing() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    assert!(crate::certs::renew(&w.env(), &w.p)
        .unwrap()
        .contains("the kubelet rotates"));
    let w = World::new(
        profile("m2", Role::Master, EtcdTopology::Stacked),
        FakeCluster::new(&stacked_nodes(), true),
    );
    assert!(crate::certs::renew(&w.env(), &w.p)
        .unwrap()
        .contains("has not joined"));
    assert!(w.runner.calls().iter().all(|c| !c.starts_with("kubeadm")));
}

#[test]
fn status_json_reports_states_timings_attempts_errors() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    let _ = w.run();
    // No boot disk under this root: status says why instead of the slots.
    let v: serde_json::Value = serde_json::from_str(&status_of(&w, true)).unwrap();
    assert!(
        v["os"]["error"]
            .as_str()
            .unwrap()
            .contains("findmnt names no device for /"),
        "{v}"
    );
    assert_eq!(v["node"], "w1");
    assert_eq!(v["role"], "worker");
    assert_eq!(v["overall"], "failed");
    // The worker's CA (a placeholder here): listed first, unreadable said so.
    let certs = v["certificates"].as_array().unwrap();
    assert_eq!(certs[0]["path"], "/etc/hakube/pki/ca.crt", "{certs:?}");
    assert_eq!(certs[0]["ca"], true);
    assert!(certs[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a PEM certificate"));
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["name"], "identity");
    assert_eq!(steps[0]["state"], "done");
    assert_eq!(steps[0]["attempts"], 1);
    assert!(steps[0]["started"].as_str().unwrap().starts_with("2027-"));
    assert!(steps[0]["durationMs"].is_u64());
    let wait = steps.iter().find(|s| s["name"] == "wait-api").unwrap();
    assert_eq!(wait["state"], "failed");
    assert!(wait["lastError"]
        .as_str()
        .unwrap()
        .contains("gave up waiting"));
    assert_eq!(wait["durationMs"], 3601 * 1000); // fake clock: waited to the limit
    let join = steps.iter().find(|s| s["name"] == "kubeadm-join").unwrap();
    assert_eq!(join["state"], "pending");
    let text = status_of(&w, false);
    assert!(text.contains("wait-api             failed"), "{text}");
    assert!(text.contains("last error of wait-api"), "{text}");
}

#[test]
fn health_of_etcd_member() {
    let w = World::new(
        profile("e1", Role::Etcd, EtcdTopology::External),
        FakeCluster::new(&etcd_nodes(), true),
    );
    w.svc.active.borrow_mut().insert("etcd.service".into());
    assert!(crate::health(&w.env()).is_ok());
    w.etcd.cluster.borrow_mut().stop("e2");
    assert!(crate::health(&w.env()).is_ok(), "2 of 3 is quorum");
    w.etcd.cluster.borrow_mut().stop("e3");
    let err = crate::health(&w.env()).unwrap_err();
    assert!(
        format!("{err:#}").contains("does not answer health reads"),
        "{err:#}"
    );
    assert!(
        !crate::health::is_definite(&err),
        "running, waiting for peers"
    );
    // Its own etcd crash-looping on this boot: waiting cannot mend that.
    w.svc.active.borrow_mut().remove("etcd.service");
    w.svc.restarts.borrow_mut().insert("etcd.service".into(), 7);
    let err = crate::health(&w.env()).unwrap_err();
    assert!(crate::health::is_definite(&err), "{err:#}");
    assert!(
        format!("{err:#}").contains("etcd.service is not active and systemd restarted it 7 times"),
        "{err:#}"
    );
}

/// This boot's id as the kernel gives it, and another boot's.
const BOOT: &str = "0b5c4f4e-2d1a-4c55-9d3e-6f1f2b7c9a10";
const OTHER_BOOT: &str = "9e0a7d61-55c3-4a8e-b0f2-1d2c3b4a5e6f";

/// A Node object as `kubectl get node -o json` prints it: its Ready
/// condition, and the boot its kubelet last reported from.
fn node_json(ready: &str, boot: &str) -> String {
    serde_json::json!({"kind":"Node","status":{"conditions":[
        {"type":"MemoryPressure","status":"False"},
        {"type":"Ready","status":ready,"reason":"KubeletReady","message":"kubelet is posting ready status"}],
        "nodeInfo":{"bootID":boot}}})
    .to_string()
}

fn booted(w: &World) {
    write(w.root.path(), crate::health::BOOT_ID, &format!("{BOOT}\n"));
}

#[test]
fn health_of_kubernetes_node() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    booted(&w);
    let err = crate::health(&w.env()).unwrap_err();
    assert!(
        format!("{err:#}").contains("kubelet.service is not active"),
        "{err:#}"
    );
    assert!(
        !crate::health::is_definite(&err),
        "not started yet: worth waiting"
    );
    // Restarted by systemd again and again on this boot: it cannot start.
    w.svc
        .restarts
        .borrow_mut()
        .insert("kubelet.service".into(), crate::health::CRASH_LOOP_RESTARTS);
    let err = crate::health(&w.env()).unwrap_err();
    assert!(crate::health::is_definite(&err), "{err:#}");
    assert!(
        format!("{err:#}").contains("restarted it 6 times on this boot"),
        "{err:#}"
    );

    w.svc.active.borrow_mut().insert("kubelet.service".into());
    let get = format!(
        "kubectl --kubeconfig {} get node w1 -o json",
        w.path("etc/kubernetes/kubelet.conf")
    );
    w.runner
        .push_front(&get, Output::ok(&node_json("False", BOOT)));
    let msg = format!("{:#}", crate::health(&w.env()).unwrap_err());
    assert!(msg.contains("not Ready: Ready=False"), "{msg}");
    // Ready, but as the kubelet of the boot before said it.
    w.runner
        .push_front(&get, Output::ok(&node_json("True", OTHER_BOOT)));
    let err = crate::health(&w.env()).unwrap_err();
    assert!(format!("{err:#}").contains("from another boot"), "{err:#}");
    assert!(!crate::health::is_definite(&err));
    w.runner
        .push_front(&get, Output::ok(&node_json("True", BOOT)));
    assert_eq!(
        crate::health(&w.env()).unwrap(),
        "kubelet active; node w1 Ready (this boot)"
    );
}

#[test]
fn health_of_a_master_is_its_own_api_server_and_etcd_member() {
    let w = World::new(
        profile("m2", Role::Master, EtcdTopology::Stacked),
        FakeCluster::new(&stacked_nodes(), true),
    );
    booted(&w);
    w.svc.active.borrow_mut().insert("kubelet.service".into());
    let kubectl = format!(
        "kubectl --kubeconfig {}",
        w.path("etc/kubernetes/kubelet.conf")
    );
    let readyz = format!("{kubectl} --server https://10.0.0.12:6443 get --raw /readyz");
    let get = format!("{kubectl} get node m2 -o json");
    // The endpoint's API server (another master's) says Ready; this
    // master's own does not answer: not healthy.
    w.runner
        .push_front(&get, Output::ok(&node_json("True", BOOT)));
    w.runner.push_front(
        &readyz,
        Output::fail(1, "The connection to the server 10.0.0.12:6443 was refused"),
    );
    let msg = format!("{:#}", crate::health(&w.env()).unwrap_err());
    assert!(
        msg.contains("this master's API server at https://10.0.0.12:6443 is not ready")
            && msg.contains("refused"),
        "{msg}"
    );
    w.runner.push_front(&readyz, Output::ok("ok"));
    assert_eq!(
        crate::health(&w.env()).unwrap(),
        "kubelet active; API server https://10.0.0.12:6443 ready; etcd member m2 healthy; node m2 Ready (this boot)"
    );
    // Its API server ready but its stacked etcd member down.
    w.runner.push_front(&readyz, Output::ok("ok"));
    w.etcd.cluster.borrow_mut().stop("m2");
    let msg = format!("{:#}", crate::health(&w.env()).unwrap_err());
    assert!(
        msg.contains("this master's etcd member m2 at https://10.0.0.12:2379 does not answer"),
        "{msg}"
    );
}

#[test]
fn missing_or_invalid_profile_is_bad_input_and_runs_nothing() {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    fs::remove_file(w.root.path().join(PROFILE_PATH)).unwrap();
    let err = w.run().unwrap_err();
    assert_eq!(crate::exit_code(&err), 2);
    assert!(format!("{err:#}").contains("cannot read the node profile"));
    write(
        w.root.path(),
        PROFILE_PATH,
        "{\"profileVersion\": 1, \"surprise\": true}",
    );
    let err = w.run().unwrap_err();
    assert_eq!(crate::exit_code(&err), 2);
    assert!(format!("{err:#}").contains("node.json"), "{err:#}");
    assert!(w.runner.calls().is_empty());
    assert!(w.svc.calls().is_empty());
    assert!(!Journal::path_under(w.root.path()).exists());
}

// ---- container images baked into containerd's store -----------------------

const PAUSE_DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const PROXY_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// `images.json` as hakube-build writes it for a containerd node (no archives).
fn lay_store_index(w: &World) {
    let index = serde_json::json!({"node": "w1", "images": [
        {"image": "registry.k8s.io/pause:3.10.2", "digest": PAUSE_DIGEST,
         "amd64Digest": PAUSE_DIGEST, "size": 0},
        {"image": "registry.k8s.io/kube-proxy:v1.37.2", "digest": PROXY_DIGEST,
         "amd64Digest": PROXY_DIGEST, "size": 0},
    ]});
    write(
        w.root.path(),
        "var/lib/hakube/images/images.json",
        &index.to_string(),
    );
}

/// A worker whose disk lists pause and kube-proxy, and whose containerd
/// holds `listed` (reference, digest).
fn worker_with_store(listed: &[(&str, &str)]) -> World {
    let w = World::new(
        profile("w1", Role::Worker, EtcdTopology::Stacked),
        FakeCluster::default(),
    );
    lay_store_index(&w);
    w.runner.on_front(
        "ctr --namespace k8s.io images ls",
        crate::fakes::ctr_images_ls(listed),
    );
    w
}

#[test]
fn a_store_that_lost_an_image_fails_the_step_and_shows_in_status_and_health() {
    let w = worker_with_store(&[("registry.k8s.io/pause:3.10.2", PAUSE_DIGEST)]);
    let err = format!("{:#}", w.run().unwrap_err());
    assert!(
        err.contains("registry.k8s.io/kube-proxy:v1.37.2 is missing"),
        "{err}"
    );
    assert_eq!(w.runner.count("ctr --namespace k8s.io images import"), 0);
    assert_eq!(
        w.runner.count("kubeadm"),
        0,
        "kubeadm must not run without its images"
    );
    let j = w.journal();
    let step = j
        .steps
        .iter()
        .find(|s| s.name == "container-images")
        .unwrap();
    assert_eq!(step.state, StepState::Failed);

    // status: the live check, in JSON and text.
    let clock = FakeClock::default();
    let os = crate::update::platform(w.root.path(), &*w.runner, &clock);
    let v: serde_json::Value =
        serde_json::from_str(&crate::status(w.root.path(), true, &os).unwrap()).unwrap();
    assert_eq!(v["images"]["store"], "containerd");
    assert_eq!(v["images"]["images"], 2);
    assert_eq!(
        v["images"]["problems"],
        serde_json::json!(["registry.k8s.io/kube-proxy:v1.37.2 is missing"])
    );
    let text = crate::status(w.root.path(), false, &os).unwrap();
    assert!(
        text.contains(
            "container images: 1 of 2 images not right in containerd: registry.k8s.io/kube-proxy:v1.37.2 is missing"
        ),
        "{text}"
    );

    // health: unhealthy, naming the image, even with the kubelet up.
    w.svc.active.borrow_mut().insert("kubelet.service".into());
    let msg = format!("{:#}", crate::health(&w.env()).unwrap_err());
    assert!(
        msg.contains("container images: 1 of 2 images not right in containerd: registry.k8s.io/kube-proxy:v1.37.2 is missing"),
        "{msg}"
    );
}

#[test]
fn a_complete_store_passes_the_step_and_health_reports_it() {
    let w = worker_with_store(&[
        ("registry.k8s.io/pause:3.10.2", PAUSE_DIGEST),
        ("registry.k8s.io/kube-proxy:v1.37.2", PROXY_DIGEST),
    ]);
    let _ = w.run();
    let j = w.journal();
    let step = j
        .steps
        .iter()
        .find(|s| s.name == "container-images")
        .unwrap();
    assert_eq!(step.state, StepState::Done);
    assert_eq!(
        step.outcome.as_deref(),
        Some("2 images present in containerd, pinned (made at build; none imported)")
    );
    w.svc.active.borrow_mut().insert("kubelet.service".into());
    let get = format!(
        "kubectl --kubeconfig {} get node w1 -o json",
        w.path("etc/kubernetes/kubelet.conf")
    );
    w.runner
        .push_front(&get, Output::ok(&node_json("True", BOOT)));
    booted(&w);
    assert_eq!(
        crate::health(&w.env()).unwrap(),
        "kubelet active; node w1 Ready (this boot); 2 images present in containerd"
    );
}

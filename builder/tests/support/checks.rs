//! The checks the cluster scenarios share: readiness, system pods, the
//! firstboot journals, the node-local load balancer, the Service path
//! between nodes, and the formation timings.

#![allow(dead_code)]

use super::cluster::ClusterHarness;
use super::harness::wait_for;
use hakube_node_profile::Role;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Under TCG a control plane comes up ~5x slower than on hardware: kubeadm
/// init alone takes minutes. Generous, but every wait is bounded.
pub const FIRST_BOOT_LIMIT: Duration = Duration::from_secs(30 * 60);
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10 * 60);
pub const POLL: Duration = Duration::from_secs(10);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/e2e")
        .join(name)
}

/// Records a timing for bench/e2e.sh (HAKUBE_E2E_TIMINGS names a file that
/// gets one `scenario key seconds` line per figure).
pub fn record(scenario: &str, key: &str, d: Duration) {
    let line = format!("{scenario} {key} {}", d.as_secs());
    eprintln!("e2e timing: {line}");
    if let Some(p) = std::env::var_os("HAKUBE_E2E_TIMINGS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

pub fn condition<'a>(obj: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Every node of the spec (etcd nodes are no Kubernetes nodes) is Ready.
pub fn nodes_ready(h: &ClusterHarness) -> Result<(), String> {
    let v = h.kubectl_json(&["get", "nodes"])?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for n in h.cluster.nodes.iter().filter(|n| n.role != Role::Etcd) {
        let node = items
            .iter()
            .find(|i| i["metadata"]["name"] == n.name.as_str());
        match node.and_then(|i| condition(i, "Ready")) {
            Some(c) if c["status"] == "True" => {}
            Some(c) => missing.push(format!(
                "{}: Ready={} ({})",
                n.name, c["status"], c["message"]
            )),
            None => missing.push(format!("{}: not registered", n.name)),
        }
    }
    if items.len()
        != h.cluster
            .nodes
            .iter()
            .filter(|n| n.role != Role::Etcd)
            .count()
    {
        missing.push(format!("{} nodes registered", items.len()));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Every pod of kube-system (and flannel's namespace) is Running and Ready,
/// and the expected control-plane pods exist on every master.
pub fn system_pods_running(h: &ClusterHarness) -> Result<(), String> {
    let mut bad = Vec::new();
    let mut names = Vec::new();
    for ns in ["kube-system", "kube-flannel"] {
        let v = h.kubectl_json(&["-n", ns, "get", "pods"])?;
        for p in v["items"].as_array().into_iter().flatten() {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ready = condition(p, "Ready")
                .map(|c| c["status"] == "True")
                .unwrap_or(false);
            if p["status"]["phase"] != "Running" || !ready {
                bad.push(format!(
                    "{ns}/{name}: {} ready={ready}",
                    p["status"]["phase"]
                ));
            }
            names.push(name);
        }
    }
    let mut expected: Vec<String> = Vec::new();
    for m in h.cluster.masters() {
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            expected.push(format!("{c}-{}", m.name));
        }
        if h.cluster.etcd_topology == hakube_node_profile::EtcdTopology::Stacked {
            expected.push(format!("etcd-{}", m.name));
        }
    }
    for e in &expected {
        if !names.contains(e) {
            bad.push(format!("kube-system/{e}: missing"));
        }
    }
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    let kube_nodes = h
        .cluster
        .nodes
        .iter()
        .filter(|n| n.role != Role::Etcd)
        .count();
    for (prefix, want) in [
        ("kube-proxy-", kube_nodes),
        ("kube-flannel-ds-", kube_nodes),
    ] {
        if count(prefix) != want {
            bad.push(format!("{} {prefix}* pods, want {want}", count(prefix)));
        }
    }
    if count("coredns-") == 0 {
        bad.push("no coredns pod".into());
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// `kubeadm init` ran exactly once, on the init node, and every other
/// Kubernetes node ran `kubeadm join` exactly once (the journal's attempts).
pub fn assert_kubeadm_once(h: &mut ClusterHarness) {
    let init = h.cluster.init_node().name.as_str().to_string();
    let mut problems = Vec::new();
    for i in 0..h.nodes.len() {
        let n = &mut h.nodes[i];
        if n.role == Role::Etcd {
            continue;
        }
        let status = match n.firstboot_status() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: {e}", n.name));
                continue;
            }
        };
        let steps = status["steps"].as_array().cloned().unwrap_or_default();
        let step = |name: &str| steps.iter().find(|s| s["name"] == name).cloned();
        let (want, other) = if n.name == init {
            ("kubeadm-init", "kubeadm-join")
        } else {
            ("kubeadm-join", "kubeadm-init")
        };
        match step(want) {
            Some(s) if s["state"] == "done" && s["attempts"] == 1 => {}
            Some(s) => problems.push(format!("{}: {want} {s}", n.name)),
            None => problems.push(format!("{}: no {want} step", n.name)),
        }
        // The init node lists kubeadm-join too and records it skipped.
        if let Some(s) = step(other) {
            let skipped = s["outcome"]
                .as_str()
                .unwrap_or_default()
                .starts_with("skipped");
            if s["attempts"] != 0 && !skipped {
                problems.push(format!("{}: {other} ran too: {s}", n.name));
            }
        }
        if status["initNode"] != serde_json::json!(n.name == init) {
            problems.push(format!("{}: initNode={}", n.name, status["initNode"]));
        }
    }
    if !problems.is_empty() {
        h.fail(&format!(
            "kubeadm init/join counts: {}",
            problems.join("; ")
        ));
    }
}

/// haproxy answers on every node's local port, in front of a live apiserver.
pub fn assert_local_lb(h: &mut ClusterHarness) {
    let port = h.cluster.local_lb.port;
    let cmd = format!(
        "kubectl --kubeconfig /etc/kubernetes/kubelet.conf --server https://127.0.0.1:{port} \
         --request-timeout=20s get --raw /livez"
    );
    let mut problems = Vec::new();
    for i in 0..h.nodes.len() {
        let n = &mut h.nodes[i];
        if n.role == Role::Etcd {
            continue;
        }
        match n.guest_sh(&cmd) {
            Ok((0, out)) if out.trim() == "ok" => {}
            Ok((code, out)) => problems.push(format!("{}: exit {code}: {out}", n.name)),
            Err(e) => problems.push(format!("{}: {e}", n.name)),
        }
    }
    if !problems.is_empty() {
        h.fail(&format!(
            "haproxy on 127.0.0.1:{port}: {}",
            problems.join("; ")
        ));
    }
}

/// A Deployment on the worker answers through its ClusterIP Service, asked by
/// name from a pod on the master; CoreDNS resolves kubernetes.default.svc.
pub fn assert_service_path(h: &ClusterHarness) {
    let domain = h.cluster.networking.dns_domain.clone();
    let manifest = fixture("probe.yaml");
    h.must(
        "applying the probe workload",
        h.kubectl(&["apply", "-f", manifest.to_str().unwrap_or_default()]),
    );
    let (server, t) = h.must(
        "the probe pods becoming Ready",
        wait_for("probe pods Ready", Duration::from_secs(600), POLL, || {
            let v = h.kubectl_json(&["-n", "hakube-e2e", "get", "pods"])?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let mut server = None;
            let mut ready = 0;
            let mut seen = Vec::new();
            for p in &items {
                let name = p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ok = condition(p, "Ready")
                    .map(|c| c["status"] == "True")
                    .unwrap_or(false);
                let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
                seen.push(format!(
                    "{name} on {} {} {}",
                    p["spec"]["nodeName"], p["status"]["phase"], waiting
                ));
                if ok {
                    ready += 1;
                    if name.starts_with("probe-server-") {
                        server = Some(name);
                    }
                }
            }
            match server {
                Some(s) if ready == 2 => Ok(s),
                _ => Err(seen.join("; ")),
            }
        }),
    );
    eprintln!("e2e {}: probe pods Ready in {} s", h.scenario, t.as_secs());
    let host = format!("probe.hakube-e2e.svc.{domain}");
    let dial = format!(
        "/api/v1/namespaces/hakube-e2e/pods/http:probe-client:8080/proxy/dial?request=hostname&protocol=http&host={host}&port=80&tries=3"
    );
    let (answer, _) = h.must(
        "the Service answering the master's pod",
        wait_for(
            "probe Service answers",
            Duration::from_secs(120),
            POLL,
            || {
                let out = h.kubectl(&["get", "--raw", &dial])?;
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
                match v["responses"].as_array() {
                    Some(r) if !r.is_empty() => Ok(r.clone()),
                    _ => Err(out),
                }
            },
        ),
    );
    assert!(
        answer.iter().all(|r| r == server.as_str()),
        "the probe Service ({host}) answered {answer:?}, expected the server pod {server}"
    );
    let kubernetes = format!("kubernetes.default.svc.{domain}.:443");
    h.must(
        "CoreDNS resolving the kubernetes Service from the master's pod",
        wait_for(
            "kubernetes.default.svc resolves",
            Duration::from_secs(120),
            POLL,
            || {
                h.kubectl(&[
                    "-n",
                    "hakube-e2e",
                    "exec",
                    "probe-client",
                    "--",
                    "/agnhost",
                    "connect",
                    "--timeout=10s",
                    &kubernetes,
                ])
            },
        ),
    );
}

/// Boots the cluster and waits until it has formed: first boot complete on
/// every node, every node Ready. Returns power-on to Ready.
pub fn form(h: &mut ClusterHarness) -> Duration {
    let started = Instant::now();
    h.boot_all();
    h.wait_first_boot(FIRST_BOOT_LIMIT);
    for n in &h.nodes {
        if let Some(d) = n.first_boot {
            record(&h.scenario, &format!("first-boot-{}", n.name), d);
        }
    }
    let r = wait_for("every node Ready", SETTLE_LIMIT, POLL, || nodes_ready(h));
    h.must("nodes Ready", r);
    let formed = started.elapsed();
    eprintln!(
        "e2e {}: cluster formed in {} s",
        h.scenario,
        formed.as_secs()
    );
    record(&h.scenario, "cluster-formed", formed);
    formed
}

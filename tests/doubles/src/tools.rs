//! TEST DOUBLES of kubelet, kubectl and crictl, and the shared state file
//! (`$HAKUBE_DOUBLE_STATE`) standing in for the API server.

use crate::{fail, flag, Env, Outcome, BANNER};
use serde_json::{json, Value};

/// The state file, or `None` when no "API server" is reachable.
pub fn load_state(env: &Env) -> Result<Option<Value>, (String, i32)> {
    let Some(p) = &env.state else { return Ok(None) };
    match std::fs::read_to_string(p) {
        Ok(t) if t.trim().is_empty() => Ok(Some(json!({}))),
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| (format!("{BANNER}: state file {}: {e}", p.display()), 1)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(json!({}))),
        Err(e) => fail(format!("{BANNER}: reading {}: {e}", p.display())),
    }
}

pub fn save_state(env: &Env, st: &Value) -> Result<(), (String, i32)> {
    let Some(p) = &env.state else { return Ok(()) };
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st).unwrap_or_default())
        .and_then(|_| std::fs::rename(&tmp, p))
        .map_err(|e| (format!("{BANNER}: writing {}: {e}", p.display()), 1))
}

/// Registers a Ready node in the state.
pub fn add_node(st: &mut Value, name: &str, control_plane: bool) {
    if !st["nodes"].is_object() {
        st["nodes"] = json!({});
    }
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    st["nodes"][name] = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": if control_plane {
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
        } else { json!([]) }},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    });
}

const REFUSED: &str =
    "The connection to the server localhost:8080 was refused - did you specify the right host or port?";

pub fn kubelet(args: &[String], env: &Env) -> Outcome {
    if args.iter().any(|a| a == "--version" || a == "version") {
        return Ok(format!("Kubernetes {} ({BANNER})\n", env.version));
    }
    for a in args {
        let name = a.trim_start_matches('-').split('=').next().unwrap_or("");
        if !a.starts_with("--") {
            return fail(format!("unknown command {a:?} for \"kubelet\""));
        }
        let known = [
            "config",
            "kubeconfig",
            "bootstrap-kubeconfig",
            "container-runtime-endpoint",
            "node-ip",
            "hostname-override",
            "pod-infra-container-image",
            "v",
            "node-labels",
            "register-with-taints",
            "cloud-provider",
        ];
        if !known.contains(&name) {
            return fail(format!("unknown flag: --{name}"));
        }
    }
    if let Some(cfg) = flag(args, "--config") {
        let text = std::fs::read_to_string(env.host(&cfg)).map_err(|e| {
            (
                format!("failed to load kubelet config file, path: {cfg}, error: {e}"),
                1,
            )
        })?;
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| (format!("failed to load kubelet config file {cfg}: {e}"), 1))?;
        if v.get("apiVersion").and_then(|a| a.as_str()) != Some("kubelet.config.k8s.io/v1beta1")
            || v.get("kind").and_then(|k| k.as_str()) != Some("KubeletConfiguration")
        {
            return fail(format!(
                "{cfg}: kubelet.config.k8s.io/v1beta1 KubeletConfiguration expected"
            ));
        }
    }
    for f in ["--kubeconfig", "--bootstrap-kubeconfig"] {
        if let Some(p) = flag(args, f) {
            // The real kubelet waits for the bootstrap kubeconfig; one of the two must exist.
            let other = if f == "--kubeconfig" {
                "--bootstrap-kubeconfig"
            } else {
                "--kubeconfig"
            };
            let either =
                env.host(&p).exists() || flag(args, other).is_some_and(|o| env.host(&o).exists());
            if !either {
                return fail(format!("failed to run Kubelet: unable to load bootstrap kubeconfig: stat {p}: no such file or directory"));
            }
        }
    }
    Ok(String::new())
}

/// Stays up like a real kubelet (until SIGTERM, whose default action ends us).
pub fn kubelet_wait() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

pub fn kubectl(args: &[String], env: &Env) -> Outcome {
    // Global flags that may appear anywhere.
    let mut rest = Vec::new();
    let mut ns = "default".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--kubeconfig" || a == "-n" || a == "--namespace" {
            let v = it
                .next()
                .ok_or((format!("flag needs an argument: {a}"), 1))?;
            if a == "--kubeconfig" && !env.host(v).exists() {
                return fail(format!("error: stat {v}: no such file or directory"));
            }
            if a != "--kubeconfig" {
                ns = v.clone();
            }
        } else if a.starts_with("--kubeconfig=") {
        } else {
            rest.push(a.as_str());
        }
    }
    match rest.as_slice() {
        ["version", "--client"] | ["version", "--client=true"] => Ok(format!(
            "Client Version: {} ({BANNER})\nKustomize Version: v5.4.2\n",
            env.version
        )),
        ["apply", "-f", file] | ["apply", "--filename", file] => {
            let text = std::fs::read_to_string(env.host(file))
                .map_err(|e| (format!("error: the path \"{file}\" does not exist: {e}"), 1))?;
            let mut out = String::new();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc)
                    .map_err(|e| (format!("error: error parsing {file}: {e}"), 1))?;
                if v.is_null() {
                    continue;
                }
                let kind = v.get("kind").and_then(|k| k.as_str());
                let api = v.get("apiVersion").and_then(|k| k.as_str());
                let name = v
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str());
                match (api, kind, name) {
                    (Some(_), Some(k), Some(n)) => out.push_str(&format!("{}/{n} created\n", k.to_lowercase())),
                    _ => return fail(format!("error: error validating \"{file}\": apiVersion, kind and metadata.name are required")),
                }
            }
            if load_state(env)?.is_none() {
                return fail(REFUSED);
            }
            Ok(out)
        }
        ["get", "node", name, "-o", "json"] | ["get", "nodes", name, "-o", "json"] => {
            let st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            match st["nodes"].get(*name) {
                Some(n) => Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(n).unwrap_or_default()
                )),
                None => fail(format!(
                    "Error from server (NotFound): nodes \"{name}\" not found"
                )),
            }
        }
        ["label", "node", name, kvs @ ..] | ["label", "nodes", name, kvs @ ..] => {
            let mut st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            let node = st["nodes"].get_mut(*name).ok_or((
                format!("Error from server (NotFound): nodes \"{name}\" not found"),
                1,
            ))?;
            for kv in kvs.iter().filter(|k| **k != "--overwrite") {
                if let Some(k) = kv.strip_suffix('-') {
                    if let Some(m) = node["metadata"]["labels"].as_object_mut() {
                        m.remove(k);
                    }
                } else {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or((format!("error: invalid label spec: {kv}"), 1))?;
                    node["metadata"]["labels"][k] = json!(v);
                }
            }
            save_state(env, &st)?;
            Ok(format!("node/{name} labeled\n"))
        }
        ["taint", "node", name, specs @ ..] | ["taint", "nodes", name, specs @ ..] => {
            let mut st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            let node = st["nodes"].get_mut(*name).ok_or((
                format!("Error from server (NotFound): nodes \"{name}\" not found"),
                1,
            ))?;
            let mut taints = node["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for spec in specs.iter().filter(|s| **s != "--overwrite") {
                let remove = spec.ends_with('-');
                let spec = spec.trim_end_matches('-');
                let (kv, effect) = spec
                    .split_once(':')
                    .ok_or((format!("error: invalid taint spec: {spec}"), 1))?;
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                    return fail(format!(
                        "error: invalid taint effect: {effect}, unsupported taint effect"
                    ));
                }
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                taints.retain(|t| !(t["key"] == k && t["effect"] == effect));
                if !remove {
                    taints.push(json!({"key": k, "value": v, "effect": effect}));
                }
            }
            node["spec"]["taints"] = json!(taints);
            save_state(env, &st)?;
            Ok(format!("node/{name} modified\n"))
        }
        ["get", "configmap" | "configmaps" | "cm", name, "-o", "json"] => {
            let st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            match st["configmaps"].get(format!("{ns}/{name}")) {
                Some(cm) => Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(cm).unwrap_or_default()
                )),
                None => fail(format!(
                    "Error from server (NotFound): configmaps \"{name}\" not found"
                )),
            }
        }
        ["get", "secret" | "secrets", name, "-o", tmpl]
            if *tmpl == "go-template={{with .data.expiration}}{{base64decode .}}{{end}}" =>
        {
            // The one template hakube-firstboot uses: the token's expiration
            // (none here: the double keeps no clock, so its tokens never expire).
            let st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            let token = name.strip_prefix("bootstrap-token-").and_then(|id| {
                st["tokens"].as_array().and_then(|ts| {
                    ts.iter()
                        .find(|t| {
                            ns == "kube-system"
                                && t["token"]
                                    .as_str()
                                    .is_some_and(|v| v.split('.').next() == Some(id))
                        })
                        .cloned()
                })
            });
            match token {
                Some(t) => Ok(t["expiration"].as_str().unwrap_or("").to_string()),
                None => fail(format!(
                    "Error from server (NotFound): secrets \"{name}\" not found"
                )),
            }
        }
        ["get", "secret" | "secrets", name] => {
            let st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            // Bootstrap tokens are the only secrets the double knows.
            let found = name.strip_prefix("bootstrap-token-").is_some_and(|id| {
                ns == "kube-system"
                    && st["tokens"].as_array().is_some_and(|ts| {
                        ts.iter().any(|t| {
                            t["token"]
                                .as_str()
                                .is_some_and(|v| v.split('.').next() == Some(id))
                        })
                    })
            });
            if found {
                Ok(format!(
                    "NAME   TYPE   DATA   AGE\n{name}   bootstrap.kubernetes.io/token   7   1s\n"
                ))
            } else {
                fail(format!(
                    "Error from server (NotFound): secrets \"{name}\" not found"
                ))
            }
        }
        ["replace", "-f" | "--filename", file] => {
            let text = std::fs::read_to_string(env.host(file))
                .map_err(|e| (format!("error: the path \"{file}\" does not exist: {e}"), 1))?;
            let obj: Value = serde_yaml_ng::from_str(&text)
                .map_err(|e| (format!("error: error parsing {file}: {e}"), 1))?;
            let mut st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            let (Some("v1"), Some("ConfigMap"), Some(name)) = (
                obj["apiVersion"].as_str(),
                obj["kind"].as_str(),
                obj["metadata"]["name"].as_str(),
            ) else {
                return fail(format!(
                    "{BANNER}: kubectl replace: only v1 ConfigMaps are supported ({file})"
                ));
            };
            let obj_ns = obj["metadata"]["namespace"].as_str().unwrap_or(&ns);
            let key = format!("{obj_ns}/{name}");
            if st["configmaps"].get(&key).is_none() {
                return fail(format!("Error from server (NotFound): error when replacing \"{file}\": configmaps \"{name}\" not found"));
            }
            st["configmaps"][&key] = obj.clone();
            save_state(env, &st)?;
            Ok(format!("configmap/{name} replaced\n"))
        }
        ["rollout", "restart", "daemonset" | "ds", name] => {
            let mut st = load_state(env)?.ok_or((REFUSED.to_string(), 1))?;
            let key = format!("{ns}/{name}");
            let Some(n) = st["daemonsets"].get(&key).and_then(Value::as_u64) else {
                return fail(format!(
                    "Error from server (NotFound): daemonsets.apps \"{name}\" not found"
                ));
            };
            st["daemonsets"][&key] = json!(n + 1);
            save_state(env, &st)?;
            Ok(format!("daemonset.apps/{name} restarted\n"))
        }
        other => fail(format!("{BANNER}: kubectl: unsupported command {other:?}")),
    }
}

/// What kubeadm's kube-proxy addon creates: the daemonset (here a restart
/// counter) and its configmap, whose kubeconfig.conf points at `server`.
pub fn add_kube_proxy(st: &mut Value, server: &str) {
    if !st["configmaps"].is_object() {
        st["configmaps"] = json!({});
    }
    if !st["daemonsets"].is_object() {
        st["daemonsets"] = json!({});
    }
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"
    );
    st["configmaps"]["kube-system/kube-proxy"] = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}},
        "data": {"config.conf": format!("# {BANNER}\n"), "kubeconfig.conf": kubeconfig}
    });
    st["daemonsets"]["kube-system/kube-proxy"] = json!(0);
}

pub fn crictl(args: &[String], env: &Env) -> Outcome {
    let rest: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--runtime-endpoint") && !a.starts_with("-r"))
        .collect();
    match rest.as_slice() {
        ["version"] | ["--version"] => Ok(format!(
            "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  unknown ({BANNER})\nRuntimeApiVersion:  v1\ncrictl version {}\n",
            env.version
        )),
        ["info"] => Ok(format!(
            "{}\n",
            json!({"status": {"conditions": [
                {"type": "RuntimeReady", "status": true},
                {"type": "NetworkReady", "status": true}
            ]}, "note": BANNER})
        )),
        other => fail(format!("{BANNER}: crictl: unsupported command {other:?}")),
    }
}

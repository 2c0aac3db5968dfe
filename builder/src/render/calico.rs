//! calico's manifest install (`manifests/calico.yaml` of the pinned release,
//! an artifact of the catalogue), made fit for a hakube node at build time.
//!
//! Every image calico runs is named in this one manifest, so the images check
//! at build sees them all (the operator install chose its images at runtime).
//! The changes:
//! - `calico-node` gets `CALICO_IPV4POOL_CIDR`, the cluster's pod network
//!   (upstream leaves it commented out), and
//!   `IP_AUTODETECTION_METHOD=kubernetes-internal-ip`: the address the kubelet
//!   registered with (`--node-ip`), not the first interface found.
//! - A hostPath under the kubelet's default flexvolume directory (on the
//!   read-only `/usr`; releases before the CSI driver install a flexvolume
//!   driver there) moves to [`VOLUME_PLUGIN_DIR`], the kubelet's on `/var`.
//! - Every hostPath is then checked against the node's layout: on a writable
//!   path, on a kernel filesystem, or mounted read-only without being created.
//!   Anything else stops the build: the pod would never start on the node.
//!
//! Documents that need no change are kept byte for byte, comments included;
//! changed ones are written anew by [`super::yaml`].

use super::kubeadm::VOLUME_PLUGIN_DIR;
use super::yaml;
use super::UpstreamFile;
use crate::errors::bad_input;
use crate::spec::Cluster;
use anyhow::Result;
use serde_json::{json, Value};

/// The kubelet's and calico's default flexvolume directory.
const FLEXVOLUME_DEFAULT: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";
/// Writable at runtime on a node: the `/etc` overlay, the var partition,
/// tmpfs, and the CNI plugin overlay (README, "read-only root").
const WRITABLE: &[&str] = &["/etc", "/var", "/run", "/opt/cni/bin"];
/// Kernel filesystems, not part of the root image.
const KERNEL: &[&str] = &["/proc", "/sys", "/dev"];
/// hostPath types the kubelet creates when missing.
const CREATES: &[&str] = &["DirectoryOrCreate", "FileOrCreate"];

/// The manifest the init master applies for `cluster`.
pub fn manifest(cluster: &Cluster, version: &str, upstream: UpstreamFile) -> Result<String> {
    let pod_cidr = cluster.networking.pod_cidr.to_string();
    let mut body = String::new();
    let mut calico_node = false;
    let mut moved = false;
    for chunk in split_documents(upstream.text) {
        let mut doc = parse(upstream.origin, chunk)?;
        if doc.is_null() {
            continue;
        }
        let mut changed = move_flexvolume(&mut doc);
        moved |= changed;
        if is_calico_node(&doc) {
            set_node_env(upstream.origin, &mut doc, &pod_cidr)?;
            calico_node = true;
            changed = true;
        }
        check_host_paths(upstream.origin, &doc)?;
        if !body.is_empty() {
            body.push_str("---\n");
        }
        if changed {
            body.push_str(&yaml::to_yaml(&doc));
        } else {
            body.push_str(chunk.trim_end_matches('\n'));
            body.push('\n');
        }
    }
    if !calico_node {
        return Err(bad_input(format!(
            "{}: no DaemonSet named calico-node: a calico manifest install (manifests/calico.yaml) expected",
            upstream.origin
        )));
    }
    let moved = match moved {
        true => format!("; flexvolume hostPaths moved to {VOLUME_PLUGIN_DIR}"),
        false => String::new(),
    };
    Ok(format!(
        "# calico v{version} (manifests/calico.yaml) for cluster {} (pod network {pod_cidr}),\n\
         # patched by hakube-build render: calico-node's CALICO_IPV4POOL_CIDR and\n\
         # IP_AUTODETECTION_METHOD{moved}.\n{body}",
        cluster.name
    ))
}

/// The documents of a multi-document YAML text: a `---` line at column 0
/// separates them (inside a block scalar it would be indented).
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs.retain(|d| !d.trim().is_empty());
    docs
}

fn parse(origin: &str, chunk: &str) -> Result<Value> {
    use serde::Deserialize;
    let de = serde_yaml_ng::Deserializer::from_str(chunk);
    Value::deserialize(de).map_err(|e| {
        let first = chunk
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap_or("");
        bad_input(format!(
            "{origin}: a document (starting {first:?}) is not YAML: {e}"
        ))
    })
}

fn is_calico_node(doc: &Value) -> bool {
    doc["kind"] == "DaemonSet" && doc["metadata"]["name"] == "calico-node"
}

fn set_node_env(origin: &str, doc: &mut Value, pod_cidr: &str) -> Result<()> {
    let container = doc["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == "calico-node"))
        .ok_or_else(|| {
            bad_input(format!(
                "{origin}: DaemonSet calico-node has no container named calico-node \
                 (spec.template.spec.containers)"
            ))
        })?;
    set_env(container, "CALICO_IPV4POOL_CIDR", pod_cidr);
    set_env(
        container,
        "IP_AUTODETECTION_METHOD",
        "kubernetes-internal-ip",
    );
    Ok(())
}

fn set_env(container: &mut Value, name: &str, value: &str) {
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let env = container["env"]
        .as_array_mut()
        .expect("made an array above");
    env.retain(|e| e["name"] != name);
    env.push(json!({"name": name, "value": value}));
}

/// Moves hostPaths under [`FLEXVOLUME_DEFAULT`] to [`VOLUME_PLUGIN_DIR`].
fn move_flexvolume(v: &mut Value) -> bool {
    let mut changed = false;
    match v {
        Value::Object(m) => {
            if let Some(Value::String(p)) = m.get_mut("hostPath").and_then(|h| h.get_mut("path")) {
                if let Some(rest) = under(p, FLEXVOLUME_DEFAULT) {
                    *p = format!("{VOLUME_PLUGIN_DIR}{rest}");
                    changed = true;
                }
            }
            for child in m.values_mut() {
                changed |= move_flexvolume(child);
            }
        }
        Value::Array(a) => {
            for child in a {
                changed |= move_flexvolume(child);
            }
        }
        _ => {}
    }
    changed
}

/// The rest of `path` after `dir` when `path` is `dir` or below it.
fn under<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Refuses a pod spec in `doc` whose hostPath the node's read-only root
/// cannot serve: one the kubelet would have to create there, or one a
/// container mounts writable.
fn check_host_paths(origin: &str, doc: &Value) -> Result<()> {
    let mut specs = Vec::new();
    pod_specs(doc, &mut specs);
    for spec in specs {
        let containers = ["containers", "initContainers"]
            .iter()
            .filter_map(|k| spec[*k].as_array())
            .flatten();
        let mounts: Vec<&Value> = containers
            .filter_map(|c| c["volumeMounts"].as_array())
            .flatten()
            .collect();
        for vol in spec["volumes"].as_array().into_iter().flatten() {
            let Some(path) = vol["hostPath"]["path"].as_str() else {
                continue;
            };
            if WRITABLE
                .iter()
                .chain(KERNEL)
                .any(|d| under(path, d).is_some())
            {
                continue;
            }
            let name = vol["name"].as_str().unwrap_or("");
            let kind = vol["hostPath"]["type"].as_str().unwrap_or("");
            let writable_mount = mounts
                .iter()
                .any(|m| m["name"] == name && m["readOnly"] != true);
            let why = if CREATES.contains(&kind) {
                format!("type {kind}: the kubelet would create it")
            } else if writable_mount {
                "a container mounts it writable".to_string()
            } else {
                continue;
            };
            return Err(bad_input(format!(
                "{origin}: {} {}: volume {name:?} is the hostPath {path}, on the node's read-only root ({why}); \
                 writable are {}",
                doc["kind"].as_str().unwrap_or("?"),
                doc["metadata"]["name"].as_str().unwrap_or("?"),
                WRITABLE.join(", ")
            )));
        }
    }
    Ok(())
}

/// Every object holding `containers` (a pod spec) in `v`.
fn pod_specs<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Object(m) => {
            if m.get("containers").is_some_and(Value::is_array) {
                out.push(v);
            }
            m.values().for_each(|c| pod_specs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| pod_specs(c, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_column_zero_only() {
        let text = "---\na: 1\n---\n# only a comment\nb: |\n  ---\n  x\n--- \nc: 3\n---\n";
        let docs = split_documents(text);
        assert_eq!(
            docs,
            ["a: 1\n", "# only a comment\nb: |\n  ---\n  x\n", "c: 3\n"]
        );
    }

    #[test]
    fn only_paths_at_or_below_a_directory_are_under_it() {
        assert_eq!(under("/var/lib/x", "/var"), Some("/lib/x"));
        assert_eq!(under("/var", "/var"), Some(""));
        assert_eq!(under("/variable", "/var"), None);
        assert_eq!(under("/opt/cni/binx", "/opt/cni/bin"), None);
    }

    #[test]
    fn env_is_replaced_not_doubled() {
        let mut c = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        set_env(&mut c, "A", "3");
        assert_eq!(
            c["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "3"}])
        );
        let mut bare = json!({"name": "x"});
        set_env(&mut bare, "A", "1");
        assert_eq!(bare["env"], json!([{"name": "A", "value": "1"}]));
    }
}

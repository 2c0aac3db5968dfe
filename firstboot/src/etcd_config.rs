//! The effective etcd config: render bakes a template (`/etc/etcd/etcd.conf.yml`,
//! initial-cluster-state new, all members); firstboot writes the copy
//! `etcd.service` reads, adjusted for how this member starts.
//!
//! etcd's `--config-file` takes paths literally, so when firstboot runs under
//! a root other than `/` (tests), file paths in the copy are moved under it.

use crate::journal::write_atomic;
use crate::steps::under;
use anyhow::{Context, Result};
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// Where the effective config goes, relative to the root.
pub const EFFECTIVE_PATH: &str = "var/lib/hakube/etcd/etcd.conf.yml";

/// How the member starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Forming the cluster with the members of the template.
    New,
    /// Joining a running cluster whose membership is `initial_cluster`
    /// (`name=peerURL,...`, this member included).
    Existing { initial_cluster: String },
}

const TOP_PATHS: [&str; 2] = ["data-dir", "wal-dir"];
const TLS_SECTIONS: [&str; 2] = ["client-transport-security", "peer-transport-security"];
const TLS_PATHS: [&str; 3] = ["cert-file", "key-file", "trusted-ca-file"];

/// Reads the template, adjusts it and writes the effective config atomically.
pub fn write_effective(root: &Path, template: &str, start: &Start) -> Result<PathBuf> {
    let src = under(root, template);
    let text = std::fs::read_to_string(&src)
        .with_context(|| format!("reading the etcd config template {}", src.display()))?;
    let out = effective(root, &text, start)
        .with_context(|| format!("adjusting the etcd config template {}", src.display()))?;
    let dst = root.join(EFFECTIVE_PATH);
    write_atomic(&dst, out.as_bytes())?;
    Ok(dst)
}

/// The pure part of [`write_effective`].
pub fn effective(root: &Path, template: &str, start: &Start) -> Result<String> {
    let mut doc: Mapping = serde_yaml_ng::from_str(template).context("parsing YAML")?;
    let state = match start {
        Start::New => "new",
        Start::Existing { initial_cluster } => {
            doc.insert(
                Value::from("initial-cluster"),
                Value::from(initial_cluster.as_str()),
            );
            "existing"
        }
    };
    doc.insert(Value::from("initial-cluster-state"), Value::from(state));
    if root != Path::new("/") {
        for key in TOP_PATHS {
            reroot(root, &mut doc, key);
        }
        for section in TLS_SECTIONS {
            if let Some(Value::Mapping(m)) = doc.get_mut(section) {
                for key in TLS_PATHS {
                    reroot(root, m, key);
                }
            }
        }
    }
    // Written as JSON (which is YAML): serde_yaml_ng quotes only `true` and
    // `false`, so a member named `on`, `n` or `yes` would reach etcd's YAML
    // 1.1 reader unquoted and be read as a boolean. JSON quotes every string.
    let json = serde_json::to_value(&doc).context("converting the etcd config to JSON")?;
    let mut s =
        String::from("# Written by hakube-firstboot from the template baked by hakube-build.\n");
    s.push_str(&serde_json::to_string_pretty(&json).context("writing the etcd config")?);
    s.push('\n');
    Ok(s)
}

fn reroot(root: &Path, m: &mut Mapping, key: &str) {
    if let Some(Value::String(v)) = m.get_mut(key) {
        if v.starts_with('/') {
            *v = under(root, v).to_string_lossy().into_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "name: e1\n\
data-dir: /var/lib/etcd\n\
initial-cluster: e1=https://10.0.0.1:2380,e2=https://10.0.0.2:2380\n\
initial-cluster-state: new\n\
client-transport-security:\n  cert-file: /etc/kubernetes/pki/etcd/server.crt\n  client-cert-auth: true\n\
peer-transport-security:\n  trusted-ca-file: /etc/kubernetes/pki/etcd/ca.crt\n";

    #[test]
    fn new_keeps_members_and_reroots_paths() {
        let out = effective(Path::new("/tmp/r"), TEMPLATE, &Start::New).unwrap();
        let doc: Mapping = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(doc["initial-cluster-state"], Value::from("new"));
        assert_eq!(doc["data-dir"], Value::from("/tmp/r/var/lib/etcd"));
        assert_eq!(
            doc["client-transport-security"]["cert-file"],
            Value::from("/tmp/r/etc/kubernetes/pki/etcd/server.crt")
        );
        assert_eq!(
            doc["client-transport-security"]["client-cert-auth"],
            Value::from(true)
        );
        assert_eq!(
            doc["peer-transport-security"]["trusted-ca-file"],
            Value::from("/tmp/r/etc/kubernetes/pki/etcd/ca.crt")
        );
        assert_eq!(
            doc["initial-cluster"],
            Value::from("e1=https://10.0.0.1:2380,e2=https://10.0.0.2:2380")
        );
    }

    #[test]
    fn existing_sets_membership_and_root_slash_keeps_paths() {
        let start = Start::Existing {
            initial_cluster: "e2=https://10.0.0.2:2380,e1=https://10.0.0.1:2380".into(),
        };
        let out = effective(Path::new("/"), TEMPLATE, &start).unwrap();
        let doc: Mapping = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(doc["initial-cluster-state"], Value::from("existing"));
        assert_eq!(
            doc["initial-cluster"],
            Value::from("e2=https://10.0.0.2:2380,e1=https://10.0.0.1:2380")
        );
        assert_eq!(doc["data-dir"], Value::from("/var/lib/etcd"));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        // What render bakes for members named on, n and yes (quoted).
        let template = "name: \"on\"\n\
initial-cluster: \"on=https://10.0.0.1:2380,n=https://10.0.0.2:2380\"\n\
initial-advertise-peer-urls: \"https://10.0.0.1:2380\"\n\
log-level: \"yes\"\n\
initial-cluster-token: \"n\"\n";
        let out = effective(Path::new("/"), template, &Start::New).unwrap();
        for quoted in [
            r#""name": "on""#,
            r#""log-level": "yes""#,
            r#""initial-cluster-token": "n""#,
        ] {
            assert!(out.contains(quoted), "{quoted} not in\n{out}");
        }
        let doc: Mapping = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(doc["name"], Value::from("on"));
    }

    #[test]
    fn broken_template_is_an_error() {
        assert!(effective(Path::new("/"), "- a list\n", &Start::New).is_err());
    }
}

//! The certificates a node holds and when each expires, for `status`: a
//! leaf nearing its end is seen long before the component using it stops.
//! Read from the files the components read (kubeconfigs' embedded or
//! referenced client certificates included), never from the journal.

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;
use std::path::Path;
use time::OffsetDateTime;

/// Where a node's certificates live: (name, path, is a CA). Absent files
/// are not this node's (each role holds its own subset).
const PEM_FILES: &[(&str, &str, bool)] = &[
    ("ca", "/etc/kubernetes/pki/ca.crt", true),
    ("ca", "/etc/hakube/pki/ca.crt", true),
    (
        "front-proxy-ca",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        true,
    ),
    ("etcd-ca", "/etc/kubernetes/pki/etcd/ca.crt", true),
    ("apiserver", "/etc/kubernetes/pki/apiserver.crt", false),
    (
        "apiserver-kubelet-client",
        "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        false,
    ),
    (
        "apiserver-etcd-client",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        false,
    ),
    (
        "front-proxy-client",
        "/etc/kubernetes/pki/front-proxy-client.crt",
        false,
    ),
    ("etcd-server", "/etc/kubernetes/pki/etcd/server.crt", false),
    ("etcd-peer", "/etc/kubernetes/pki/etcd/peer.crt", false),
    (
        "etcd-healthcheck-client",
        "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        false,
    ),
    (
        "kubelet-client",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        false,
    ),
];

/// Kubeconfigs whose client certificate is embedded (`client-certificate-data`).
const KUBECONFIGS: &[(&str, &str)] = &[
    ("admin.conf", "/etc/kubernetes/admin.conf"),
    ("super-admin.conf", "/etc/kubernetes/super-admin.conf"),
    (
        "controller-manager.conf",
        "/etc/kubernetes/controller-manager.conf",
    ),
    ("scheduler.conf", "/etc/kubernetes/scheduler.conf"),
];

/// One certificate and its expiry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub name: String,
    pub path: String,
    pub ca: bool,
    /// RFC 3339; empty when it could not be read (`error` says why).
    pub not_after: String,
    /// Whole days left (negative: expired).
    pub days_left: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The expiry of the first certificate in `pem`.
pub fn not_after(pem: &[u8]) -> Result<OffsetDateTime> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// The client certificate of a kubeconfig: embedded, or the file it names.
fn kubeconfig_cert(root: &Path, text: &str) -> Result<Vec<u8>> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).context("not YAML")?;
    let user = &v["users"][0]["user"];
    if let Some(data) = user["client-certificate-data"].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("client-certificate-data is not base64");
    }
    let file = user["client-certificate"]
        .as_str()
        .context("no client certificate (data or file) in users[0]")?;
    std::fs::read(crate::steps::under(root, file)).with_context(|| format!("reading {file}"))
}

/// Every certificate this node holds under `root`, CAs first, with its
/// expiry relative to `now`.
pub fn held(root: &Path, now: OffsetDateTime) -> Vec<Held> {
    let mut out = Vec::new();
    let mut push = |name: &str, path: &str, ca: bool, read: Result<OffsetDateTime>| {
        out.push(match read {
            Ok(t) => Held {
                name: name.into(),
                path: path.into(),
                ca,
                not_after: crate::system::rfc3339(t),
                days_left: (t - now).whole_days(),
                error: None,
            },
            Err(e) => Held {
                name: name.into(),
                path: path.into(),
                ca,
                not_after: String::new(),
                days_left: 0,
                error: Some(format!("{e:#}")),
            },
        })
    };
    for (name, path, ca) in PEM_FILES {
        let file = crate::steps::under(root, path);
        if file.exists() {
            push(
                name,
                path,
                *ca,
                std::fs::read(&file)
                    .map_err(Into::into)
                    .and_then(|b| not_after(&b)),
            );
        }
    }
    for (name, path) in KUBECONFIGS {
        let file = crate::steps::under(root, path);
        if file.exists() {
            let read = std::fs::read_to_string(&file)
                .map_err(Into::into)
                .and_then(|t| kubeconfig_cert(root, &t))
                .and_then(|b| not_after(&b));
            push(name, path, false, read);
        }
    }
    out.sort_by_key(|h| !h.ca);
    out
}

/// `status`'s table of them.
pub fn to_text(certs: &[Held]) -> String {
    let mut s = format!(
        "{:<26} {:<22} {:>6}  {}\n",
        "CERTIFICATE", "EXPIRES", "DAYS", "FILE"
    );
    for c in certs {
        let name = if c.ca {
            format!("{} (CA)", c.name)
        } else {
            c.name.clone()
        };
        match &c.error {
            Some(e) => s.push_str(&format!(
                "{name:<26} {:<22} {:>6}  {}: {e}\n",
                "unreadable", "-", c.path
            )),
            None => s.push_str(&format!(
                "{name:<26} {:<22} {:>6}  {}\n",
                c.not_after, c.days_left, c.path
            )),
        }
    }
    s
}

//! Cluster PKI: CAs and keys created once per cluster in the state directory,
//! and per-node certificates and kubeconfigs matching what kubeadm creates.
//! (Owned by the PKI work; this is the agreed interface.)

use crate::spec::{Cluster, Node};
use crate::tree::FileTree;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Default state directory for a cluster: `.hakube/<cluster>`.
pub fn default_state_dir(cluster: &Cluster) -> PathBuf {
    PathBuf::from(".hakube").join(cluster.name.as_str())
}

/// The cluster's long-lived secrets, loaded from (or created in) the state directory.
pub struct ClusterSecrets {
    _private: (),
}

impl ClusterSecrets {
    /// Loads the secrets from `state`, creating any that are missing.
    pub fn load_or_create(_cluster: &Cluster, _state: &Path) -> Result<ClusterSecrets> {
        anyhow::bail!("pki: not implemented yet")
    }

    /// kubeadm discovery hash of the Kubernetes CA: `sha256:<hex of SPKI digest>`.
    pub fn ca_cert_hash(&self) -> String {
        unimplemented!()
    }

    /// The join bootstrap token `abcdef.0123456789abcdef`.
    pub fn bootstrap_token(&self) -> String {
        unimplemented!()
    }

    /// PEM of the Kubernetes CA certificate.
    pub fn ca_cert_pem(&self) -> String {
        unimplemented!()
    }
}

/// Every PKI file this node needs, under `etc/kubernetes/...` (and
/// `etc/etcd/pki` on external etcd members), and nothing its role does not need.
pub fn node_files(_cluster: &Cluster, _secrets: &ClusterSecrets, _node: &Node) -> Result<FileTree> {
    anyhow::bail!("pki: not implemented yet")
}

//! Cluster PKI: CAs and keys created once per cluster in the state directory,
//! and per-node certificates and kubeconfigs matching what kubeadm creates.
//!
//! State directory layout (every file 0600, every directory 0700):
//! ```text
//! state.json                      cluster name, creation time, format
//! ca.{crt,key}                    Kubernetes CA (CN kubernetes)
//! front-proxy-ca.{crt,key}        front-proxy CA (CN front-proxy-ca)
//! etcd/ca.{crt,key}               etcd CA (CN etcd-ca)
//! sa.{key,pub}                    service-account signing key pair
//! bootstrap-token                 the join token, `abcdef.0123456789abcdef`
//! cluster-initialised             when the operator recorded the cluster as
//!                                 formed (`--cluster-initialised`)
//! nodes/<node>/<id>.{crt,key}     issued leaves (`apiserver`, `etcd/server`,
//!                                 `kubeconfig/admin`, ...)
//! ```
//! CAs, the service-account key and the token are never re-created. A leaf is
//! re-issued only when its desired profile (subject, SANs, usages, issuer, key
//! algorithm) changed or it expires within 30 days; otherwise the stored bytes
//! are reused, so rendering twice gives identical trees.

mod clock;
pub mod dates;
mod issue;
mod kubeconfig;
mod profiles;
mod state;
mod token;

pub use clock::{Clock, FixedClock, SystemClock};
pub use issue::{pem_encode, BACKDATE, RENEW_BEFORE};
pub use profiles::{
    apiserver_cert_sans, apiserver_dns_names, apiserver_ips, leaf_profiles, CaKind, LeafProfile,
    Output, Usage, APISERVER_PORT, CLUSTER_ADMINS_GROUP, SYSTEM_MASTERS_GROUP,
};
pub use token::BootstrapToken;

use crate::spec::{Cluster, Node};
use crate::tree::FileTree;
use anyhow::{anyhow, bail, Context, Result};
use hakube_node_profile::{EtcdTopology, Role};
use issue::{Ca, CertAndKey};
use sha2::{Digest, Sha256};
use state::StateDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Default state directory for a cluster: `.hakube/<cluster>`.
pub fn default_state_dir(cluster: &Cluster) -> PathBuf {
    PathBuf::from(".hakube").join(cluster.name.as_str())
}

/// Where Kubernetes keeps its PKI on a node, relative to the image root.
pub const PKI_DIR: &str = "etc/kubernetes/pki";
/// Where a worker carries the cluster CA. Not under `etc/kubernetes/pki`:
/// `kubeadm join` of a worker refuses to start when
/// `/etc/kubernetes/pki/ca.crt` already exists (preflight check
/// FileAvailable--etc-kubernetes-pki-ca.crt); it writes that file itself
/// after token discovery.
pub const WORKER_CA_PATH: &str = "etc/hakube/pki/ca.crt";

const TOKEN_FILE: &str = "bootstrap-token";
/// Present once the operator has said the cluster was initialised
/// (`--cluster-initialised`); holds the date it was recorded. Never removed
/// by hakube-build: from then on every image says "join, never init".
const INITIALISED_FILE: &str = "cluster-initialised";
const SA_KEY: &str = "sa.key";
const SA_PUB: &str = "sa.pub";

/// The cluster's long-lived secrets, loaded from (or created in) the state directory.
pub struct ClusterSecrets {
    state: StateDir,
    clock: Arc<dyn Clock>,
    cas: BTreeMap<CaKind, Ca>,
    sa_key_pem: String,
    sa_pub_pem: String,
    token: BootstrapToken,
    /// `sha256:<hex>` of the Kubernetes CA's SubjectPublicKeyInfo.
    ca_cert_hash: String,
    /// Issued leaves by `<node>/<id>`, as stored in the state directory.
    leaves: Mutex<BTreeMap<String, CertAndKey>>,
    /// When the cluster was recorded as initialised, if it was.
    initialised: Option<String>,
    /// Nodes whose leaves were already in the state directory before this
    /// run: an image of them was built before.
    built_before: Vec<String>,
}

impl ClusterSecrets {
    /// Loads the secrets from `state`, creating any that are missing, and
    /// issues (or renews) every node's leaf certificates.
    pub fn load_or_create(cluster: &Cluster, state: &Path) -> Result<ClusterSecrets> {
        Self::load_or_create_with_clock(cluster, state, Arc::new(SystemClock))
    }

    /// [`Self::load_or_create`] with an explicit clock (tests issue in the past).
    pub fn load_or_create_with_clock(
        cluster: &Cluster,
        state: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<ClusterSecrets> {
        let now = clock.now();
        let dir = StateDir::open(state, cluster.name.as_str(), now)?;
        let alg = cluster.certificates.key_algorithm;
        let mut cas = BTreeMap::new();
        for kind in CaKind::ALL {
            let crt = format!("{}.crt", kind.base());
            let key = format!("{}.key", kind.base());
            let (cert_pem, key_pem) = match (dir.read_string(&crt)?, dir.read_string(&key)?) {
                (Some(c), Some(k)) => (c, k),
                (None, None) => {
                    let ca = issue::new_ca(kind, alg, cluster.certificates.ca_validity, now)?;
                    // Key first: a certificate without its key would be unusable.
                    dir.write(&key, ca.key_pem.as_bytes())?;
                    dir.write(&crt, ca.cert_pem.as_bytes())?;
                    tracing::info!("created the {} CA in {}", kind.base(), dir.root().display());
                    (ca.cert_pem, ca.key_pem)
                }
                (None, Some(k)) => {
                    // The key is written first, so this is a creation cut
                    // short: no certificate was ever issued under this CA.
                    // Finish it with the same key.
                    let ca =
                        issue::ca_from_key_pem(kind, &k, cluster.certificates.ca_validity, now)
                            .with_context(|| format!("{}", dir.root().join(&key).display()))?;
                    dir.write(&crt, ca.cert_pem.as_bytes())?;
                    tracing::warn!(
                        "{}: {key} had no certificate (an interrupted run); issued {crt} for it",
                        dir.root().display()
                    );
                    (ca.cert_pem, ca.key_pem)
                }
                (Some(_), None) => bail!(
                    "{}: {crt} is there but {key} is missing; refusing to re-create a CA that may already have signed certificates (restore {key} from a backup)",
                    dir.root().display()
                ),
            };
            let ca = Ca::load(kind, &cert_pem, &key_pem).with_context(|| {
                format!(
                    "loading the {} CA from {}",
                    kind.base(),
                    dir.root().display()
                )
            })?;
            cas.insert(kind, ca);
        }

        let sa_key_pem = match dir.read_string(SA_KEY)? {
            Some(k) => k,
            None => {
                let k = issue::generate_key(alg)?.serialize_pem();
                dir.write(SA_KEY, k.as_bytes())?;
                k
            }
        };
        let sa_pub_pem = issue::public_key_pem(&sa_key_pem)
            .with_context(|| format!("reading {}", dir.root().join(SA_KEY).display()))?;
        if dir.read_string(SA_PUB)?.as_deref() != Some(sa_pub_pem.as_str()) {
            dir.write(SA_PUB, sa_pub_pem.as_bytes())?;
        }

        let token = match dir.read_string(TOKEN_FILE)? {
            Some(t) => t.trim().parse::<BootstrapToken>().map_err(|e| {
                crate::errors::bad_input(format!("{}: {e}", dir.root().join(TOKEN_FILE).display()))
            })?,
            None => {
                let t = BootstrapToken::generate();
                dir.write(TOKEN_FILE, format!("{t}\n").as_bytes())?;
                t
            }
        };

        let spki = issue::cert_spki_der(&cas[&CaKind::Kubernetes].cert_pem)
            .context("reading the Kubernetes CA's public key")?;
        let ca_cert_hash = format!("sha256:{}", hex::encode(Sha256::digest(&spki)));
        let initialised = dir
            .read_string(INITIALISED_FILE)?
            .map(|s| s.trim().to_string());
        let built_before = cluster
            .nodes
            .iter()
            .filter(|n| dir.root().join("nodes").join(n.name.as_str()).is_dir())
            .map(|n| n.name.to_string())
            .collect();
        let secrets = ClusterSecrets {
            initialised,
            built_before,
            state: dir,
            ca_cert_hash,
            clock,
            cas,
            sa_key_pem,
            sa_pub_pem,
            token,
            leaves: Mutex::new(BTreeMap::new()),
        };
        for node in &cluster.nodes {
            for profile in leaf_profiles(cluster, node)? {
                secrets.leaf(cluster, node, &profile)?;
            }
        }
        Ok(secrets)
    }

    /// kubeadm discovery hash of the Kubernetes CA: `sha256:<hex of SPKI digest>`
    /// (SHA-256 over the DER SubjectPublicKeyInfo, as kubeadm's pubkeypin does).
    pub fn ca_cert_hash(&self) -> String {
        self.ca_cert_hash.clone()
    }

    /// The join bootstrap token `abcdef.0123456789abcdef`.
    pub fn bootstrap_token(&self) -> String {
        self.token.to_string()
    }

    /// The join bootstrap token, validated.
    pub fn token(&self) -> &BootstrapToken {
        &self.token
    }

    /// PEM of the Kubernetes CA certificate.
    pub fn ca_cert_pem(&self) -> String {
        self.ca(CaKind::Kubernetes).cert_pem.clone()
    }

    /// PEM of one of the three CA certificates.
    pub fn ca_pem(&self, kind: CaKind) -> &str {
        &self.ca(kind).cert_pem
    }

    /// When the state directory recorded the cluster as initialised (RFC 3339).
    pub fn cluster_initialised(&self) -> Option<&str> {
        self.initialised.as_deref()
    }

    /// Records, durably, that the cluster has been initialised: every image
    /// built from now on joins it and never runs `kubeadm init`, so a
    /// reimaged init node cannot start a second cluster while its peers are
    /// down. `set` false leaves the state as it is.
    pub fn record_initialised(&mut self, set: bool) -> Result<()> {
        if set && self.initialised.is_none() {
            let now = self
                .clock
                .now()
                .format(&time::format_description::well_known::Rfc3339)
                .context("formatting the current time")?;
            self.state
                .write(INITIALISED_FILE, format!("{now}\n").as_bytes())?;
            self.initialised = Some(now);
        }
        Ok(())
    }

    /// A warning when the init node is built again while the state does not
    /// say the cluster was initialised: if an earlier image of it already
    /// formed the cluster, this image would form a second one whenever it
    /// boots with every other master down.
    pub fn init_node_warning(&self, cluster: &Cluster) -> Option<String> {
        let init = cluster.init_node().name.as_str();
        (self.initialised.is_none() && self.built_before.iter().any(|n| n == init)).then(|| {
            format!(
                "{init} (the init node) was built before from {}; if an earlier image of it has already \
                 formed cluster {}, build again with --cluster-initialised (recorded in the state directory \
                 for good), so that this image joins the cluster instead of initialising a second one when it \
                 boots while the other masters are down",
                self.state.root().display(),
                cluster.name
            )
        })
    }

    /// The state directory these secrets live in.
    pub fn state_dir(&self) -> &Path {
        self.state.root()
    }

    fn ca(&self, kind: CaKind) -> &Ca {
        // All three are loaded by `load_or_create_with_clock` or it fails.
        &self.cas[&kind]
    }

    /// The stored leaf for `profile`, issued (and persisted) when missing or
    /// no longer fitting.
    fn leaf(&self, cluster: &Cluster, node: &Node, profile: &LeafProfile) -> Result<CertAndKey> {
        let key = format!("{}/{}", node.name, profile.id);
        let mut leaves = self
            .leaves
            .lock()
            .map_err(|_| anyhow!("leaf cache poisoned"))?;
        if let Some(l) = leaves.get(&key) {
            // Already checked (or issued) against this cluster in this run.
            if issue::reissue_reason(
                profile,
                l,
                self.ca(profile.ca),
                cluster.certificates.key_algorithm,
                cluster.certificates.leaf_validity,
                self.clock.now(),
            )?
            .is_none()
            {
                return Ok(l.clone());
            }
        }
        let crt_rel = format!("nodes/{key}.crt");
        let key_rel = format!("nodes/{key}.key");
        let now = self.clock.now();
        let alg = cluster.certificates.key_algorithm;
        let validity = cluster.certificates.leaf_validity;
        let ca = self.ca(profile.ca);
        if let (Some(cert_pem), Some(key_pem)) = (
            self.state.read_string(&crt_rel)?,
            self.state.read_string(&key_rel)?,
        ) {
            let stored = CertAndKey { cert_pem, key_pem };
            match issue::reissue_reason(profile, &stored, ca, alg, validity, now) {
                Ok(None) => {
                    leaves.insert(key, stored.clone());
                    return Ok(stored);
                }
                Ok(Some(why)) => tracing::info!("re-issuing {key}: {why}"),
                Err(e) => tracing::warn!("re-issuing {key}: the stored copy is unreadable: {e:#}"),
            }
        }
        let fresh = issue::issue_leaf(profile, ca, alg, validity, now)?;
        self.state.write(&key_rel, fresh.key_pem.as_bytes())?;
        self.state.write(&crt_rel, fresh.cert_pem.as_bytes())?;
        leaves.insert(key, fresh.clone());
        Ok(fresh)
    }
}

/// Every PKI file this node needs, under `etc/kubernetes/...` (workers: the
/// CA certificate under `etc/hakube/pki/`), and nothing its role does not need.
///
/// - master: `pki/{ca,front-proxy-ca}.{crt,key}`, `pki/sa.{key,pub}`,
///   `pki/{apiserver,apiserver-kubelet-client,front-proxy-client,apiserver-etcd-client}.{crt,key}`;
///   stacked etcd adds `pki/etcd/ca.{crt,key}` and `pki/etcd/{server,peer,healthcheck-client}.{crt,key}`,
///   external etcd only `pki/etcd/ca.crt`; kubeconfigs `admin.conf`,
///   `controller-manager.conf`, `scheduler.conf` and, on the init node of
///   1.29+, `super-admin.conf`. No `kubelet.conf`: kubeadm writes it.
/// - worker: the Kubernetes CA certificate only.
/// - etcd: `pki/etcd/ca.crt` and `pki/etcd/{server,peer,healthcheck-client}.{crt,key}`.
///
/// Keys are 0600, certificates and public keys 0644.
pub fn node_files(cluster: &Cluster, secrets: &ClusterSecrets, node: &Node) -> Result<FileTree> {
    if cluster.node(node.name.as_str()).is_none() {
        bail!("node {} is not part of cluster {}", node.name, cluster.name);
    }
    let mut t = FileTree::new();
    let pki = |rel: &str| format!("{PKI_DIR}/{rel}");
    let add_ca = |t: &mut FileTree, kind: CaKind, with_key: bool| {
        let ca = secrets.ca(kind);
        t.add_public(pki(&format!("{}.crt", kind.base())), ca.cert_pem.as_bytes());
        if with_key {
            t.add_secret(pki(&format!("{}.key", kind.base())), ca.key_pem.as_bytes());
        }
    };
    match node.role {
        Role::Worker => {
            t.add_public(
                WORKER_CA_PATH,
                secrets.ca(CaKind::Kubernetes).cert_pem.as_bytes(),
            );
            return Ok(t);
        }
        Role::Etcd => add_ca(&mut t, CaKind::Etcd, false),
        Role::Master => {
            add_ca(&mut t, CaKind::Kubernetes, true);
            add_ca(&mut t, CaKind::FrontProxy, true);
            // Stacked: kubeadm signs this member's etcd certificates with the
            // etcd CA key. External: the API server only verifies etcd.
            add_ca(
                &mut t,
                CaKind::Etcd,
                cluster.etcd_topology == EtcdTopology::Stacked,
            );
            t.add_secret(pki(SA_KEY), secrets.sa_key_pem.as_bytes());
            t.add_public(pki(SA_PUB), secrets.sa_pub_pem.as_bytes());
        }
    }
    let ca_pem = secrets.ca_cert_pem();
    for profile in leaf_profiles(cluster, node)? {
        let leaf = secrets.leaf(cluster, node, &profile)?;
        match &profile.output {
            Output::Pki => {
                t.add_public(
                    pki(&format!("{}.crt", profile.id)),
                    leaf.cert_pem.as_bytes(),
                );
                t.add_secret(pki(&format!("{}.key", profile.id)), leaf.key_pem.as_bytes());
            }
            Output::Kubeconfig { file, server } => {
                let text = kubeconfig::Kubeconfig {
                    cluster: cluster.name.as_str(),
                    user: &profile.common_name,
                    server,
                    ca_pem: &ca_pem,
                    cert_pem: &leaf.cert_pem,
                    key_pem: &leaf.key_pem,
                }
                .render();
                // Holds a private key: 0600, as kubeadm writes it.
                t.add_secret(format!("etc/kubernetes/{file}"), text);
            }
        }
    }
    Ok(t)
}

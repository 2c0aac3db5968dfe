//! Talking to etcd: the [`EtcdApi`] trait the steps use, the quorum
//! arithmetic, and the real client (etcd-client over TLS with the node's
//! client certificate).

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// One member as `member list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started once.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started once.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// Has this member ever run? A member publishes its client URLs when it
    /// first starts. (Members of the initial cluster carry their name from
    /// the start; members added later get it only then.)
    pub fn has_started(&self) -> bool {
        !self.client_urls.is_empty()
    }
}

/// The etcd operations firstboot needs. Every call takes the endpoints to
/// talk to (client URLs), so one value serves the whole run.
pub trait EtcdApi {
    fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>>;
    /// Adds a learner; returns its id and the member list after the change.
    fn member_add_learner(
        &self,
        endpoints: &[String],
        peer_urls: &[String],
    ) -> Result<(u64, Vec<Member>)>;
    fn member_remove(&self, endpoints: &[String], id: u64) -> Result<()>;
    fn member_promote(&self, endpoints: &[String], id: u64) -> Result<()>;
    /// Like `etcdctl endpoint health`: a linearizable read through this one
    /// endpoint succeeds (which needs a leader and quorum).
    fn endpoint_healthy(&self, endpoint: &str) -> bool;
    /// Number of keys under `prefix` (linearizable count).
    fn count_keys(&self, endpoints: &[String], prefix: &str) -> Result<i64>;
}

/// Votes needed for quorum among `voters` voting members.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Voting members (not learners) and how many of them are healthy, asked
/// through each member's own client URL.
pub fn voting_health(api: &dyn EtcdApi, members: &[Member]) -> (usize, Vec<String>, Vec<String>) {
    let mut healthy = Vec::new();
    let mut down = Vec::new();
    let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
    for m in &voters {
        let label = member_label(m);
        if m.client_urls.iter().any(|u| api.endpoint_healthy(u)) {
            healthy.push(label);
        } else {
            down.push(label);
        }
    }
    (voters.len(), healthy, down)
}

/// `name (id 8e9e05c52164694d)`, or the peer URL for a member not yet started.
pub fn member_label(m: &Member) -> String {
    let name = if m.name.is_empty() {
        m.peer_urls.first().cloned().unwrap_or_default()
    } else {
        m.name.clone()
    };
    format!("{name} (id {:x})", m.id)
}

/// TLS client material, already resolved under the root.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The real client. Each call opens a connection (firstboot makes few calls;
/// a long-lived client would only add reconnect handling).
pub struct EtcdClient {
    tls: Option<TlsFiles>,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
}

impl EtcdClient {
    pub fn new(tls: Option<TlsFiles>) -> Result<EtcdClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for the etcd client")?;
        Ok(EtcdClient {
            tls,
            rt,
            timeout: Duration::from_secs(5),
        })
    }

    fn options(&self) -> Result<etcd_client::ConnectOptions> {
        let mut opts = etcd_client::ConnectOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout);
        if let Some(t) = &self.tls {
            let read = |p: &PathBuf| {
                std::fs::read(p).with_context(|| format!("reading etcd TLS file {}", p.display()))
            };
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca)?))
                .identity(etcd_client::Identity::from_pem(
                    read(&t.cert)?,
                    read(&t.key)?,
                ));
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }

    fn client(&self, endpoints: &[String]) -> Result<etcd_client::Client> {
        let opts = self.options()?;
        let eps = endpoints.to_vec();
        self.rt
            .block_on(async {
                tokio::time::timeout(
                    self.timeout,
                    etcd_client::Client::connect(eps, Some(opts)),
                )
                .await
            })
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))
    }

    fn block<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
            .map_err(|_| anyhow::anyhow!("{what}: timed out after {:?}", self.timeout))?
            .with_context(|| what.to_string())
    }
}

fn convert(m: &etcd_client::Member) -> Member {
    Member {
        id: m.id(),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

impl EtcdApi for EtcdClient {
    fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>> {
        let mut c = self.client(endpoints)?;
        let resp = self.block("etcd member list", c.member_list())?;
        Ok(resp.members().iter().map(convert).collect())
    }

    fn member_add_learner(
        &self,
        endpoints: &[String],
        peer_urls: &[String],
    ) -> Result<(u64, Vec<Member>)> {
        let mut c = self.client(endpoints)?;
        let opts = etcd_client::MemberAddOptions::new().with_is_learner();
        let resp = self.block(
            "etcd member add --learner",
            c.member_add(peer_urls.to_vec(), Some(opts)),
        )?;
        let id = resp
            .member()
            .map(|m| m.id())
            .context("etcd member add answered without the new member")?;
        Ok((id, resp.member_list().iter().map(convert).collect()))
    }

    fn member_remove(&self, endpoints: &[String], id: u64) -> Result<()> {
        let mut c = self.client(endpoints)?;
        self.block(&format!("etcd member remove {id:x}"), c.member_remove(id))?;
        Ok(())
    }

    fn member_promote(&self, endpoints: &[String], id: u64) -> Result<()> {
        let mut c = self.client(endpoints)?;
        self.block(&format!("etcd member promote {id:x}"), c.member_promote(id))?;
        Ok(())
    }

    fn endpoint_healthy(&self, endpoint: &str) -> bool {
        let Ok(mut c) = self.client(&[endpoint.to_string()]) else {
            return false;
        };
        // etcdctl's health check: a linearizable GET of the key "health";
        // a missing key is fine, only a leaderless or partitioned member fails.
        self.block("etcd health read", c.get("health", None)).is_ok()
    }

    fn count_keys(&self, endpoints: &[String], prefix: &str) -> Result<i64> {
        let mut c = self.client(endpoints)?;
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let resp = self.block(
            &format!("counting etcd keys under {prefix}"),
            c.get(prefix, Some(opts)),
        )?;
        Ok(resp.count())
    }
}

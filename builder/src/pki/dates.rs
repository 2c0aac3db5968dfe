//! When the credentials in a state directory expire, read without changing
//! anything (for `summary` and the build's closing lines).
//!
//! A node image can join its cluster while its baked leaf certificates are
//! valid and the join token exists; the token is kept alive by the masters
//! (hakube-firstboot renews it at every boot), the leaves only by building
//! the image again (`hakube-build` re-issues a leaf within
//! [`super::RENEW_BEFORE`] of its expiry).

use super::issue::pem_to_der;
use super::CaKind;
use crate::spec::Cluster;
use anyhow::{Context, Result};
use std::path::Path;
use time::OffsetDateTime;

/// Expiry dates found in a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialDates {
    /// `(ca, not-after)` for each CA present.
    pub cas: Vec<(&'static str, OffsetDateTime)>,
    /// `(node, earliest not-after of its leaves)`; `None`: none issued yet.
    pub nodes: Vec<(String, Option<OffsetDateTime>)>,
    /// When the cluster was recorded as initialised.
    pub initialised: Option<String>,
}

/// `None` when `state` does not exist (nothing was built yet).
pub fn read(state: &Path, cluster: &Cluster) -> Result<Option<CredentialDates>> {
    if !state.is_dir() {
        return Ok(None);
    }
    let mut cas = Vec::new();
    for kind in CaKind::ALL {
        let p = state.join(format!("{}.crt", kind.base()));
        if p.is_file() {
            cas.push((kind.base(), not_after(&p)?));
        }
    }
    let mut nodes = Vec::new();
    for n in &cluster.nodes {
        let mut earliest: Option<OffsetDateTime> = None;
        let dir = state.join("nodes").join(n.name.as_str());
        for crt in certificates(&dir)? {
            let t = not_after(&crt)?;
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        nodes.push((n.name.to_string(), earliest));
    }
    let initialised = match std::fs::read_to_string(state.join("cluster-initialised")) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading the cluster-initialised marker"),
    };
    Ok(Some(CredentialDates {
        cas,
        nodes,
        initialised,
    }))
}

fn certificates(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        let p = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if p.is_dir() {
            out.extend(certificates(&p)?);
        } else if p.extension().is_some_and(|x| x == "crt") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn not_after(path: &Path) -> Result<OffsetDateTime> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let der =
        pem_to_der(&pem, "CERTIFICATE").with_context(|| format!("decoding {}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// A date as people read it in a summary (`2027-12-01`).
pub fn day(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// One line per node for the end of a build or render: until when its
/// image can join, and what keeps the rest alive.
pub fn report(dates: &CredentialDates, only: &[&str]) -> Vec<String> {
    dates
        .nodes
        .iter()
        .filter(|(n, _)| only.contains(&n.as_str()))
        .filter_map(|(n, t)| {
            t.map(|t| {
                format!(
                    "{n}: baked certificates valid until {} (build the image again before then; \
                     leaves are re-issued within 30 days of expiry); the join token is renewed by \
                     the masters at every boot",
                    day(t)
                )
            })
        })
        .collect()
}

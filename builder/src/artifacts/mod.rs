//! Kubernetes artifacts: the catalogue of what each release needs, the lock
//! file, the content-addressed download cache and mirrors.
//!
//! [`resolve`] reads, per artifact: the pin from `hakube.lock` (or, the first
//! time, the upstream checksum file, then pins it); the file from the cache
//! (or downloads it, verifies it against the pin, then caches it). It writes
//! only the lock file and the cache, so a failure leaves no build output.
//! With everything pinned and cached it makes no network request at all.

pub mod cache;
pub mod catalog;
pub mod fetch;
pub mod install;
pub mod lock;

use crate::spec::Cluster;
use anyhow::{Context, Result};
use cache::Cache;
use catalog::{ArtifactSpec, Checksum};
use fetch::{DefaultTransport, Location, Transport};
use lock::{Lock, LockEntry};
use std::path::{Path, PathBuf};

/// Where artifacts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Their upstream release locations (dl.k8s.io, the projects' release downloads).
    Upstream,
    /// `--artifacts DIR_OR_URL`: a mirror laid out as `<mirror>/<host>/<path>`.
    Mirror(String),
}

/// What to resolve and where to keep it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub cluster: &'a Cluster,
    pub source: Source,
    /// `hakube.lock`: pins every artifact's SHA-256.
    pub lock_path: PathBuf,
    /// Cache root; downloads live in `<cache>/artifacts/sha256/<hex>`.
    pub cache_dir: PathBuf,
}

/// One artifact, verified and present in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedArtifact {
    pub name: String,
    pub version: String,
    /// The upstream URL (also when fetched from a mirror).
    pub url: String,
    pub sha256: String,
    /// The verified file in the cache.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub artifacts: Vec<ResolvedArtifact>,
}

/// Resolves every artifact the cluster needs: checksums from the lock file (or
/// the upstream checksum file on first resolution, then pinned), files from
/// the cache (or downloaded, verified, then cached).
pub fn resolve(req: &Request) -> Result<Resolved> {
    resolve_with(req, &DefaultTransport::new())
}

/// [`resolve`] over a given transport (tests put a fake network in front).
pub fn resolve_with(req: &Request, transport: &dyn Transport) -> Result<Resolved> {
    let specs = catalog::for_cluster(req.cluster);
    resolve_specs(
        &specs,
        &req.source,
        &req.lock_path,
        &req.cache_dir,
        transport,
    )
}

/// Resolves an explicit list of artifacts.
pub fn resolve_specs(
    specs: &[ArtifactSpec],
    source: &Source,
    lock_path: &Path,
    cache_dir: &Path,
    transport: &dyn Transport,
) -> Result<Resolved> {
    let lock = Lock::load(lock_path)?;
    let cache = Cache::new(cache_dir);
    cache.sweep_stale_partials();
    let mut r = Resolver {
        source,
        lock_path,
        cache,
        transport,
        lock,
        learned: Lock::default(),
    };
    let mut out = Resolved::default();
    let mut result = Ok(());
    for spec in specs {
        match r.one(spec) {
            Ok(a) => out.artifacts.push(a),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // Pins learned before a failure are kept: they are what upstream published.
    if !r.learned.entries().is_empty() {
        let saved = r.learned.merge_and_save(lock_path);
        if result.is_ok() {
            saved?;
        } else if let Err(e) = saved {
            tracing::warn!("could not save the lock file: {e:#}");
        }
    }
    result.map(|()| out)
}

struct Resolver<'a> {
    source: &'a Source,
    lock_path: &'a Path,
    cache: Cache,
    transport: &'a dyn Transport,
    /// What the lock file held when we started.
    lock: Lock,
    /// Entries this run adds or completes.
    learned: Lock,
}

impl Resolver<'_> {
    fn one(&mut self, spec: &ArtifactSpec) -> Result<ResolvedArtifact> {
        let pinned = self.lock.get(&spec.url).cloned();
        let entry = match pinned {
            Some(e) => e,
            None => match &spec.checksum {
                Checksum::File { url, entry } => {
                    let (sha256, read_at) = self.pin_from_checksum_file(spec, url, entry)?;
                    let e = LockEntry {
                        name: spec.name.to_string(),
                        version: spec.version.clone(),
                        url: spec.url.clone(),
                        sha256,
                        size: None,
                        pinned_from: url.clone(),
                        resolved_from: Some(read_at.to_string()),
                    };
                    self.learned.upsert(e.clone());
                    e
                }
                Checksum::TrustOnFirstUse => return self.trust_on_first_use(spec),
            },
        };
        let path = match self.cache.lookup(&entry.sha256, entry.size) {
            Some(p) => p,
            None => self.download(spec, &entry)?,
        };
        if entry.size.is_none() {
            let size = std::fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            self.learned.upsert(LockEntry {
                size: Some(size),
                ..entry.clone()
            });
        }
        Ok(ResolvedArtifact {
            name: spec.name.to_string(),
            version: spec.version.clone(),
            url: spec.url.clone(),
            sha256: entry.sha256,
            path,
        })
    }

    fn locate(&self, upstream_url: &str) -> Result<Location> {
        fetch::locate(self.source, upstream_url)
    }

    fn pin_from_checksum_file(
        &self,
        spec: &ArtifactSpec,
        url: &str,
        entry: &str,
    ) -> Result<(String, Location)> {
        let loc = self.locate(url)?;
        let mut body = Capped(Vec::new());
        self.transport
            .get(&loc, &mut body, &mut |_, _| {})
            .map_err(|e| {
                self.download_error(&format!("the checksum file of {}", spec.label()), &loc, e)
            })?;
        let text = String::from_utf8_lossy(&body.0);
        let sha256 = lock::parse_checksum_file(&text, entry)
            .with_context(|| format!("reading the checksum file of {} at {loc}", spec.label()))?;
        Ok((sha256, loc))
    }

    fn trust_on_first_use(&mut self, spec: &ArtifactSpec) -> Result<ResolvedArtifact> {
        let loc = self.locate(&spec.url)?;
        let stored = self
            .fetch_into_cache(spec, &loc, None)?
            .expect("no expected hash, no mismatch");
        tracing::warn!(
            "{}: upstream publishes no checksum; pinned SHA-256 {} of the first download in {}",
            spec.label(),
            stored.sha256,
            self.lock_path.display()
        );
        self.learned.upsert(LockEntry {
            name: spec.name.to_string(),
            version: spec.version.clone(),
            url: spec.url.clone(),
            sha256: stored.sha256.clone(),
            size: Some(stored.size),
            pinned_from: lock::FROM_TRUST_ON_FIRST_USE.to_string(),
            resolved_from: Some(loc.to_string()),
        });
        Ok(ResolvedArtifact {
            name: spec.name.to_string(),
            version: spec.version.clone(),
            url: spec.url.clone(),
            sha256: stored.sha256,
            path: stored.path,
        })
    }

    fn download(&self, spec: &ArtifactSpec, pin: &LockEntry) -> Result<PathBuf> {
        let loc = self.locate(&spec.url)?;
        match self.fetch_into_cache(spec, &loc, Some(&pin.sha256))? {
            Ok(stored) => Ok(stored.path),
            Err(m) => {
                let from = if loc.to_string() == spec.url {
                    String::new()
                } else {
                    format!(" (read from {loc})")
                };
                Err(anyhow::anyhow!(
                    "refusing {}: {}{from} has SHA-256 {} but {} pins {} ({}); nothing was cached.\n\
                     hint: if that pin came from a test mirror or upstream really re-published this file, \
                     delete its entry from {} to pin it again",
                    spec.label(),
                    spec.url,
                    m.actual,
                    self.lock_path.display(),
                    pin.sha256,
                    pin.origin(),
                    self.lock_path.display(),
                ))
            }
        }
    }

    fn fetch_into_cache(
        &self,
        spec: &ArtifactSpec,
        loc: &Location,
        expected: Option<&str>,
    ) -> Result<std::result::Result<cache::Stored, cache::Mismatch>> {
        let bar = crate::ui::bytes_bar(None, &spec.label());
        let res = self.cache.store(expected, |w| {
            self.transport
                .get(loc, w, &mut |done, total| {
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    bar.set_position(done);
                })
                .map(|_| ())
                .map_err(|e| self.download_error(&spec.label(), loc, e))
        });
        bar.finish_and_clear();
        res
    }

    fn download_error(&self, what: &str, loc: &Location, cause: anyhow::Error) -> anyhow::Error {
        let hint = match self.source {
            Source::Upstream if fetch::is_unreachable(&cause) => {
                "hint: this machine cannot reach the upstream release locations; build offline with \
                 --artifacts DIR_OR_URL pointing at a mirror laid out as <mirror>/<host>/<path> \
                 (see README, Mirrors)"
                    .to_string()
            }
            Source::Upstream => "hint: to build from elsewhere, pass --artifacts DIR_OR_URL pointing at a \
                 mirror laid out as <mirror>/<host>/<path> (see README, Mirrors)"
                .to_string(),
            Source::Mirror(m) => format!(
                "hint: the mirror given with --artifacts {m} must hold every artifact as \
                 <mirror>/<host>/<path> of its upstream URL (see README, Mirrors; tests/make-mirror builds one)"
            ),
        };
        anyhow::anyhow!("cannot download {what} from {loc}: {cause:#}\n{hint}")
    }
}

impl Resolved {
    /// Lays the artifacts into a root filesystem directory: /usr/bin/{kubeadm,kubelet,kubectl},
    /// /usr/local/bin/crictl, /opt/cni/bin/*, /usr/local/bin/{containerd,containerd-shim-runc-v2,ctr},
    /// /usr/local/sbin/runc, /usr/local/bin/{etcd,etcdctl}, CRI-O's binaries when chosen,
    /// and manifests under /usr/share/hakube/manifests/.
    /// Binaries get mode 0755; mtimes are deterministic (see [`install`]).
    pub fn install_into(&self, root: &Path) -> Result<()> {
        self.install_listing(root).map(|_| ())
    }

    /// [`Resolved::install_into`], returning every path written (relative to root), sorted.
    pub fn install_listing(&self, root: &Path) -> Result<Vec<PathBuf>> {
        self.install_listing_at(root, install::source_date_epoch()?)
    }

    /// [`Resolved::install_listing`] with an explicit epoch instead of
    /// `SOURCE_DATE_EPOCH` (for a build that derives its own): plain files get
    /// `epoch` (or 0), tarball members their archive mtime clamped to `epoch`.
    pub fn install_listing_at(&self, root: &Path, epoch: Option<u64>) -> Result<Vec<PathBuf>> {
        let mut all = Vec::new();
        for a in &self.artifacts {
            let layout = catalog::layout_for(&a.name, &a.version)
                .with_context(|| format!("artifact {} is not in the catalogue", a.name))?;
            let written = install::install(a, &layout, root, epoch).with_context(|| {
                format!(
                    "installing {} v{} into {}",
                    a.name,
                    a.version,
                    root.display()
                )
            })?;
            all.extend(written);
        }
        all.sort();
        Ok(all)
    }

    /// The artifact called `name`, if resolved.
    pub fn get(&self, name: &str) -> Option<&ResolvedArtifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Canonical `name version sha256` lines, sorted: part of the base cache key.
    pub fn cache_key_material(&self) -> String {
        let mut lines: Vec<String> = self
            .artifacts
            .iter()
            .map(|a| format!("{} {} {}", a.name, a.version, a.sha256))
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// A buffer for checksum files: those are a few lines, so anything past
/// 1 MiB is a wrong URL or a hostile server, not a checksum file.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > 1 << 20 {
            return Err(std::io::Error::other(
                "larger than 1 MiB: not a checksum file",
            ));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ResolvedArtifact {
    /// Size in bytes of the cached file.
    pub fn size(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?
            .len())
    }
}

/// The cached file of `cluster`'s artifact `name`, when `lock_path` pins it
/// and `cache_dir` holds it: no download, nothing written.
pub fn cached(
    cluster: &Cluster,
    lock_path: &Path,
    cache_dir: &Path,
    name: &str,
) -> Result<Option<PathBuf>> {
    let lock = Lock::load(lock_path)?;
    let Some(spec) = catalog::for_cluster(cluster)
        .into_iter()
        .find(|s| s.name == name)
    else {
        return Ok(None);
    };
    Ok(lock
        .get(&spec.url)
        .and_then(|pin| Cache::new(cache_dir).lookup(&pin.sha256, pin.size)))
}

/// `$XDG_CACHE_HOME/hakube`, else `~/.cache/hakube`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hakube");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("hakube")
}

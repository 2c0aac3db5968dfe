//! Where image manifests and blobs are read from: a registry over the OCI
//! distribution protocol (the upstream registries, or mirrors given with
//! `--registry-mirror REGISTRY=URL`), or an OCI image layout directory.
//!
//! Sources only move bytes; every byte is checked against its digest by the
//! puller ([`super::pull`]), and the registry client checks them as well.

use super::reference::ImageRef;
use crate::errors::bad_input;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The media types a node's runtime can import (OCI and Docker v2 schema 2).
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The source has no such image, manifest or blob.
#[derive(Debug)]
pub struct NotFound(pub String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotFound {}

/// Bytes arrived that do not hash to the digest they were asked for.
#[derive(Debug)]
pub struct DigestMismatch(pub String);

impl std::fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DigestMismatch {}

pub trait ImageSource {
    /// Where `image` is read from, for messages and the lock's `pinnedFrom`.
    fn origin(&self, image: &ImageRef) -> String;
    /// The manifest or index `image`'s tag names, or (with `digest`) the
    /// manifest with that digest in `image`'s repository.
    fn manifest(&self, image: &ImageRef, digest: Option<&str>) -> Result<Vec<u8>>;
    /// Streams blob `digest` of `image`'s repository into `out`, reporting
    /// bytes done and the total when known.
    fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<()>;
}

/// `--registry-mirror REGISTRY=URL`: images of REGISTRY are read from URL,
/// whose path is a repository prefix on the mirror host
/// (`registry.k8s.io=https://127.0.0.1:15443/registry.k8s.io` reads
/// `registry.k8s.io/pause:3.10.2` as `127.0.0.1:15443/registry.k8s.io/pause:3.10.2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub registry: String,
    pub https: bool,
    /// `host[:port]`
    pub host: String,
    /// Repository prefix on the mirror host, without slashes at either end.
    pub prefix: String,
}

impl std::str::FromStr for Mirror {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mirror, String> {
        let (registry, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: REGISTRY=URL expected"))?;
        if registry.is_empty() || registry.contains(['/', '@']) {
            return Err(format!("{s:?}: {registry:?} is not a registry host"));
        }
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{s:?}: the URL must start with https:// or http://"
            ));
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(format!("{s:?}: the URL has no host"));
        }
        Ok(Mirror {
            registry: registry.to_string(),
            https,
            host: host.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

/// Registries over the OCI distribution protocol, through `oci-client`.
pub struct RegistrySource {
    mirrors: Vec<Mirror>,
    client: oci_client::Client,
    runtime: tokio::runtime::Runtime,
}

impl RegistrySource {
    /// `ca`: PEM certificates trusted in addition to the system roots.
    pub fn new(mirrors: Vec<Mirror>, ca: Option<&Path>) -> Result<RegistrySource> {
        let mut config = oci_client::client::ClientConfig {
            connect_timeout: Some(crate::artifacts::fetch::CONNECT_TIMEOUT),
            read_timeout: Some(crate::artifacts::fetch::READ_TIMEOUT),
            user_agent: concat!("hakube-build/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let plain: Vec<String> = mirrors
            .iter()
            .filter(|m| !m.https)
            .map(|m| m.host.clone())
            .collect();
        if !plain.is_empty() {
            config.protocol = oci_client::client::ClientProtocol::HttpsExcept(plain);
        }
        if let Some(ca) = ca {
            let data = std::fs::read(ca)
                .with_context(|| format!("reading --registry-ca {}", ca.display()))?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad_input(format!(
                    "--registry-ca {}: no PEM certificate in the file",
                    ca.display()
                )));
            }
            config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data,
                });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for registry requests")?;
        Ok(RegistrySource {
            mirrors,
            client: oci_client::Client::new(config),
            runtime,
        })
    }

    /// Where `image` lives: (scheme, host, repository).
    fn locate(&self, image: &ImageRef) -> (&'static str, String, String) {
        match self.mirrors.iter().find(|m| m.registry == image.registry()) {
            Some(m) => {
                let repo = if m.prefix.is_empty() {
                    image.repository().to_string()
                } else {
                    format!("{}/{}", m.prefix, image.repository())
                };
                let scheme = if m.https { "https" } else { "http" };
                (scheme, m.host.clone(), repo)
            }
            None => (
                "https",
                image.registry().to_string(),
                image.repository().to_string(),
            ),
        }
    }

    fn reference(&self, image: &ImageRef, digest: Option<&str>) -> oci_client::Reference {
        let (_, host, repo) = self.locate(image);
        match digest {
            Some(d) => oci_client::Reference::with_digest(host, repo, d.to_string()),
            None => oci_client::Reference::with_tag(host, repo, image.tag().to_string()),
        }
    }
}

/// Turns the client's "no such thing" and "wrong bytes" into our kinds.
fn classify(e: oci_client::errors::OciDistributionError, what: String) -> anyhow::Error {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match &e {
        E::ImageManifestNotFoundError(_) => NotFound(format!("{what}: {e}")).into(),
        E::ServerError { code: 404, .. } => NotFound(format!("{what}: {e}")).into(),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound
                )
            }) =>
        {
            NotFound(format!("{what}: {e}")).into()
        }
        E::DigestError(_) => DigestMismatch(format!("{what}: {e}")).into(),
        _ => anyhow::Error::new(e).context(what),
    }
}

impl ImageSource for RegistrySource {
    fn origin(&self, image: &ImageRef) -> String {
        let (scheme, host, repo) = self.locate(image);
        format!("{scheme}://{host}/{repo}")
    }

    fn manifest(&self, image: &ImageRef, digest: Option<&str>) -> Result<Vec<u8>> {
        let r = self.reference(image, digest);
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        let what = format!(
            "fetching the manifest of {image}{} from {}",
            digest.map(|d| format!(" ({d})")).unwrap_or_default(),
            self.origin(image)
        );
        let (bytes, _digest) = self
            .runtime
            .block_on(self.client.pull_manifest_raw(&r, &auth, ACCEPTED_MANIFESTS))
            .map_err(|e| classify(e, what))?;
        Ok(bytes.to_vec())
    }

    fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<()> {
        use futures_util::StreamExt;
        let r = self.reference(image, None);
        let what = format!(
            "fetching blob {digest} of {image} from {}",
            self.origin(image)
        );
        self.runtime.block_on(async {
            // The token for the repository: pull_blob_stream does not ask for one.
            self.client
                .store_auth_if_needed(
                    r.resolve_registry(),
                    &oci_client::secrets::RegistryAuth::Anonymous,
                )
                .await;
            let mut s = self
                .client
                .pull_blob_stream(&r, digest)
                .await
                .map_err(|e| classify(e, what.clone()))?;
            let total = s.content_length;
            let mut done = 0u64;
            while let Some(chunk) = s.stream.next().await {
                let chunk = chunk.map_err(|e| {
                    let mismatch = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<oci_client::errors::DigestError>())
                        .is_some();
                    if mismatch {
                        anyhow::Error::new(DigestMismatch(format!("{what}: {e}")))
                    } else {
                        anyhow::Error::new(e).context(what.clone())
                    }
                })?;
                out.write_all(&chunk)
                    .with_context(|| format!("writing blob {digest} of {image}"))?;
                done += chunk.len() as u64;
                progress(done, total);
            }
            Ok::<(), anyhow::Error>(())
        })
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`)
/// whose index names each image by its full reference in the
/// `org.opencontainers.image.ref.name` (or `io.containerd.image.name`)
/// annotation, as `skopeo copy docker://IMAGE oci:DIR:IMAGE` writes it.
pub struct LayoutSource {
    dir: PathBuf,
}

impl LayoutSource {
    pub fn new(dir: &Path) -> Result<LayoutSource> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            return Err(bad_input(format!(
                "--image-layout {}: not an OCI image layout (oci-layout and index.json expected)",
                dir.display()
            )));
        }
        Ok(LayoutSource {
            dir: dir.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = super::pull::sha256_hex_of(digest)?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    fn read_blob(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        match std::fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NotFound(format!(
                "{}: no blob {digest} (of {image})",
                self.dir.display()
            ))
            .into()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
}

impl ImageSource for LayoutSource {
    fn origin(&self, _image: &ImageRef) -> String {
        format!("oci-layout:{}", self.dir.display())
    }

    fn manifest(&self, image: &ImageRef, digest: Option<&str>) -> Result<Vec<u8>> {
        if let Some(d) = digest {
            return self.read_blob(image, d);
        }
        let p = self.dir.join("index.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad_input(format!("{}: not JSON: {e}", p.display())))?;
        let want = image.to_string();
        let found = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                [
                    "org.opencontainers.image.ref.name",
                    "io.containerd.image.name",
                ]
                .iter()
                .any(|k| m["annotations"][k].as_str() == Some(want.as_str()))
            });
        let Some(desc) = found else {
            return Err(NotFound(format!(
                "{} names no image {want} (annotation org.opencontainers.image.ref.name)",
                p.display()
            ))
            .into());
        };
        let Some(d) = desc["digest"].as_str() else {
            bail!("{}: the entry of {want} has no digest", p.display());
        };
        self.read_blob(image, d)
    }

    fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<()> {
        let p = self.blob_path(digest)?;
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NotFound(format!(
                    "{}: no blob {digest} (of {image})",
                    self.dir.display()
                ))
                .into())
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", p.display())),
        };
        let total = f.metadata().ok().map(|m| m.len());
        let n = std::io::copy(&mut f, out).with_context(|| format!("reading {}", p.display()))?;
        progress(n, total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_flags() {
        let m: Mirror = "registry.k8s.io=https://127.0.0.1:15443/registry.k8s.io"
            .parse()
            .unwrap();
        assert_eq!(
            m,
            Mirror {
                registry: "registry.k8s.io".into(),
                https: true,
                host: "127.0.0.1:15443".into(),
                prefix: "registry.k8s.io".into()
            }
        );
        let m: Mirror = "ghcr.io=http://mirror.lan:5000/".parse().unwrap();
        assert!(!m.https);
        assert_eq!(m.prefix, "");
        for bad in [
            "registry.k8s.io",
            "=https://x",
            "registry.k8s.io=127.0.0.1:5000",
            "registry.k8s.io=https:///x",
            "a/b=https://x",
        ] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mirror_maps_repository_under_prefix() {
        let src = RegistrySource::new(
            vec!["registry.k8s.io=https://127.0.0.1:15443/registry.k8s.io"
                .parse()
                .unwrap()],
            None,
        )
        .unwrap();
        let img = ImageRef::parse("registry.k8s.io/coredns/coredns:v1.14.6").unwrap();
        assert_eq!(
            src.origin(&img),
            "https://127.0.0.1:15443/registry.k8s.io/coredns/coredns"
        );
        let other = ImageRef::parse("ghcr.io/flannel-io/flannel:v0.28.10").unwrap();
        assert_eq!(src.origin(&other), "https://ghcr.io/flannel-io/flannel");
    }
}

//! Image references as nodes use them: `registry/repository:tag`, always with
//! a registry host and a tag (kubeadm and the CNI manifests name images that
//! way; a digest-only or tag-less reference cannot be pinned by name).
//!
//! Normalisation follows the distribution reference grammar
//! (<https://github.com/distribution/reference/blob/main/reference.go>): the
//! first component is a registry when it holds a `.` or a `:` or is
//! `localhost`; otherwise the image is on Docker Hub (`docker.io`, with
//! `library/` for one-component names).

use anyhow::{bail, Result};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef> {
        let s = s.trim();
        if s.contains('@') {
            bail!("image {s:?}: a reference by digest cannot be pinned by name; name it by tag");
        }
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => bail!("image {s:?} has no tag (registry/repository:tag expected)"),
        };
        if tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || tag.starts_with(['.', '-'])
        {
            bail!("image {s:?}: tag {tag:?} is not a valid tag");
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if repository.is_empty() || !repository.split('/').all(component_ok) {
            bail!("image {s:?}: repository {repository:?} is not a valid repository name");
        }
        if registry.is_empty() || registry.contains(['/', '@']) {
            bail!("image {s:?}: registry {registry:?} is not a host[:port]");
        }
        Ok(ImageRef {
            registry,
            repository,
            tag: tag.to_string(),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> &str {
        &self.tag
    }
    /// The last path component of the repository (`kube-apiserver`).
    pub fn basename(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// A file name for this image's archive: `registry.k8s.io_kube-apiserver_v1.37.2.tar`.
    pub fn archive_name(&self) -> String {
        format!("{self}.tar").replace(['/', ':'], "_")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_references() {
        for (input, want, base) in [
            (
                "registry.k8s.io/kube-apiserver:v1.37.2",
                "registry.k8s.io/kube-apiserver:v1.37.2",
                "kube-apiserver",
            ),
            (
                "registry.k8s.io/coredns/coredns:v1.14.6",
                "registry.k8s.io/coredns/coredns:v1.14.6",
                "coredns",
            ),
            (
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
                "flannel-cni-plugin",
            ),
            (
                "flannel/flannel:v0.25.7",
                "docker.io/flannel/flannel:v0.25.7",
                "flannel",
            ),
            ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox"),
            (
                "127.0.0.1:5000/x/pause:3.10",
                "127.0.0.1:5000/x/pause:3.10",
                "pause",
            ),
            ("localhost/pause:3.10", "localhost/pause:3.10", "pause"),
        ] {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.to_string(), want, "{input}");
            assert_eq!(r.basename(), base);
        }
        assert_eq!(
            ImageRef::parse("registry.k8s.io/etcd:3.7.0-0")
                .unwrap()
                .archive_name(),
            "registry.k8s.io_etcd_3.7.0-0.tar"
        );
    }

    #[test]
    fn bad_references() {
        for bad in [
            "registry.k8s.io/pause",
            "127.0.0.1:5000/pause",
            "registry.k8s.io/pause@sha256:0000",
            "registry.k8s.io/Pause:3.10",
            "registry.k8s.io/pause:",
            "registry.k8s.io/pause:-x",
            "registry.k8s.io//pause:1",
            "",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

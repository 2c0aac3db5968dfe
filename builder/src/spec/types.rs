//! Validated newtypes for values that appear in a cluster spec.
//! Each parses from a string and says what it expected when it refuses.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An RFC 1123 DNS label: 1-63 chars of `[a-z0-9-]`, starting and ending alphanumeric.
fn check_rfc1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!(
            "{s:?} is not an RFC 1123 label: 1 to 63 characters expected"
        ));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let b = s.as_bytes();
    let ends_ok = b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ends_ok {
        return Err(format!(
            "{s:?} is not an RFC 1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Digits and dots only, like `10.0.0.300`: meant as an address, not a name
/// (no DNS name has an all-numeric top-level label).
pub fn looks_like_ipv4(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// An RFC 1123 subdomain (dot-separated labels, at most 253 chars).
pub fn check_rfc1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!(
            "{s:?} is not an RFC 1123 DNS name: 1 to 253 characters expected"
        ));
    }
    for label in s.split('.') {
        check_rfc1123_label(label)
            .map_err(|_| format!("{s:?} is not an RFC 1123 DNS name (label {label:?})"))?;
    }
    Ok(())
}

/// A Kubernetes "name" segment (label values, the name part of label keys):
/// at most 63 chars of `[A-Za-z0-9-_.]`, starting and ending alphanumeric.
fn check_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Kubernetes label or taint key: `[PREFIX/]NAME`, the prefix a DNS
/// subdomain, the name as in [`check_label_value`] but non-empty. The API
/// server refuses anything else, so refusing it here saves a failed boot.
pub fn check_label_key(s: &str) -> Result<(), String> {
    let expected = "[PREFIX/]NAME with NAME of 1 to 63 characters [A-Za-z0-9-_.] starting and ending alphanumeric, PREFIX a DNS name, expected";
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if check_rfc1123_subdomain(p).is_err() {
            return Err(format!(
                "{s:?} is not a label key (prefix {p:?}): {expected}"
            ));
        }
    }
    if !check_qualified_name_part(name) {
        return Err(format!("{s:?} is not a label key: {expected}"));
    }
    Ok(())
}

/// Labels a kubelet may give its own node (`--node-labels`): any outside the
/// `kubernetes.io` and `k8s.io` namespaces, and inside them only the
/// well-known ones and the `kubelet.kubernetes.io` / `node.kubernetes.io`
/// namespaces. The kubelet refuses to start with any other (NodeRestriction;
/// `IsKubeletLabel` in k8s.io/kubelet `pkg/apis/well_known_labels.go`).
pub fn kubelet_may_set_label(key: &str) -> bool {
    const WELL_KNOWN: [&str; 11] = [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let Some((ns, _)) = key.split_once('/') else {
        return true;
    };
    let under = |ns: &str, domain: &str| ns == domain || ns.ends_with(&format!(".{domain}"));
    if !under(ns, "kubernetes.io") && !under(ns, "k8s.io") {
        return true;
    }
    WELL_KNOWN.contains(&key)
        || under(ns, "kubelet.kubernetes.io")
        || under(ns, "node.kubernetes.io")
}

/// A Kubernetes label or taint value: empty, or 1-63 chars of `[A-Za-z0-9-_.]`
/// starting and ending alphanumeric.
pub fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || check_qualified_name_part(s) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a label value: at most 63 characters [A-Za-z0-9-_.] starting and ending alphanumeric expected"))
    }
}

/// A sysctl name as written in /etc/sysctl.d: dot-separated segments of
/// `[a-z0-9_-]` (Kubernetes' own rule for sysctl names, with `.` only).
pub fn check_sysctl_name(s: &str) -> Result<(), String> {
    let seg_ok = |seg: &str| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
    };
    if s.len() > 253 || !s.contains('.') || !s.split('.').all(seg_ok) {
        return Err(format!(
            "{s:?} is not a sysctl name: dotted lower-case segments like net.ipv4.ip_forward expected"
        ));
    }
    Ok(())
}

/// A sysctl value: one line, not empty.
pub fn check_sysctl_value(s: &str) -> Result<(), String> {
    if s.trim().is_empty() || s.contains(['\n', '\r']) {
        return Err(format!(
            "{s:?} is not a sysctl value: a non-empty single-line value (quoted, like \"1\") expected"
        ));
    }
    Ok(())
}

/// A kernel module name as modules-load.d takes it: 1-55 chars of
/// `[A-Za-z0-9_-]` (the kernel's MODULE_NAME_LEN is 56 with the NUL).
pub fn check_kernel_module(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 55
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'));
    if !ok {
        return Err(format!(
            "{s:?} is not a kernel module name: 1 to 55 characters [A-Za-z0-9_-] like br_netfilter expected"
        ));
    }
    Ok(())
}

macro_rules! label_newtype {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, ": an RFC 1123 label.")]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                check_rfc1123_label(s)?;
                Ok($name(s.to_string()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label_newtype!(NodeName, "node name");
label_newtype!(ClusterName, "cluster name");

/// A unicast, locally administered or vendor MAC address, `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A MAC derived from the cluster and node names: QEMU/libvirt's OUI
    /// 52:54:00 followed by three bytes of SHA-256(cluster/node). Stable across
    /// builds, so a rebuilt node keeps its DHCP lease and libvirt definition.
    pub fn derived(cluster: &str, node: &str) -> MacAddr {
        let h = Sha256::digest(format!("{cluster}/{node}").as_bytes());
        MacAddr([0x52, 0x54, 0x00, h[0], h[1], h[2]])
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "{s:?} is not a MAC address: six hex byte pairs like 52:54:00:12:34:56 expected"
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(expected());
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(expected());
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| expected())?;
        }
        if b[0] & 1 == 1 {
            return Err(format!(
                "{s:?} is a multicast MAC address: a unicast address (even first byte) expected"
            ));
        }
        Ok(MacAddr(b))
    }
}

/// A Kubernetes minor release hakube builds clusters for, and the day
/// upstream support for it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedMinor {
    pub minor: u32,
    /// The newest patch release checked against its sources (the k8s.io/kubernetes
    /// module of that tag, served by the Go module proxy).
    pub newest_patch: u32,
    /// End of life, from the release's page on kubernetes.io/releases.
    pub end_of_support: &'static str,
}

/// The supported minors, oldest first. On 2026-12-01 upstream supports
/// exactly these three; 1.34 went out of support on 2026-10-27
/// (https://kubernetes.io/releases/, one page per minor). Every companion
/// version in `artifacts::catalog` is pinned per entry of this table.
pub const SUPPORTED_MINORS: [SupportedMinor; 3] = [
    SupportedMinor {
        minor: 35,
        newest_patch: 4,
        end_of_support: "2027-02-28",
    },
    SupportedMinor {
        minor: 36,
        newest_patch: 3,
        end_of_support: "2027-06-28",
    },
    SupportedMinor {
        minor: 37,
        newest_patch: 2,
        end_of_support: "2027-10-28",
    },
];

/// `1.35 (supported until 2027-02-28), 1.36 (...), ...` for messages.
pub fn supported_minors_text() -> String {
    SUPPORTED_MINORS
        .iter()
        .map(|m| format!("1.{} (supported until {})", m.minor, m.end_of_support))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Kubernetes version `MAJOR.MINOR.PATCH` (a leading `v` is accepted) of a
/// supported minor (see [`SUPPORTED_MINORS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    /// Oldest and newest minor versions hakube knows how to configure.
    pub const MIN_MINOR: u32 = SUPPORTED_MINORS[0].minor;
    pub const MAX_MINOR: u32 = SUPPORTED_MINORS[SUPPORTED_MINORS.len() - 1].minor;

    /// kubeadm config API version: v1beta4 for every supported minor (read
    /// by kubeadm 1.31 and newer; kubeadm 1.37 no longer reads v1beta3,
    /// kubernetes#136016).
    pub fn kubeadm_api(&self) -> &'static str {
        "kubeadm.k8s.io/v1beta4"
    }
    /// The support entry of this version's minor.
    pub fn support(&self) -> SupportedMinor {
        *SUPPORTED_MINORS
            .iter()
            .find(|m| m.minor == self.minor)
            .expect("a KubeVersion is only made for a supported minor")
    }
    /// `v1.37.2`
    pub fn tag(&self) -> String {
        format!("v{self}")
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for KubeVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bare = s.strip_prefix('v').unwrap_or(s);
        let nums: Vec<Result<u32, _>> = bare.split('.').map(str::parse::<u32>).collect();
        let v = match nums.as_slice() {
            [Ok(a), Ok(b), Ok(c)] => KubeVersion {
                major: *a,
                minor: *b,
                patch: *c,
            },
            _ => {
                return Err(format!(
                    "{s:?} is not a Kubernetes version: MAJOR.MINOR.PATCH like 1.37.2 expected"
                ))
            }
        };
        if v.major != 1 || !SUPPORTED_MINORS.iter().any(|m| m.minor == v.minor) {
            return Err(format!(
                "Kubernetes {v} is not supported: a release of a supported minor expected: {}",
                supported_minors_text()
            ));
        }
        Ok(v)
    }
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Ip(Ipv4Addr),
    Dns(String),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Ip(ip) => write!(f, "{ip}"),
            San::Dns(d) => f.write_str(d),
        }
    }
}

impl Serialize for San {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for San {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(San::Ip(ip));
        }
        // kubeadm accepts wildcard names in certSANs (`*.apps.example.com`).
        let name = s.strip_prefix("*.").unwrap_or(s);
        if looks_like_ipv4(name) {
            return Err(format!(
                "{s:?} is not a valid IPv4 address; an IPv4 address or a DNS name expected"
            ));
        }
        check_rfc1123_subdomain(name)
            .map_err(|e| format!("{e}; an IPv4 address or a DNS name expected"))?;
        Ok(San::Dns(s.to_string()))
    }
}

/// A certificate validity in whole days. Written `365d`, `10y` (365 days a
/// year) or `8760h` (a multiple of 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Validity {
    pub days: u32,
}

impl Serialize for Validity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}d", self.days))
    }
}

impl FromStr for Validity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!("{s:?} is not a validity: a whole number with d, y or h (multiple of 24), like 365d or 10y, expected")
        };
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u32 = num.parse().map_err(|_| expected())?;
        let days = match unit {
            "d" => n,
            "y" => n.checked_mul(365).ok_or_else(expected)?,
            "h" if n.is_multiple_of(24) => n / 24,
            _ => return Err(expected()),
        };
        if days == 0 || days > 36500 {
            return Err(format!(
                "{s:?} is out of range: between 1 day and 100 years expected"
            ));
        }
        Ok(Validity { days })
    }
}

/// Key algorithm for every key hakube creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    EcdsaP256,
    Rsa2048,
}

impl KeyAlgorithm {
    /// kubeadm's `encryptionAlgorithm` value (v1beta4).
    pub fn kubeadm_name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
            KeyAlgorithm::Rsa2048 => "RSA-2048",
        }
    }
}

impl FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            "rsa-2048" => Ok(KeyAlgorithm::Rsa2048),
            _ => Err(format!(
                "{s:?} is not a key algorithm: ecdsa-p256 or rsa-2048 expected"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `parse` over good and bad inputs; bad ones must name the input or
    /// say what was expected.
    fn table<T, E: fmt::Debug>(parse: impl Fn(&str) -> Result<T, E>, good: &[&str], bad: &[&str]) {
        for g in good {
            assert!(
                parse(g).is_ok(),
                "{g:?} should be accepted: {:?}",
                parse(g).err()
            );
        }
        for b in bad {
            assert!(parse(b).is_err(), "{b:?} should be refused");
        }
    }

    #[test]
    fn node_and_cluster_names() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        let good = ["master-1", "a", "0", "w1", long.as_str(), "x-y-z"];
        let bad = [
            "",
            "Master-1",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            too_long.as_str(),
            "ä",
        ];
        table(|s| s.parse::<NodeName>(), &good, &bad);
        table(|s| s.parse::<ClusterName>(), &good, &bad);
        let err = "Master-1".parse::<NodeName>().unwrap_err();
        assert!(err.contains("RFC 1123"), "{err}");
    }

    #[test]
    fn rfc1123_subdomains() {
        let long_label = format!("{}.example.com", "a".repeat(64));
        table(
            check_rfc1123_subdomain,
            &["cluster.local", "a", "api.k8s.example.com", "1.2.3"],
            &["", ".", "a..b", "-a.b", "A.b", "a_b.c", long_label.as_str()],
        );
    }

    #[test]
    fn mac_addresses() {
        table(
            |s| s.parse::<MacAddr>(),
            &[
                "52:54:00:12:34:56",
                "52:54:00:AB:cd:EF",
                "00:00:00:00:00:00",
            ],
            &[
                "",
                "52:54:00:12:34",
                "52:54:00:12:34:56:78",
                "52-54-00-12-34-56",
                "52:54:00:12:34:5",
                "52:54:00:12:34:5g",
                "01:00:5e:00:00:01",
                "ff:ff:ff:ff:ff:ff",
            ],
        );
        let m: MacAddr = "52:54:00:AB:cd:EF".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:ef");
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap_err()
            .contains("multicast"));
    }

    #[test]
    fn derived_macs_are_stable_qemu_unicast_and_distinct() {
        let a = MacAddr::derived("hakube", "master-1");
        assert_eq!(a, MacAddr::derived("hakube", "master-1"));
        assert_eq!(&a.0[..3], &[0x52, 0x54, 0x00]);
        assert_ne!(a, MacAddr::derived("hakube", "master-2"));
        assert_ne!(a, MacAddr::derived("other", "master-1"));
        // Round-trips through its own text form.
        assert_eq!(a.to_string().parse::<MacAddr>().unwrap(), a);
    }

    #[test]
    fn kubernetes_versions() {
        table(
            |s| s.parse::<KubeVersion>(),
            &["1.35.0", "1.35.4", "1.36.3", "v1.37.2", "1.37.9"],
            &[
                "", "1.37", "1.37.x", "2.37.0", "1.34.9", "1.38.0", "1.29.0", "v", "1.37.2.1",
                "1.37.-1",
            ],
        );
        let v: KubeVersion = "v1.37.2".parse().unwrap();
        assert_eq!(v.tag(), "v1.37.2");
        assert_eq!(v.to_string(), "1.37.2");
        assert_eq!(v.kubeadm_api(), "kubeadm.k8s.io/v1beta4");
        assert_eq!(v.support().end_of_support, "2027-10-28");
        for old_or_new in ["1.34.9", "1.38.0"] {
            let e = old_or_new.parse::<KubeVersion>().unwrap_err();
            assert!(e.contains("not supported"), "{e}");
            for m in [
                "1.35 (supported until 2027-02-28)",
                "1.36 (supported until 2027-06-28)",
                "1.37 (supported until 2027-10-28)",
            ] {
                assert!(e.contains(m), "{e}");
            }
        }
    }

    #[test]
    fn supported_minors_are_consecutive_and_oldest_first() {
        for w in SUPPORTED_MINORS.windows(2) {
            assert_eq!(w[0].minor + 1, w[1].minor);
            assert!(w[0].end_of_support < w[1].end_of_support);
        }
        assert_eq!((KubeVersion::MIN_MINOR, KubeVersion::MAX_MINOR), (35, 37));
    }

    #[test]
    fn sans() {
        table(
            |s| s.parse::<San>(),
            &[
                "10.0.0.1",
                "api.example.com",
                "kubernetes",
                "*.apps.example.com",
            ],
            &[
                "",
                "10.0.0.300",
                "1.2.3.4.5.6.7.8.9",
                "API.example.com",
                "*.",
                "a.*.b",
                "under_score.example.com",
                "http://x",
            ],
        );
        assert_eq!(
            "10.0.0.1".parse::<San>().unwrap(),
            San::Ip(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            "api.example.com".parse::<San>().unwrap(),
            San::Dns("api.example.com".into())
        );
    }

    #[test]
    fn validities() {
        table(
            |s| s.parse::<Validity>(),
            &["1d", "365d", "10y", "8760h", "24h", "100y"],
            &[
                "",
                "d",
                "0d",
                "1",
                "1w",
                "25h",
                "101y",
                "-1d",
                "1.5y",
                "10 y",
                "4294967295y",
            ],
        );
        assert_eq!("10y".parse::<Validity>().unwrap().days, 3650);
        assert_eq!("48h".parse::<Validity>().unwrap().days, 2);
    }

    #[test]
    fn key_algorithms() {
        table(
            |s| s.parse::<KeyAlgorithm>(),
            &["ecdsa-p256", "rsa-2048"],
            &["", "ECDSA-P256", "rsa-4096", "ed25519"],
        );
        assert_eq!(KeyAlgorithm::Rsa2048.kubeadm_name(), "RSA-2048");
    }

    #[test]
    fn label_keys_and_values() {
        let long_name = "a".repeat(64);
        table(
            check_label_key,
            &[
                "node-role.kubernetes.io/control-plane",
                "app",
                "topology.kubernetes.io/zone",
                "A_b.c-D",
                "example.com/x",
            ],
            &[
                "",
                "/x",
                "example.com/",
                "Example.com/x",
                "a/b/c",
                "-x",
                "x-",
                "a b",
                long_name.as_str(),
            ],
        );
        table(
            check_label_value,
            &["", "true", "zone-a", "v1.2_3"],
            &["-a", "a b", "a/b", long_name.as_str()],
        );
    }

    #[test]
    fn sysctls_and_modules() {
        table(
            check_sysctl_name,
            &[
                "net.ipv4.ip_forward",
                "net.bridge.bridge-nf-call-iptables",
                "vm.max_map_count",
            ],
            &[
                "",
                "ip_forward",
                "net..ipv4",
                "net.ipv4.",
                "Net.ipv4.x",
                "net/ipv4/x",
                "net.ipv4 .x",
            ],
        );
        table(check_sysctl_value, &["1", "0 65535"], &["", " ", "1\n2"]);
        table(
            check_kernel_module,
            &["overlay", "br_netfilter", "nf-conntrack", "ip_vs_rr"],
            &["", "a b", "mod.ko", "../x", &"m".repeat(56)],
        );
    }
}

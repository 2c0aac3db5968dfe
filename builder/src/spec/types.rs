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

/// A Kubernetes version `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    /// Oldest and newest minor versions hakube knows how to configure.
    pub const MIN_MINOR: u32 = 29;
    pub const MAX_MINOR: u32 = 34;

    /// kubeadm config API version for this release.
    pub fn kubeadm_api(&self) -> &'static str {
        if self.minor >= 31 {
            "kubeadm.k8s.io/v1beta4"
        } else {
            "kubeadm.k8s.io/v1beta3"
        }
    }
    /// Whether kubeadm writes `super-admin.conf` (1.29 and newer).
    pub fn has_super_admin(&self) -> bool {
        self.minor >= 29
    }
    /// `v1.31.4`
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
                    "{s:?} is not a Kubernetes version: MAJOR.MINOR.PATCH like 1.31.4 expected"
                ))
            }
        };
        if v.major != 1 || v.minor < Self::MIN_MINOR || v.minor > Self::MAX_MINOR {
            return Err(format!(
                "Kubernetes {v} is not supported: 1.{}.x to 1.{}.x expected",
                Self::MIN_MINOR,
                Self::MAX_MINOR
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
        check_rfc1123_subdomain(s)
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
            "h" if n % 24 == 0 => n / 24,
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

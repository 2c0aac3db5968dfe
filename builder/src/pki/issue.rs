//! Key generation and certificate issuing with rcgen, set up the way kubeadm
//! does it (cmd/kubeadm/app/util/pkiutil/pki_helpers.go): random positive
//! 63-bit serials, NotBefore backdated 5 minutes, CA key usages
//! digitalSignature|keyEncipherment|keyCertSign with the CN as a DNS SAN,
//! leaf key usages digitalSignature|keyEncipherment plus the profile's EKUs.
//! rcgen's defaults (CN "rcgen self signed cert", 1975-4096 validity, serial
//! derived from the key) are never used.

use super::profiles::{CaKind, LeafProfile};
use crate::spec::types::{KeyAlgorithm, Validity};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};

/// kubeadm's CertificateBackdate: NotBefore is this far before issuing, so a
/// node whose clock runs a little behind still accepts fresh certificates.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Leaves are re-issued when they expire within this window (or within a
/// third of their validity, for validities shorter than 90 days, so a short
/// validity does not make every build re-issue).
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A loaded CA: its certificate and the key that signs with it.
pub struct Ca {
    pub kind: CaKind,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Loads a CA from its PEM certificate and key, checking they belong together.
    pub fn load(kind: CaKind, cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let cert_der = pem_to_der(cert_pem, "CERTIFICATE")
            .with_context(|| format!("reading the {} CA certificate", kind.base()))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| anyhow!("reading the {} CA key: {e}", kind.base()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| anyhow!("parsing the {} CA certificate: {e}", kind.base()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            bail!("the {} CA key does not match its certificate", kind.base());
        }
        if !cert.is_ca() {
            bail!("the {} CA certificate is not a CA", kind.base());
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(|e| anyhow!("using the {} CA certificate as issuer: {e}", kind.base()))?;
        Ok(Ca {
            kind,
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> Result<OffsetDateTime> {
        Ok(self.parsed()?.validity().not_after.to_datetime())
    }

    fn parsed(&self) -> Result<X509Certificate<'_>> {
        x509_parser::parse_x509_certificate(&self.cert_der)
            .map(|(_, c)| c)
            .map_err(|e| anyhow!("parsing the {} CA certificate: {e}", self.kind.base()))
    }
}

/// A fresh private key of the spec's algorithm.
pub fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair> {
    let key = match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
    };
    key.map_err(|e| anyhow!("generating a {} key: {e}", alg.kubeadm_name()))
}

/// A new self-signed CA of `kind`.
pub fn new_ca(
    kind: CaKind,
    alg: KeyAlgorithm,
    validity: Validity,
    now: OffsetDateTime,
) -> Result<CertAndKey> {
    ca_for_key(kind, generate_key(alg)?, validity, now)
}

/// A self-signed CA certificate for an existing key (PEM): what finishes a
/// CA whose creation was cut short after its key was written.
pub fn ca_from_key_pem(
    kind: CaKind,
    key_pem: &str,
    validity: Validity,
    now: OffsetDateTime,
) -> Result<CertAndKey> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| anyhow!("reading the {} CA key: {e}", kind.base()))?;
    ca_for_key(kind, key, validity, now)
}

fn ca_for_key(
    kind: CaKind,
    key: KeyPair,
    validity: Validity,
    now: OffsetDateTime,
) -> Result<CertAndKey> {
    let mut p = base_params(now, validity)?;
    p.distinguished_name = dn(kind.common_name(), &[]);
    // kubeadm's NewSelfSignedCACert puts the CN in as a DNS name as well.
    p.subject_alt_names = vec![SanType::DnsName(
        kind.common_name()
            .try_into()
            .map_err(|e| anyhow!("CA name as SAN: {e}"))?,
    )];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    let cert = p
        .self_signed(&key)
        .map_err(|e| anyhow!("signing the {} CA certificate: {e}", kind.base()))?;
    Ok(CertAndKey {
        cert_pem: pem_encode("CERTIFICATE", cert.der()),
        key_pem: key.serialize_pem(),
    })
}

/// A leaf certificate for `profile`, signed by `ca`, with a new key.
pub fn issue_leaf(
    profile: &LeafProfile,
    ca: &Ca,
    alg: KeyAlgorithm,
    validity: Validity,
    now: OffsetDateTime,
) -> Result<CertAndKey> {
    if profile.ca != ca.kind {
        bail!(
            "{} must be signed by the {} CA, not {}",
            profile.id,
            profile.ca.base(),
            ca.kind.base()
        );
    }
    let key = generate_key(alg)?;
    let mut p = base_params(now, validity)?;
    p.distinguished_name = dn(&profile.common_name, &profile.organizations);
    let mut sans = Vec::new();
    for d in &profile.dns_names {
        sans.push(SanType::DnsName(
            d.as_str()
                .try_into()
                .map_err(|e| anyhow!("SAN {d:?}: {e}"))?,
        ));
    }
    sans.extend(profile.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if profile.usage.server_auth() {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if profile.usage.client_auth() {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    p.use_authority_key_identifier_extension = true;
    // A leaf outliving its CA would fail verification after the CA expires anyway.
    let ca_not_after = ca.not_after()?;
    if p.not_after > ca_not_after {
        tracing::warn!(
            "{}: the {} CA expires {ca_not_after}, before the leaf validity ends; capping",
            profile.id,
            ca.kind.base()
        );
        p.not_after = ca_not_after;
    }
    let cert = p
        .signed_by(&key, &ca.issuer)
        .map_err(|e| anyhow!("signing the {} certificate: {e}", profile.id))?;
    Ok(CertAndKey {
        cert_pem: pem_encode("CERTIFICATE", cert.der()),
        key_pem: key.serialize_pem(),
    })
}

/// Validity, serial and nothing else: every other field is set by the caller.
fn base_params(now: OffsetDateTime, validity: Validity) -> Result<CertificateParams> {
    // X.509 times have whole seconds; truncate so what we write is what we read back.
    let now = now
        .replace_nanosecond(0)
        .context("truncating the issuing time")?;
    let mut p = CertificateParams::default();
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(i64::from(validity.days));
    p.serial_number = Some(random_serial());
    p.subject_alt_names = Vec::new();
    p.key_usages = Vec::new();
    p.extended_key_usages = Vec::new();
    Ok(p)
}

/// A uniformly random serial in [1, 2^63), like kubeadm's.
fn random_serial() -> SerialNumber {
    let n = loop {
        let n = rand::random::<u64>() & (i64::MAX as u64);
        if n != 0 {
            break n;
        }
    };
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    SerialNumber::from_slice(&bytes[first..])
}

/// Organization(s) before CommonName, the order Go's pkix.Name writes them.
fn dn(cn: &str, orgs: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    // rcgen keeps one value per attribute type; kubeadm never uses more than one O.
    if let Some(o) = orgs.first() {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Standard PEM (64-column base64, LF), byte-identical to Go's encoding/pem,
/// which kubeadm compares kubeconfig CA data against.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block labelled `label`.
pub fn pem_to_der(pem: &str, label: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| anyhow!("no {begin} block"))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| anyhow!("no {end} line"))?
        + start;
    let b64: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("decoding PEM base64")
}

/// Why a stored leaf no longer fits, or `None` when it can be kept.
pub fn reissue_reason(
    profile: &LeafProfile,
    stored: &CertAndKey,
    ca: &Ca,
    alg: KeyAlgorithm,
    validity: Validity,
    now: OffsetDateTime,
) -> Result<Option<String>> {
    let der = pem_to_der(&stored.cert_pem, "CERTIFICATE")
        .with_context(|| format!("reading stored certificate {}", profile.id))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("parsing stored certificate {}: {e}", profile.id))?;
    let ca_cert = ca.parsed()?;

    // Issuer: same subject and the authority key id of the current CA key.
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || authority_key_id(&cert) != subject_key_id(&ca_cert)
    {
        return Ok(Some("issued by a different CA".into()));
    }
    let key = KeyPair::from_pem(&stored.key_pem)
        .map_err(|e| anyhow!("reading stored key {}: {e}", profile.id))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Ok(Some("stored key does not match the certificate".into()));
    }
    let want_alg = match alg {
        KeyAlgorithm::EcdsaP256 => OID_KEY_TYPE_EC_PUBLIC_KEY,
        KeyAlgorithm::Rsa2048 => OID_PKCS1_RSAENCRYPTION,
    };
    if cert.public_key().algorithm.algorithm != want_alg {
        return Ok(Some(format!("key algorithm is not {}", alg.kubeadm_name())));
    }
    let subject = Subject::of(&cert);
    let wanted = Subject::wanted(profile);
    if subject != wanted {
        return Ok(Some(format!(
            "subject/SANs/usages changed: have {subject:?}, want {wanted:?}"
        )));
    }
    let not_after = cert.validity().not_after.to_datetime();
    let window = RENEW_BEFORE.min(Duration::days(i64::from(validity.days)) / 3);
    if not_after - now < window {
        return Ok(Some(format!(
            "expires {not_after}, within {} days",
            window.whole_days()
        )));
    }
    Ok(None)
}

/// Everything of a certificate's identity that a profile determines.
#[derive(Debug, PartialEq, Eq)]
struct Subject {
    cn: Vec<String>,
    orgs: Vec<String>,
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    server_auth: bool,
    client_auth: bool,
    other_eku: bool,
    /// digitalSignature, keyEncipherment, keyCertSign
    key_usage: (bool, bool, bool),
    is_ca: bool,
}

impl Subject {
    fn wanted(p: &LeafProfile) -> Subject {
        Subject {
            cn: vec![p.common_name.clone()],
            orgs: p.organizations.clone(),
            dns: p.dns_names.iter().cloned().collect(),
            ips: p.ips.iter().copied().collect(),
            server_auth: p.usage.server_auth(),
            client_auth: p.usage.client_auth(),
            other_eku: false,
            key_usage: (true, true, false),
            is_ca: false,
        }
    }

    fn of(cert: &X509Certificate<'_>) -> Subject {
        let strings =
            |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
                it.filter_map(|a| a.as_str().ok().map(str::to_string))
                    .collect::<Vec<_>>()
            };
        let mut dns = BTreeSet::new();
        let mut ips = BTreeSet::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => {
                        dns.insert(d.to_string());
                    }
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            ips.insert(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            ips.insert(IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
        let (server_auth, client_auth, other_eku) = match cert.extended_key_usage() {
            Ok(Some(e)) => (
                e.value.server_auth,
                e.value.client_auth,
                e.value.any
                    || e.value.code_signing
                    || e.value.email_protection
                    || e.value.time_stamping
                    || e.value.ocsp_signing
                    || !e.value.other.is_empty(),
            ),
            _ => (false, false, false),
        };
        let key_usage = match cert.key_usage() {
            Ok(Some(k)) => (
                k.value.digital_signature(),
                k.value.key_encipherment(),
                k.value.key_cert_sign(),
            ),
            _ => (false, false, false),
        };
        Subject {
            cn: strings(&mut cert.subject().iter_common_name()),
            orgs: strings(&mut cert.subject().iter_organization()),
            dns,
            ips,
            server_auth,
            client_auth,
            other_eku,
            key_usage,
            is_ca: cert.is_ca(),
        }
    }
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// The PEM public key (SubjectPublicKeyInfo) of a private key: `sa.pub`.
pub fn public_key_pem(key_pem: &str) -> Result<String> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| anyhow!("reading a private key: {e}"))?;
    Ok(pem_encode("PUBLIC KEY", &key.subject_public_key_info()))
}

/// DER SubjectPublicKeyInfo of a PEM certificate.
pub fn cert_spki_der(cert_pem: &str) -> Result<Vec<u8>> {
    let der = pem_to_der(cert_pem, "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("parsing a certificate: {e}"))?;
    Ok(cert.public_key().raw.to_vec())
}

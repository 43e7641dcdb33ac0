//! The cluster CA of internal TLS: generating it, issuing server certificates under it, reading
//! what a Secret holds, and the pure decisions of when to renew (tested with fixed clocks).
//!
//! Validity and renewal: the operator's CA lives [`CA_VALIDITY`] (5 years), a server
//! certificate [`LEAF_VALIDITY`] (1 year, never past its CA). Either is renewed once less than
//! a third of its life is left ([`needs_renewal`]): a leaf with about four months to go, the
//! CA with about twenty months, so a renewal that fails has months of retries before anything
//! expires.
//!
//! A CA renewal must not cut a running cluster in two: a pod verifies its peers against the
//! `ca.crt` it mounted at start-up. So the renewal goes in three steps ([`plan_ca`],
//! [`plan_leaf`]): (1) the new CA joins the bundle next to the old one (every leaf Secret gets
//! the new bundle, which rolls every pod onto it); (2) [`TRUST_GRACE`] later, once the pods
//! trust both, each leaf is re-issued under the new CA (another roll); (3) when every leaf is
//! the new CA's and [`TRUST_GRACE`] has passed again, the old CA leaves the bundle. Steps are
//! spaced in time rather than by watching every pod, because the leaves live in several
//! resources (the Nameserver's and each Broker's) that roll independently; a day is far more
//! than a roll takes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Life of a CA the operator generates.
pub const CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Life of a server certificate the operator issues (capped at its CA's end).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Time between the steps of a CA renewal: enough for every pod to roll onto what the
/// previous step changed.
pub const TRUST_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Certificates are dated this much in the past, for nodes whose clocks run behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Key of the CA bundle (newest first) in the CA Secret and in every leaf Secret.
pub const CA_CERT: &str = "ca.crt";
/// Key of the CA's private key in the CA Secret.
pub const CA_KEY: &str = "ca.key";
/// Key of a server certificate in a leaf Secret.
pub const TLS_CERT: &str = "tls.crt";
/// Key of a server certificate's private key in a leaf Secret.
pub const TLS_KEY: &str = "tls.key";

/// Seconds since the Unix epoch, the clock every decision here takes.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn secs(d: Duration) -> i64 {
    d.as_secs() as i64
}

/// Why certificate material cannot be used or made. The messages never hold key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// A PEM certificate list that does not parse or holds none.
    #[error("{what} is not a PEM certificate: {detail}")]
    BadCertificate {
        /// Which key or file.
        what: String,
        /// The parser's words.
        detail: String,
    },
    /// A private key that does not parse.
    #[error("{what} is not a usable PEM private key: {detail}")]
    BadKey {
        /// Which key or file.
        what: String,
        /// The parser's words.
        detail: String,
    },
    /// The certificate that should sign is no CA (no `basicConstraints CA:true`).
    #[error("{what}: certificate {subject} is not a CA (basicConstraints CA:true is missing)")]
    NotCa {
        /// Which key.
        what: String,
        /// The certificate's subject.
        subject: String,
    },
    /// No certificate of the bundle belongs to the private key.
    #[error("{what}: no certificate of {CA_CERT} belongs to the key in {CA_KEY}")]
    KeyMismatch {
        /// Which Secret.
        what: String,
    },
    /// The signing CA has expired.
    #[error("{what}: the CA certificate expired")]
    Expired {
        /// Which Secret.
        what: String,
    },
    /// rcgen refused to make a certificate.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

fn generate_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// What the decisions need to know of one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// `basicConstraints CA:true`.
    pub is_ca: bool,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// Its subject, for messages.
    pub subject: String,
}

impl CertInfo {
    /// Reads one DER certificate.
    pub fn parse(der: &[u8], what: &str) -> Result<CertInfo, PkiError> {
        let bad = |detail: String| PkiError::BadCertificate {
            what: what.to_string(),
            detail,
        };
        let (_, x) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => names.push(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                                .to_string(),
                        ),
                        16 => names.push(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                                .to_string(),
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            der: der.to_vec(),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            is_ca: x.is_ca(),
            names,
            subject: x.subject().to_string(),
        })
    }

    /// True when `issuer`'s key signed this certificate.
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        let (Ok((_, leaf)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(&self.der),
            x509_parser::parse_x509_certificate(&issuer.der),
        ) else {
            return false;
        };
        leaf.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        pem_encode(&self.der)
    }
}

fn pem_encode(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Every certificate of a PEM list, in order.
pub fn parse_pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertInfo>, PkiError> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::BadCertificate {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    if ders.is_empty() {
        return Err(PkiError::BadCertificate {
            what: what.to_string(),
            detail: "it holds no certificate".to_string(),
        });
    }
    ders.iter().map(|d| CertInfo::parse(d, what)).collect()
}

/// True once less than a third of `[not_before, not_after]` is left at `now`.
pub fn needs_renewal(now: i64, not_before: i64, not_after: i64) -> bool {
    let life = (not_after - not_before).max(0);
    now >= not_after - life / 3
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Generate("no randomness for a serial number".into()))?;
    // Positive and non-zero in DER's two's complement.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn datetime(unix: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| PkiError::Generate(format!("date out of range: {e}")))
}

/// A CA that can sign: the bundle peers trust (newest first, the signer among them) and the
/// signer's key.
#[derive(Clone)]
pub struct ClusterCa {
    /// Every CA certificate peers trust, newest first.
    pub bundle: Vec<CertInfo>,
    /// Index in `bundle` of the certificate whose key is `key_pem`.
    pub signer: usize,
    key_pem: String,
    /// When the operator last renewed this CA (its Secret's annotation); `None` for a CA the
    /// user provides or one never renewed.
    pub renewed_at: Option<i64>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("bundle", &self.bundle.len())
            .field("signer", &self.bundle[self.signer].subject)
            .field("renewed_at", &self.renewed_at)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a CA named `common_name`, valid from `now` for [`CA_VALIDITY`].
    pub fn generate(common_name: &str, now: i64) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate().map_err(generate_err)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "FerroMQ");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = datetime(now - secs(BACKDATE))?;
        params.not_after = datetime(now + secs(CA_VALIDITY))?;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(generate_err)?;
        let info = CertInfo::parse(cert.der(), "generated CA")?;
        Ok(ClusterCa {
            bundle: vec![info],
            signer: 0,
            key_pem: key.serialize_pem(),
            renewed_at: None,
        })
    }

    /// Reads a CA Secret's `ca.crt` and `ca.key` (`what` names the Secret in errors). The
    /// signer is the bundle's certificate that belongs to the key; it must be a CA and unexpired.
    pub fn from_pem(
        what: &str,
        bundle_pem: &[u8],
        key_pem: &[u8],
        now: i64,
    ) -> Result<ClusterCa, PkiError> {
        let bundle = parse_pem_certs(bundle_pem, &format!("{what}: {CA_CERT}"))?;
        let key_text = std::str::from_utf8(key_pem).map_err(|_| PkiError::BadKey {
            what: format!("{what}: {CA_KEY}"),
            detail: "not UTF-8".into(),
        })?;
        let key = KeyPair::from_pem(key_text).map_err(|e| PkiError::BadKey {
            what: format!("{what}: {CA_KEY}"),
            detail: e.to_string(),
        })?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let signer = bundle
            .iter()
            .position(|c| {
                x509_parser::parse_x509_certificate(&c.der)
                    .is_ok_and(|(_, x)| x.public_key().raw == spki.as_slice())
            })
            .ok_or_else(|| PkiError::KeyMismatch {
                what: what.to_string(),
            })?;
        if !bundle[signer].is_ca {
            return Err(PkiError::NotCa {
                what: format!("{what}: {CA_CERT}"),
                subject: bundle[signer].subject.clone(),
            });
        }
        if bundle[signer].not_after <= now {
            return Err(PkiError::Expired {
                what: what.to_string(),
            });
        }
        Ok(ClusterCa {
            bundle,
            signer,
            key_pem: key_text.to_string(),
            renewed_at: None,
        })
    }

    /// The certificate that signs.
    pub fn signer_cert(&self) -> &CertInfo {
        &self.bundle[self.signer]
    }

    /// The bundle as PEM, newest first: what `ca.crt` holds everywhere.
    pub fn bundle_pem(&self) -> String {
        self.bundle.iter().map(CertInfo::pem).collect()
    }

    /// The signer's private key, PEM (for the CA Secret only).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A new CA that takes over signing, with this one's still-valid certificates kept in the
    /// bundle behind it (step 1 of a renewal).
    pub fn renewed(&self, common_name: &str, now: i64) -> Result<ClusterCa, PkiError> {
        let mut next = ClusterCa::generate(common_name, now)?;
        next.bundle
            .extend(self.bundle.iter().filter(|c| c.not_after > now).cloned());
        next.renewed_at = Some(now);
        Ok(next)
    }

    /// This CA with only the signer left in the bundle (step 3 of a renewal).
    pub fn without_retired(&self) -> ClusterCa {
        ClusterCa {
            bundle: vec![self.signer_cert().clone()],
            signer: 0,
            key_pem: self.key_pem.clone(),
            renewed_at: self.renewed_at,
        }
    }

    /// Issues a server certificate for `names` (DNS names, wildcards or IP addresses), valid
    /// for [`LEAF_VALIDITY`] but never past the signer. Returns the certificate and key, PEM.
    pub fn issue(&self, names: &[String], now: i64) -> Result<(String, String), PkiError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::BadKey {
            what: CA_KEY.to_string(),
            detail: e.to_string(),
        })?;
        let ca_pem = self.signer_cert().pem();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(generate_err)?;
        let key = KeyPair::generate().map_err(generate_err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(generate_err)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = datetime(now - secs(BACKDATE))?;
        params.not_after = datetime((now + secs(LEAF_VALIDITY)).min(self.signer_cert().not_after))?;
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &issuer).map_err(generate_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// What to do with a CA the operator generated and owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaAction {
    /// Nothing to change.
    Keep,
    /// Step 1: a new CA takes over signing, the old stays trusted.
    Renew,
    /// Step 3: drop the CAs behind the signer from the bundle.
    DropRetired,
}

/// The next step for a generated CA at `now`, given every leaf issued under it (`None` for a
/// leaf Secret without a readable certificate). A user's CA is never renewed by the operator.
pub fn plan_ca(now: i64, ca: &ClusterCa, leaves: &[Option<CertInfo>]) -> CaAction {
    let signer = ca.signer_cert();
    if needs_renewal(now, signer.not_before, signer.not_after) {
        return CaAction::Renew;
    }
    if ca.bundle.len() > 1 {
        let expired = ca
            .bundle
            .iter()
            .enumerate()
            .any(|(i, c)| i != ca.signer && c.not_after <= now);
        let all_moved = leaves
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| l.signed_by(signer)));
        let settled = ca
            .renewed_at
            .is_none_or(|r| now >= r + 2 * secs(TRUST_GRACE));
        if expired || (all_moved && settled) {
            return CaAction::DropRetired;
        }
    }
    CaAction::Keep
}

/// What to do with one leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafAction {
    /// It stays.
    Keep,
    /// Issue a new one; the reason is for events and logs.
    Issue(&'static str),
}

/// Whether the leaf `current` (its `tls.crt`, `None` when absent or unreadable) must be
/// re-issued at `now` for `names` under `ca`.
pub fn plan_leaf(
    now: i64,
    current: Option<&CertInfo>,
    names: &[String],
    ca: &ClusterCa,
) -> LeafAction {
    let Some(leaf) = current else {
        return LeafAction::Issue("no certificate yet");
    };
    let mut have: Vec<&str> = leaf.names.iter().map(String::as_str).collect();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    want.sort_unstable();
    want.dedup();
    if have != want {
        return LeafAction::Issue("the names peers dial changed");
    }
    if leaf.not_after <= now {
        return LeafAction::Issue("it expired");
    }
    if !ca.bundle.iter().any(|c| leaf.signed_by(c)) {
        return LeafAction::Issue("its CA is no longer trusted");
    }
    if needs_renewal(now, leaf.not_before, leaf.not_after) {
        return LeafAction::Issue("less than a third of its validity is left");
    }
    if !leaf.signed_by(ca.signer_cert())
        && ca.renewed_at.is_none_or(|r| now >= r + secs(TRUST_GRACE))
    {
        return LeafAction::Issue("the cluster CA was renewed");
    }
    LeafAction::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;
    const T0: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        vec![
            "*.demo-group-0.prod.svc".to_string(),
            "demo-group-0.prod.svc".to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ]
    }

    fn leaf(ca: &ClusterCa, now: i64) -> CertInfo {
        let (cert, _) = ca.issue(&names(), now).expect("issue");
        parse_pem_certs(cert.as_bytes(), "leaf")
            .expect("parse")
            .remove(0)
    }

    #[test]
    fn renewal_starts_when_a_third_of_the_life_is_left() {
        assert!(!needs_renewal(0, 0, 300));
        assert!(!needs_renewal(199, 0, 300));
        assert!(needs_renewal(200, 0, 300));
        assert!(needs_renewal(400, 0, 300));
    }

    #[test]
    fn an_issued_leaf_names_what_peers_dial_and_chains_to_the_ca() {
        let ca = ClusterCa::generate("test CA", T0).expect("ca");
        assert!(ca.signer_cert().is_ca);
        let l = leaf(&ca, T0);
        assert!(!l.is_ca);
        assert!(l.signed_by(ca.signer_cert()));
        assert_eq!(l.names, names());
        assert_eq!(l.not_after, T0 + secs(LEAF_VALIDITY));
        // The CA reads back from its own PEM.
        let back =
            ClusterCa::from_pem("s", ca.bundle_pem().as_bytes(), ca.key_pem().as_bytes(), T0)
                .expect("read back");
        assert_eq!(back.signer_cert(), ca.signer_cert());
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let ca = ClusterCa::generate("test CA", T0).expect("ca");
        let late = ca.signer_cert().not_after - 30 * DAY;
        let l = leaf(&ca, late);
        assert_eq!(l.not_after, ca.signer_cert().not_after);
        // ... and such a short leaf is already due (less than a third of its life is ahead
        // only after 20 of its 30 days).
        assert_eq!(plan_leaf(late, Some(&l), &names(), &ca), LeafAction::Keep);
        assert_eq!(
            plan_leaf(late + 21 * DAY, Some(&l), &names(), &ca),
            LeafAction::Issue("less than a third of its validity is left")
        );
    }

    #[test]
    fn a_bad_ca_secret_is_refused_precisely() {
        let ca = ClusterCa::generate("test CA", T0).expect("ca");
        let other = ClusterCa::generate("other", T0).expect("ca");
        let err = ClusterCa::from_pem(
            "s",
            ca.bundle_pem().as_bytes(),
            other.key_pem().as_bytes(),
            T0,
        )
        .unwrap_err();
        assert_eq!(err, PkiError::KeyMismatch { what: "s".into() });
        let err = ClusterCa::from_pem("s", b"junk", ca.key_pem().as_bytes(), T0).unwrap_err();
        assert!(matches!(err, PkiError::BadCertificate { .. }), "{err}");
        let err = ClusterCa::from_pem("s", ca.bundle_pem().as_bytes(), b"junk", T0).unwrap_err();
        assert!(matches!(err, PkiError::BadKey { .. }), "{err}");
        assert!(!err.to_string().contains("junk"), "{err}");
        // A leaf and its key: the key matches, but it is no CA.
        let (cert, key) = ca.issue(&names(), T0).expect("issue");
        let err = ClusterCa::from_pem("s", cert.as_bytes(), key.as_bytes(), T0).unwrap_err();
        assert!(matches!(err, PkiError::NotCa { .. }), "{err}");
        let err = ClusterCa::from_pem(
            "s",
            ca.bundle_pem().as_bytes(),
            ca.key_pem().as_bytes(),
            ca.signer_cert().not_after + 1,
        )
        .unwrap_err();
        assert_eq!(err, PkiError::Expired { what: "s".into() });
    }

    #[test]
    fn leaves_are_issued_when_missing_renamed_or_untrusted() {
        let ca = ClusterCa::generate("test CA", T0).expect("ca");
        let l = leaf(&ca, T0);
        assert_eq!(plan_leaf(T0, Some(&l), &names(), &ca), LeafAction::Keep);
        assert_eq!(
            plan_leaf(T0, None, &names(), &ca),
            LeafAction::Issue("no certificate yet")
        );
        let mut more = names();
        more.push("*.demo-group-0.prod.svc.cluster.local".into());
        assert_eq!(
            plan_leaf(T0, Some(&l), &more, &ca),
            LeafAction::Issue("the names peers dial changed")
        );
        let stranger = ClusterCa::generate("another", T0).expect("ca");
        assert_eq!(
            plan_leaf(T0, Some(&l), &names(), &stranger),
            LeafAction::Issue("its CA is no longer trusted")
        );
        // Two thirds of its life on (a year and the back-dating hour), the leaf is due.
        let due = l.not_after - (l.not_after - l.not_before) / 3;
        assert_eq!(
            plan_leaf(due - 60, Some(&l), &names(), &ca),
            LeafAction::Keep
        );
        assert_eq!(
            plan_leaf(due, Some(&l), &names(), &ca),
            LeafAction::Issue("less than a third of its validity is left")
        );
    }

    /// The three steps of a CA renewal, with a fixed clock.
    #[test]
    fn a_ca_renewal_keeps_the_old_ca_trusted_until_every_leaf_moved() {
        let ca = ClusterCa::generate("test CA", T0).expect("ca");
        let c = ca.signer_cert();
        let due = c.not_after - (c.not_after - c.not_before) / 3;
        // The leaf in use when the CA falls due was issued (renewed) a month before.
        let old_leaf = leaf(&ca, due - 30 * DAY);
        let leaves = vec![Some(old_leaf.clone())];
        assert_eq!(plan_ca(T0 + DAY, &ca, &leaves), CaAction::Keep);
        assert_eq!(plan_ca(due - 1, &ca, &leaves), CaAction::Keep);

        // Two thirds into the CA's life it is renewed; the old one stays in the bundle.
        assert_eq!(plan_ca(due, &ca, &leaves), CaAction::Renew);
        let next = ca.renewed("test CA", due).expect("renew");
        assert_eq!(next.bundle.len(), 2);
        assert_eq!(next.signer, 0);
        assert_eq!(&next.bundle[1], ca.signer_cert());
        assert_eq!(next.renewed_at, Some(due));
        // The renewed bundle and key read back from a Secret.
        let back = ClusterCa::from_pem(
            "s",
            next.bundle_pem().as_bytes(),
            next.key_pem().as_bytes(),
            due,
        )
        .expect("read back");
        assert_eq!(back.signer, 0);
        assert_eq!(back.bundle.len(), 2);

        // Step 2 waits a grace period: the old leaf (still trusted, not yet due) stays while
        // pods roll onto the two-CA bundle, then is re-issued.
        assert_eq!(
            plan_leaf(due, Some(&old_leaf), &names(), &next),
            LeafAction::Keep
        );
        let after_grace = due + secs(TRUST_GRACE);
        assert_eq!(
            plan_leaf(after_grace, Some(&old_leaf), &names(), &next),
            LeafAction::Issue("the cluster CA was renewed")
        );
        // The old CA stays while any leaf is still its own.
        assert_eq!(plan_ca(after_grace, &next, &leaves), CaAction::Keep);
        let new_leaf = leaf(&next, after_grace);
        assert_eq!(
            plan_leaf(after_grace, Some(&new_leaf), &names(), &next),
            LeafAction::Keep
        );
        let moved = vec![Some(new_leaf.clone())];
        // Every leaf moved, but the pods need the grace period to roll onto them.
        assert_eq!(plan_ca(after_grace, &next, &moved), CaAction::Keep);
        // An unreadable leaf also holds the old CA.
        assert_eq!(
            plan_ca(
                due + 2 * secs(TRUST_GRACE),
                &next,
                &[Some(new_leaf.clone()), None]
            ),
            CaAction::Keep
        );
        assert_eq!(
            plan_ca(due + 2 * secs(TRUST_GRACE), &next, &moved),
            CaAction::DropRetired
        );
        let done = next.without_retired();
        assert_eq!(done.bundle.len(), 1);
        assert_eq!(
            plan_ca(due + 3 * secs(TRUST_GRACE), &done, &moved),
            CaAction::Keep
        );
        assert_eq!(
            plan_leaf(
                due + 3 * secs(TRUST_GRACE),
                Some(&new_leaf),
                &names(),
                &done
            ),
            LeafAction::Keep
        );
    }

    #[test]
    fn an_expired_old_ca_leaves_the_bundle_whatever_the_leaves() {
        let ca = ClusterCa::generate("test CA", T0).expect("ca");
        let due = ca.signer_cert().not_after - secs(CA_VALIDITY) / 3 + 10;
        let next = ca.renewed("test CA", due).expect("renew");
        let past_old = ca.signer_cert().not_after + 1;
        assert_eq!(plan_ca(past_old, &next, &[None]), CaAction::DropRetired);
    }
}

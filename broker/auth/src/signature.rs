//! The request signature of the RocketMQ 5 gRPC clients: parsing the `authorization` header,
//! reading `x-mq-date-time`, computing and checking the HMAC.
//!
//! Every official client builds, for each call,
//!
//! ```text
//! x-mq-date-time: <date-time>
//! authorization:  MQv2-HMAC-SHA1 Credential=<access key>, SignedHeaders=x-mq-date-time, Signature=<hex>
//! ```
//!
//! where `<hex>` is HMAC-SHA1 keyed with the UTF-8 bytes of the secret over the exact bytes of the
//! `x-mq-date-time` value. What varies between clients (all checked against their sources, and the
//! Java, Python and Node ones against captured traffic; see the crate README):
//!
//! | client | date-time value | hex case | `Credential=` | `x-mq-session-token` |
//! |---|---|---|---|---|
//! | Java 5.x | `yyyyMMdd'T'HHmmss'Z'` in the JVM's **local** zone | upper | `<ak>` | when the provider has one |
//! | Go 5.x | `20060102T150405Z` in the **local** zone | lower | `<ak>//Rocketmq` | never |
//! | Python 5.1.x | `%Y%m%dT%H%M%SZ` in the **local** zone | lower | `<ak>` (empty without credentials: it always sends the header) | never |
//! | Node 1.x | compact form in UTC | upper | `<ak>` | when given |
//! | Rust `rocketmq` 5.0.0 | RFC 3339 with fraction and offset (usually UTC, `Z`) | lower | `<ak>` | never |
//!
//! So the parser accepts either hex case, takes the access key as the part of `Credential` before
//! the first `/` (as Apache's proxy does), accepts the compact form and RFC 3339 for the clock
//! check, and signs nothing but the date-time (the signature does not cover the request body or
//! any other header: it proves possession of the secret, nothing about the request). The
//! session token is not covered by the signature and FerroMQ issues none, so it is ignored.
//!
//! Parsing is bounded: a header longer than [`MAX_AUTHORIZATION_LEN`] (or a date-time longer than
//! [`MAX_DATE_TIME_LEN`]) is refused before it is scanned, a successful parse allocates nothing,
//! and an error quotes at most [`MAX_QUOTED`] characters of the input (so a misplaced signature
//! never reaches a log whole).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::secret::Secret;
use crate::user::MAX_ACCESS_KEY_LEN;

/// gRPC metadata key of the signature (lower case, as HTTP/2 carries header names).
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// gRPC metadata key of the signed date-time.
pub const DATE_TIME_HEADER: &str = "x-mq-date-time";
/// gRPC metadata key of an STS session token (Java and Node send it when given one). Ignored.
pub const SESSION_TOKEN_HEADER: &str = "x-mq-session-token";
/// The only signing algorithm the clients know.
pub const ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// Longest `authorization` value accepted: the longest legitimate one (128-byte access key in
/// Go's `<ak>//Rocketmq` shape) is about 250 bytes.
pub const MAX_AUTHORIZATION_LEN: usize = 512;
/// Longest `x-mq-date-time` value accepted (RFC 3339 with nanoseconds and an offset is 35).
pub const MAX_DATE_TIME_LEN: usize = 64;
/// Most characters of the offending input an error quotes.
pub const MAX_QUOTED: usize = 16;
/// Bytes of an HMAC-SHA1.
pub const SIGNATURE_LEN: usize = 20;

/// The parts of an `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    /// The access key: `Credential` up to its first `/`. Empty when the client has no
    /// credentials (the Python client sends the header anyway).
    pub access_key: &'a str,
    /// The decoded HMAC-SHA1.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why an `authorization` header could not be read. Never carries the signature: a valid
/// signature is a credential for as long as its date-time is fresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedHeader {
    #[error(
        "authorization header is {len} bytes long; at most {MAX_AUTHORIZATION_LEN} are accepted"
    )]
    TooLong { len: usize },
    #[error("authorization header holds a byte that is not printable ASCII")]
    NotAscii,
    #[error("authorization header has no parameters after the algorithm")]
    NoParameters,
    #[error("authorization algorithm is not {ALGORITHM}")]
    UnsupportedAlgorithm,
    #[error("authorization header has an empty parameter (two commas in a row?)")]
    EmptyParameter,
    #[error("authorization parameter {name:?} has no '=value'")]
    ParameterWithoutValue { name: String },
    #[error(
        "authorization parameter {name:?} is unknown (expected Credential, SignedHeaders, Signature)"
    )]
    UnknownParameter { name: String },
    #[error("authorization parameter {name} appears twice")]
    DuplicateParameter { name: &'static str },
    #[error("authorization header lacks the {name} parameter")]
    MissingParameter { name: &'static str },
    #[error(
        "access key in Credential is {len} bytes long; at most {MAX_ACCESS_KEY_LEN} are accepted"
    )]
    AccessKeyTooLong { len: usize },
    #[error("SignedHeaders must be exactly x-mq-date-time, the only header the clients sign")]
    UnsupportedSignedHeaders,
    #[error("Signature must be 40 hex digits (an HMAC-SHA1)")]
    BadSignatureEncoding,
}

impl<'a> AuthorizationHeader<'a> {
    /// Reads an `authorization` value as the official clients build it.
    ///
    /// Accepted: the algorithm, one or more spaces, then `name=value` parameters separated by
    /// commas with optional spaces around them; each of `Credential`, `SignedHeaders` and
    /// `Signature` exactly once (names case-sensitive, as every client writes them); nothing else.
    pub fn parse(raw: &'a [u8]) -> Result<Self, MalformedHeader> {
        if raw.len() > MAX_AUTHORIZATION_LEN {
            return Err(MalformedHeader::TooLong { len: raw.len() });
        }
        if !raw.iter().all(|&b| (0x20..0x7f).contains(&b)) {
            return Err(MalformedHeader::NotAscii);
        }
        // Printable ASCII is valid UTF-8.
        let text = std::str::from_utf8(raw).map_err(|_| MalformedHeader::NotAscii)?;
        let text = text.trim_matches(' ');
        let (algorithm, params) = text.split_once(' ').ok_or(MalformedHeader::NoParameters)?;
        if algorithm != ALGORITHM {
            return Err(MalformedHeader::UnsupportedAlgorithm);
        }
        let params = params.trim_matches(' ');
        if params.is_empty() {
            return Err(MalformedHeader::NoParameters);
        }

        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in params.split(',') {
            let part = part.trim_matches(' ');
            if part.is_empty() {
                return Err(MalformedHeader::EmptyParameter);
            }
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| MalformedHeader::ParameterWithoutValue { name: quote(part) })?;
            let (slot, canonical) = match name {
                "Credential" => (&mut credential, "Credential"),
                "SignedHeaders" => (&mut signed_headers, "SignedHeaders"),
                "Signature" => (&mut signature, "Signature"),
                _ => return Err(MalformedHeader::UnknownParameter { name: quote(name) }),
            };
            if slot.replace(value).is_some() {
                return Err(MalformedHeader::DuplicateParameter { name: canonical });
            }
        }
        let credential =
            credential.ok_or(MalformedHeader::MissingParameter { name: "Credential" })?;
        let signed_headers = signed_headers.ok_or(MalformedHeader::MissingParameter {
            name: "SignedHeaders",
        })?;
        let signature = signature.ok_or(MalformedHeader::MissingParameter { name: "Signature" })?;

        // Go appends "/<empty>/Rocketmq"; Apache's proxy also keeps only the first segment.
        let access_key = credential.split('/').next().unwrap_or_default();
        if access_key.len() > MAX_ACCESS_KEY_LEN {
            return Err(MalformedHeader::AccessKeyTooLong {
                len: access_key.len(),
            });
        }
        if !signed_headers.eq_ignore_ascii_case(DATE_TIME_HEADER) {
            return Err(MalformedHeader::UnsupportedSignedHeaders);
        }
        let mut decoded = [0u8; SIGNATURE_LEN];
        if signature.len() != 2 * SIGNATURE_LEN {
            return Err(MalformedHeader::BadSignatureEncoding);
        }
        hex::decode_to_slice(signature, &mut decoded)
            .map_err(|_| MalformedHeader::BadSignatureEncoding)?;
        Ok(AuthorizationHeader {
            access_key,
            signature: decoded,
        })
    }
}

/// The first [`MAX_QUOTED`] characters of `text` (ASCII here), marked when cut.
fn quote(text: &str) -> String {
    match text.get(..MAX_QUOTED) {
        Some(head) if head.len() < text.len() => format!("{head}..."),
        _ => text.to_string(),
    }
}

/// Why an `x-mq-date-time` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDateTime {
    #[error("x-mq-date-time is {len} bytes long; at most {MAX_DATE_TIME_LEN} are accepted")]
    TooLong { len: usize },
    #[error("x-mq-date-time {value:?} is neither yyyyMMdd'T'HHmmss'Z' nor RFC 3339")]
    Unreadable { value: String },
}

/// Reads an `x-mq-date-time` value as an instant: the compact `yyyyMMdd'T'HHmmss'Z'` form (read as
/// UTC, which is what the `Z` claims even when Java, Go or Python wrote local time) or RFC 3339
/// with an offset (the Rust client).
pub fn parse_date_time(raw: &[u8]) -> Result<SystemTime, BadDateTime> {
    if raw.len() > MAX_DATE_TIME_LEN {
        return Err(BadDateTime::TooLong { len: raw.len() });
    }
    let unreadable = || BadDateTime::Unreadable {
        value: String::from_utf8_lossy(raw).into_owned(),
    };
    let text = std::str::from_utf8(raw).map_err(|_| unreadable())?;
    let timestamp = if is_compact_form(text) {
        let civil =
            jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", text).map_err(|_| unreadable())?;
        jiff::tz::Offset::UTC
            .to_timestamp(civil)
            .map_err(|_| unreadable())?
    } else if is_rfc3339_shape(text) {
        text.parse::<jiff::Timestamp>().map_err(|_| unreadable())?
    } else {
        return Err(unreadable());
    };
    let nanos = timestamp.as_nanosecond();
    let since_epoch = |n: i128| {
        let secs = u64::try_from(n / 1_000_000_000).map_err(|_| unreadable())?;
        let sub = u32::try_from(n % 1_000_000_000).map_err(|_| unreadable())?;
        Ok(Duration::new(secs, sub))
    };
    if nanos >= 0 {
        Ok(UNIX_EPOCH + since_epoch(nanos)?)
    } else {
        Ok(UNIX_EPOCH - since_epoch(-nanos)?)
    }
}

/// `yyyyMMddTHHmmssZ`: exactly 16 bytes, digits where digits belong.
fn is_compact_form(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// `yyyy-mm-ddThh:...`: RFC 3339's extended form (jiff alone would also take ISO 8601's basic
/// form and a space for the `T`, which no client sends).
fn is_rfc3339_shape(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't')
}

/// Formats an instant in the compact form the Java client sends (UTC, as the `Z` promises).
pub fn format_date_time(at: SystemTime) -> String {
    let timestamp = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    timestamp.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// HMAC-SHA1 of `date_time` keyed with the secret: what the clients put in `Signature=`.
pub fn compute_signature(secret: &Secret, date_time: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut mac = hmac_for(secret);
    mac.update(date_time);
    mac.finalize().into_bytes().into()
}

/// Checks a presented signature in constant time (the HMAC crate compares with `subtle`).
pub fn verify_signature(
    secret: &Secret,
    date_time: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let mut mac = hmac_for(secret);
    mac.update(date_time);
    mac.verify_slice(signature).is_ok()
}

fn hmac_for(secret: &Secret) -> Hmac<Sha1> {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    <Hmac<Sha1> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

/// The two headers a FerroMQ client (the admin CLI, the proxy, tests) sends to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Value of `x-mq-date-time`.
    pub date_time: String,
    /// Value of `authorization`. Holds a signature that is valid for the server's clock window:
    /// do not log it.
    pub authorization: String,
}

impl std::fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("date_time", &self.date_time)
            .field("authorization", &"<redacted>")
            .finish()
    }
}

/// Signs as the Java client does: compact UTC date-time, upper-case hex.
pub fn sign(access_key: &str, secret: &Secret, at: SystemTime) -> SignedHeaders {
    let date_time = format_date_time(at);
    let signature = compute_signature(secret, date_time.as_bytes());
    let authorization = format!(
        "{ALGORITHM} Credential={access_key}, SignedHeaders={DATE_TIME_HEADER}, Signature={}",
        hex::encode_upper(signature)
    );
    SignedHeaders {
        date_time,
        authorization,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG40: &str = "622A6E58500D0AD321BDBD843317D7BB9A4DCBD9";

    fn header(params: &str) -> String {
        format!("MQv2-HMAC-SHA1 {params}")
    }

    #[test]
    fn reads_every_client_shape() {
        let java = format!(
            "MQv2-HMAC-SHA1 Credential=ak1, SignedHeaders=x-mq-date-time, Signature={SIG40}"
        );
        let go = format!(
            "MQv2-HMAC-SHA1 Credential=ak1//Rocketmq, SignedHeaders=x-mq-date-time, Signature={}",
            SIG40.to_lowercase()
        );
        for h in [java, go] {
            let parsed = AuthorizationHeader::parse(h.as_bytes()).unwrap();
            assert_eq!(parsed.access_key, "ak1");
            assert_eq!(hex::encode_upper(parsed.signature), SIG40);
        }
        // Python without credentials.
        let python_empty = format!(
            "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature={}",
            SIG40.to_lowercase()
        );
        assert_eq!(
            AuthorizationHeader::parse(python_empty.as_bytes())
                .unwrap()
                .access_key,
            ""
        );
    }

    #[test]
    fn tolerates_spacing_and_parameter_order() {
        let h = format!(
            "  MQv2-HMAC-SHA1   Signature={SIG40} ,SignedHeaders=X-MQ-Date-Time,Credential=k  "
        );
        let parsed = AuthorizationHeader::parse(h.as_bytes()).unwrap();
        assert_eq!(parsed.access_key, "k");
    }

    #[test]
    fn refuses_each_malformation_precisely() {
        use MalformedHeader as M;
        let ok_tail = format!("SignedHeaders=x-mq-date-time, Signature={SIG40}");
        let cases: Vec<(String, MalformedHeader)> = vec![
            ("MQv2-HMAC-SHA1".into(), M::NoParameters),
            ("MQv2-HMAC-SHA1    ".into(), M::NoParameters),
            (
                format!("MQv2-HMAC-SHA256 Credential=a, {ok_tail}"),
                M::UnsupportedAlgorithm,
            ),
            (
                format!("mqv2-hmac-sha1 Credential=a, {ok_tail}"),
                M::UnsupportedAlgorithm,
            ),
            (
                header(&format!("Credential=a,, {ok_tail}")),
                M::EmptyParameter,
            ),
            (
                header(&format!("Credential, {ok_tail}")),
                M::ParameterWithoutValue {
                    name: "Credential".into(),
                },
            ),
            (
                header(&format!("credential=a, {ok_tail}")),
                M::UnknownParameter {
                    name: "credential".into(),
                },
            ),
            (
                header(&format!("Credential=a, Region=x, {ok_tail}")),
                M::UnknownParameter {
                    name: "Region".into(),
                },
            ),
            (
                header(&format!("Credential=a, Credential=b, {ok_tail}")),
                M::DuplicateParameter { name: "Credential" },
            ),
            (
                header(&format!("SignedHeaders=x-mq-date-time, Signature={SIG40}")),
                M::MissingParameter { name: "Credential" },
            ),
            (
                header(&format!("Credential=a, Signature={SIG40}")),
                M::MissingParameter {
                    name: "SignedHeaders",
                },
            ),
            (
                header("Credential=a, SignedHeaders=x-mq-date-time"),
                M::MissingParameter { name: "Signature" },
            ),
            (
                header(&format!(
                    "Credential=a, SignedHeaders=x-mq-date-time;host, Signature={SIG40}"
                )),
                M::UnsupportedSignedHeaders,
            ),
            (
                header("Credential=a, SignedHeaders=x-mq-date-time, Signature=abc"),
                M::BadSignatureEncoding,
            ),
            (
                header(&format!(
                    "Credential=a, SignedHeaders=x-mq-date-time, Signature={}",
                    "zz".repeat(20)
                )),
                M::BadSignatureEncoding,
            ),
            (
                header(&format!("Credential={}, {ok_tail}", "k".repeat(129))),
                M::AccessKeyTooLong { len: 129 },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                AuthorizationHeader::parse(raw.as_bytes()),
                Err(want),
                "{raw}"
            );
        }
        assert_eq!(
            AuthorizationHeader::parse(b"MQv2-HMAC-SHA1 Credential=\xff"),
            Err(M::NotAscii)
        );
        assert_eq!(
            AuthorizationHeader::parse(b"MQv2-HMAC-SHA1 Credential=a\n"),
            Err(M::NotAscii)
        );
    }

    #[test]
    fn refuses_huge_headers_before_reading_them() {
        let huge = vec![b'A'; MAX_AUTHORIZATION_LEN + 1];
        assert_eq!(
            AuthorizationHeader::parse(&huge),
            Err(MalformedHeader::TooLong {
                len: MAX_AUTHORIZATION_LEN + 1
            })
        );
        // Even non-ASCII garbage gets the length error first: nothing past the length is read.
        let huge_binary = vec![0xffu8; 1 << 20];
        assert!(matches!(
            AuthorizationHeader::parse(&huge_binary),
            Err(MalformedHeader::TooLong { .. })
        ));
    }

    #[test]
    fn errors_quote_little_of_the_input() {
        // A signature without its "Signature=": quoted only in part.
        let h = header(&format!(
            "Credential=a, SignedHeaders=x-mq-date-time, {SIG40}"
        ));
        let err = AuthorizationHeader::parse(h.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            MalformedHeader::ParameterWithoutValue {
                name: format!("{}...", &SIG40[..MAX_QUOTED])
            }
        );
        let long_name = "N".repeat(300);
        let h = header(&format!("{long_name}=1, Credential=a"));
        let err = AuthorizationHeader::parse(h.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 120, "{err}");
    }

    #[test]
    fn errors_never_carry_the_signature() {
        let h = header(&format!(
            "Credential=a, Extra=1, SignedHeaders=x-mq-date-time, Signature={SIG40}"
        ));
        let err = AuthorizationHeader::parse(h.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains(SIG40));
    }

    #[test]
    fn reads_both_date_time_forms() {
        let t = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        // 2026-12-02T00:29:09Z
        assert_eq!(parse_date_time(b"20261202T002909Z"), Ok(t(1_796_171_349)));
        assert_eq!(
            parse_date_time(b"2026-12-02T00:29:09Z"),
            Ok(t(1_796_171_349))
        );
        assert_eq!(
            parse_date_time(b"2026-12-02T08:29:09+08:00"),
            Ok(t(1_796_171_349))
        );
        assert_eq!(
            parse_date_time(b"2026-12-02T00:29:09.123456789Z"),
            Ok(t(1_796_171_349) + Duration::from_nanos(123_456_789))
        );
        for bad in [
            &b"20261302T002909Z"[..],
            b"20261202T252909Z",
            b"2026-12-02T00:29:09",
            b"20261202 002909Z",
            b"2026-12-02 00:29:09Z",
            b"20261202T002909+0000",
            b"yesterday",
            b"",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_date_time(bad), Err(BadDateTime::Unreadable { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_date_time(&[b'2'; 65]),
            Err(BadDateTime::TooLong { len: 65 })
        );
    }

    #[test]
    fn formats_the_compact_form() {
        assert_eq!(
            format_date_time(UNIX_EPOCH + Duration::from_secs(1_796_171_349)),
            "20261202T002909Z"
        );
    }

    #[test]
    fn sign_and_verify_round_trip_and_verify_refuses_other_inputs() {
        let secret = Secret::new("fmq-secret-java").unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_796_171_349);
        let signed = sign("fmq-ak-java", &secret, at);
        assert_eq!(signed.date_time, "20261202T002909Z");
        let parsed = AuthorizationHeader::parse(signed.authorization.as_bytes()).unwrap();
        assert_eq!(parsed.access_key, "fmq-ak-java");
        assert!(verify_signature(
            &secret,
            signed.date_time.as_bytes(),
            &parsed.signature
        ));
        assert!(!verify_signature(
            &secret,
            b"20261202T002910Z",
            &parsed.signature
        ));
        let other = Secret::new("fmq-secret-jav4").unwrap();
        assert!(!verify_signature(
            &other,
            signed.date_time.as_bytes(),
            &parsed.signature
        ));
        assert!(!format!("{signed:?}").contains(&signed.authorization));
    }
}

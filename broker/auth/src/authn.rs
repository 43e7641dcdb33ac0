//! Authentication: from the two headers of a call to the user who made it, or a precise refusal.
//!
//! Order of the checks, each cheap before the next: both values present and within their size
//! bounds; the `authorization` header well formed; an access key given; the date-time readable;
//! the access key known; the signature right (constant-time comparison); the date-time within
//! the allowed skew of the server's clock. The clock comes last so that "clock skew" is only ever
//! said to a caller that holds the secret: a stale but genuine header (a replay, or a client
//! whose clock is off) is told so precisely, a forged one is told its signature is wrong.
//!
//! What the window does and does not stop: the signature covers only the date-time, with
//! one-second resolution, and a client sends the same header for every call in that second, so
//! the server cannot tell a replay from a retry. The window bounds how long a captured header
//! stays useful (it is a bearer token until then, for any call of that user); confidentiality
//! of the header on the wire is TLS's job.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::signature::{
    parse_date_time, verify_signature, AuthorizationHeader, BadDateTime, MalformedHeader,
    AUTHORIZATION_HEADER, DATE_TIME_HEADER, MAX_AUTHORIZATION_LEN, MAX_DATE_TIME_LEN,
};
use crate::user::{User, UserKind};

/// Default largest difference between a client's `x-mq-date-time` and the server's clock.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);
/// Largest `max_skew` accepted: past an hour the window stops meaning anything.
pub const MAX_MAX_SKEW: Duration = Duration::from_secs(3600);
/// Zone offsets come in quarter hours.
const ZONE_STEP_SECS: i64 = 15 * 60;
/// Zone offsets range from UTC-12:00 to UTC+14:00.
const ZONE_MIN_STEPS: i64 = -12 * 4;
const ZONE_MAX_STEPS: i64 = 14 * 4;

/// How far a request's date-time may be from the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPolicy {
    max_skew: Duration,
    tolerate_zone_offsets: bool,
}

/// A clock policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockPolicyError {
    #[error("max clock skew {secs}s is larger than the {}s allowed", MAX_MAX_SKEW.as_secs())]
    SkewTooLarge { secs: u64 },
    #[error(
        "max clock skew {secs}s must be under 450s when zone offsets are tolerated, \
         or every instant within 14 hours would pass"
    )]
    SkewTooLargeForZones { secs: u64 },
}

impl Default for ClockPolicy {
    fn default() -> Self {
        ClockPolicy {
            max_skew: DEFAULT_MAX_SKEW,
            tolerate_zone_offsets: false,
        }
    }
}

impl ClockPolicy {
    /// `max_skew`: the largest accepted difference. `tolerate_zone_offsets`: also accept a
    /// date-time that is off by a whole number of quarter hours between −12 h and +14 h (plus
    /// the skew). The Java, Go and Python clients format the local wall-clock time and label it
    /// `Z`, so on a host whose zone is not UTC their date-time is off by the zone's offset; this
    /// lets such clients in, at the price of a captured header staying usable in 105 narrow
    /// windows spread over 26 hours instead of one.
    pub fn new(max_skew: Duration, tolerate_zone_offsets: bool) -> Result<Self, ClockPolicyError> {
        if max_skew > MAX_MAX_SKEW {
            return Err(ClockPolicyError::SkewTooLarge {
                secs: max_skew.as_secs(),
            });
        }
        if tolerate_zone_offsets && max_skew.as_secs() >= (ZONE_STEP_SECS / 2) as u64 {
            return Err(ClockPolicyError::SkewTooLargeForZones {
                secs: max_skew.as_secs(),
            });
        }
        Ok(ClockPolicy {
            max_skew,
            tolerate_zone_offsets,
        })
    }

    pub fn max_skew(&self) -> Duration {
        self.max_skew
    }

    pub fn tolerates_zone_offsets(&self) -> bool {
        self.tolerate_zone_offsets
    }

    /// `Ok` when `client` is close enough to `server`; otherwise the signed skew in whole
    /// seconds (positive: the client is ahead).
    pub fn check(&self, client: SystemTime, server: SystemTime) -> Result<(), i64> {
        let skew_nanos = signed_nanos_between(server, client);
        let max = self.max_skew.as_nanos() as i128;
        if skew_nanos.abs() <= max {
            return Ok(());
        }
        if self.tolerate_zone_offsets {
            let step = i128::from(ZONE_STEP_SECS) * 1_000_000_000;
            let steps = (skew_nanos + skew_nanos.signum() * step / 2) / step;
            if (i128::from(ZONE_MIN_STEPS)..=i128::from(ZONE_MAX_STEPS)).contains(&steps)
                && (skew_nanos - steps * step).abs() <= max
            {
                return Ok(());
            }
        }
        Err((skew_nanos / 1_000_000_000) as i64)
    }
}

/// `to - from` in nanoseconds, negative when `to` is earlier.
fn signed_nanos_between(from: SystemTime, to: SystemTime) -> i128 {
    match to.duration_since(from) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The headers of one call that authentication reads, as raw bytes (tonic hands out metadata
/// values as bytes; non-ASCII ones are refused here, not by the caller).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestCredentials<'a> {
    pub authorization: Option<&'a [u8]>,
    pub date_time: Option<&'a [u8]>,
}

impl<'a> RequestCredentials<'a> {
    /// Takes every value of each header, as `MetadataMap::get_all` yields them, and refuses a
    /// header given more than once: which copy the signature covers would be ambiguous.
    pub fn from_header_values(
        authorization: impl IntoIterator<Item = &'a [u8]>,
        date_time: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, AuthnError> {
        Ok(RequestCredentials {
            authorization: at_most_one(authorization, AUTHORIZATION_HEADER)?,
            date_time: at_most_one(date_time, DATE_TIME_HEADER)?,
        })
    }
}

fn at_most_one<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    header: &'static str,
) -> Result<Option<&'a [u8]>, AuthnError> {
    let mut it = values.into_iter();
    let first = it.next();
    if it.next().is_some() {
        return Err(AuthnError::DuplicateHeader { header });
    }
    Ok(first)
}

/// Who made a call, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub kind: UserKind,
}

impl Principal {
    pub fn is_super(&self) -> bool {
        self.kind == UserKind::Super
    }
}

/// Why a call was not authenticated. All of these answer RocketMQ `UNAUTHORIZED` (40100), as
/// Apache's proxy does. `Display` is precise, for the server's log; [`AuthnError::client_message`]
/// is what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no authorization header: authentication is required (configure the client with an access key and secret)")]
    MissingAuthorization,
    #[error("{header} header appears more than once")]
    DuplicateHeader { header: &'static str },
    #[error(transparent)]
    Malformed(#[from] MalformedHeader),
    #[error("authorization header names no access key: the client has no credentials configured")]
    NoCredentials,
    #[error("no x-mq-date-time header, which the signature covers")]
    MissingDateTime,
    #[error(transparent)]
    BadDateTime(#[from] BadDateTime),
    #[error("unknown access key {access_key:?}")]
    UnknownAccessKey { access_key: String },
    #[error("no AccessKey header field: authentication is required (give the remoting client credentials, e.g. an AclClientRPCHook)")]
    MissingRemotingCredentials,
    #[error("AccessKey header field without a Signature field")]
    MissingRemotingSignature,
    #[error("Signature header field must be the base64 of an HMAC-SHA1 (28 characters)")]
    MalformedRemotingSignature,
    #[error("signature of access key {access_key:?} does not match (wrong secret?)")]
    SignatureMismatch { access_key: String },
    #[error(
        "x-mq-date-time of access key {access_key:?} is {skew_secs}s from the server's clock \
         (at most {max_skew_secs}s allowed): replayed request, or a client clock or time zone off"
    )]
    ClockSkew {
        access_key: String,
        skew_secs: i64,
        max_skew_secs: u64,
    },
}

impl AuthnError {
    /// The message for the caller. Same as `Display`, except that an unknown access key and a
    /// wrong signature read the same, so the answer does not tell which access keys exist.
    pub fn client_message(&self) -> String {
        match self {
            AuthnError::UnknownAccessKey { .. } | AuthnError::SignatureMismatch { .. } => {
                "access key unknown or signature does not match".to_string()
            }
            other => other.to_string(),
        }
    }

    /// The access key the call claimed, when it got that far (for the refusal log line).
    pub fn access_key(&self) -> Option<&str> {
        match self {
            AuthnError::UnknownAccessKey { access_key }
            | AuthnError::SignatureMismatch { access_key }
            | AuthnError::ClockSkew { access_key, .. } => Some(access_key),
            _ => None,
        }
    }
}

/// Authenticates one call. `find_user` looks an access key up in the current snapshot.
pub fn authenticate<'u>(
    credentials: &RequestCredentials<'_>,
    now: SystemTime,
    clock: &ClockPolicy,
    find_user: impl FnOnce(&str) -> Option<&'u User>,
) -> Result<Principal, AuthnError> {
    let raw_auth = credentials
        .authorization
        .ok_or(AuthnError::MissingAuthorization)?;
    if raw_auth.len() > MAX_AUTHORIZATION_LEN {
        return Err(MalformedHeader::TooLong {
            len: raw_auth.len(),
        }
        .into());
    }
    if let Some(dt) = credentials.date_time {
        if dt.len() > MAX_DATE_TIME_LEN {
            return Err(BadDateTime::TooLong { len: dt.len() }.into());
        }
    }
    let header = AuthorizationHeader::parse(raw_auth)?;
    if header.access_key.is_empty() {
        return Err(AuthnError::NoCredentials);
    }
    let raw_date = credentials.date_time.ok_or(AuthnError::MissingDateTime)?;
    let client_time = parse_date_time(raw_date)?;
    let user = find_user(header.access_key).ok_or_else(|| AuthnError::UnknownAccessKey {
        access_key: header.access_key.to_string(),
    })?;
    if !verify_signature(&user.secret, raw_date, &header.signature) {
        return Err(AuthnError::SignatureMismatch {
            access_key: header.access_key.to_string(),
        });
    }
    clock
        .check(client_time, now)
        .map_err(|skew_secs| AuthnError::ClockSkew {
            access_key: header.access_key.to_string(),
            skew_secs,
            max_skew_secs: clock.max_skew().as_secs(),
        })?;
    Ok(Principal {
        name: Arc::from(user.name.as_str()),
        kind: user.kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::signature::sign;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn user(name: &str, secret: &str) -> User {
        User {
            name: name.into(),
            secret: Secret::new(secret).unwrap(),
            kind: UserKind::Normal,
        }
    }

    fn run(
        auth: &str,
        date: &str,
        now: SystemTime,
        users: &[User],
    ) -> Result<Principal, AuthnError> {
        run_with(auth, date, now, users, &ClockPolicy::default())
    }

    fn run_with(
        auth: &str,
        date: &str,
        now: SystemTime,
        users: &[User],
        clock: &ClockPolicy,
    ) -> Result<Principal, AuthnError> {
        let creds = RequestCredentials {
            authorization: Some(auth.as_bytes()),
            date_time: Some(date.as_bytes()),
        };
        authenticate(&creds, now, clock, |ak| users.iter().find(|u| u.name == ak))
    }

    /// Headers captured from the official clients (see the crate README for how), each with the
    /// secret it was configured with and the server time it arrived at. The signature must verify
    /// exactly as sent.
    struct Captured {
        client: &'static str,
        access_key: &'static str,
        secret: &'static str,
        date_time: &'static str,
        authorization: &'static str,
        received_at: u64,
    }

    const CAPTURED: &[Captured] = &[
        Captured {
            client: "java 5.2.0 (rocketmq-client-java)",
            access_key: "fmq-ak-java",
            secret: "fmq-secret-java",
            date_time: "20261202T002909Z",
            authorization: "MQv2-HMAC-SHA1 Credential=fmq-ak-java, SignedHeaders=x-mq-date-time, Signature=622A6E58500D0AD321BDBD843317D7BB9A4DCBD9",
            received_at: 1_796_171_349,
        },
        Captured {
            client: "python 5.1.2 (rocketmq-python-client)",
            access_key: "fmq-ak-python",
            secret: "fmq-secret-python",
            date_time: "20261202T002801Z",
            authorization: "MQv2-HMAC-SHA1 Credential=fmq-ak-python, SignedHeaders=x-mq-date-time, Signature=1238a4c70507ef89bb8cfff692403ad342262bac",
            received_at: 1_796_171_281,
        },
        Captured {
            client: "node 1.0.8 (rocketmq-client-nodejs)",
            access_key: "fmq-ak-node",
            secret: "fmq-secret-node",
            date_time: "20261202T002938Z",
            authorization: "MQv2-HMAC-SHA1 Credential=fmq-ak-node, SignedHeaders=x-mq-date-time, Signature=CCE641734FA1A4AF606A7277B3B3C497C8C3A378",
            received_at: 1_796_171_378,
        },
        Captured {
            client: "rust rocketmq 5.0.0 (host zone UTC)",
            access_key: "fmq-ak-rust",
            secret: "fmq-secret-rust",
            date_time: "2026-12-02T00:37:59.58325344Z",
            authorization: "MQv2-HMAC-SHA1 Credential=fmq-ak-rust, SignedHeaders=x-mq-date-time, Signature=c109fcd0cca57682c2dbc24a932d5caf3d245bf3",
            received_at: 1_796_171_879,
        },
        Captured {
            client: "rust rocketmq 5.0.0 (host zone Asia/Shanghai: a true offset)",
            access_key: "fmq-ak-rust-tz",
            secret: "fmq-secret-rust",
            date_time: "2026-12-02T08:37:59.607362474+08:00",
            authorization: "MQv2-HMAC-SHA1 Credential=fmq-ak-rust-tz, SignedHeaders=x-mq-date-time, Signature=eaafa9a65aec5198896345b3d66c6418955caa15",
            received_at: 1_796_171_879,
        },
        Captured {
            client: "java 5.2.0 with an STS session token (ignored, unsigned)",
            access_key: "fmq-ak-java-sts",
            secret: "fmq-secret-java",
            date_time: "20261202T002911Z",
            authorization: "MQv2-HMAC-SHA1 Credential=fmq-ak-java-sts, SignedHeaders=x-mq-date-time, Signature=D72CCC89C0A3C0631BBD5AC8227AB6267DA8ACE0",
            received_at: 1_796_171_351,
        },
    ];

    #[test]
    fn captured_client_headers_verify() {
        for c in CAPTURED {
            let users = [user(c.access_key, c.secret)];
            let p = run(c.authorization, c.date_time, at(c.received_at), &users)
                .unwrap_or_else(|e| panic!("{}: {e}", c.client));
            assert_eq!(&*p.name, c.access_key, "{}", c.client);
            // The same header with another secret on file is refused.
            let wrong = [user(c.access_key, "another-secret")];
            assert_eq!(
                run(c.authorization, c.date_time, at(c.received_at), &wrong),
                Err(AuthnError::SignatureMismatch {
                    access_key: c.access_key.into()
                }),
                "{}",
                c.client
            );
        }
    }

    /// The header each client builds from the same key, secret and instant, reproduced from its
    /// source (date format, hex case, Credential shape), must verify.
    #[test]
    fn every_client_shape_verifies() {
        let secret = Secret::new("vector-secret-1").unwrap();
        let now = at(1_796_171_349); // 2026-12-02T00:29:09Z
        let compact = "20261202T002909Z";
        let rfc3339 = "2026-12-02T00:29:09.123456789Z";
        let sig = |date: &str| crate::signature::compute_signature(&secret, date.as_bytes());
        let upper = |d: &str| hex::encode_upper(sig(d));
        let lower = |d: &str| hex::encode(sig(d));
        let shapes = [
            ("java", compact, format!("MQv2-HMAC-SHA1 Credential=vk, SignedHeaders=x-mq-date-time, Signature={}", upper(compact))),
            ("go", compact, format!("MQv2-HMAC-SHA1 Credential=vk//Rocketmq, SignedHeaders=x-mq-date-time, Signature={}", lower(compact))),
            ("python", compact, format!("MQv2-HMAC-SHA1 Credential=vk, SignedHeaders=x-mq-date-time, Signature={}", lower(compact))),
            ("node", compact, format!("MQv2-HMAC-SHA1 Credential=vk, SignedHeaders=x-mq-date-time, Signature={}", upper(compact))),
            ("rust", rfc3339, format!("MQv2-HMAC-SHA1 Credential=vk, SignedHeaders=x-mq-date-time, Signature={}", lower(rfc3339))),
        ];
        let users = [User {
            name: "vk".into(),
            secret: secret.clone(),
            kind: UserKind::Super,
        }];
        for (client, date, auth) in &shapes {
            let p = run(auth, date, now, &users).unwrap_or_else(|e| panic!("{client}: {e}"));
            assert!(p.is_super(), "{client}");
        }
        // Our own signer produces what the Java client produces.
        let ours = sign("vk", &secret, now);
        assert_eq!(ours.authorization, shapes[0].2);
        assert_eq!(ours.date_time, compact);
    }

    #[test]
    fn the_signature_covers_the_exact_date_time_bytes() {
        let secret = Secret::new("vector-secret-1").unwrap();
        let users = [user("vk", "vector-secret-1")];
        let signed = sign("vk", &secret, at(1_796_171_349));
        // Same instant, other spelling: the bytes differ, so the signature does not match.
        assert_eq!(
            run(
                &signed.authorization,
                "2026-12-02T00:29:09Z",
                at(1_796_171_349),
                &users
            ),
            Err(AuthnError::SignatureMismatch {
                access_key: "vk".into()
            })
        );
    }

    #[test]
    fn refusals_are_precise() {
        let users = [user("vk", "vector-secret-1")];
        let now = at(1_796_171_349);
        let good = sign("vk", &users[0].secret, now);
        let none = RequestCredentials::default();
        assert_eq!(
            authenticate(&none, now, &ClockPolicy::default(), |_| None),
            Err(AuthnError::MissingAuthorization)
        );
        let no_date = RequestCredentials {
            authorization: Some(good.authorization.as_bytes()),
            date_time: None,
        };
        assert_eq!(
            authenticate(&no_date, now, &ClockPolicy::default(), |ak| users
                .iter()
                .find(|u| u.name == ak)),
            Err(AuthnError::MissingDateTime)
        );
        // Python without credentials: the header is there, the access key is empty.
        assert_eq!(
            run("MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=0b2cdc99511574ff0e0db7ad23cd66e1e425079d", &good.date_time, now, &users),
            Err(AuthnError::NoCredentials)
        );
        let stranger = sign("nobody", &users[0].secret, now);
        assert_eq!(
            run(&stranger.authorization, &stranger.date_time, now, &users),
            Err(AuthnError::UnknownAccessKey {
                access_key: "nobody".into()
            })
        );
        assert!(matches!(
            run(&good.authorization, "tomorrow", now, &users),
            Err(AuthnError::BadDateTime(_))
        ));
        assert!(matches!(
            run("Basic dXNlcjpwYXNz", &good.date_time, now, &users),
            Err(AuthnError::Malformed(MalformedHeader::UnsupportedAlgorithm))
        ));
        let huge = "x".repeat(100_000);
        assert!(matches!(
            run(&huge, &good.date_time, now, &users),
            Err(AuthnError::Malformed(MalformedHeader::TooLong {
                len: 100_000
            }))
        ));
        assert!(matches!(
            run(&good.authorization, &huge, now, &users),
            Err(AuthnError::BadDateTime(BadDateTime::TooLong {
                len: 100_000
            }))
        ));
    }

    #[test]
    fn duplicate_headers_are_refused() {
        let a: &[u8] = b"x";
        assert_eq!(
            RequestCredentials::from_header_values([a, a], [a]).unwrap_err(),
            AuthnError::DuplicateHeader {
                header: "authorization"
            }
        );
        assert_eq!(
            RequestCredentials::from_header_values([a], [a, a]).unwrap_err(),
            AuthnError::DuplicateHeader {
                header: "x-mq-date-time"
            }
        );
        let one = RequestCredentials::from_header_values([a], []).unwrap();
        assert_eq!(one.authorization, Some(a));
        assert_eq!(one.date_time, None);
    }

    #[test]
    fn stale_and_future_requests_are_refused_by_the_window() {
        let users = [user("vk", "vector-secret-1")];
        let signed_at = at(1_796_171_349);
        let h = sign("vk", &users[0].secret, signed_at);
        let max = DEFAULT_MAX_SKEW.as_secs();
        assert!(run(
            &h.authorization,
            &h.date_time,
            signed_at + Duration::from_secs(max),
            &users
        )
        .is_ok());
        assert!(run(
            &h.authorization,
            &h.date_time,
            signed_at - Duration::from_secs(max),
            &users
        )
        .is_ok());
        assert_eq!(
            run(
                &h.authorization,
                &h.date_time,
                signed_at + Duration::from_secs(max + 1),
                &users
            ),
            Err(AuthnError::ClockSkew {
                access_key: "vk".into(),
                skew_secs: -(max as i64 + 1),
                max_skew_secs: max
            })
        );
        assert_eq!(
            run(
                &h.authorization,
                &h.date_time,
                signed_at - Duration::from_secs(3600),
                &users
            ),
            Err(AuthnError::ClockSkew {
                access_key: "vk".into(),
                skew_secs: 3600,
                max_skew_secs: max
            })
        );
    }

    #[test]
    fn local_time_clients_pass_only_when_zone_offsets_are_tolerated() {
        // The Python client on a UTC+8 host sent 08:28:05 "Z" at 00:28:05 UTC.
        let users = [user("fmq-ak-python-tz", "fmq-secret-python")];
        let auth = "MQv2-HMAC-SHA1 Credential=fmq-ak-python-tz, SignedHeaders=x-mq-date-time, Signature=2264cde9c6e54508967783572b9ba03922d79628";
        let now = at(1_796_171_285);
        assert!(matches!(
            run(auth, "20261202T082805Z", now, &users),
            Err(AuthnError::ClockSkew {
                skew_secs: 28_800,
                ..
            })
        ));
        let tolerant = ClockPolicy::new(Duration::from_secs(120), true).unwrap();
        assert!(run_with(auth, "20261202T082805Z", now, &users, &tolerant).is_ok());
        // Between two zone offsets (8h07m30s off) it is still refused.
        assert!(run_with(
            auth,
            "20261202T082805Z",
            now - Duration::from_secs(450),
            &users,
            &tolerant
        )
        .is_err());
        // Beyond +14h it is refused.
        assert!(run_with(
            auth,
            "20261202T082805Z",
            now - Duration::from_secs(7 * 3600),
            &users,
            &tolerant
        )
        .is_err());
    }

    #[test]
    fn clock_policy_refuses_windows_that_mean_nothing() {
        assert!(ClockPolicy::new(Duration::from_secs(3601), false).is_err());
        assert!(ClockPolicy::new(Duration::from_secs(450), true).is_err());
        assert!(ClockPolicy::new(Duration::from_secs(449), true).is_ok());
        let p = ClockPolicy::new(Duration::from_secs(60), true).unwrap();
        let server = at(1_000_000);
        for hours_ahead in [-12i64, -3, 5, 14] {
            let client = UNIX_EPOCH + Duration::from_secs((1_000_000 + hours_ahead * 3600) as u64);
            assert_eq!(p.check(client, server), Ok(()), "{hours_ahead}h");
        }
        // India (+5:30) and Nepal (+5:45) are whole quarter hours.
        assert_eq!(
            p.check(at(1_000_000 + 5 * 3600 + 45 * 60 + 30), server),
            Ok(())
        );
        assert!(p.check(at(1_000_000 + 15 * 3600), server).is_err());
        assert!(p.check(at(1_000_000 - 13 * 3600), server).is_err());
    }

    proptest::proptest! {
        /// Whatever the key, secret and instant, what `sign` produces authenticates at that
        /// instant, and not with another secret.
        #[test]
        fn signed_headers_authenticate(
            ak in "[A-Za-z0-9._@-]{1,128}",
            secret in "[!-~]{8,64}",
            other in "[!-~]{8,64}",
            secs in 0u64..4_102_444_800,
        ) {
            let now = at(secs);
            let users = [User { name: ak.clone(), secret: Secret::new(secret.clone()).unwrap(), kind: UserKind::Normal }];
            let h = sign(&ak, &users[0].secret, now);
            let p = run(&h.authorization, &h.date_time, now, &users).unwrap();
            proptest::prop_assert_eq!(&*p.name, ak.as_str());
            if other != secret {
                let wrong = [User { name: ak.clone(), secret: Secret::new(other).unwrap(), kind: UserKind::Normal }];
                let signature_mismatch = matches!(run(&h.authorization, &h.date_time, now, &wrong), Err(AuthnError::SignatureMismatch { .. }));
                proptest::prop_assert!(signature_mismatch);
            }
        }
    }

    #[test]
    fn client_message_does_not_tell_unknown_keys_from_wrong_secrets() {
        let a = AuthnError::UnknownAccessKey {
            access_key: "x".into(),
        };
        let b = AuthnError::SignatureMismatch {
            access_key: "x".into(),
        };
        assert_eq!(a.client_message(), b.client_message());
        assert_ne!(a.to_string(), b.to_string());
        assert_eq!(a.access_key(), Some("x"));
    }
}

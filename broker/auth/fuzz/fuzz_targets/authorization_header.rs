//! Feeds arbitrary bytes to the `authorization` and `x-mq-date-time` parsers and to the whole
//! authentication path. Checks, beyond "no panic": whatever parses re-parses to the same value
//! when rebuilt in the Java client's shape; a refusal never echoes a whole signature; and a header
//! that authenticates is one whose signature really matches.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use ferromq_auth::authn::authenticate;
use ferromq_auth::signature::{compute_signature, parse_date_time};
use ferromq_auth::{AuthorizationHeader, ClockPolicy, RequestCredentials, Secret, User, UserKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks where to split the input into the two header values.
    let (split, rest) = match data.split_first() {
        Some((s, rest)) => (*s as usize % (rest.len() + 1), rest),
        None => (0, data),
    };
    let (auth, date) = rest.split_at(split);

    if let Ok(h) = AuthorizationHeader::parse(auth) {
        let rebuilt = format!(
            "MQv2-HMAC-SHA1 Credential={}, SignedHeaders=x-mq-date-time, Signature={}",
            h.access_key,
            hex::encode_upper(h.signature)
        );
        assert_eq!(AuthorizationHeader::parse(rebuilt.as_bytes()), Ok(h));
    } else if let Err(e) = AuthorizationHeader::parse(auth) {
        let shown = e.to_string();
        if let Some(sig) = std::str::from_utf8(auth)
            .ok()
            .and_then(|t| t.split("Signature=").nth(1))
        {
            let sig = sig.split(',').next().unwrap_or("").trim();
            // A well-formed signature (40 hex digits) never shows whole: errors quote at most
            // `signature::MAX_QUOTED` (16) characters of the input.
            let well_formed = sig.len() == 40 && sig.bytes().all(|b| b.is_ascii_hexdigit());
            assert!(
                !well_formed || !shown.contains(sig),
                "error echoes the signature"
            );
        }
    }
    let _ = parse_date_time(date);

    let user = User {
        name: "fuzz".into(),
        secret: Secret::new("fuzz-secret-1").unwrap(),
        kind: UserKind::Normal,
    };
    let credentials = RequestCredentials {
        authorization: Some(auth),
        date_time: Some(date),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_796_171_349);
    let clock = ClockPolicy::new(Duration::from_secs(300), true).unwrap();
    if authenticate(&credentials, now, &clock, |ak| {
        (ak == "fuzz").then_some(&user)
    })
    .is_ok()
    {
        let h = AuthorizationHeader::parse(auth).unwrap();
        assert_eq!(compute_signature(&user.secret, date), h.signature);
    }
});

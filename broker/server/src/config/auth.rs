//! Configuration of authentication and authorization on a storage node (`standalone`, `broker`).
//!
//! Off unless `--auth` (the quick start stays open; the chart turns it on). The bootstrap super
//! user's secret comes from a file, never a flag: flags show in `ps` and in shell history.

use std::path::PathBuf;
use std::time::Duration;

use ferromq_auth::{ClockPolicy, Secret};
pub use ferromq_config::keys::AuthKeys;

use super::{bad, parse_duration, ConfigError, ConfigFile};

/// Flags of authentication, shared by `standalone` and `broker`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AuthArgs {
    /// Require signed requests (RocketMQ 5 `MQv2-HMAC-SHA1`) and enforce users' ACL policies on
    /// the RocketMQ API and the admin API.
    #[arg(long = "auth", env = "FERROMQ_AUTH")]
    pub auth: bool,
    /// Name (access key) of the bootstrap super user, created or updated at start-up.
    #[arg(long, env = "FERROMQ_AUTH_SUPER_USER")]
    pub auth_super_user: Option<String>,
    /// File holding the bootstrap super user's secret (trailing newline ignored).
    #[arg(long, env = "FERROMQ_AUTH_SUPER_SECRET_FILE")]
    pub auth_super_secret_file: Option<PathBuf>,
    /// Largest accepted difference between a request's `x-mq-date-time` and the server clock
    /// (replay window) [default: 5m].
    #[arg(long, env = "FERROMQ_AUTH_MAX_CLOCK_SKEW")]
    pub auth_max_clock_skew: Option<String>,
    /// Also accept date-times off by a whole time-zone offset (Java, Go and Python clients send
    /// local time labelled UTC); the skew must then be under 7m30s.
    #[arg(long, env = "FERROMQ_AUTH_TOLERATE_ZONE_OFFSETS")]
    pub auth_tolerate_zone_offsets: bool,
}

/// A switch of the file: `true`, `false`, or the same as a string.
fn switch(field: &'static str, v: Option<&toml::Value>) -> Result<bool, ConfigError> {
    v.map_or(Ok(false), |v| ferromq_config::switch_value(field, v))
}

/// Validated authentication settings.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub enabled: bool,
    /// The bootstrap super user and its secret.
    pub super_user: Option<(String, Secret)>,
    pub clock: ClockPolicy,
}

impl AuthConfig {
    pub fn resolve(args: &AuthArgs, file: &ConfigFile) -> Result<AuthConfig, ConfigError> {
        let keys: AuthKeys = file.section()?;
        let enabled = args.auth || switch("auth", keys.auth.as_ref())?;
        let skew = match args
            .auth_max_clock_skew
            .as_ref()
            .or(keys.auth_max_clock_skew.as_ref())
        {
            Some(s) => parse_duration("auth-max-clock-skew", s)?,
            None => Duration::from_secs(300),
        };
        let zones = args.auth_tolerate_zone_offsets
            || switch(
                "auth-tolerate-zone-offsets",
                keys.auth_tolerate_zone_offsets.as_ref(),
            )?;
        let clock =
            ClockPolicy::new(skew, zones).map_err(|e| bad("auth-max-clock-skew", e.to_string()))?;
        let user = args.auth_super_user.clone().or(keys.auth_super_user);
        let secret_file = args
            .auth_super_secret_file
            .clone()
            .or(keys.auth_super_secret_file);
        let super_user = match (user, secret_file) {
            (Some(user), Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    bad(
                        "auth-super-secret-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let secret = Secret::new(text.trim_end_matches(['\n', '\r'])).map_err(|e| {
                    bad("auth-super-secret-file", format!("{}: {e}", path.display()))
                })?;
                ferromq_auth::user::validate_access_key(&user)
                    .map_err(|e| bad("auth-super-user", e.to_string()))?;
                Some((user, secret))
            }
            (Some(_), None) => {
                return Err(bad(
                    "auth-super-secret-file",
                    "auth-super-user is set but its secret file is not",
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "auth-super-user",
                    "auth-super-secret-file is set but the user name is not",
                ))
            }
            (None, None) => None,
        };
        Ok(AuthConfig {
            enabled,
            super_user,
            clock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_user_needs_both_halves_and_a_valid_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "short\n").unwrap();
        let file = ConfigFile::default();
        let mut args = AuthArgs {
            auth: true,
            auth_super_user: Some("admin".into()),
            ..Default::default()
        };
        assert_eq!(
            AuthConfig::resolve(&args, &file).unwrap_err().field,
            "auth-super-secret-file"
        );
        args.auth_super_secret_file = Some(f.clone());
        let err = AuthConfig::resolve(&args, &file).unwrap_err();
        assert_eq!(err.field, "auth-super-secret-file");
        assert!(!err.reason.contains("short"), "{}", err.reason);
        std::fs::write(&f, "a-long-enough-secret\n").unwrap();
        let c = AuthConfig::resolve(&args, &file).unwrap();
        let (name, secret) = c.super_user.unwrap();
        assert_eq!(name, "admin");
        assert_eq!(secret.expose(), "a-long-enough-secret");
        let f2 = dir.path().join("c.toml");
        std::fs::write(
            &f2,
            "auth = \"true\"\nauth-tolerate-zone-offsets = \"maybe\"\n",
        )
        .unwrap();
        let file2 = ConfigFile::load(Some(&f2)).unwrap();
        assert_eq!(
            AuthConfig::resolve(&AuthArgs::default(), &file2)
                .unwrap_err()
                .field,
            "auth-tolerate-zone-offsets"
        );
        std::fs::write(&f2, "auth = \"true\"\n").unwrap();
        let file2 = ConfigFile::load(Some(&f2)).unwrap();
        assert!(
            AuthConfig::resolve(&AuthArgs::default(), &file2)
                .unwrap()
                .enabled
        );
        args.auth_max_clock_skew = Some("2h".into());
        assert_eq!(
            AuthConfig::resolve(&args, &file).unwrap_err().field,
            "auth-max-clock-skew"
        );
    }
}

//! The credentials FerroMQ's own clients (`ferromq admin`, `ferromq bench`) sign their calls
//! with, the way the official RocketMQ 5 clients do (`MQv2-HMAC-SHA1` over `x-mq-date-time`).
//!
//! The access key comes from `--access-key` or `FERROMQ_ACCESS_KEY`; the secret from the file
//! `--secret-file` / `FERROMQ_SECRET_FILE`, or from `FERROMQ_SECRET_KEY`; never from a flag,
//! which would show in `ps` and in shell history.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context};
use ferromq_auth::Secret;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

/// Flags of a client that may need to sign its calls.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct CredentialArgs {
    /// Access key (user name) to sign calls with, when the server runs with --auth.
    #[arg(long, env = "FERROMQ_ACCESS_KEY", global = true)]
    pub access_key: Option<String>,
    /// File holding the secret of --access-key (else the FERROMQ_SECRET_KEY variable).
    #[arg(long, env = "FERROMQ_SECRET_FILE", global = true)]
    pub secret_file: Option<PathBuf>,
}

/// Reads a secret from a file: its first line, without the line end.
pub fn read_secret_file(path: &std::path::Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    Secret::new(text.trim_end_matches(['\n', '\r']))
        .with_context(|| format!("secret file {}", path.display()))
}

impl CredentialArgs {
    /// The signer of these credentials (one that adds nothing when none are given).
    pub fn signer(&self) -> anyhow::Result<Signer> {
        let secret = match &self.secret_file {
            Some(path) => Some(read_secret_file(path)?),
            None => match std::env::var("FERROMQ_SECRET_KEY") {
                Ok(s) if !s.is_empty() => {
                    Some(Secret::new(s).context("FERROMQ_SECRET_KEY is not a usable secret")?)
                }
                _ => None,
            },
        };
        match (&self.access_key, secret) {
            (Some(ak), Some(secret)) => Ok(Signer(Some((ak.clone(), secret)))),
            (None, None) => Ok(Signer(None)),
            (Some(_), None) => bail!(
                "--access-key needs a secret: --secret-file PATH or the FERROMQ_SECRET_KEY variable"
            ),
            (None, Some(_)) => bail!("a secret is given but no --access-key (FERROMQ_ACCESS_KEY)"),
        }
    }
}

/// Signs each call with a fresh date-time.
#[derive(Clone, Default)]
pub struct Signer(Option<(String, Secret)>);

impl Signer {
    /// Signs as `access_key` with `secret` (a member's bootstrap super user, for the
    /// replication stream).
    pub fn new(access_key: &str, secret: Secret) -> Signer {
        Signer(Some((access_key.to_string(), secret)))
    }

    /// The two headers of a call made now, when there are credentials.
    pub fn headers(
        &self,
    ) -> Option<(
        MetadataValue<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )> {
        let (ak, secret) = self.0.as_ref()?;
        let h = ferromq_auth::sign(ak, secret, SystemTime::now());
        Some((
            MetadataValue::try_from(h.authorization.as_str()).ok()?,
            MetadataValue::try_from(h.date_time.as_str()).ok()?,
        ))
    }
}

impl Interceptor for Signer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((authorization, date_time)) = self.headers() {
            let md = req.metadata_mut();
            md.insert(ferromq_auth::signature::AUTHORIZATION_HEADER, authorization);
            md.insert(ferromq_auth::signature::DATE_TIME_HEADER, date_time);
        }
        Ok(req)
    }
}

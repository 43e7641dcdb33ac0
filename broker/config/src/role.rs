//! Which sections each role's file may hold, and the checks of a whole file that need nothing
//! but the file (what the operator can decide before any pod starts).

use crate::keys::{
    AuthKeys, BrokerKeys, ControllerKeys, LimitKeys, NameserverKeys, NodeKeys, ProxyKeys,
    TlsCaKeys, TlsKeys,
};
use crate::{ConfigError, ConfigFile, Section};

/// A role of the `ferromq` binary that reads a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Broker,
    Proxy,
    Nameserver,
}

impl Role {
    /// How messages name the role (`unknown key "x" for a proxy`).
    pub fn described(self) -> &'static str {
        match self {
            Role::Standalone => "a standalone server",
            Role::Broker => "a broker",
            Role::Proxy => "a proxy",
            Role::Nameserver => "a name server",
        }
    }

    /// The key lists of the sections the role's file may hold.
    pub fn sections(self) -> &'static [&'static [&'static str]] {
        match self {
            Role::Standalone => &[
                NodeKeys::KEYS,
                LimitKeys::KEYS,
                AuthKeys::KEYS,
                TlsKeys::KEYS,
            ],
            Role::Broker => &[
                NodeKeys::KEYS,
                BrokerKeys::KEYS,
                LimitKeys::KEYS,
                AuthKeys::KEYS,
                TlsKeys::KEYS,
                TlsCaKeys::KEYS,
            ],
            Role::Proxy => &[
                ProxyKeys::KEYS,
                LimitKeys::KEYS,
                TlsKeys::KEYS,
                TlsCaKeys::KEYS,
            ],
            Role::Nameserver => &[
                NameserverKeys::KEYS,
                LimitKeys::KEYS,
                ControllerKeys::KEYS,
                TlsKeys::KEYS,
                TlsCaKeys::KEYS,
            ],
        }
    }

    /// Refuses keys that are not the role's.
    pub fn only(self, file: &ConfigFile) -> Result<(), ConfigError> {
        file.only(self.described(), self.sections())
    }

    /// Every check the file alone allows: no key of another role or none at all, and every
    /// value of the right kind and unit. Start-up runs these too, then the cross-field ones.
    pub fn check(self, file: &ConfigFile) -> Result<(), ConfigError> {
        self.only(file)?;
        file.section::<LimitKeys>()?.check()?;
        match self {
            Role::Standalone => {
                file.section::<NodeKeys>()?.check()?;
                file.section::<AuthKeys>()?.check()?;
                file.section::<TlsKeys>()?.check()
            }
            Role::Broker => {
                file.section::<NodeKeys>()?.check()?;
                file.section::<BrokerKeys>()?.check()?;
                file.section::<AuthKeys>()?.check()?;
                file.section::<TlsKeys>()?.check()?;
                file.section::<TlsCaKeys>()?.check()
            }
            Role::Proxy => {
                file.section::<ProxyKeys>()?.check()?;
                file.section::<TlsKeys>()?.check()?;
                file.section::<TlsCaKeys>()?.check()
            }
            Role::Nameserver => {
                file.section::<NameserverKeys>()?.check()?;
                file.section::<ControllerKeys>()?.check()?;
                file.section::<TlsKeys>()?.check()?;
                file.section::<TlsCaKeys>()?.check()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(role: Role, text: &str) -> Result<(), ConfigError> {
        role.check(&ConfigFile::parse("spec.config", text)?)
    }

    #[test]
    fn values_rendered_as_strings_pass() {
        check(
            Role::Broker,
            "nameservers = [\"ns-0.ns:9876\"]\nflush = \"sync\"\nmin-in-sync = 2\n\
             auto-create-topics = \"true\"\nmax-body-size = \"8MiB\"\nmax-delay = \"2d\"\n\
             default-queues = \"4\"\nidle-timeout = \"30s\"\nretention = \"7d\"\n\
             retention-bytes = \"50GiB\"\ndisk-high-water = \"85\"\n",
        )
        .expect("valid");
    }

    #[test]
    fn bad_values_and_keys_are_named() {
        let field = |role, text| check(role, text).expect_err(text).field;
        assert_eq!(field(Role::Broker, "max-delay = \"soon\"\n"), "max-delay");
        assert_eq!(
            field(Role::Broker, "max-body-size = \"lots\"\n"),
            "max-body-size"
        );
        assert_eq!(
            field(Role::Broker, "default-queues = \"-1\"\n"),
            "default-queues"
        );
        assert_eq!(
            field(Role::Broker, "auto-create-topics = \"yes\"\n"),
            "auto-create-topics"
        );
        assert_eq!(field(Role::Broker, "flush = \"never\"\n"), "flush");
        assert_eq!(field(Role::Broker, "retention = \"0s\"\n"), "retention");
        assert_eq!(
            field(Role::Broker, "retention-bytes = \"big\"\n"),
            "retention-bytes"
        );
        assert_eq!(
            field(Role::Broker, "disk-high-water = \"120%\"\n"),
            "disk-high-water"
        );
        assert_eq!(
            field(Role::Proxy, "route-refresh = \"0s\"\n"),
            "route-refresh"
        );
        assert_eq!(field(Role::Nameserver, "lease = \"x\"\n"), "lease");
        let err = check(Role::Broker, "route-refresh = \"1s\"\n").expect_err("a proxy key");
        assert_eq!(err.field, "config");
        assert!(
            err.reason.contains("\"route-refresh\" for a broker"),
            "{}",
            err.reason
        );
        check(
            Role::Nameserver,
            "tls = \"required\"\ntls-ca = \"/ca.pem\"\n",
        )
        .expect("valid");
        check(Role::Proxy, "tls-ca = \"/ca.pem\"\n").expect("valid");
        let err = check(Role::Standalone, "tls-ca = \"/ca.pem\"\n").expect_err("no links");
        assert!(err.reason.contains("\"tls-ca\""), "{}", err.reason);
        assert_eq!(field(Role::Broker, "tls-ca = \"\"\n"), "tls-ca");
        let err = check(Role::Broker, "flush = \"sync\"\nflush = \"async\"\n").expect_err("twice");
        assert_eq!(err.field, "config");
    }
}

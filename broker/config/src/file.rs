//! One TOML file, read once, whose keys are then handed to the sections of a role.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{bad, ConfigError};

/// The keys of one section of the file.
pub trait Section: DeserializeOwned + Default {
    /// Every key the section holds, as spelt in the file.
    const KEYS: &'static [&'static str];
}

/// A TOML file as read once, before its keys are handed to the sections of a role.
#[derive(Debug, Default, Clone)]
pub struct ConfigFile {
    /// What messages call the file: its path, or `spec.config` for the operator's rendering.
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads `path`; no path means an empty file.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        ConfigFile::parse(path, &text)
    }

    /// Parses `text`; `name` stands for the file in messages.
    pub fn parse(name: impl AsRef<Path>, text: &str) -> Result<ConfigFile, ConfigError> {
        let name = name.as_ref();
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml names the offending line in its message; keep it whole.
            bad(
                "config",
                format!("{}: {}", name.display(), e.to_string().trim()),
            )
        })?;
        Ok(ConfigFile {
            path: name.to_path_buf(),
            table,
        })
    }

    /// The keys of the file, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.table.keys().map(String::as_str)
    }

    /// Refuses keys that none of `allowed` holds, naming the role (`a proxy`).
    pub fn only(&self, role: &str, allowed: &[&[&str]]) -> Result<(), ConfigError> {
        for key in self.table.keys() {
            if !allowed.iter().any(|keys| keys.contains(&key.as_str())) {
                return Err(bad(
                    "config",
                    format!(
                        "{}: unknown key {key:?} for {role} (keys are the long flags of the role, e.g. grpc-addr)",
                        self.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The values of one section (keys of other sections are left for them). A value of the
    /// wrong type is refused naming its key.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        let sub: toml::Table = self
            .table
            .iter()
            .filter(|(k, _)| S::KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sub.clone().try_into().map_err(|e: toml::de::Error| {
            // toml's message does not say which key: find the first one that fails alone.
            let field = S::KEYS
                .iter()
                .find(|key| {
                    sub.get(**key).is_some_and(|v| {
                        let mut one = toml::Table::new();
                        one.insert(key.to_string(), v.clone());
                        one.try_into::<S>().is_err()
                    })
                })
                .copied()
                .unwrap_or("config");
            // With the field named, toml's own "in `key`" line would only make the error two
            // lines; without it, that line is the best clue left.
            let why = if field == "config" {
                e.to_string().trim().replace('\n', " ")
            } else {
                e.message().trim().to_string()
            };
            bad(field, format!("{}: {why}", self.path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeKeys;

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let f = ConfigFile::parse("c.toml", "grpc-addr = 5\n").expect("toml");
        let err = f.section::<NodeKeys>().expect_err("an integer address");
        assert_eq!(err.field, "grpc-addr");
    }

    #[test]
    fn unknown_keys_are_named_with_the_role() {
        let f = ConfigFile::parse("spec.config", "no-such-key = \"1\"\n").expect("toml");
        let err = f.only("a broker", &[NodeKeys::KEYS]).expect_err("unknown");
        assert_eq!(err.field, "config");
        assert!(err.reason.contains("\"no-such-key\""), "{}", err.reason);
        assert!(err.reason.starts_with("spec.config: "), "{}", err.reason);
    }
}

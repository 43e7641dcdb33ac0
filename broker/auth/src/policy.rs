//! Policies in the spirit of RocketMQ ACL 2.0: each normal user has one policy, a list of entries
//! `(resource pattern, actions, effect, source ranges)`, and a request is allowed when some allow
//! entry matches it and no deny entry does.
//!
//! Decisions, and where they differ from Apache's ACL 2.0:
//! - **Deny wins, whatever the specificity.** Apache picks the most specific matching entry
//!   (exact name before longer prefix before shorter prefix before `*`) and only breaks ties by
//!   effect, so an allow on `topic:orders` beats a deny on `topic:*`. Here any matching deny
//!   refuses: a deny can be read on its own, without knowing every allow that might outrank it.
//! - **Default deny.** A normal user with no matching allow is refused; super users skip policies.
//! - **Unknown source address.** An entry limited to source ranges matches only a request whose
//!   address is known and inside a range, *except* deny entries, which also match when the
//!   address is unknown: missing information never grants and never lifts a refusal.
//! - **IPv4-mapped IPv6 addresses** (`::ffff:10.1.2.3`, what a dual-stack listener reports for an
//!   IPv4 peer) are compared as the IPv4 address, so `10.0.0.0/8` covers them.
//! - **Resource patterns**: `*` (every resource, the cluster included), `cluster`, `topic:NAME`,
//!   `topic:PREFIX*`, `topic:*`, and the same for `group:`. A `*` only at the end; the type is
//!   case-insensitive (`Topic:orders` is read as `topic:orders`), the name is not.
//! - **Actions**: `publish`, `subscribe`, `create`, `update`, `delete`, `get`, `list`, or `all`
//!   (`*`), which also covers actions added later. `pub` and `sub` are read too (ACL 2.0 spelling).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Longest topic or group name (or prefix) a pattern may hold.
pub const MAX_RESOURCE_NAME_LEN: usize = 255;
/// Most entries one user's policy may hold.
pub const MAX_ENTRIES_PER_POLICY: usize = 1000;
/// Most source ranges one entry may hold.
pub const MAX_SOURCES_PER_ENTRY: usize = 64;

/// Why a policy, an entry or one of its parts was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("resource {text:?}: {reason}")]
    Resource { text: String, reason: String },
    #[error(
        "action {text:?} is not one of publish, subscribe, create, update, delete, get, list, all"
    )]
    Action { text: String },
    #[error("effect {text:?} is neither allow nor deny")]
    Effect { text: String },
    #[error("source range {text:?} is neither an IP address nor a CIDR range")]
    Source { text: String },
    #[error("entry for {resource} lists no action")]
    NoActions { resource: String },
    #[error("entry for {resource} lists {count} source ranges; at most {MAX_SOURCES_PER_ENTRY} are allowed")]
    TooManySources { resource: String, count: usize },
    #[error("policy has {count} entries; at most {MAX_ENTRIES_PER_POLICY} are allowed")]
    TooManyEntries { count: usize },
}

/// One action a request needs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Send messages to a topic (also ends transactions and recalls messages on it).
    Publish,
    /// Receive from a topic, or consume as a group.
    Subscribe,
    Create,
    Update,
    Delete,
    /// Read one resource's details (describe, look up a message).
    Get,
    /// Enumerate resources of the cluster.
    List,
}

impl Action {
    /// Every action, in display order.
    pub const EVERY: [Action; 7] = [
        Action::Publish,
        Action::Subscribe,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Get,
        Action::List,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Get => "get",
            Action::List => "list",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "publish" | "pub" => Action::Publish,
            "subscribe" | "sub" => Action::Subscribe,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "get" => Action::Get,
            "list" => Action::List,
            _ => return Err(PolicyError::Action { text: s.into() }),
        })
    }
}

/// The actions an entry covers. `all` is kept as its own flag rather than expanded, so an entry
/// written as `all` also covers actions a later version adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u16);

const ALL_BIT: u16 = 1 << 15;

impl ActionSet {
    pub const fn empty() -> Self {
        ActionSet(0)
    }
    pub const fn all() -> Self {
        ActionSet(ALL_BIT)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn is_all(self) -> bool {
        self.0 & ALL_BIT != 0
    }
    pub fn with(self, action: Action) -> Self {
        ActionSet(self.0 | action.bit())
    }
    pub fn contains(self, action: Action) -> bool {
        self.is_all() || self.0 & action.bit() != 0
    }

    /// Reads `publish,subscribe`, `all`, `*` and the like.
    pub fn parse_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, PolicyError> {
        let mut set = ActionSet::empty();
        for item in items {
            let item = item.trim();
            if item == "*" || item.eq_ignore_ascii_case("all") {
                set = ActionSet(set.0 | ALL_BIT);
            } else {
                set = set.with(item.parse()?);
            }
        }
        Ok(set)
    }

    /// The names, `all` alone when the flag is set.
    pub fn names(self) -> Vec<&'static str> {
        if self.is_all() {
            return vec!["all"];
        }
        Action::EVERY
            .iter()
            .filter(|a| self.contains(**a))
            .map(|a| a.as_str())
            .collect()
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(ActionSet::empty(), ActionSet::with)
    }
}

impl fmt::Display for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl Serialize for ActionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ActionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        ActionSet::parse_list(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// What an entry does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

impl FromStr for Effect {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(Effect::Allow),
            "deny" => Ok(Effect::Deny),
            _ => Err(PolicyError::Effect { text: s.into() }),
        }
    }
}

/// Serde goes through the text form (`FromStr` / `Display`), so the store's file reads like the
/// CLI's arguments and every loaded value passes the same parser.
macro_rules! text_form {
    ($ty:ty) => {
        impl TryFrom<String> for $ty {
            type Error = PolicyError;
            fn try_from(s: String) -> Result<Self, PolicyError> {
                s.parse()
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }
    };
}

/// A concrete resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource<'a> {
    /// The cluster itself: listing, broker-group state, user and policy management.
    Cluster,
    Topic(&'a str),
    /// A consumer group.
    Group(&'a str),
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Cluster => f.write_str("cluster"),
            Resource::Topic(name) => write!(f, "topic:{name}"),
            Resource::Group(name) => write!(f, "group:{name}"),
        }
    }
}

/// How a pattern matches names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    /// `name`: this name only.
    Exact(String),
    /// `prefix*`: every name that starts with the prefix (the prefix itself included).
    Prefix(String),
    /// `*`: every name.
    Any,
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Prefix(p) => name.starts_with(p.as_str()),
            NamePattern::Any => true,
        }
    }

    fn parse(text: &str, whole: &str) -> Result<Self, PolicyError> {
        let bad = |reason: &str| PolicyError::Resource {
            text: whole.into(),
            reason: reason.into(),
        };
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.len() > MAX_RESOURCE_NAME_LEN {
            return Err(bad(&format!(
                "name is longer than {MAX_RESOURCE_NAME_LEN} bytes"
            )));
        }
        if let Some(c) = stem
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-' | '.')))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed in a name (letters, digits and % | _ - . are; '*' only at the end)"
            )));
        }
        Ok(match (stem.is_empty(), prefix) {
            (true, true) => NamePattern::Any,
            (true, false) => return Err(bad("the name is empty")),
            (false, true) => NamePattern::Prefix(stem.into()),
            (false, false) => NamePattern::Exact(stem.into()),
        })
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(n) => f.write_str(n),
            NamePattern::Prefix(p) => write!(f, "{p}*"),
            NamePattern::Any => f.write_str("*"),
        }
    }
}

/// Which resources an entry is about. Text form: `*`, `cluster`, `topic:PATTERN`,
/// `group:PATTERN` (see [`NamePattern`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ResourcePattern {
    /// Every resource of every type.
    Any,
    Cluster,
    Topic(NamePattern),
    Group(NamePattern),
}

impl ResourcePattern {
    pub fn matches(&self, resource: &Resource<'_>) -> bool {
        match (self, resource) {
            (ResourcePattern::Any, _) => true,
            (ResourcePattern::Cluster, Resource::Cluster) => true,
            (ResourcePattern::Topic(p), Resource::Topic(name)) => p.matches(name),
            (ResourcePattern::Group(p), Resource::Group(name)) => p.matches(name),
            _ => false,
        }
    }
}

impl FromStr for ResourcePattern {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        let trimmed = text.trim();
        if trimmed == "*" {
            return Ok(ResourcePattern::Any);
        }
        if trimmed.eq_ignore_ascii_case("cluster") {
            return Ok(ResourcePattern::Cluster);
        }
        let (kind, name) = trimmed
            .split_once(':')
            .ok_or_else(|| PolicyError::Resource {
                text: text.into(),
                reason: "expected *, cluster, topic:NAME or group:NAME".into(),
            })?;
        match kind.to_ascii_lowercase().as_str() {
            "topic" => Ok(ResourcePattern::Topic(NamePattern::parse(name, text)?)),
            "group" => Ok(ResourcePattern::Group(NamePattern::parse(name, text)?)),
            _ => Err(PolicyError::Resource {
                text: text.into(),
                reason: format!("resource type {kind:?} is not topic or group"),
            }),
        }
    }
}

text_form!(ResourcePattern);

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcePattern::Any => f.write_str("*"),
            ResourcePattern::Cluster => f.write_str("cluster"),
            ResourcePattern::Topic(p) => write!(f, "topic:{p}"),
            ResourcePattern::Group(p) => write!(f, "group:{p}"),
        }
    }
}

/// A source address range: a CIDR block, or one address (stored as a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceRange(IpNet);

impl SourceRange {
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&canonical_ip(addr))
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
pub fn canonical_ip(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for SourceRange {
    type Err = PolicyError;
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        let t = text.trim();
        if let Ok(net) = t.parse::<IpNet>() {
            // Keep the network address only: "10.1.2.3/8" means 10.0.0.0/8.
            return Ok(SourceRange(net.trunc()));
        }
        if let Ok(addr) = t.parse::<IpAddr>() {
            return Ok(SourceRange(IpNet::from(canonical_ip(addr))));
        }
        Err(PolicyError::Source { text: text.into() })
    }
}

text_form!(SourceRange);

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One line of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub resource: ResourcePattern,
    pub actions: ActionSet,
    pub effect: Effect,
    /// Source address ranges the entry is limited to; empty means from anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRange>,
}

impl PolicyEntry {
    /// Builds an entry from its text parts, as `ferromq admin acl` takes them.
    pub fn parse(
        resource: &str,
        actions: &str,
        effect: &str,
        sources: &[&str],
    ) -> Result<Self, PolicyError> {
        let entry = PolicyEntry {
            resource: resource.parse()?,
            actions: ActionSet::parse_list(actions.split(','))?,
            effect: effect.parse()?,
            sources: sources
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// The checks a parsed entry must also pass (run again on every entry the store loads).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.actions.is_empty() {
            return Err(PolicyError::NoActions {
                resource: self.resource.to_string(),
            });
        }
        if self.sources.len() > MAX_SOURCES_PER_ENTRY {
            return Err(PolicyError::TooManySources {
                resource: self.resource.to_string(),
                count: self.sources.len(),
            });
        }
        Ok(())
    }

    /// Whether this entry speaks about the request (regardless of its effect).
    pub fn matches(&self, resource: &Resource<'_>, action: Action, source: Option<IpAddr>) -> bool {
        self.resource.matches(resource)
            && self.actions.contains(action)
            && self.source_matches(source)
    }

    fn source_matches(&self, source: Option<IpAddr>) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        match source {
            Some(addr) => self.sources.iter().any(|r| r.contains(addr)),
            // Unknown address: a deny still applies, an allow does not.
            None => self.effect == Effect::Deny,
        }
    }
}

impl fmt::Display for PolicyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.effect, self.actions, self.resource)?;
        if !self.sources.is_empty() {
            let sources: Vec<String> = self.sources.iter().map(|s| s.to_string()).collect();
            write!(f, " from {}", sources.join(","))?;
        }
        Ok(())
    }
}

/// The policy of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub user: String,
    pub entries: Vec<PolicyEntry>,
}

/// Why a request was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedBy {
    SuperUser,
    /// The index of the first matching allow entry in the user's policy.
    Entry(usize),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedBy {
    /// The index of the first matching deny entry.
    Entry(usize),
    /// No allow entry matched (or the user has no policy).
    NoMatchingAllow,
    /// The operation is reserved to super users (user and policy management, unmapped RPCs).
    SuperUserOnly,
    /// The topic is one of FerroMQ's own (`%SYS%...`), which no policy opens to normal users.
    InternalTopic,
}

impl fmt::Display for DeniedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeniedBy::Entry(i) => write!(f, "deny entry #{i} matches"),
            DeniedBy::NoMatchingAllow => f.write_str("no allow entry matches"),
            DeniedBy::SuperUserOnly => f.write_str("only super users may do this"),
            DeniedBy::InternalTopic => f.write_str("internal topics are for super users only"),
        }
    }
}

/// The answer of an authorization question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow(AllowedBy),
    Deny(DeniedBy),
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Evaluates entries for one request: deny if any deny entry matches, else allow if any allow
/// entry matches, else deny.
pub fn evaluate(
    entries: &[PolicyEntry],
    resource: &Resource<'_>,
    action: Action,
    source: Option<IpAddr>,
) -> Decision {
    let mut allowed_by = None;
    for (i, entry) in entries.iter().enumerate() {
        if !entry.matches(resource, action, source) {
            continue;
        }
        match entry.effect {
            Effect::Deny => return Decision::Deny(DeniedBy::Entry(i)),
            Effect::Allow => {
                allowed_by.get_or_insert(i);
            }
        }
    }
    match allowed_by {
        Some(i) => Decision::Allow(AllowedBy::Entry(i)),
        None => Decision::Deny(DeniedBy::NoMatchingAllow),
    }
}

/// Checks a whole policy's entries: each entry valid, not too many of them. Identical entries
/// are kept once.
pub fn normalize_entries(entries: Vec<PolicyEntry>) -> Result<Vec<PolicyEntry>, PolicyError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        entry.validate()?;
        if seen.insert(entry.to_string()) {
            out.push(entry);
        }
    }
    if out.len() > MAX_ENTRIES_PER_POLICY {
        return Err(PolicyError::TooManyEntries { count: out.len() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(resource: &str, actions: &str, effect: &str, sources: &[&str]) -> PolicyEntry {
        PolicyEntry::parse(resource, actions, effect, sources).unwrap()
    }

    #[test]
    fn resource_patterns_parse_and_print_back() {
        for text in [
            "*",
            "cluster",
            "topic:orders",
            "topic:orders-*",
            "topic:*",
            "group:g1",
            "group:%DLQ%g1",
        ] {
            let p: ResourcePattern = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        assert_eq!(
            "Topic:Orders"
                .parse::<ResourcePattern>()
                .unwrap()
                .to_string(),
            "topic:Orders"
        );
        for bad in [
            "",
            "topic",
            "topic:",
            "queue:a",
            "topic:a*b",
            "topic:a b",
            "topic:**",
        ] {
            assert!(bad.parse::<ResourcePattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn actions_parse_both_spellings_and_all() {
        let set = ActionSet::parse_list(["pub", "Subscribe"]).unwrap();
        assert!(set.contains(Action::Publish) && set.contains(Action::Subscribe));
        assert!(!set.contains(Action::Delete));
        assert_eq!(set.to_string(), "publish,subscribe");
        let all = ActionSet::parse_list(["*"]).unwrap();
        assert!(Action::EVERY.iter().all(|a| all.contains(*a)));
        assert_eq!(all.to_string(), "all");
        assert!(ActionSet::parse_list(["publish", "fly"]).is_err());
        assert!(PolicyEntry::parse("topic:a", "", "allow", &[]).is_err());
    }

    #[test]
    fn deny_wins_over_a_more_specific_allow() {
        let entries = vec![
            entry("topic:orders", "publish", "allow", &[]),
            entry("topic:*", "publish", "deny", &[]),
        ];
        assert_eq!(
            evaluate(&entries, &Resource::Topic("orders"), Action::Publish, None),
            Decision::Deny(DeniedBy::Entry(1))
        );
    }

    #[test]
    fn default_deny_without_a_matching_allow() {
        let entries = vec![entry("topic:orders", "publish", "allow", &[])];
        assert_eq!(
            evaluate(
                &entries,
                &Resource::Topic("orders"),
                Action::Subscribe,
                None
            ),
            Decision::Deny(DeniedBy::NoMatchingAllow)
        );
        assert_eq!(
            evaluate(&entries, &Resource::Topic("orders2"), Action::Publish, None),
            Decision::Deny(DeniedBy::NoMatchingAllow)
        );
        assert_eq!(
            evaluate(&entries, &Resource::Group("orders"), Action::Publish, None),
            Decision::Deny(DeniedBy::NoMatchingAllow)
        );
        assert_eq!(
            evaluate(&[], &Resource::Cluster, Action::List, None),
            Decision::Deny(DeniedBy::NoMatchingAllow)
        );
    }

    #[test]
    fn star_covers_the_cluster_but_topic_star_does_not() {
        let any = vec![entry("*", "all", "allow", &[])];
        assert!(evaluate(&any, &Resource::Cluster, Action::Update, None).is_allowed());
        let topics = vec![entry("topic:*", "all", "allow", &[])];
        assert!(!evaluate(&topics, &Resource::Cluster, Action::Update, None).is_allowed());
        assert!(!evaluate(&topics, &Resource::Group("g"), Action::Subscribe, None).is_allowed());
    }

    #[test]
    fn source_ranges_match_v4_v6_and_mapped_addresses() {
        let entries = vec![entry(
            "topic:t",
            "publish",
            "allow",
            &["10.0.0.0/8", "fd00::/8", "192.168.1.7"],
        )];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let t = Resource::Topic("t");
        for ok in ["10.1.2.3", "::ffff:10.9.9.9", "fd12::1", "192.168.1.7"] {
            assert!(
                evaluate(&entries, &t, Action::Publish, ip(ok)).is_allowed(),
                "{ok}"
            );
        }
        for no in ["11.0.0.1", "fe80::1", "192.168.1.8", "::ffff:192.168.1.8"] {
            assert!(
                !evaluate(&entries, &t, Action::Publish, ip(no)).is_allowed(),
                "{no}"
            );
        }
        // Unknown address: the limited allow does not grant.
        assert!(!evaluate(&entries, &t, Action::Publish, None).is_allowed());
    }

    #[test]
    fn a_limited_deny_applies_when_the_address_is_unknown() {
        let entries = vec![
            entry("topic:t", "publish", "allow", &[]),
            entry("topic:t", "publish", "deny", &["203.0.113.0/24"]),
        ];
        let t = Resource::Topic("t");
        assert!(evaluate(
            &entries,
            &t,
            Action::Publish,
            Some("198.51.100.1".parse().unwrap())
        )
        .is_allowed());
        assert!(!evaluate(
            &entries,
            &t,
            Action::Publish,
            Some("203.0.113.9".parse().unwrap())
        )
        .is_allowed());
        assert_eq!(
            evaluate(&entries, &t, Action::Publish, None),
            Decision::Deny(DeniedBy::Entry(1))
        );
    }

    #[test]
    fn source_ranges_normalize_and_refuse_garbage() {
        assert_eq!(
            "10.1.2.3/8".parse::<SourceRange>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "::ffff:1.2.3.4".parse::<SourceRange>().unwrap().to_string(),
            "1.2.3.4/32"
        );
        assert_eq!(
            "2001:db8::1".parse::<SourceRange>().unwrap().to_string(),
            "2001:db8::1/128"
        );
        for bad in ["10.0.0.0/33", "localhost", "10.0.0", ""] {
            assert!(bad.parse::<SourceRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_round_trip_through_json() {
        let e = entry("topic:orders-*", "pub,sub", "deny", &["10.0.0.0/8"]);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"resource":"topic:orders-*","actions":["publish","subscribe"],"effect":"deny","sources":["10.0.0.0/8"]}"#
        );
        assert_eq!(serde_json::from_str::<PolicyEntry>(&json).unwrap(), e);
        assert!(serde_json::from_str::<PolicyEntry>(
            r#"{"resource":"topic:a*b","actions":["publish"],"effect":"allow"}"#
        )
        .is_err());
    }

    #[test]
    fn normalize_drops_duplicates_and_bounds_the_count() {
        let e = entry("topic:a", "publish", "allow", &[]);
        assert_eq!(
            normalize_entries(vec![e.clone(), e.clone()]).unwrap(),
            vec![e]
        );
        let many: Vec<PolicyEntry> = (0..=MAX_ENTRIES_PER_POLICY)
            .map(|i| entry(&format!("topic:t{i}"), "publish", "allow", &[]))
            .collect();
        assert_eq!(
            normalize_entries(many),
            Err(PolicyError::TooManyEntries {
                count: MAX_ENTRIES_PER_POLICY + 1
            })
        );
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-c]{0,4}"
    }

    fn action() -> impl Strategy<Value = Action> {
        prop::sample::select(Action::EVERY.to_vec())
    }

    fn pattern() -> impl Strategy<Value = ResourcePattern> {
        let np = prop_oneof![
            "[a-c]{1,3}".prop_map(NamePattern::Exact),
            "[a-c]{1,3}".prop_map(NamePattern::Prefix),
            Just(NamePattern::Any),
        ];
        prop_oneof![
            Just(ResourcePattern::Any),
            Just(ResourcePattern::Cluster),
            np.clone().prop_map(ResourcePattern::Topic),
            np.prop_map(ResourcePattern::Group),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = PolicyEntry> {
        (
            pattern(),
            prop::collection::vec(action(), 1..3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(resource, actions, deny, limited)| PolicyEntry {
                resource,
                actions: actions.into_iter().collect(),
                effect: if deny { Effect::Deny } else { Effect::Allow },
                sources: if limited {
                    vec!["10.0.0.0/8".parse().unwrap()]
                } else {
                    vec![]
                },
            })
    }

    fn arb_source() -> impl Strategy<Value = Option<IpAddr>> {
        prop_oneof![
            Just(None),
            Just(Some("10.1.1.1".parse().unwrap())),
            Just(Some("::ffff:10.1.1.1".parse().unwrap())),
            Just(Some("192.0.2.1".parse().unwrap())),
        ]
    }

    proptest! {
        /// Whatever else a policy says, a matching deny entry refuses the request, and the
        /// decision never depends on the order of the entries.
        #[test]
        fn deny_always_wins(
            entries in prop::collection::vec(arb_entry(), 0..8),
            topic in name(), act in action(), src in arb_source(), rotate in 0usize..8,
        ) {
            let resource = Resource::Topic(&topic);
            let decision = evaluate(&entries, &resource, act, src);
            let any_deny = entries.iter().any(|e| e.effect == Effect::Deny && e.matches(&resource, act, src));
            let any_allow = entries.iter().any(|e| e.effect == Effect::Allow && e.matches(&resource, act, src));
            prop_assert_eq!(decision.is_allowed(), !any_deny && any_allow);
            let mut rotated = entries.clone();
            if !rotated.is_empty() {
                let by = rotate % rotated.len();
                rotated.rotate_left(by);
            }
            prop_assert_eq!(evaluate(&rotated, &resource, act, src).is_allowed(), decision.is_allowed());
            // Adding a deny that covers everything refuses whatever was allowed.
            let mut with_deny = entries.clone();
            with_deny.push(PolicyEntry { resource: ResourcePattern::Any, actions: ActionSet::all(), effect: Effect::Deny, sources: vec![] });
            prop_assert!(!evaluate(&with_deny, &resource, act, src).is_allowed());
        }

        /// A prefix pattern matches exactly the names that start with the prefix, of its own
        /// resource type only.
        #[test]
        fn prefix_matches_exactly_the_names_with_that_prefix(prefix in "[a-c]{1,3}", topic in name()) {
            let entries = vec![PolicyEntry {
                resource: ResourcePattern::Topic(NamePattern::Prefix(prefix.clone())),
                actions: ActionSet::empty().with(Action::Publish),
                effect: Effect::Allow,
                sources: vec![],
            }];
            let allowed = evaluate(&entries, &Resource::Topic(&topic), Action::Publish, None).is_allowed();
            prop_assert_eq!(allowed, topic.starts_with(&prefix));
            prop_assert!(!evaluate(&entries, &Resource::Group(&topic), Action::Publish, None).is_allowed());
        }

        /// An exact pattern matches its name and nothing else.
        #[test]
        fn exact_matches_only_its_name(pat in "[a-c]{1,3}", topic in name()) {
            let p = ResourcePattern::Topic(NamePattern::Exact(pat.clone()));
            prop_assert_eq!(p.matches(&Resource::Topic(&topic)), topic == pat);
        }

        /// Text form round-trips for every pattern.
        #[test]
        fn patterns_round_trip(p in pattern()) {
            prop_assert_eq!(p.to_string().parse::<ResourcePattern>().unwrap(), p);
        }
    }
}

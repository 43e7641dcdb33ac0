//! Subscription filters: tag expressions, `*` (everything) or `A || B || C` (any of these
//! tags), and SQL92 expressions over message properties (`ferromq-filter`). Both become one
//! store read filter ([`read_filter`]), so filtered-out messages are skipped where they are read
//! and never handed out. A malformed or unsupported expression is refused when the consumer
//! subscribes (ILLEGAL_FILTER_EXPRESSION, naming what is wrong).

use std::sync::Arc;

use ferromq_filter::SqlFilter;
use ferromq_proto::v2::{self, Code, FilterType};
use ferromq_store::TagFilter as StoreFilter;

use crate::props::INTERNAL_PREFIX;
use crate::status::RpcError;

/// The store read filter for a subscription's filter expression (absent: everything).
pub fn read_filter(f: Option<&v2::FilterExpression>) -> Result<StoreFilter, RpcError> {
    let Some(f) = f else {
        return Ok(StoreFilter::default());
    };
    match FilterType::try_from(f.r#type).unwrap_or(FilterType::Unspecified) {
        FilterType::Tag | FilterType::Unspecified => {
            let expr = match TagFilter::parse(&f.expression)? {
                TagFilter::All => "*".to_string(),
                TagFilter::Any(tags) => tags.join("||"),
            };
            Ok(StoreFilter::parse(&expr))
        }
        FilterType::Sql => {
            let sql = SqlFilter::parse(&f.expression)
                .map_err(|e| RpcError::new(Code::IllegalFilterExpression, e.to_string()))?;
            // FerroMQ's internal properties are not the user's to select on.
            let test = move |m: &ferromq_store::StoredMessage| {
                sql.matches_with(&|k: &str| {
                    if k.starts_with(INTERNAL_PREFIX) {
                        None
                    } else {
                        m.properties.get(k).map(String::as_str)
                    }
                })
            };
            Ok(StoreFilter::default().with_property_test(Arc::new(test)))
        }
    }
}

/// A parsed subscription filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All,
    /// Sorted, de-duplicated tags; a message matches when its tag is one of them.
    Any(Vec<String>),
}

impl TagFilter {
    /// Parses a tag expression. An empty expression means `*`, as in RocketMQ.
    pub fn parse(expression: &str) -> Result<TagFilter, RpcError> {
        let e = expression.trim();
        if e.is_empty() || e == "*" {
            return Ok(TagFilter::All);
        }
        let mut tags: Vec<String> = e
            .split("||")
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        if tags.is_empty() {
            return Err(RpcError::new(
                Code::IllegalFilterExpression,
                format!("tag expression {expression:?} names no tag"),
            ));
        }
        if tags.iter().any(|t| t == "*") {
            return Ok(TagFilter::All);
        }
        tags.sort();
        tags.dedup();
        Ok(TagFilter::Any(tags))
    }

    /// Parses the protocol's filter message; an absent filter means `*`.
    pub fn from_proto(f: Option<&v2::FilterExpression>) -> Result<TagFilter, RpcError> {
        let Some(f) = f else {
            return Ok(TagFilter::All);
        };
        match FilterType::try_from(f.r#type).unwrap_or(FilterType::Unspecified) {
            FilterType::Tag | FilterType::Unspecified => TagFilter::parse(&f.expression),
            FilterType::Sql => match SqlFilter::parse(&f.expression) {
                // Tag-wise an SQL subscription takes everything; `read_filter` applies the SQL.
                Ok(_) => Ok(TagFilter::All),
                Err(e) => Err(RpcError::new(Code::IllegalFilterExpression, e.to_string())),
            },
        }
    }

    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Any(tags) => {
                tag.is_some_and(|t| tags.binary_search_by(|x| x.as_str().cmp(t)).is_ok())
            }
        }
    }

    /// Tags to hand to the store's tag-hash pre-filter (`None` = all).
    pub fn tags(&self) -> Option<&[String]> {
        match self {
            TagFilter::All => None,
            TagFilter::Any(t) => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_empty_match_everything() {
        assert_eq!(TagFilter::parse("*").unwrap(), TagFilter::All);
        assert_eq!(TagFilter::parse("").unwrap(), TagFilter::All);
        assert!(TagFilter::All.matches(None));
    }

    #[test]
    fn alternatives_match_any_listed_tag_only() {
        let f = TagFilter::parse("TagA || TagB").unwrap();
        assert!(f.matches(Some("TagA")));
        assert!(f.matches(Some("TagB")));
        assert!(!f.matches(Some("TagC")));
        assert!(!f.matches(None));
    }

    #[test]
    fn bad_sql_is_refused_with_the_filter_code_and_good_sql_accepted() {
        let sql = |e: &str| v2::FilterExpression {
            r#type: FilterType::Sql as i32,
            expression: e.into(),
        };
        let err = read_filter(Some(&sql("a >"))).unwrap_err();
        assert_eq!(err.code, Code::IllegalFilterExpression);
        assert!(read_filter(Some(&sql("a LIKE 'x'"))).is_err());
        assert!(TagFilter::from_proto(Some(&sql("a >"))).is_err());
        assert!(read_filter(Some(&sql("a > 1 AND TAGS = 'x'"))).is_ok());
        assert!(TagFilter::parse("||").is_err());
    }
}

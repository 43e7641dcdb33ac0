//! Tag filter expressions of subscriptions: `*` (everything) or `A || B || C` (any of these
//! tags). SQL92 filters are refused with ILLEGAL_FILTER_EXPRESSION until they are implemented.

use ferromq_proto::v2::{self, Code, FilterType};

use crate::status::RpcError;

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
            FilterType::Sql => Err(RpcError::new(
                Code::IllegalFilterExpression,
                "SQL92 filter expressions are not supported by this FerroMQ version; use tags",
            )),
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
    fn sql_is_refused_with_the_filter_code() {
        let f = v2::FilterExpression {
            r#type: FilterType::Sql as i32,
            expression: "a > 1".into(),
        };
        assert_eq!(
            TagFilter::from_proto(Some(&f)).unwrap_err().code,
            Code::IllegalFilterExpression
        );
        assert!(TagFilter::parse("||").is_err());
    }
}

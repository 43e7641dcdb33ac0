//! Subscription filters: tag expressions (`*` for everything, `A || B || C` for any of these
//! tags) and SQL92 expressions over message properties (`ferromq-filter`). Both compile to one
//! store read filter, so filtered-out messages are skipped where they are read and never handed
//! out. A malformed or unsupported expression is refused when the consumer subscribes, naming
//! what is wrong.

use std::sync::Arc;

use ferromq_filter::SqlFilter;
use ferromq_store::{StoredMessage, TagFilter};

use crate::error::EngineError;
use crate::props::INTERNAL_PREFIX;

/// The language of a subscription's filter expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Tag,
    Sql,
}

/// Compiles a subscription filter into the store's read filter. An absent filter (`None`) takes
/// everything.
pub fn compile(filter: Option<(FilterKind, &str)>) -> Result<TagFilter, EngineError> {
    let Some((kind, expression)) = filter else {
        return Ok(TagFilter::default());
    };
    match kind {
        FilterKind::Tag => {
            let e = expression.trim();
            // An empty expression means `*`, as in RocketMQ; `||` alone names nothing.
            if !e.is_empty() && e.split("||").all(|t| t.trim().is_empty()) {
                return Err(EngineError::IllegalFilter(format!(
                    "tag expression {expression:?} names no tag"
                )));
            }
            Ok(TagFilter::parse(e))
        }
        FilterKind::Sql => {
            let sql = SqlFilter::parse(expression)
                .map_err(|e| EngineError::IllegalFilter(e.to_string()))?;
            // FerroMQ's internal properties are not the user's to select on.
            let test = move |m: &StoredMessage| {
                sql.matches_with(&|k: &str| {
                    if k.starts_with(INTERNAL_PREFIX) {
                        None
                    } else {
                        m.properties.get(k).map(String::as_str)
                    }
                })
            };
            Ok(TagFilter::default().with_property_test(Arc::new(test)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(e: &str) -> Result<TagFilter, EngineError> {
        compile(Some((FilterKind::Tag, e)))
    }

    #[test]
    fn star_empty_and_absent_take_everything() {
        assert!(tag("*").unwrap().is_all());
        assert!(tag("").unwrap().is_all());
        assert!(tag("a || *").unwrap().is_all());
        assert!(compile(None).unwrap().is_all());
    }

    #[test]
    fn alternatives_match_any_listed_tag_only() {
        let f = tag("TagA || TagB").unwrap();
        assert!(f.matches(Some("TagA")));
        assert!(f.matches(Some("TagB")));
        assert!(!f.matches(Some("TagC")));
        assert!(!f.matches(None));
    }

    #[test]
    fn bad_expressions_are_refused_and_good_sql_accepted() {
        assert!(matches!(tag("||"), Err(EngineError::IllegalFilter(_))));
        let sql = |e: &str| compile(Some((FilterKind::Sql, e)));
        assert!(matches!(sql("a >"), Err(EngineError::IllegalFilter(_))));
        assert!(sql("a LIKE 'x'").is_err());
        assert!(sql("a > 1 AND TAGS = 'x'").is_ok());
    }
}

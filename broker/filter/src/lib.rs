//! SQL92 filter expressions over message properties: the subset RocketMQ consumers use to
//! subscribe with `FilterExpression { type: SQL }`.
//!
//! The text is parsed once, when a consumer subscribes, by `sqlparser` (its generic dialect),
//! and the syntax tree is then narrowed to [`Expr`], which holds only what RocketMQ defines:
//! comparisons of a property with a number (`=`, `<>`, `<`, `<=`, `>`, `>=`, `BETWEEN`), of a
//! property with a string (`=`, `<>`, `IN`), `IS [NOT] NULL`, `TRUE`/`FALSE`, and `AND`, `OR`,
//! `NOT` with parentheses. Anything else is refused at subscription time with a message naming
//! the construct, so a consumer never silently gets a different selection than it asked for.
//!
//! Evaluation follows SQL's three-valued logic, as RocketMQ does: a comparison with a missing
//! property, or a numeric comparison with a property that is not a number, is *unknown*;
//! `NOT unknown` is unknown; `unknown AND false` is false; `unknown OR true` is true. A message
//! is delivered only when the whole expression is *true*.

use std::collections::BTreeMap;

use sqlparser::ast::{self, BinaryOperator, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// Longest expression accepted, in bytes: filters are evaluated for every candidate message.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The text is not a SQL expression.
    #[error("SQL filter {expression:?} does not parse: {reason}")]
    Syntax { expression: String, reason: String },
    /// The text parses but uses something outside RocketMQ's SQL92 subset.
    #[error(
        "SQL filter {expression:?} uses {construct}, which RocketMQ's SQL92 filters do not support"
    )]
    Unsupported {
        expression: String,
        construct: String,
    },
    /// Empty or too long.
    #[error("SQL filter {expression:?} is {problem}")]
    Invalid { expression: String, problem: String },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator seen from the other side (`5 < a` is `a > 5`).
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// A literal operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
}

/// The supported expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Const(bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `property op literal`.
    Compare {
        property: String,
        op: CmpOp,
        value: Literal,
    },
    /// `property [NOT] BETWEEN low AND high` (numbers, inclusive).
    Between {
        property: String,
        low: f64,
        high: f64,
        negated: bool,
    },
    /// `property [NOT] IN ('a', 'b')`.
    In {
        property: String,
        values: Vec<String>,
        negated: bool,
    },
    /// `property IS [NOT] NULL`.
    IsNull {
        property: String,
        negated: bool,
    },
}

/// A parsed, validated SQL92 filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    text: String,
    expr: Expr,
}

impl SqlFilter {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<SqlFilter, FilterError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(FilterError::Invalid {
                expression: text.to_string(),
                problem: "empty".into(),
            });
        }
        if trimmed.len() > MAX_EXPRESSION_LEN {
            return Err(FilterError::Invalid {
                expression: format!("{}...", &trimmed[..64.min(trimmed.len())]),
                problem: format!("longer than {MAX_EXPRESSION_LEN} bytes"),
            });
        }
        let syntax = |reason: String| FilterError::Syntax {
            expression: text.to_string(),
            reason,
        };
        let mut parser = Parser::new(&GenericDialect {})
            .try_with_sql(trimmed)
            .map_err(|e| syntax(e.to_string()))?;
        let parsed = parser.parse_expr().map_err(|e| syntax(e.to_string()))?;
        let rest = parser.peek_token();
        if rest.token != Token::EOF {
            return Err(syntax(format!(
                "unexpected {} after the expression",
                rest.token
            )));
        }
        let expr = narrow(&parsed, text)?;
        Ok(SqlFilter {
            text: trimmed.to_string(),
            expr,
        })
    }

    /// The expression as given (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The validated tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether a message with these properties is selected (the expression is *true*).
    pub fn matches(&self, properties: &BTreeMap<String, String>) -> bool {
        eval(&self.expr, &|k| properties.get(k).map(String::as_str)) == Some(true)
    }

    /// Like [`SqlFilter::matches`], with properties looked up by a function (for messages whose
    /// properties live in more than one map, e.g. user properties plus the tag).
    pub fn matches_with<'a>(&self, lookup: &dyn Fn(&str) -> Option<&'a str>) -> bool {
        eval(&self.expr, lookup) == Some(true)
    }
}

fn unsupported(text: &str, construct: impl Into<String>) -> FilterError {
    FilterError::Unsupported {
        expression: text.to_string(),
        construct: construct.into(),
    }
}

fn property_name(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Identifier(id) => Some(id.value.clone()),
        ast::Expr::CompoundIdentifier(parts) => Some(
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join("."),
        ),
        ast::Expr::Nested(inner) => property_name(inner),
        _ => None,
    }
}

fn literal(e: &ast::Expr, text: &str) -> Result<Option<Literal>, FilterError> {
    Ok(match e {
        ast::Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(Literal::Number(
                n.parse::<f64>()
                    .map_err(|_| unsupported(text, format!("the number {n}")))?,
            )),
            Value::SingleQuotedString(s) => Some(Literal::Text(s.clone())),
            Value::DoubleQuotedString(s) => Some(Literal::Text(s.clone())),
            _ => None,
        },
        ast::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr, text)? {
            Some(Literal::Number(n)) => Some(Literal::Number(-n)),
            _ => None,
        },
        ast::Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => match literal(expr, text)? {
            Some(Literal::Number(n)) => Some(Literal::Number(n)),
            _ => None,
        },
        ast::Expr::Nested(inner) => literal(inner, text)?,
        _ => None,
    })
}

fn number(e: &ast::Expr, text: &str, what: &str) -> Result<f64, FilterError> {
    match literal(e, text)? {
        Some(Literal::Number(n)) => Ok(n),
        _ => Err(unsupported(
            text,
            format!("{what} {e} (BETWEEN takes numbers)"),
        )),
    }
}

fn narrow(e: &ast::Expr, text: &str) -> Result<Expr, FilterError> {
    use ast::Expr as E;
    Ok(match e {
        E::Nested(inner) => narrow(inner, text)?,
        E::Value(v) => match &v.value {
            Value::Boolean(b) => Expr::Const(*b),
            other => return Err(unsupported(text, format!("the bare value {other}"))),
        },
        E::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Expr::Not(Box::new(narrow(expr, text)?)),
        E::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => Expr::And(
                Box::new(narrow(left, text)?),
                Box::new(narrow(right, text)?),
            ),
            BinaryOperator::Or => Expr::Or(
                Box::new(narrow(left, text)?),
                Box::new(narrow(right, text)?),
            ),
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::Ne,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::Le,
                    BinaryOperator::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let (property, op, value) = match (property_name(left), literal(right, text)?) {
                    (Some(p), Some(v)) => (p, op, v),
                    _ => match (literal(left, text)?, property_name(right)) {
                        (Some(v), Some(p)) => (p, op.flipped(), v),
                        _ => {
                            return Err(unsupported(
                                text,
                                format!("the comparison {e} (compare a property with a constant)"),
                            ))
                        }
                    },
                };
                if matches!(value, Literal::Text(_)) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    return Err(unsupported(
                        text,
                        format!("the comparison {e} (strings compare with = and <> only)"),
                    ));
                }
                Expr::Compare {
                    property,
                    op,
                    value,
                }
            }
            other => return Err(unsupported(text, format!("the operator {other}"))),
        },
        E::Between {
            expr,
            negated,
            low,
            high,
        } => Expr::Between {
            property: property_name(expr).ok_or_else(|| {
                unsupported(text, format!("BETWEEN on {expr} (it takes a property)"))
            })?,
            low: number(low, text, "the bound")?,
            high: number(high, text, "the bound")?,
            negated: *negated,
        },
        E::In {
            expr,
            target,
            negated,
            ..
        } => {
            let ast::InTarget::List(list) = target else {
                return Err(unsupported(
                    text,
                    format!("the IN target in {e} (IN takes a list of strings)"),
                ));
            };
            let property = property_name(expr)
                .ok_or_else(|| unsupported(text, format!("IN on {expr} (it takes a property)")))?;
            let mut values = Vec::with_capacity(list.len());
            for item in list {
                match literal(item, text)? {
                    Some(Literal::Text(s)) => values.push(s),
                    _ => {
                        return Err(unsupported(
                            text,
                            format!("{item} in an IN list (IN takes strings)"),
                        ))
                    }
                }
            }
            Expr::In {
                property,
                values,
                negated: *negated,
            }
        }
        E::IsNull(inner) | E::IsNotNull(inner) => Expr::IsNull {
            property: property_name(inner).ok_or_else(|| {
                unsupported(text, format!("IS NULL on {inner} (it takes a property)"))
            })?,
            negated: matches!(e, E::IsNotNull(_)),
        },
        E::IsTrue(inner) => narrow(inner, text)?,
        E::IsFalse(inner) => Expr::Not(Box::new(narrow(inner, text)?)),
        E::Identifier(id) => {
            return Err(unsupported(
                text,
                format!("the bare property {} (compare it with something)", id.value),
            ))
        }
        other => return Err(unsupported(text, format!("{other}"))),
    })
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn eval<'a>(e: &Expr, get: &dyn Fn(&str) -> Option<&'a str>) -> Option<bool> {
    match e {
        Expr::Const(b) => Some(*b),
        Expr::And(a, b) => {
            let l = eval(a, get);
            if l == Some(false) {
                return Some(false);
            }
            and3(l, eval(b, get))
        }
        Expr::Or(a, b) => {
            let l = eval(a, get);
            if l == Some(true) {
                return Some(true);
            }
            or3(l, eval(b, get))
        }
        Expr::Not(a) => eval(a, get).map(|v| !v),
        Expr::Compare {
            property,
            op,
            value,
        } => {
            let actual = get(property)?;
            match value {
                Literal::Text(s) => Some(op.holds(actual.cmp(s.as_str()))),
                Literal::Number(n) => {
                    let a = actual.trim().parse::<f64>().ok()?;
                    a.partial_cmp(n).map(|ord| op.holds(ord))
                }
            }
        }
        Expr::Between {
            property,
            low,
            high,
            negated,
        } => {
            let a = get(property)?.trim().parse::<f64>().ok()?;
            let inside = a >= *low && a <= *high;
            Some(inside != *negated)
        }
        Expr::In {
            property,
            values,
            negated,
        } => {
            let a = get(property)?;
            Some(values.iter().any(|v| v == a) != *negated)
        }
        Expr::IsNull { property, negated } => Some(get(property).is_none() != *negated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(expr: &str, pairs: &[(&str, &str)]) -> bool {
        SqlFilter::parse(expr)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(&props(pairs))
    }

    #[test]
    fn numeric_comparisons() {
        assert!(sel("a > 5", &[("a", "6")]));
        assert!(!sel("a > 5", &[("a", "5")]));
        assert!(sel("a >= 5", &[("a", "5")]));
        assert!(sel("a < 5.5", &[("a", "5")]));
        assert!(sel("a <= -1", &[("a", "-2")]));
        assert!(sel("a = 10", &[("a", "10.0")]));
        assert!(sel("a <> 10", &[("a", "11")]));
        assert!(
            sel("5 < a", &[("a", "6")]),
            "constant on the left is flipped"
        );
    }

    #[test]
    fn string_comparisons_and_in() {
        assert!(sel("region = 'eu'", &[("region", "eu")]));
        assert!(!sel("region = 'eu'", &[("region", "us")]));
        assert!(sel("region <> 'eu'", &[("region", "us")]));
        assert!(sel("region IN ('eu', 'us')", &[("region", "us")]));
        assert!(sel("region NOT IN ('eu', 'us')", &[("region", "ap")]));
    }

    #[test]
    fn between_is_inclusive() {
        assert!(sel("a BETWEEN 1 AND 3", &[("a", "1")]));
        assert!(sel("a BETWEEN 1 AND 3", &[("a", "3")]));
        assert!(!sel("a BETWEEN 1 AND 3", &[("a", "4")]));
        assert!(sel("a NOT BETWEEN 1 AND 3", &[("a", "4")]));
    }

    #[test]
    fn missing_properties_are_unknown_never_true() {
        assert!(!sel("a > 5", &[]));
        assert!(!sel("NOT (a > 5)", &[]), "NOT unknown is unknown");
        assert!(!sel("a = 'x'", &[]));
        assert!(!sel("a IN ('x')", &[]));
        assert!(!sel("a NOT IN ('x')", &[]));
        assert!(
            sel("a > 5 OR b = 'y'", &[("b", "y")]),
            "unknown OR true is true"
        );
        assert!(!sel("a > 5 AND b = 'y'", &[("b", "y")]));
        assert!(!sel("a > 5", &[("a", "not a number")]));
    }

    #[test]
    fn null_tests_and_constants() {
        assert!(sel("a IS NULL", &[]));
        assert!(!sel("a IS NULL", &[("a", "1")]));
        assert!(sel("a IS NOT NULL", &[("a", "")]));
        assert!(sel("TRUE", &[]));
        assert!(!sel("FALSE", &[]));
    }

    #[test]
    fn logic_and_parentheses() {
        let p = &[("a", "1"), ("b", "x")];
        assert!(sel("(a = 1 OR a = 2) AND b = 'x'", p));
        assert!(!sel("a = 1 AND NOT (b = 'x')", p));
        assert!(sel("NOT a = 2", p));
    }

    #[test]
    fn outside_the_subset_is_refused_with_what_was_wrong() {
        for (expr, needle) in [
            ("a LIKE 'x%'", "LIKE"),
            ("a + 1 > 2", "comparison"),
            ("a > b", "comparison"),
            ("a > 'x'", "strings compare with = and <> only"),
            ("a IN (1, 2)", "IN takes strings"),
            ("a BETWEEN 'x' AND 'y'", "BETWEEN takes numbers"),
            ("a", "bare property"),
            ("upper(a) = 'X'", "comparison"),
        ] {
            let err = SqlFilter::parse(expr).expect_err(expr).to_string();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn malformed_text_is_a_syntax_error() {
        for expr in ["a >", "a > 1 AND", "(a > 1", "a > 1 b", "a = 'x"] {
            assert!(
                matches!(SqlFilter::parse(expr), Err(FilterError::Syntax { .. })),
                "{expr}: {:?}",
                SqlFilter::parse(expr)
            );
        }
        assert!(matches!(
            SqlFilter::parse("  "),
            Err(FilterError::Invalid { .. })
        ));
        assert!(matches!(
            SqlFilter::parse(&"a = 1 OR ".repeat(1000)),
            Err(FilterError::Invalid { .. })
        ));
    }

    proptest! {
        /// The parser never panics, whatever the consumer sends.
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = SqlFilter::parse(&s);
        }

        /// A numeric comparison agrees with Rust's comparison of the same numbers.
        #[test]
        fn numeric_comparison_agrees_with_f64(a in -1.0e6f64..1.0e6, b in -1.0e6f64..1.0e6) {
            let p = props(&[("x", &a.to_string())]);
            let f = SqlFilter::parse(&format!("x > {b}")).expect("parses");
            prop_assert_eq!(f.matches(&p), a > b);
            let f = SqlFilter::parse(&format!("x <= {b}")).expect("parses");
            prop_assert_eq!(f.matches(&p), a <= b);
        }

        /// NOT never turns an unknown (missing property) into a match.
        #[test]
        fn missing_property_never_matches_a_comparison(n in -1000i64..1000, negate in any::<bool>()) {
            let e = if negate { format!("NOT (x = {n})") } else { format!("x = {n}") };
            prop_assert!(!SqlFilter::parse(&e).expect("parses").matches(&BTreeMap::new()));
        }
    }
}

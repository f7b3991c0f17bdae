//! Label selectors in string form (a Scale's `status.selector`, e.g. `app=web,tier in (a,b)`),
//! parsed into the controllers' [`Selector`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::selector::Selector;

/// A selector string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0:?}")]
pub struct SelectorParseError(pub String);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn req(key: &str, op: &str, values: Vec<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.trim().to_string(),
        operator: op.into(),
        values: (!values.is_empty()).then_some(values),
    }
}

fn set_values(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// Parses `s` (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`, comma-joined).
pub fn parse(s: &str) -> Result<Selector, SelectorParseError> {
    let mut sel = LabelSelector::default();
    let mut labels = std::collections::BTreeMap::new();
    let mut exprs = Vec::new();
    for part in split_top(s) {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        let err = || SelectorParseError(p.to_string());
        if let Some(k) = p.strip_prefix('!') {
            exprs.push(req(k, "DoesNotExist", vec![]));
        } else if let Some((k, v)) = p.split_once("!=") {
            exprs.push(req(k, "NotIn", vec![v.trim().to_string()]));
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            labels.insert(k.trim().to_string(), v.trim().to_string());
        } else if let Some((k, rest)) = p.split_once(" notin ") {
            exprs.push(req(k, "NotIn", set_values(rest).ok_or_else(err)?));
        } else if let Some((k, rest)) = p.split_once(" in ") {
            exprs.push(req(k, "In", set_values(rest).ok_or_else(err)?));
        } else if p.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
            exprs.push(req(p, "Exists", vec![]));
        } else {
            return Err(err());
        }
    }
    sel.match_labels = (!labels.is_empty()).then_some(labels);
    sel.match_expressions = (!exprs.is_empty()).then_some(exprs);
    Ok(Selector::from_label_selector(&sel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_table() {
        let s = parse("app=web,tier in (a, b),!canary,env!=prod,zone").unwrap();
        assert!(s.matches(&l(&[("app", "web"), ("tier", "a"), ("zone", "z")])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "c"), ("zone", "z")])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&l(&[
            ("app", "web"),
            ("tier", "a"),
            ("zone", "z"),
            ("env", "prod")
        ])));
        assert!(parse("app==web").unwrap().matches(&l(&[("app", "web")])));
        assert!(parse("k notin (x)").unwrap().matches(&l(&[("k", "y")])));
        assert!(parse("a in b").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}

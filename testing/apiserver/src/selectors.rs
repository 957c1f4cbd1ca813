//! Label and field selectors, as the API server parses them from `labelSelector` and
//! `fieldSelector`.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn key(text: &str) -> Result<String, String> {
    let key = text.trim();
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['=', '!', '(', ')']) {
        Err(format!("invalid label key {key:?}"))
    } else {
        Ok(key.to_owned())
    }
}

impl LabelSelector {
    /// Parses `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)` and
    /// `key notin (a,b)`, comma-separated.
    pub(crate) fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(requirements));
        }
        for term in split_top_level(text) {
            let term = term.trim();
            let requirement = if let Some(rest) = term.strip_prefix('!') {
                Requirement::NotExists(key(rest)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(key(k)?, v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(key(k)?, v.trim().to_owned())
            } else if let Some((head, set)) = term.split_once('(') {
                let set = set
                    .strip_suffix(')')
                    .ok_or_else(|| format!("unclosed set in {term:?}"))?;
                let values = set.split(',').map(|v| v.trim().to_owned()).collect();
                let mut words = head.split_whitespace();
                let (Some(k), Some(op), None) = (words.next(), words.next(), words.next()) else {
                    return Err(format!("invalid requirement {term:?}"));
                };
                match op {
                    "in" => Requirement::In(key(k)?, values),
                    "notin" => Requirement::NotIn(key(k)?, values),
                    _ => return Err(format!("unknown operator {op:?} in {term:?}")),
                }
            } else {
                Requirement::Exists(key(term)?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        })
    }
}

/// A parsed `fieldSelector`: `path=value`, `path==value` or `path!=value`, comma-separated,
/// where `path` is a dotted path into the object (`metadata.name`, `spec.type`...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    /// Parses a field selector.
    pub(crate) fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(format!("invalid field selector {term:?}"));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("invalid field path in {term:?}"));
            }
            requirements.push((path, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(requirements))
    }

    /// Whether an object satisfies every requirement (a missing field counts as empty).
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let found = path.iter().try_fold(object, |v, segment| v.get(segment));
            let text = match found {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (text == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn kube_proxy_selector() {
        let selector = LabelSelector::parse(
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
        )
        .unwrap();
        assert!(selector.matches(&json!({"metadata": {"name": "x"}})));
        assert!(selector.matches(&labelled(json!({"app": "web"}))));
        assert!(!selector.matches(&labelled(json!({"service.kubernetes.io/headless": ""}))));
        assert!(!selector.matches(&labelled(
            json!({"service.kubernetes.io/service-proxy-name": "other"})
        )));
    }

    #[test]
    fn operators() {
        let web = labelled(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("app", true),
            ("!app", false),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("zone!=a", true),
            ("app in (db, web)", true),
            ("app notin (db,web)", false),
            ("zone notin (a)", true),
            ("app=web, tier=front", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&web), expected, "{text}");
        }
        assert!(LabelSelector::parse("app in (a").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn fields() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        let check = |text: &str| FieldSelector::parse(text).unwrap().matches(&node);
        assert!(check("metadata.name=n1"));
        assert!(!check("metadata.name=n2"));
        assert!(check("metadata.name!=n2"));
        assert!(check("metadata.namespace="));
        assert!(check("spec.unschedulable=true,metadata.name==n1"));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}

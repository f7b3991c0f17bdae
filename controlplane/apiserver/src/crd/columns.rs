//! `additionalPrinterColumns` of a CRD version: the Table columns `kubectl get` shows for its
//! objects (upstream's default when none are given: Name and Age). A column's `jsonPath` is the
//! simple form CRDs use: `.spec.replicas`, `.status.conditions[0].type`, `.metadata.labels.app`.

use serde_json::Value;

/// One printer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub ty: String,
    /// `format` (e.g. `int32`), may be empty.
    pub format: String,
    /// Description.
    pub description: String,
    /// 0 shows always, more only with `-o wide`.
    pub priority: i64,
    /// Where the value is.
    pub json_path: String,
}

/// The columns of a CRD version (`spec.versions[i]`).
pub fn from_crd_version(v: &Value) -> Vec<Column> {
    v["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Column {
            name: c["name"].as_str().unwrap_or("").to_string(),
            ty: c["type"].as_str().unwrap_or("string").to_string(),
            format: c["format"].as_str().unwrap_or("").to_string(),
            description: c["description"].as_str().unwrap_or("").to_string(),
            priority: c["priority"].as_i64().unwrap_or(0),
            json_path: c["jsonPath"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// The value at a simple JSONPath (`.a.b[0].c`); `None` when a step is missing.
pub fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        let (key, indexes) = match step.find('[') {
            Some(i) => (&step[..i], &step[i..]),
            None => (step, ""),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(n)?;
        }
    }
    Some(cur)
}

/// The cell of `col` for `obj`: the value (a date stays a timestamp string, which kubectl
/// shows as an age), or null when missing.
pub fn cell(col: &Column, obj: &Value) -> Value {
    match lookup(obj, &col.json_path) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(other) => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_and_cells() {
        let v = json!({"additionalPrinterColumns": [
            {"name": "Repo", "type": "string", "jsonPath": ".spec.gitRepo"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[0].status", "priority": 1}]});
        let cols = from_crd_version(&v);
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[1].priority, 1);
        let obj = json!({"spec": {"gitRepo": "https://x"}, "status": {"conditions": [{"status": "True"}]}});
        assert_eq!(cell(&cols[0], &obj), json!("https://x"));
        assert_eq!(cell(&cols[1], &obj), json!("True"));
        assert_eq!(cell(&cols[1], &json!({})), Value::Null);
    }
}

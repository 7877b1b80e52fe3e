//! The server-side Table `kubectl get apikeys` asks for: the Name column, then the CRD's
//! printer columns, each cell read by its JSONPath, dates shown as ages, as the API server's
//! CRD table convertor does. Other resources answer a plain list, which kubectl prints itself.

use serde_json::{Value, json};

/// Whether a request accepts a `meta.k8s.io` Table (kubectl's `get` does).
pub(super) fn wanted(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("as=Table")))
}

/// A list, or one object, of ApiKeys as a Table.
pub(super) fn api_keys(answer: &Value, now: jiff::Timestamp) -> Value {
    let crd = &super::discovery::crds()[0];
    let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap_or_default();
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    definitions.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format.clone().unwrap_or_default(),
            "description": c.description.clone().unwrap_or_default(), "priority": c.priority.unwrap_or(0)})
    }));
    let objects: Vec<&Value> = match answer.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![answer],
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(columns.iter().map(|c| cell(object, &c.json_path, &c.type_, now)));
            json!({"cells": cells, "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": answer.get("metadata").filter(|_| answer.get("items").is_some()).cloned().unwrap_or_else(|| json!({})),
        "columnDefinitions": definitions, "rows": rows,
    })
}

/// One cell: the value at a simple JSONPath (`.status.state`); strings as they are, dates as
/// ages, other values as JSON; missing as null (kubectl shows `<none>`).
fn cell(object: &Value, path: &str, type_: &str, now: jiff::Timestamp) -> Value {
    let pointer = path.replace('.', "/");
    let Some(value) = object.pointer(&pointer).filter(|v| !v.is_null()) else { return Value::Null };
    match (type_, value) {
        ("date", Value::String(text)) => match text.parse::<jiff::Timestamp>() {
            Ok(at) => Value::String(age(now.duration_since(at).as_secs())),
            Err(_) => value.clone(),
        },
        (_, Value::String(_)) => value.clone(),
        _ => Value::String(value.to_string()),
    }
}

/// An age as kubectl shows it (`45s`, `3m20s`, `5h`, `12d`); the future is `<invalid>`.
fn age(seconds: i64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        s if s < 0 => "<invalid>".to_owned(),
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", seconds % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if d < 2 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_row_of_the_printer_columns() {
        let key = json!({"metadata": {"name": "crm", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"scopes": ["orders:read"]}, "status": {"state": "Active", "className": "partner"}});
        let table = api_keys(
            &json!({"items": [key], "metadata": {"resourceVersion": "7"}}),
            "2026-01-01T00:05:00Z".parse().unwrap(),
        );
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        // `Requests 24h` has priority 1: kubectl shows it with `-o wide` only.
        assert_eq!(
            names,
            [
                "Name",
                "State",
                "Prefix",
                "Class",
                "Scopes",
                "Expires",
                "Next rotation",
                "Last used",
                "Requests 24h",
                "Age"
            ]
        );
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["crm", "Active", null, "partner", "[\"orders:read\"]", null, null, null, null, "5m0s"])
        );
    }
}

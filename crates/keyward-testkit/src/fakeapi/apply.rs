//! Server-side apply's removals: a field the same manager applied before and no longer
//! applies is removed, unless another manager owns it too. kube-fake-client records field
//! ownership (`metadata.managedFields`, `fieldsV1` with `f:` keys, lists as whole values) and
//! merges each apply, but never removes anything; the removal is done here, from the
//! ownership it recorded.
//!
//! Known difference: kube-fake-client records ownership for applies only, so a field another
//! manager set by update (not apply) does not keep it.

use serde_json::{Map, Value};

/// Top-level keys an apply never owns.
const SKIP_TOP_LEVEL: &[&str] = &["apiVersion", "kind"];
/// Metadata the server keeps, never owned.
const SKIP_METADATA: &[&str] =
    &["managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "name", "namespace"];

/// The `fieldsV1` trie an applied configuration owns, built as kube-fake-client builds it.
fn trie(applied: &Value) -> Map<String, Value> {
    fn walk(object: &Map<String, Value>, top: bool, metadata: bool) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in object {
            if (top && SKIP_TOP_LEVEL.contains(&key.as_str())) || (metadata && SKIP_METADATA.contains(&key.as_str())) {
                continue;
            }
            match value.as_object() {
                Some(child) => {
                    let subtree = walk(child, false, top && key == "metadata");
                    if !subtree.is_empty() {
                        out.insert(format!("f:{key}"), Value::Object(subtree));
                    }
                }
                None => {
                    out.insert(format!("f:{key}"), Value::Object(Map::new()));
                }
            }
        }
        out
    }
    applied.as_object().map(|object| walk(object, true, false)).unwrap_or_default()
}

/// Every leaf path of a trie, as field names.
fn leaves(trie: &Map<String, Value>, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (key, child) in trie {
        let Some(field) = key.strip_prefix("f:") else { continue };
        prefix.push(field.to_owned());
        match child.as_object().filter(|c| !c.is_empty()) {
            Some(child) => leaves(child, prefix, out),
            None => out.push(prefix.clone()),
        }
        prefix.pop();
    }
}

/// Whether a trie covers `path`: the path is in it, or a whole value above it is.
fn covers(trie: &Map<String, Value>, path: &[String]) -> bool {
    let mut node = trie;
    for field in path {
        match node.get(&format!("f:{field}")).and_then(Value::as_object) {
            Some(child) if child.is_empty() => return true,
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

/// What `manager`'s apply of `applied` to `existing` removes: the fields it applied last
/// time (on the main resource) and not now, that no other manager owns.
#[must_use]
pub fn removed(existing: &Value, applied: &Value, manager: &str) -> Vec<Vec<String>> {
    let entries = existing.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let main = |entry: &&Value| entry.get("subresource").and_then(Value::as_str).unwrap_or("").is_empty();
    let fields = |entry: &Value| entry.get("fieldsV1").and_then(Value::as_object).cloned().unwrap_or_default();
    let Some(before) = entries.iter().filter(main).find(|e| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
    }) else {
        return Vec::new();
    };
    let others: Vec<Map<String, Value>> = entries
        .iter()
        .filter(main)
        .filter(|e| e.get("manager").and_then(Value::as_str) != Some(manager))
        .map(fields)
        .collect();
    let now = trie(applied);
    let mut owned = Vec::new();
    leaves(&fields(before), &mut Vec::new(), &mut owned);
    owned.retain(|path| !covers(&now, path) && !others.iter().any(|other| covers(other, path)));
    owned
}

/// Remove the field at `path` from `object`, if it is there.
pub fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = object;
    for field in parents {
        match node.get_mut(field.as_str()) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_applied_before_and_not_now_go_unless_another_manager_owns_them() {
        let existing = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}, "managedFields": [
            {"manager": "me", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}, "f:c": {}}}, "f:data": {}}},
            {"manager": "other", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:c": {}}}}},
        ]}, "data": {"x": "1"}});
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n", "labels": {"a": "1"}}});
        let mut gone = removed(&existing, &applied, "me");
        gone.sort();
        assert_eq!(gone, [vec!["data".to_owned()], vec!["metadata".to_owned(), "labels".to_owned(), "b".to_owned()]]);
        let mut object = existing.clone();
        for path in &gone {
            remove(&mut object, path);
        }
        assert_eq!(object["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert!(object.get("data").is_none());
        assert!(removed(&existing, &applied, "someone-new").is_empty(), "a first apply removes nothing");
    }
}

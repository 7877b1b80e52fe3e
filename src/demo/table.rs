//! What `kubectl get apikeys` would print, for the demo's running commentary.

use std::fmt::Write as _;

use crate::api::ApiKey;

/// The printer columns of the CRD (`-o wide`: requests allowed in the last 24 hours), plus the
/// Ready reason, as a text table.
#[must_use]
pub fn apikeys_table(keys: &[ApiKey]) -> String {
    let header =
        ["NAME", "STATE", "PREFIX", "CLASS", "SCOPES", "EXPIRES", "NEXT ROTATION", "LAST USED", "REQ 24H", "READY"];
    let rows: Vec<[String; 10]> = keys
        .iter()
        .map(|key| {
            let status = key.status.clone().unwrap_or_default();
            let ready = status.conditions.first().map(|c| format!("{} ({})", c.status, c.reason)).unwrap_or_default();
            [
                key.metadata.name.clone().unwrap_or_default(),
                status.state.map(|s| format!("{s:?}")).unwrap_or_default(),
                status.prefix.unwrap_or_default(),
                status.class_name.unwrap_or_default(),
                key.spec.scopes.join(","),
                key.spec.expires_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
                status.next_rotation_at.map(|t| t.0.to_string()).unwrap_or_default(),
                status.last_used_at.map(|t| t.0.to_string()).unwrap_or_default(),
                status.usage.map(|u| u.last24h.allowed.to_string()).unwrap_or_default(),
                ready,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}   ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

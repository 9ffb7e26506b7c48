//! The shipped Grafana dashboard (config/grafana/provenant.json) read as Grafana reads it: its
//! panels, its PromQL with Grafana's variables replaced by concrete values, and the metric and
//! label names that PromQL selects. Shared by controller/tests/dashboard.rs (structure, promtool)
//! and test/scenarios/dashboard.rs (names against a running controller's /metrics).

#![allow(dead_code)] // each test target uses its part

use serde_json::Value;

pub const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/grafana/provenant.json"
);

pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("read config/grafana/provenant.json");
    serde_json::from_str(&text).expect("config/grafana/provenant.json is JSON")
}

/// Every panel, the ones inside collapsed rows included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One PromQL query of the dashboard: a panel target, or the selector of a `label_values`
/// variable.
#[derive(Debug)]
pub struct Query {
    /// Where it is, for messages: `panel 3 "Runs by phase" target A`, `variable job`.
    pub origin: String,
    /// As written in the dashboard.
    pub raw: String,
    /// With every Grafana variable replaced by a concrete value.
    pub expr: String,
}

/// Grafana's built-in variables that can appear in PromQL, with the kind of value Grafana puts
/// there.
const BUILTINS: [(&str, &str); 6] = [
    ("__rate_interval", "1m"),
    ("__interval_ms", "30000"),
    ("__interval", "30s"),
    ("__range_s", "3600"),
    ("__range", "1h"),
    ("datasource", "prometheus"),
];

/// The value a template variable stands for: its "All" value if it has one (a regex), else a
/// plausible label value.
fn variable_values(dashboard: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = BUILTINS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = var["name"].as_str().expect("variable name").to_string();
        let value = var["allValue"].as_str().unwrap_or("provenant").to_string();
        out.push((name, value));
    }
    // Longest names first, so `$__interval` does not eat the start of `$__interval_ms`.
    out.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    out
}

/// `expr` with Grafana's variable syntaxes (`$var`, `${var}`, `${var:format}`, `[[var]]`)
/// replaced; an error names any variable left over.
pub fn substitute(expr: &str, dashboard: &Value) -> Result<String, String> {
    let mut out = expr.to_string();
    for (name, value) in variable_values(dashboard) {
        out = out.replace(&format!("[[{name}]]"), &value);
        while let Some(start) = out.find(&format!("${{{name}")) {
            let rest = &out[start + name.len() + 2..];
            if !(rest.starts_with('}') || rest.starts_with(':')) {
                break;
            }
            let end = start + name.len() + 2 + rest.find('}').ok_or("unclosed ${")? + 1;
            out.replace_range(start..end, &value);
        }
        let mut from = 0;
        while let Some(found) = out[from..].find(&format!("${name}")) {
            let start = from + found;
            let end = start + 1 + name.len();
            let next = out[end..].chars().next();
            if next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                from = end;
                continue;
            }
            out.replace_range(start..end, &value);
            from = start + value.len();
        }
    }
    match out.find('$') {
        Some(at) => Err(format!(
            "unknown variable at `{}` in `{expr}`",
            &out[at..(at + 20).min(out.len())]
        )),
        None => Ok(out),
    }
}

/// Every PromQL query of the dashboard, substituted. Panics with the origin on a variable the
/// dashboard does not define.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(raw) = target["expr"].as_str() else {
                continue;
            };
            let origin = format!(
                "panel {} {:?} target {}",
                panel["id"],
                panel["title"].as_str().unwrap_or_default(),
                target["refId"].as_str().unwrap_or_default()
            );
            let expr = substitute(raw, dashboard).unwrap_or_else(|e| panic!("{origin}: {e}"));
            out.push(Query {
                origin,
                raw: raw.to_string(),
                expr,
            });
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let origin = format!("variable {}", var["name"].as_str().unwrap_or_default());
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_else(|| panic!("{origin}: no query"));
        let selector = label_values_selector(query).unwrap_or_else(|| {
            panic!("{origin}: `{query}` is not label_values(<selector>, <label>)")
        });
        let expr = substitute(selector, dashboard).unwrap_or_else(|e| panic!("{origin}: {e}"));
        out.push(Query {
            origin,
            raw: query.to_string(),
            expr,
        });
    }
    out
}

/// The series selector of a `label_values(<selector>, <label>)` variable query.
pub fn label_values_selector(query: &str) -> Option<&str> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    let label = label.trim();
    (!label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(selector.trim())
}

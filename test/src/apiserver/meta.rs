//! Small object-metadata helpers: timestamps, generated names, name validation.

use serde_json::{Map, Value};

use super::errors::Cause;

/// RFC 3339 with whole seconds and `Z`, the format of `metav1.Time`.
pub(crate) fn timestamp_after(secs: i64) -> String {
    let now = jiff::Timestamp::now().as_second().saturating_add(secs);
    jiff::Timestamp::from_second(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn now() -> String {
    timestamp_after(0)
}

/// `n` random characters from the alphabet of the real `generateName` (no vowels, so generated
/// names never spell words).
pub(crate) fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum NameRule {
    /// RFC 1123 subdomain: most resources.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1035 label: services.
    Label1035,
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The real server's error for an invalid `metadata.name`, or `None` when it is valid.
pub(crate) fn validate_name(name: &str, rule: NameRule) -> Option<Cause> {
    let (ok, msg) = match rule {
        NameRule::Subdomain => (
            name.len() <= 253 && name.split('.').all(is_label),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation \
             is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        NameRule::Label => (
            is_label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
             start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        NameRule::Label1035 => (
            is_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
             alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', \
             regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
    };
    (!ok).then(|| Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{name}\": {msg}"),
        field: "metadata.name".to_string(),
    })
}

/// Type checks of the metadata fields clients commonly get wrong; the real server rejects them
/// while decoding (400), which is what these return as causes' messages.
pub(crate) fn check_metadata(meta: &Map<String, Value>) -> Result<(), String> {
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Err(format!(
                        "json: cannot unmarshal non-string into Go struct field ObjectMeta.metadata.{field} of type string (key {k:?})"
                    ));
                }
            }
            Some(_) => {
                return Err(format!(
                    "json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field} of type map[string]string"
                ));
            }
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(
                "json: cannot unmarshal into Go struct field ObjectMeta.metadata.finalizers of type []string"
                    .to_string(),
            );
        }
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for r in a {
                let ok = ["apiVersion", "kind", "name", "uid"].iter().all(|f| {
                    r.get(f)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                });
                if !ok {
                    return Err(
                        "metadata.ownerReferences: apiVersion, kind, name and uid are required"
                            .to_string(),
                    );
                }
            }
        }
        Some(_) => {
            return Err(
                "json: cannot unmarshal into Go struct field ObjectMeta.metadata.ownerReferences"
                    .to_string(),
            );
        }
    }
    Ok(())
}

pub(crate) fn finalizers(obj: &Value) -> usize {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

pub(crate) fn str_field<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

/// Owner UIDs of an object.
pub(crate) fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

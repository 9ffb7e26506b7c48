//! The form in which the Kubernetes API server stores the numbers of a custom resource. It decodes
//! JSON the way Go does: a number is an int64 when its text is an integer that fits, otherwise a
//! float64, written back in Go's shortest form (plain digits below 1e21). So `1.0` comes back as
//! `1`, `1e3` as `1000`, `12345678901234567890` as `12345678901234567000`, and `0.10` as `0.1`.
//!
//! The controller records hyperparameters as the API server returns them. `provenant attest`,
//! which reads the TrainingRun from a file, applies the same normalisation first, so one file gives
//! the same `PROVENANT_HYPERPARAMETERS` and the same recorded values in and out of a cluster.

use serde_json::Value;

/// Rewrite every number of `value` as the API server would store it.
pub fn normalise(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_i64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 1e21 {
                // Rust's `Display` of an f64 is Go's form here: shortest round trip, plain digits.
                if let Ok(stored) = f.to_string().parse() {
                    *n = stored;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Object(map) => map.values_mut().for_each(normalise),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input and what kube-apiserver v1.36.3 returned for it (`kubectl get --raw`).
    #[test]
    fn numbers_are_stored_as_the_api_server_stores_them() {
        let mut given: Value = serde_json::from_str(
            r#"{"a": 1.0, "b": [1e3, 0.5, -2.0, 1.5e-7, 0.10], "c": {"d": 9007199254740993,
                "e": 1e21, "f": 12345678901234567890, "g": 1e20, "h": 123456789.123456789}}"#,
        )
        .unwrap();
        normalise(&mut given);
        let returned: Value = serde_json::from_str(
            r#"{"a":1,"b":[1000,0.5,-2,1.5e-7,0.1],"c":{"d":9007199254740993,"e":1e+21,
                "f":12345678901234567000,"g":100000000000000000000,"h":123456789.12345679}}"#,
        )
        .unwrap();
        assert_eq!(given, returned);
        assert_eq!(serde_json::to_string(&given["a"]).unwrap(), "1");
        assert_eq!(given["c"]["f"].as_u64(), Some(12345678901234567000));
    }
}

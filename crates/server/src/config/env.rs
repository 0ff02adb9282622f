//! `PINCAPI_*` environment variables that name no setting are refused, each with the closest
//! real one: a typo such as `PINCAPI_SHOPIFY_ACCESS_TOKEN` (one `_` where `__` nests) would
//! otherwise be ignored in silence and the gateway would run without the setting.

use serde_json::Value;

use super::{Config, ConfigError};

/// Variables with the prefix that are not settings: the config file's path, and what the test
/// harness and scripts read.
const NOT_SETTINGS: [&str; 5] = [
    "CONFIG",
    "SHARED_DIR",
    "SKIP_BROWSER_TESTS",
    "PYTHON_SDK",
    "PINTEREST_REFRESH_TOKEN",
];

/// Every setting's variable name (`PINCAPI_DELIVERY__BATCH_SIZE`), from the defaults' keys.
fn known() -> Vec<String> {
    let mut out = Vec::new();
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    walk(&defaults, "PINCAPI_", &mut out);
    // Keys kept only to refuse them with a message, and arrays of tables set by the file.
    for extra in ["SHOPIFY__GATEWAY_URL", "BROWSER__PUBLIC_URL"] {
        out.push(format!("PINCAPI_{extra}"));
    }
    out
}

fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        for (k, v) in m {
            let name = format!("{prefix}{}", k.to_ascii_uppercase());
            match v {
                Value::Object(inner) if !inner.is_empty() && !k.ends_with("percent") => {
                    out.push(name.clone());
                    walk(v, &format!("{name}__"), out);
                }
                _ => out.push(name),
            }
        }
    }
}

/// Refuses the `PINCAPI_*` variables in `vars` that name no setting.
pub fn check<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>) -> Result<(), ConfigError> {
    let known = known();
    let mut unknown = Vec::new();
    for (name, _) in vars {
        let Some(rest) = name.strip_prefix("PINCAPI_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&rest) || rest.starts_with("TEST_") {
            continue;
        }
        let upper = name.to_ascii_uppercase();
        // A variable that sets a key inside a known table (a map such as
        // quality.coverage_min_percent) is the table's business.
        if known
            .iter()
            .any(|k| *k == upper || upper.starts_with(&format!("{k}__")))
        {
            continue;
        }
        let closest = known
            .iter()
            .min_by_key(|k| distance(k, &upper))
            .cloned()
            .unwrap_or_default();
        unknown.push(format!("{name} (did you mean {closest}?)"));
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ConfigError::new(format!(
        "environment: {} names no setting; nested keys use two underscores, e.g. \
         PINCAPI_SHOPIFY__CLIENT_ID",
        unknown.join(", ")
    )))
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_variable_is_refused_with_the_closest_real_one() {
        let e = check([("PINCAPI_SHOPIFY_ACCESS_TOKEN", "x")].into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "PINCAPI_SHOPIFY_ACCESS_TOKEN (did you mean PINCAPI_SHOPIFY__ACCESS_TOKEN?)"
            ),
            "{e}"
        );
        let e = check([("PINCAPI_ADMIN_KYE", "x")].into_iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean PINCAPI_ADMIN_KEY?"), "{e}");
        for ok in [
            "PINCAPI_ADMIN_KEY",
            "PINCAPI_DELIVERY__BATCH_SIZE",
            "PINCAPI_SHOPIFY__CLIENT_ID",
            "PINCAPI_PUBLIC_URL",
            "PINCAPI_SECRET_KEY",
            "PINCAPI_CONFIG",
            "PINCAPI_TEST_POSTGRES",
            "PATH",
        ] {
            assert!(check([(ok, "x")].into_iter()).is_ok(), "{ok}");
        }
    }
}

//! Validation of configuration values, run by Terraform before any plan: each failed check is an
//! error diagnostic on the attribute, so `terraform plan` stops with the attribute named and the
//! reason given. Unknown values (computed from other resources) are checked once they are known.

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

/// Longest name the control plane takes (regions and keys).
pub const MAX_NAME: usize = 128;

/// A name: non-empty, at most [`MAX_NAME`] bytes.
pub fn name(diags: &mut Diagnostics, attribute: &'static str, value: &Value<String>) {
    if let Value::Value(name) = value {
        if name.is_empty() {
            diags.error(
                format!("{attribute} must not be empty"),
                format!("Give `{attribute}` a name of 1 to {MAX_NAME} bytes."),
                AttributePath::new(attribute),
            );
        } else if name.len() > MAX_NAME {
            diags.error(
                format!("{attribute} is too long"),
                format!(
                    "`{attribute}` is {} bytes; at most {MAX_NAME} are allowed.",
                    name.len()
                ),
                AttributePath::new(attribute),
            );
        }
    }
}

/// A number within `min..=max` (latitude, longitude).
pub fn within(
    diags: &mut Diagnostics,
    attribute: &'static str,
    value: &Value<f64>,
    min: f64,
    max: f64,
) {
    if let Value::Value(number) = value
        && !(min..=max).contains(number)
    {
        diags.error(
            format!("{attribute} out of range"),
            format!("`{attribute}` is {number}; it must be between {min} and {max} (degrees)."),
            AttributePath::new(attribute),
        );
    }
}

/// Every element of a list is one of `allowed` (and, if `non_empty`, there is at least one).
pub fn one_of(
    diags: &mut Diagnostics,
    attribute: &'static str,
    value: &Value<Vec<Value<String>>>,
    allowed: &[&str],
    non_empty: bool,
) {
    let Value::Value(items) = value else {
        return;
    };
    if non_empty && items.is_empty() {
        diags.error(
            format!("{attribute} must not be empty"),
            format!("Name at least one of: {}.", allowed.join(", ")),
            AttributePath::new(attribute),
        );
    }
    for (index, item) in items.iter().enumerate() {
        if let Value::Value(item) = item
            && !allowed.contains(&item.as_str())
        {
            diags.error(
                format!("unknown {attribute} value {item:?}"),
                format!("`{attribute}` may hold only: {}.", allowed.join(", ")),
                AttributePath::new(attribute).index(index as i64),
            );
        }
    }
}

/// A whole number within `1..=max` (rates).
pub fn positive(diags: &mut Diagnostics, attribute: &'static str, value: &Value<i64>, max: i64) {
    if let Value::Value(number) = value
        && !(1..=max).contains(number)
    {
        diags.error(
            format!("{attribute} out of range"),
            format!("`{attribute}` is {number}; it must be between 1 and {max}."),
            AttributePath::new(attribute),
        );
    }
}

/// The known strings of a list (unknown or null elements left out).
pub fn strings(value: &Value<Vec<Value<String>>>) -> Vec<String> {
    value
        .as_ref_option()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_ref_option().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summaries(diags: &Diagnostics) -> Vec<String> {
        diags.errors.iter().map(|d| d.summary.to_string()).collect()
    }

    #[test]
    fn names_must_be_present_and_bounded_unknown_is_checked_later() {
        let mut diags = Diagnostics::default();
        name(&mut diags, "name", &Value::Value(String::new()));
        name(&mut diags, "name", &Value::Value("x".repeat(MAX_NAME + 1)));
        name(&mut diags, "name", &Value::Value("fra".into()));
        name(&mut diags, "name", &Value::Unknown);
        assert_eq!(
            summaries(&diags),
            ["name must not be empty", "name is too long"]
        );
        assert_eq!(diags.errors[0].attribute, AttributePath::new("name"));
    }

    #[test]
    fn coordinates_must_be_on_the_globe() {
        let mut diags = Diagnostics::default();
        within(&mut diags, "latitude", &Value::Value(90.5), -90.0, 90.0);
        within(&mut diags, "latitude", &Value::Value(-90.0), -90.0, 90.0);
        assert_eq!(summaries(&diags), ["latitude out of range"]);
        assert!(
            diags.errors[0]
                .detail
                .starts_with("`latitude` is 90.5; it must be between -90 and 90 (degrees)."),
            "{}",
            diags.errors[0].detail
        );
    }

    #[test]
    fn list_values_must_be_known_names() {
        let mut diags = Diagnostics::default();
        let scopes = Value::Value(vec![
            Value::Value("push".to_owned()),
            Value::Value("root".to_owned()),
            Value::Unknown,
        ]);
        one_of(
            &mut diags,
            "scopes",
            &scopes,
            &["push", "read", "admin"],
            true,
        );
        one_of(&mut diags, "scopes", &Value::Value(vec![]), &["push"], true);
        assert_eq!(
            summaries(&diags),
            ["unknown scopes value \"root\"", "scopes must not be empty"]
        );
        assert_eq!(
            diags.errors[0].attribute,
            AttributePath::new("scopes").index(1)
        );
        assert_eq!(strings(&scopes), ["push", "root"]);
    }

    #[test]
    fn rates_are_positive_and_bounded() {
        let mut diags = Diagnostics::default();
        positive(&mut diags, "rate_per_second", &Value::Value(0), 10);
        positive(&mut diags, "rate_per_second", &Value::Value(11), 10);
        positive(&mut diags, "rate_per_second", &Value::Value(10), 10);
        assert_eq!(diags.errors.len(), 2);
    }
}

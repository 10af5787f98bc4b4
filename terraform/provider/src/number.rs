//! Terraform numbers that survive the round trip through the provider unchanged.
//!
//! Terraform holds numbers as arbitrary-precision decimals and sends one that no `f64` represents
//! exactly (`39.9`) as its decimal text. Sent back as the nearest `f64`, it would differ from the
//! configuration (39.899999999999998...) and Terraform would reject the plan. [`Number`] therefore
//! reads integers, floats and decimal text, and is written as the shortest decimal text that reads
//! back as the same `f64` (`39.9`), which equals the configured value.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A number attribute (coordinates).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Number(pub f64);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `Display` of an f64 is the shortest text that parses back to it, without an exponent.
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                v.parse()
                    .map(Number)
                    .map_err(|_| E::custom(format!("{v:?} is not a number")))
            }
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_reads_and_writes_back_as_the_same_text() {
        for text in ["39.9", "-122.4194", "50", "0.0000001"] {
            let number: Number = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(serde_json::to_value(number).unwrap(), text);
        }
        let number: Number = serde_json::from_value(serde_json::json!(116)).unwrap();
        assert_eq!(number, Number(116.0));
        assert!(serde_json::from_value::<Number>(serde_json::json!("north")).is_err());
    }
}

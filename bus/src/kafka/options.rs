//! Extra librdkafka properties from the operator: every client setting reachable without a rim release.
//!
//! rim sets what a push gateway needs (idempotence, manual commits, low-latency fetches, ...), but a
//! cluster may need TLS files, SASL credentials or tuning rim never heard of. [`KafkaOptions`] is the
//! operator's list of `KEY=VALUE` librdkafka properties (see librdkafka's `CONFIGURATION.md`), applied
//! to every client after rim's own defaults, so the operator can override any of them.
//!
//! One text may hold several pairs separated by commas (`security.protocol=SASL_SSL,sasl.mechanism=PLAIN`),
//! as an environment variable carries a list. A comma starts a new pair only when the text after it
//! has its own `KEY=`; otherwise the comma belongs to the value, so list-valued properties such as
//! `debug=broker,topic` keep working.

use std::fmt;
use std::str::FromStr;

/// librdkafka properties given by the operator, in the order given (a later pair wins).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions {
    pairs: Vec<(String, String)>,
}

impl KafkaOptions {
    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Whether the operator set `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.pairs.iter().any(|(name, _)| name == key)
    }
}

/// Several flag occurrences (or TOML list elements) make one list, in order.
impl FromIterator<KafkaOptions> for KafkaOptions {
    fn from_iter<I: IntoIterator<Item = KafkaOptions>>(iter: I) -> Self {
        Self {
            pairs: iter.into_iter().flat_map(|options| options.pairs).collect(),
        }
    }
}

impl FromStr for KafkaOptions {
    type Err = String;

    /// Parses `KEY=VALUE[,KEY=VALUE...]` (see the module docs for commas inside values).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for segment in text.split(',') {
            match segment.split_once('=') {
                Some((key, value)) if is_property_name(key.trim()) => {
                    pairs.push((key.trim().to_owned(), value.to_owned()));
                }
                _ => match pairs.last_mut() {
                    Some((_, value)) => {
                        value.push(',');
                        value.push_str(segment);
                    }
                    None => {
                        return Err(format!(
                            "expected KEY=VALUE (a librdkafka property), got `{segment}`"
                        ));
                    }
                },
            }
        }
        Ok(Self { pairs })
    }
}

/// Whether `name` looks like a librdkafka property name (`sasl.mechanism`, `fetch.wait.max.ms`).
fn is_property_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Never prints values: they may be passwords (`sasl.password`, `ssl.key.password`).
impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.pairs
                    .iter()
                    .map(|(key, _)| format!("{key}=<redacted>")),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, String)> {
        text.parse::<KafkaOptions>().unwrap().pairs
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.into(), value.into())
    }

    #[test]
    fn one_pair_several_pairs_and_commas_inside_values() {
        assert_eq!(
            parsed("security.protocol=SSL"),
            [pair("security.protocol", "SSL")]
        );
        assert_eq!(
            parsed("sasl.mechanism=SCRAM-SHA-512, sasl.username=rim,debug=broker,topic,fetch"),
            [
                pair("sasl.mechanism", "SCRAM-SHA-512"),
                pair("sasl.username", "rim"),
                pair("debug", "broker,topic,fetch"),
            ]
        );
        assert_eq!(
            parsed("sasl.password=a=b=c"),
            [pair("sasl.password", "a=b=c")]
        );
    }

    #[test]
    fn text_without_a_key_is_refused() {
        assert!("".parse::<KafkaOptions>().is_err());
        assert!("just-a-value".parse::<KafkaOptions>().is_err());
        assert!("=value".parse::<KafkaOptions>().is_err());
        assert!("bad key=1".parse::<KafkaOptions>().is_err());
    }

    #[test]
    fn occurrences_concatenate_in_order_and_debug_hides_values() {
        let options: KafkaOptions = ["a.b=1", "c=2,a.b=3"]
            .into_iter()
            .map(|text| text.parse().unwrap())
            .collect();
        assert_eq!(
            options.pairs(),
            [pair("a.b", "1"), pair("c", "2"), pair("a.b", "3")]
        );
        assert!(options.contains("c"));
        assert_eq!(
            format!("{options:?}"),
            r#"["a.b=<redacted>", "c=<redacted>", "a.b=<redacted>"]"#
        );
    }
}

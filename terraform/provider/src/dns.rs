//! `rim_dns`: the HTTPDNS answer rim gives a client at a location (or in a region), e.g. to check
//! in a plan that a new region's edges are what nearby clients are sent to.

use crate::check;
use crate::client::DnsQuery;
use crate::number::Number;
use crate::{Connection, attribute, schema, string};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, DataSource, Diagnostics};

/// The data source's configuration and result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsState {
    /// Client latitude.
    #[serde(default)]
    pub latitude: Value<Number>,
    /// Client longitude.
    #[serde(default)]
    pub longitude: Value<Number>,
    /// Region named outright.
    #[serde(default)]
    pub region: Value<String>,
    /// Client platform.
    #[serde(default)]
    pub platform: Value<String>,
    /// Hosts (web) or addresses (native) to try, best first.
    #[serde(default)]
    pub nodes: Value<Vec<String>>,
    /// Ids of the eligible nodes, best first.
    #[serde(default)]
    pub node_ids: Value<Vec<String>>,
    /// TCP port of the listed nodes (0: none).
    #[serde(default)]
    pub tcp_port: Value<i64>,
    /// WebSocket port (0: none).
    #[serde(default)]
    pub ws_port: Value<i64>,
    /// WebSocket-over-TLS port (0: none).
    #[serde(default)]
    pub wss_port: Value<i64>,
    /// Why `nodes` is empty (null when it is not).
    #[serde(default)]
    pub reason: Value<String>,
}

/// Checks the query: coordinates on the globe, given together.
pub fn validate_dns(diags: &mut Diagnostics, config: &DnsState) {
    let degrees = |value: &Value<Number>| value.as_ref_option().map(|n| n.0).into();
    check::within(diags, "latitude", &degrees(&config.latitude), -90.0, 90.0);
    check::within(
        diags,
        "longitude",
        &degrees(&config.longitude),
        -180.0,
        180.0,
    );
    if config.latitude.is_null() != config.longitude.is_null() {
        diags.error(
            "latitude and longitude go together",
            "Set both `latitude` and `longitude`, or neither.",
            AttributePath::new(if config.latitude.is_null() {
                "latitude"
            } else {
                "longitude"
            }),
        );
    }
}

/// The `rim_dns` data source.
#[derive(Clone, Debug)]
pub struct DnsDataSource {
    connection: Connection,
}

impl DnsDataSource {
    /// The data source, using the provider's connection.
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }
}

#[async_trait]
impl DataSource for DnsDataSource {
    type State<'a> = DnsState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let optional = |attr_type, description| {
            attribute(attr_type, AttributeConstraint::Optional, description)
        };
        let computed = |attr_type, description| {
            attribute(attr_type, AttributeConstraint::Computed, description)
        };
        let strings = || AttributeType::List(Box::new(AttributeType::String));
        Some(schema(
            "rim's HTTPDNS answer (GET /v1/dns) for a client at a location or in a region.",
            vec![
                (
                    "latitude",
                    optional(AttributeType::Number, "Client latitude (with longitude)."),
                ),
                (
                    "longitude",
                    optional(AttributeType::Number, "Client longitude (with latitude)."),
                ),
                (
                    "region",
                    string(
                        AttributeConstraint::Optional,
                        "Ask for this region's edges.",
                    ),
                ),
                (
                    "platform",
                    string(
                        AttributeConstraint::Optional,
                        "Client platform: `web` gets host names, others addresses.",
                    ),
                ),
                (
                    "nodes",
                    computed(
                        strings(),
                        "Hosts or addresses to try, best first (empty: no eligible node).",
                    ),
                ),
                (
                    "node_ids",
                    computed(strings(), "Ids of the eligible nodes, best first."),
                ),
                (
                    "tcp_port",
                    computed(
                        AttributeType::Number,
                        "TCP port of the listed nodes (0: none).",
                    ),
                ),
                (
                    "ws_port",
                    computed(AttributeType::Number, "WebSocket port (0: none)."),
                ),
                (
                    "wss_port",
                    computed(AttributeType::Number, "WebSocket-over-TLS port (0: none)."),
                ),
                (
                    "reason",
                    computed(
                        AttributeType::String,
                        "Why `nodes` is empty; null when it is not.",
                    ),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: DnsState) -> Option<()> {
        validate_dns(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: DnsState,
        _meta: ValueEmpty,
    ) -> Option<DnsState> {
        let client = self.connection.client(diags)?;
        let location = match (&config.latitude, &config.longitude) {
            (Value::Value(lat), Value::Value(lon)) => Some((lat.0, lon.0)),
            _ => None,
        };
        let query = DnsQuery {
            location,
            region: config.region.as_ref_option().cloned(),
            platform: config.platform.as_ref_option().cloned(),
        };
        match client.dns(&query).await {
            Ok(answer) => Some(DnsState {
                nodes: Value::Value(answer.nodes),
                node_ids: Value::Value(answer.node_ids),
                tcp_port: Value::Value(answer.tcp_port.into()),
                ws_port: Value::Value(answer.ws_port.into()),
                wss_port: Value::Value(answer.wss_port.into()),
                reason: answer.reason.into(),
                ..config
            }),
            Err(err) => {
                err.report(diags, "asking HTTPDNS");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_checked_and_go_together() {
        let mut diags = Diagnostics::default();
        validate_dns(
            &mut diags,
            &DnsState {
                latitude: Value::Value(Number(100.0)),
                ..Default::default()
            },
        );
        let summaries: Vec<String> = diags.errors.iter().map(|d| d.summary.to_string()).collect();
        assert_eq!(
            summaries,
            [
                "latitude out of range",
                "latitude and longitude go together"
            ]
        );
        assert_eq!(diags.errors[1].attribute, AttributePath::new("longitude"));
    }
}

//! `rim_nodes`: the edge nodes the control plane knows (dead ones included), optionally one
//! region's, with their state and addresses, e.g. to put the live ones behind a load balancer or
//! to check that a region's edges registered.

use crate::number::Number;
use crate::{Connection, attribute, schema, string};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tf_provider::schema::{AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics};

/// One node in the data source's `nodes` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeItem {
    /// Node id.
    pub id: String,
    /// Region it serves.
    pub region: String,
    /// `active`, `draining` or `dead`.
    pub state: String,
    /// Host name.
    pub hostname: String,
    /// Client-facing addresses.
    pub addresses: Vec<String>,
    /// TCP port (0: none).
    pub tcp_port: i64,
    /// WebSocket port (0: none).
    pub ws_port: i64,
    /// WebSocket-over-TLS port (0: none).
    pub wss_port: i64,
    /// Latitude.
    pub latitude: Number,
    /// Longitude.
    pub longitude: Number,
    /// Connections at the last heartbeat.
    pub connections: i64,
}

/// The data source's configuration and result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodesState {
    /// Only this region's nodes, if set.
    #[serde(default)]
    pub region: Value<String>,
    /// The nodes, by id.
    #[serde(default)]
    pub nodes: Value<Vec<NodeItem>>,
}

/// The `rim_nodes` data source.
#[derive(Clone, Debug)]
pub struct NodesDataSource {
    connection: Connection,
}

impl NodesDataSource {
    /// The data source, using the provider's connection.
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }
}

/// The object type of one node in the schema.
fn node_type() -> AttributeType {
    let int = || AttributeType::Number;
    AttributeType::Object(HashMap::from([
        ("id".to_owned(), AttributeType::String),
        ("region".to_owned(), AttributeType::String),
        ("state".to_owned(), AttributeType::String),
        ("hostname".to_owned(), AttributeType::String),
        (
            "addresses".to_owned(),
            AttributeType::List(Box::new(AttributeType::String)),
        ),
        ("tcp_port".to_owned(), int()),
        ("ws_port".to_owned(), int()),
        ("wss_port".to_owned(), int()),
        ("latitude".to_owned(), int()),
        ("longitude".to_owned(), int()),
        ("connections".to_owned(), int()),
    ]))
}

#[async_trait]
impl DataSource for NodesDataSource {
    type State<'a> = NodesState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "The edge nodes rim's control plane knows, dead ones included.",
            vec![
                (
                    "region",
                    string(
                        AttributeConstraint::Optional,
                        "Only the nodes of this region.",
                    ),
                ),
                (
                    "nodes",
                    attribute(
                        AttributeType::List(Box::new(node_type())),
                        AttributeConstraint::Computed,
                        "The nodes by id: id, region, state (active, draining, dead), hostname, \
                         addresses, tcp_port, ws_port, wss_port, latitude, longitude, connections.",
                    ),
                ),
            ],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: NodesState,
        _meta: ValueEmpty,
    ) -> Option<NodesState> {
        let client = self.connection.client(diags)?;
        let nodes = match client.nodes().await {
            Ok(nodes) => nodes,
            Err(err) => {
                err.report(diags, "listing nodes");
                return None;
            }
        };
        let region = config.region.as_ref_option();
        let items = nodes
            .into_iter()
            .filter(|node| region.is_none_or(|region| &node.region == region))
            .map(|node| NodeItem {
                id: node.id,
                region: node.region,
                state: node.state,
                hostname: node.hostname,
                addresses: node.addresses,
                tcp_port: node.tcp_port.into(),
                ws_port: node.ws_port.into(),
                wss_port: node.wss_port.into(),
                latitude: Number(node.latitude),
                longitude: Number(node.longitude),
                connections: i64::try_from(node.connection_count).unwrap_or(i64::MAX),
            })
            .collect();
        Some(NodesState {
            nodes: Value::Value(items),
            ..config
        })
    }
}

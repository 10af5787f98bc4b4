//! `rim_node_drain`: drains an edge node declaratively.
//!
//! While the resource exists the node is drained by an admin: the balancer sends it no new clients
//! and its connections finish; the drain lasts across the node's restarts. Destroying the resource
//! lifts the drain. A drain lifted outside Terraform (`POST .../undrain`) shows as the resource
//! being gone, so the next plan drains the node again. Import by node id.

use crate::client::Client;
use crate::{Connection, schema, string};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

/// The resource's state and configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeDrainState {
    /// Same as `node_id`.
    #[serde(default)]
    pub id: Value<String>,
    /// The node to drain.
    #[serde(default)]
    pub node_id: Value<String>,
    /// The node's state as last read (`draining`, or `dead` while it is down).
    #[serde(default)]
    pub state: Value<String>,
}

/// The `rim_node_drain` resource.
#[derive(Clone, Debug)]
pub struct NodeDrainResource {
    connection: Connection,
}

impl NodeDrainResource {
    /// The resource, using the provider's connection.
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }

    fn client(&self, diags: &mut Diagnostics) -> Option<Client> {
        self.connection.client(diags)
    }

    /// The state of an admin-drained node, `None` if the node is unknown or not drained by an admin.
    async fn drained(&self, diags: &mut Diagnostics, node_id: &str) -> Option<NodeDrainState> {
        let client = self.client(diags)?;
        match client.nodes().await {
            Ok(nodes) => nodes
                .into_iter()
                .find(|node| node.id == node_id && node.drained_by_admin)
                .map(|node| NodeDrainState {
                    id: Value::Value(node.id.clone()),
                    node_id: Value::Value(node.id),
                    state: Value::Value(node.state),
                }),
            Err(err) => {
                err.report(diags, &format!("reading node {node_id:?}"));
                None
            }
        }
    }

    fn node_id(diags: &mut Diagnostics, state: &NodeDrainState) -> Option<String> {
        let id = state
            .node_id
            .as_ref_option()
            .or(state.id.as_ref_option())
            .cloned();
        if id.is_none() {
            diags.root_error_short("rim_node_drain: node_id must be known");
        }
        id
    }
}

#[async_trait]
impl Resource for NodeDrainResource {
    type State<'a> = NodeDrainState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "Drains a rim edge node (no new clients) for as long as the resource exists.",
            vec![
                ("id", string(AttributeConstraint::Computed, "The node id.")),
                (
                    "node_id",
                    string(
                        AttributeConstraint::Required,
                        "Id of the edge node to drain.",
                    ),
                ),
                (
                    "state",
                    string(
                        AttributeConstraint::Computed,
                        "The node's state: `draining`, or `dead` while it is down (it drains again when it returns).",
                    ),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: NodeDrainState) -> Option<()> {
        if let Value::Value(node_id) = &config.node_id
            && node_id.is_empty()
        {
            diags.error_short("node_id must not be empty", AttributePath::new("node_id"));
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: NodeDrainState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(NodeDrainState, ValueEmpty)> {
        let node_id = Self::node_id(diags, &state)?;
        let found = self.drained(diags, &node_id).await?;
        Some((found, private_state))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: NodeDrainState,
        _config: NodeDrainState,
        _meta: ValueEmpty,
    ) -> Option<(NodeDrainState, ValueEmpty)> {
        Some((
            NodeDrainState {
                id: proposed.node_id.clone(),
                state: Value::Unknown,
                ..proposed
            },
            ValueEmpty::Null,
        ))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: NodeDrainState,
        proposed: NodeDrainState,
        _config: NodeDrainState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(NodeDrainState, ValueEmpty, Vec<AttributePath>)> {
        // Only `node_id` is configurable: any planned change is another node.
        Some((proposed, private_state, vec![AttributePath::new("node_id")]))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: NodeDrainState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: NodeDrainState,
        _config: NodeDrainState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(NodeDrainState, ValueEmpty)> {
        let client = self.client(diags)?;
        let node_id = Self::node_id(diags, &planned)?;
        if let Err(err) = client.set_drained(&node_id, true).await {
            err.report(diags, &format!("draining node {node_id:?}"));
            return None;
        }
        let found = self.drained(diags, &node_id).await?;
        Some((found, private_state))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: NodeDrainState,
        _planned: NodeDrainState,
        _config: NodeDrainState,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(NodeDrainState, ValueEmpty)> {
        diags.root_error_short("rim_node_drain cannot be updated in place");
        None
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: NodeDrainState,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let client = self.client(diags)?;
        let node_id = Self::node_id(diags, &prior)?;
        match client.set_drained(&node_id, false).await {
            Ok(()) => Some(()),
            Err(err) if err.is_not_found() => Some(()),
            Err(err) => {
                err.report(diags, &format!("undraining node {node_id:?}"));
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        _diags: &mut Diagnostics,
        id: String,
    ) -> Option<(NodeDrainState, ValueEmpty)> {
        Some((
            NodeDrainState {
                id: Value::Value(id.clone()),
                node_id: Value::Value(id),
                state: Value::Null,
            },
            ValueEmpty::Null,
        ))
    }
}

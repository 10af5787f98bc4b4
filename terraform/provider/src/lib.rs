//! `terraform-provider-rim`: rim's control plane as Terraform resources.
//!
//! Infra teams provision rim regions with Terraform; the objects live in the control plane's admin
//! API, so they are managed by a provider (Terraform's plugin protocol 6, served by the
//! [`tf_provider`] crate) rather than by shell commands in provisioners:
//!
//! - `rim_region`: a region (name, centre), created with its bus topic; moved in place, replaced
//!   when renamed, imported by name;
//! - `rim_api_key`: a key with scopes (and optional push limits); its secret is a sensitive
//!   attribute known only to the Terraform run that created it; imported by id (without secret);
//! - `rim_node_drain`: while it exists, the node takes no new clients (an admin drain);
//! - data sources `rim_nodes` (optionally one region's) and `rim_dns` (the HTTPDNS answer for a
//!   location).
//!
//! Reads ask the control plane, so a change made outside Terraform shows as drift on the next
//! plan, and a deleted object is planned for creation again. Invalid inputs (empty names,
//! coordinates off the globe, unknown scopes) are rejected by validation, i.e. at plan time, with
//! the attribute named. The provider block's `endpoint` and `admin_key` fall back to the
//! `RIM_ENDPOINT` and `RIM_ADMIN_KEY` environment variables.

pub mod api_key;
pub mod check;
pub mod client;
pub mod dns;
pub mod node_drain;
pub mod nodes;
pub mod number;
pub mod region;

use async_trait::async_trait;
use client::Client;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Block, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

/// The configured client, shared by the provider and its resources (which are built before
/// Terraform configures the provider).
#[derive(Clone, Debug, Default)]
pub struct Connection(Arc<RwLock<Option<Client>>>);

impl Connection {
    /// The client, or an error diagnostic if the provider was not configured.
    pub fn client(&self, diags: &mut Diagnostics) -> Option<Client> {
        let client = self.0.read().map(|guard| guard.clone()).unwrap_or(None);
        if client.is_none() {
            diags.root_error_short("the rim provider is not configured");
        }
        client
    }

    fn set(&self, client: Client) {
        if let Ok(mut guard) = self.0.write() {
            *guard = Some(client);
        }
    }
}

/// The provider block.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProviderConfig {
    /// Base URL of rim control's HTTP API.
    #[serde(default)]
    pub endpoint: Value<String>,
    /// A key with the admin scope (the bootstrap `control_admin_key` or a created admin key).
    #[serde(default)]
    pub admin_key: Value<String>,
}

/// The rim provider.
#[derive(Clone, Debug, Default)]
pub struct RimProvider {
    connection: Connection,
}

/// A string attribute with this constraint and description.
pub(crate) fn string(constraint: AttributeConstraint, description: &str) -> Attribute {
    attribute(AttributeType::String, constraint, description)
}

/// An attribute of any type.
pub(crate) fn attribute(
    attr_type: AttributeType,
    constraint: AttributeConstraint,
    description: &str,
) -> Attribute {
    Attribute {
        attr_type,
        description: description.into(),
        constraint,
        ..Default::default()
    }
}

/// A schema (version 0) of these attributes.
pub(crate) fn schema(description: &str, attributes: Vec<(&str, Attribute)>) -> Schema {
    Schema {
        version: 0,
        block: Block {
            description: description.into(),
            attributes: attributes
                .into_iter()
                .map(|(name, attribute)| (name.to_owned(), attribute))
                .collect(),
            ..Default::default()
        },
    }
}

/// `value` if known and non-empty, else the environment variable `var` (if set and non-empty).
fn setting(value: &Value<String>, var: &str) -> Option<String> {
    match value {
        Value::Value(text) if !text.is_empty() => Some(text.clone()),
        _ => std::env::var(var).ok().filter(|text| !text.is_empty()),
    }
}

#[async_trait]
impl Provider for RimProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let mut admin_key = string(
            AttributeConstraint::Optional,
            "A key with the admin scope; defaults to the RIM_ADMIN_KEY environment variable.",
        );
        admin_key.sensitive = true;
        Some(schema(
            "rim's control plane (regions, API keys, node drains, nodes, HTTPDNS).",
            vec![
                (
                    "endpoint",
                    string(
                        AttributeConstraint::Optional,
                        "Base URL of rim control's HTTP API, e.g. https://rim-control.example.com; \
                         defaults to the RIM_ENDPOINT environment variable.",
                    ),
                ),
                ("admin_key", admin_key),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: ProviderConfig) -> Option<()> {
        if let Value::Value(endpoint) = &config.endpoint
            && let Err(message) = Client::new(endpoint, "")
        {
            diags.error_short(message, AttributePath::new("endpoint"));
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: ProviderConfig,
    ) -> Option<()> {
        let Some(endpoint) = setting(&config.endpoint, "RIM_ENDPOINT") else {
            diags.error(
                "rim: no endpoint",
                "Set `endpoint` in the provider block or the RIM_ENDPOINT environment variable \
                 to rim control's base URL.",
                AttributePath::new("endpoint"),
            );
            return None;
        };
        let Some(admin_key) = setting(&config.admin_key, "RIM_ADMIN_KEY") else {
            diags.error(
                "rim: no admin key",
                "Set `admin_key` in the provider block or the RIM_ADMIN_KEY environment variable \
                 to a key with the admin scope.",
                AttributePath::new("admin_key"),
            );
            return None;
        };
        match Client::new(&endpoint, &admin_key) {
            Ok(client) => {
                self.connection.set(client);
                Some(())
            }
            Err(message) => {
                diags.error_short(message, AttributePath::new("endpoint"));
                None
            }
        }
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        let connection = &self.connection;
        Some(HashMap::from([
            (
                "region".to_owned(),
                region::RegionResource::new(connection.clone()).into(),
            ),
            (
                "api_key".to_owned(),
                api_key::ApiKeyResource::new(connection.clone()).into(),
            ),
            (
                "node_drain".to_owned(),
                node_drain::NodeDrainResource::new(connection.clone()).into(),
            ),
        ]))
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        let connection = &self.connection;
        Some(HashMap::from([
            (
                "nodes".to_owned(),
                nodes::NodesDataSource::new(connection.clone()).into(),
            ),
            (
                "dns".to_owned(),
                dns::DnsDataSource::new(connection.clone()).into(),
            ),
        ]))
    }
}

//! `rim_region`: a region in the control plane, created with its bus topic.
//!
//! The name is the region's identity (renaming replaces it; `terraform import rim_region.x NAME`);
//! latitude and longitude are updated in place. Deleting fails while live nodes serve the region
//! (the control plane answers 409 naming them): drain and stop them first. A region deleted
//! outside Terraform is planned for creation again; a moved one shows as drift.

use crate::check;
use crate::client::Client;
use crate::number::Number;
use crate::{Connection, attribute, schema, string};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

/// The resource's state and configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionState {
    /// Same as `name`.
    #[serde(default)]
    pub id: Value<String>,
    /// Region name.
    #[serde(default)]
    pub name: Value<String>,
    /// Centre latitude, degrees.
    #[serde(default)]
    pub latitude: Value<Number>,
    /// Centre longitude, degrees.
    #[serde(default)]
    pub longitude: Value<Number>,
    /// The region's bus topic (null for buses without topics).
    #[serde(default)]
    pub topic: Value<String>,
}

impl RegionState {
    /// The state for a region as the control plane answered it.
    fn from_api(region: crate::client::Region) -> Self {
        Self {
            id: Value::Value(region.name.clone()),
            name: Value::Value(region.name),
            latitude: Value::Value(Number(region.latitude)),
            longitude: Value::Value(Number(region.longitude)),
            topic: region.topic.into(),
        }
    }

    /// Name and coordinates, once known (apply time).
    fn parts(&self, diags: &mut Diagnostics) -> Option<(String, f64, f64)> {
        match (&self.name, &self.latitude, &self.longitude) {
            (Value::Value(name), Value::Value(lat), Value::Value(lon)) => {
                Some((name.clone(), lat.0, lon.0))
            }
            _ => {
                diags.root_error_short("rim_region: name, latitude and longitude must be known");
                None
            }
        }
    }
}

/// Checks a region's configuration (shared with nothing else: regions only).
pub fn validate_region(diags: &mut Diagnostics, config: &RegionState) {
    check::name(diags, "name", &config.name);
    let degrees = |value: &Value<Number>| value.as_ref_option().map(|n| n.0).into();
    check::within(diags, "latitude", &degrees(&config.latitude), -90.0, 90.0);
    check::within(
        diags,
        "longitude",
        &degrees(&config.longitude),
        -180.0,
        180.0,
    );
}

/// The `rim_region` resource.
#[derive(Clone, Debug)]
pub struct RegionResource {
    connection: Connection,
}

impl RegionResource {
    /// The resource, using the provider's connection.
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }

    fn client(&self, diags: &mut Diagnostics) -> Option<Client> {
        self.connection.client(diags)
    }
}

#[async_trait]
impl Resource for RegionResource {
    type State<'a> = RegionState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let number = |description| {
            attribute(
                AttributeType::Number,
                AttributeConstraint::Required,
                description,
            )
        };
        Some(schema(
            "A rim region: the control plane's record (the balancer sends nearby clients to its \
             edges) and its bus topic (pushes reach its job workers).",
            vec![
                (
                    "id",
                    string(AttributeConstraint::Computed, "The region's name."),
                ),
                (
                    "name",
                    string(
                        AttributeConstraint::Required,
                        "Unique region name (1 to 128 bytes), e.g. `bj`; changing it replaces the region.",
                    ),
                ),
                (
                    "latitude",
                    number("Latitude of the region's centre, -90 to 90."),
                ),
                (
                    "longitude",
                    number("Longitude of the region's centre, -180 to 180."),
                ),
                (
                    "topic",
                    string(
                        AttributeConstraint::Computed,
                        "The region's bus (Kafka) topic; null when the control plane's bus has no topics.",
                    ),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: RegionState) -> Option<()> {
        validate_region(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: RegionState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(RegionState, ValueEmpty)> {
        let client = self.client(diags)?;
        let name = state.name.as_option().or(state.id.as_option())?;
        match client.region(&name).await {
            Ok(Some(region)) => Some((RegionState::from_api(region), private_state)),
            Ok(None) => None,
            Err(err) => {
                err.report(diags, &format!("reading region {name:?}"));
                None
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: RegionState,
        _config: RegionState,
        _meta: ValueEmpty,
    ) -> Option<(RegionState, ValueEmpty)> {
        Some((
            RegionState {
                id: proposed.name.clone(),
                topic: Value::Unknown,
                ..proposed
            },
            ValueEmpty::Null,
        ))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: RegionState,
        proposed: RegionState,
        _config: RegionState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(RegionState, ValueEmpty, Vec<AttributePath>)> {
        let replace = if proposed.name != prior.name {
            vec![AttributePath::new("name")]
        } else {
            vec![]
        };
        Some((proposed, private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: RegionState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: RegionState,
        _config: RegionState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(RegionState, ValueEmpty)> {
        let client = self.client(diags)?;
        let (name, latitude, longitude) = planned.parts(diags)?;
        match client.create_region(&name, latitude, longitude).await {
            Ok(region) => Some((RegionState::from_api(region), private_state)),
            Err(mut err) => {
                if err.status == Some(409) {
                    err.message.push_str(&format!(
                        "; to manage it with Terraform, import it: terraform import <address> {name}"
                    ));
                }
                err.report(diags, &format!("creating region {name:?}"));
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: RegionState,
        planned: RegionState,
        _config: RegionState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(RegionState, ValueEmpty)> {
        let client = self.client(diags)?;
        let (name, latitude, longitude) = planned.parts(diags)?;
        match client.put_region(&name, latitude, longitude).await {
            Ok(region) => Some((RegionState::from_api(region), private_state)),
            Err(err) => {
                err.report(diags, &format!("moving region {name:?}"));
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: RegionState,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let client = self.client(diags)?;
        let (name, _, _) = prior.parts(diags)?;
        match client.delete_region(&name).await {
            Ok(()) => Some(()),
            Err(err) if err.is_not_found() => Some(()),
            Err(err) => {
                err.report(diags, &format!("deleting region {name:?}"));
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(RegionState, ValueEmpty)> {
        check::name(diags, "name", &Value::Value(id.clone()));
        Some((
            RegionState {
                id: Value::Value(id.clone()),
                name: Value::Value(id),
                ..Default::default()
            },
            ValueEmpty::Null,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, latitude: f64, longitude: f64) -> RegionState {
        RegionState {
            name: Value::Value(name.into()),
            latitude: Value::Value(Number(latitude)),
            longitude: Value::Value(Number(longitude)),
            ..Default::default()
        }
    }

    #[test]
    fn schema_requires_name_and_coordinates_and_computes_id_and_topic() {
        let resource = RegionResource::new(Connection::default());
        let schema = Resource::schema(&resource, &mut Diagnostics::default()).unwrap();
        let constraint = |name: &str| schema.block.attributes[name].constraint.clone();
        for required in ["name", "latitude", "longitude"] {
            assert_eq!(
                constraint(required),
                AttributeConstraint::Required,
                "{required}"
            );
        }
        for computed in ["id", "topic"] {
            assert_eq!(
                constraint(computed),
                AttributeConstraint::Computed,
                "{computed}"
            );
        }
        assert_eq!(schema.block.attributes.len(), 5);
    }

    #[test]
    fn validation_names_the_bad_attribute() {
        let mut diags = Diagnostics::default();
        validate_region(&mut diags, &config("", 91.0, -181.0));
        let bad: Vec<_> = diags.errors.iter().map(|d| d.attribute.clone()).collect();
        assert_eq!(
            bad,
            [
                AttributePath::new("name"),
                AttributePath::new("latitude"),
                AttributePath::new("longitude")
            ]
        );
        let mut diags = Diagnostics::default();
        validate_region(&mut diags, &config("bj", 39.9, 116.4));
        assert!(diags.errors.is_empty());
    }

    #[tokio::test]
    async fn renaming_replaces_moving_updates_in_place() {
        let resource = RegionResource::new(Connection::default());
        let prior = RegionState {
            id: Value::Value("bj".into()),
            topic: Value::Value("rim-push-bj".into()),
            ..config("bj", 39.9, 116.4)
        };
        let mut diags = Diagnostics::default();
        let moved = RegionState {
            latitude: Value::Value(Number(40.0)),
            ..prior.clone()
        };
        let (_, _, replace) = resource
            .plan_update(
                &mut diags,
                prior.clone(),
                moved.clone(),
                moved,
                ValueEmpty::Null,
                ValueEmpty::Null,
            )
            .await
            .unwrap();
        assert!(replace.is_empty());
        let renamed = RegionState {
            name: Value::Value("pek".into()),
            ..prior.clone()
        };
        let (_, _, replace) = resource
            .plan_update(
                &mut diags,
                prior,
                renamed.clone(),
                renamed,
                ValueEmpty::Null,
                ValueEmpty::Null,
            )
            .await
            .unwrap();
        assert_eq!(replace, [AttributePath::new("name")]);
    }

    #[tokio::test]
    async fn calls_before_configure_fail_with_a_diagnostic() {
        let resource = RegionResource::new(Connection::default());
        let mut diags = Diagnostics::default();
        let created = resource
            .create(
                &mut diags,
                config("bj", 39.9, 116.4),
                config("bj", 39.9, 116.4),
                ValueEmpty::Null,
                ValueEmpty::Null,
            )
            .await;
        assert!(created.is_none());
        assert_eq!(
            diags.errors[0].summary,
            "the rim provider is not configured"
        );
    }
}

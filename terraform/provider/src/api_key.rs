//! `rim_api_key`: an API key for a business service (pushes, reads) or an operator (admin).
//!
//! Keys cannot be changed once created, so any change replaces the key (a new secret; the old key
//! is revoked). The secret is shown by the control plane only when the key is created: it is a
//! sensitive attribute set by the run that created the key, and null for imported keys
//! (`terraform import rim_api_key.x key_...`). A key revoked outside Terraform is gone: the next
//! plan creates it again.

use crate::check;
use crate::client::{ApiKey, Client, NewKey};
use crate::{Connection, attribute, schema, string};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

/// Scopes the control plane knows.
pub const SCOPES: &[&str] = &["push", "read", "admin"];
/// Push target kinds a key may be limited to.
pub const TARGET_KINDS: &[&str] = &["mids", "keys", "room", "broadcast"];
/// Largest rate or burst the control plane stores.
const MAX_RATE: i64 = i32::MAX as i64;

/// The resource's state and configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyState {
    /// Key id (`key_...`).
    #[serde(default)]
    pub id: Value<String>,
    /// Name.
    #[serde(default)]
    pub name: Value<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Value<Vec<Value<String>>>,
    /// Target kinds the key may push to; null: every kind.
    #[serde(default)]
    pub target_kinds: Value<Vec<Value<String>>>,
    /// Pushes per second on each control instance; null: unlimited.
    #[serde(default)]
    pub rate_per_second: Value<i64>,
    /// Pushes at once after a quiet period; null: the rate.
    #[serde(default)]
    pub rate_burst: Value<i64>,
    /// The secret (sensitive), known to the run that created the key.
    #[serde(default)]
    pub secret: Value<String>,
}

/// Checks a key's configuration.
pub fn validate_key(diags: &mut Diagnostics, config: &ApiKeyState) {
    check::name(diags, "name", &config.name);
    check::one_of(diags, "scopes", &config.scopes, SCOPES, true);
    check::one_of(
        diags,
        "target_kinds",
        &config.target_kinds,
        TARGET_KINDS,
        true,
    );
    check::positive(diags, "rate_per_second", &config.rate_per_second, MAX_RATE);
    check::positive(diags, "rate_burst", &config.rate_burst, MAX_RATE);
    if config.rate_burst.is_value() && config.rate_per_second.is_null() {
        diags.error(
            "rate_burst needs rate_per_second",
            "A burst only makes sense with a rate: set `rate_per_second` too.",
            AttributePath::new("rate_burst"),
        );
    }
}

/// A known whole number as `u32` (validation bounded it).
fn rate(value: &Value<i64>) -> Option<u32> {
    value
        .as_ref_option()
        .and_then(|number| u32::try_from(*number).ok())
}

/// A list attribute of strings, or null for an absent list.
fn list(items: Option<&Vec<String>>) -> Value<Vec<Value<String>>> {
    items
        .map(|items| items.iter().cloned().map(Value::Value).collect())
        .into()
}

impl ApiKeyState {
    /// The state of `key` as the control plane lists it, keeping the secret (never listed) from
    /// `known`, and `known`'s way of saying the default burst (unset or equal to the rate).
    fn from_api(key: ApiKey, known: &ApiKeyState) -> Self {
        Self {
            id: Value::Value(key.id),
            name: Value::Value(key.name),
            scopes: list(Some(&key.scopes)),
            target_kinds: list(key.target_kinds.as_ref()),
            rate_per_second: key
                .rate_limit
                .map(|limit| i64::from(limit.per_second))
                .into(),
            rate_burst: match key.rate_limit {
                Some(limit) if known.rate_burst.is_value() || limit.burst != limit.per_second => {
                    Value::Value(i64::from(limit.burst))
                }
                _ => Value::Null,
            },
            secret: known.secret.clone(),
        }
    }
}

/// The `rim_api_key` resource.
#[derive(Clone, Debug)]
pub struct ApiKeyResource {
    connection: Connection,
}

impl ApiKeyResource {
    /// The resource, using the provider's connection.
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }

    fn client(&self, diags: &mut Diagnostics) -> Option<Client> {
        self.connection.client(diags)
    }
}

#[async_trait]
impl Resource for ApiKeyResource {
    type State<'a> = ApiKeyState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let strings = AttributeType::List(Box::new(AttributeType::String));
        let mut secret = string(
            AttributeConstraint::Computed,
            "The key's secret (bearer token); set only by the run that created the key.",
        );
        secret.sensitive = true;
        Some(schema(
            "An API key of rim's business and admin APIs. Any change replaces the key.",
            vec![
                (
                    "id",
                    string(AttributeConstraint::Computed, "Key id (`key_...`)."),
                ),
                (
                    "name",
                    string(AttributeConstraint::Required, "Name, 1 to 128 bytes."),
                ),
                (
                    "scopes",
                    attribute(
                        strings.clone(),
                        AttributeConstraint::Required,
                        "Scopes: `push`, `read`, `admin` (admin implies the others).",
                    ),
                ),
                (
                    "target_kinds",
                    attribute(
                        strings,
                        AttributeConstraint::Optional,
                        "Push targets the key may use: `mids`, `keys`, `room`, `broadcast`; unset: all.",
                    ),
                ),
                (
                    "rate_per_second",
                    attribute(
                        AttributeType::Number,
                        AttributeConstraint::Optional,
                        "Pushes per second the key may make on each control instance; unset: unlimited.",
                    ),
                ),
                (
                    "rate_burst",
                    attribute(
                        AttributeType::Number,
                        AttributeConstraint::Optional,
                        "Pushes the key may make at once after a quiet period; unset: the rate.",
                    ),
                ),
                ("secret", secret),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: ApiKeyState) -> Option<()> {
        validate_key(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: ApiKeyState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState, ValueEmpty)> {
        let client = self.client(diags)?;
        let id = state.id.as_ref_option()?.clone();
        match client.api_key(&id).await {
            Ok(Some(key)) if key.revoked_at.is_none() => {
                Some((ApiKeyState::from_api(key, &state), private_state))
            }
            Ok(_) => None,
            Err(err) => {
                err.report(diags, &format!("reading API key {id:?}"));
                None
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: ApiKeyState,
        _config: ApiKeyState,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState, ValueEmpty)> {
        Some((
            ApiKeyState {
                id: Value::Unknown,
                secret: Value::Unknown,
                ..proposed
            },
            ValueEmpty::Null,
        ))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: ApiKeyState,
        proposed: ApiKeyState,
        _config: ApiKeyState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState, ValueEmpty, Vec<AttributePath>)> {
        let mut replace = Vec::new();
        let mut differs = |name: &'static str, changed: bool| {
            if changed {
                replace.push(AttributePath::new(name));
            }
        };
        differs("name", prior.name != proposed.name);
        differs("scopes", prior.scopes != proposed.scopes);
        differs("target_kinds", prior.target_kinds != proposed.target_kinds);
        differs(
            "rate_per_second",
            prior.rate_per_second != proposed.rate_per_second,
        );
        differs("rate_burst", prior.rate_burst != proposed.rate_burst);
        Some((proposed, private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: ApiKeyState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: ApiKeyState,
        _config: ApiKeyState,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState, ValueEmpty)> {
        let client = self.client(diags)?;
        let Value::Value(name) = planned.name.clone() else {
            diags.root_error_short("rim_api_key: name must be known");
            return None;
        };
        let target_kinds = planned
            .target_kinds
            .is_value()
            .then(|| check::strings(&planned.target_kinds));
        let request = NewKey {
            name: name.clone(),
            scopes: check::strings(&planned.scopes),
            target_kinds,
            rate_per_second: rate(&planned.rate_per_second),
            rate_burst: rate(&planned.rate_burst),
        };
        match client.create_api_key(&request).await {
            Ok(created) => {
                let known = ApiKeyState {
                    secret: Value::Value(created.secret),
                    ..planned
                };
                Some((ApiKeyState::from_api(created.key, &known), private_state))
            }
            Err(err) => {
                err.report(diags, &format!("creating API key {name:?}"));
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: ApiKeyState,
        _planned: ApiKeyState,
        _config: ApiKeyState,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(ApiKeyState, ValueEmpty)> {
        // Every attribute change is planned as a replacement; an update is never planned.
        diags.root_error_short("rim_api_key cannot be updated in place");
        None
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: ApiKeyState,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let client = self.client(diags)?;
        let id = prior.id.as_ref_option()?.clone();
        match client.revoke_api_key(&id).await {
            Ok(()) => Some(()),
            Err(err) if err.is_not_found() => Some(()),
            Err(err) => {
                err.report(diags, &format!("revoking API key {id:?}"));
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        _diags: &mut Diagnostics,
        id: String,
    ) -> Option<(ApiKeyState, ValueEmpty)> {
        Some((
            ApiKeyState {
                id: Value::Value(id),
                ..Default::default()
            },
            ValueEmpty::Null,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RateLimit;

    fn strings(items: &[&str]) -> Value<Vec<Value<String>>> {
        Value::Value(
            items
                .iter()
                .map(|s| Value::Value((*s).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn schema_marks_the_secret_sensitive_and_computed() {
        let resource = ApiKeyResource::new(Connection::default());
        let schema = Resource::schema(&resource, &mut Diagnostics::default()).unwrap();
        let secret = &schema.block.attributes["secret"];
        assert!(secret.sensitive);
        assert_eq!(secret.constraint, AttributeConstraint::Computed);
        assert_eq!(
            schema.block.attributes["scopes"].constraint,
            AttributeConstraint::Required
        );
        for optional in ["target_kinds", "rate_per_second", "rate_burst"] {
            assert_eq!(
                schema.block.attributes[optional].constraint,
                AttributeConstraint::Optional
            );
        }
    }

    #[test]
    fn unknown_scopes_and_kinds_and_a_lone_burst_are_rejected() {
        let mut diags = Diagnostics::default();
        validate_key(
            &mut diags,
            &ApiKeyState {
                name: Value::Value("svc".into()),
                scopes: strings(&["push", "write"]),
                target_kinds: strings(&["everyone"]),
                rate_burst: Value::Value(5),
                ..Default::default()
            },
        );
        let summaries: Vec<String> = diags.errors.iter().map(|d| d.summary.to_string()).collect();
        assert_eq!(
            summaries,
            [
                "unknown scopes value \"write\"",
                "unknown target_kinds value \"everyone\"",
                "rate_burst needs rate_per_second"
            ]
        );
    }

    #[test]
    fn listed_keys_keep_the_secret_and_the_configured_burst_form() {
        let known = ApiKeyState {
            secret: Value::Value("s3cret".into()),
            rate_per_second: Value::Value(10),
            ..Default::default()
        };
        let key = ApiKey {
            id: "key_1".into(),
            name: "svc".into(),
            scopes: vec!["push".into()],
            revoked_at: None,
            target_kinds: None,
            rate_limit: Some(RateLimit {
                per_second: 10,
                burst: 10,
            }),
        };
        let state = ApiKeyState::from_api(key, &known);
        assert_eq!(state.secret, Value::Value("s3cret".into()));
        assert_eq!(state.rate_per_second, Value::Value(10));
        assert_eq!(
            state.rate_burst,
            Value::Null,
            "the default burst stays unset"
        );
        assert_eq!(state.scopes, strings(&["push"]));
    }

    #[tokio::test]
    async fn every_change_replaces_the_key() {
        let resource = ApiKeyResource::new(Connection::default());
        let prior = ApiKeyState {
            id: Value::Value("key_1".into()),
            name: Value::Value("svc".into()),
            scopes: strings(&["push"]),
            ..Default::default()
        };
        let proposed = ApiKeyState {
            scopes: strings(&["push", "read"]),
            ..prior.clone()
        };
        let (_, _, replace) = resource
            .plan_update(
                &mut Diagnostics::default(),
                prior,
                proposed.clone(),
                proposed,
                ValueEmpty::Null,
                ValueEmpty::Null,
            )
            .await
            .unwrap();
        assert_eq!(replace, [AttributePath::new("scopes")]);
    }
}

//! Client authentication through the business backend, by way of the control plane.
//!
//! [`WebhookVerifier`] is the edge's [`Verifier`] for deployments whose clients carry no signed
//! token: it forwards the client's op-7 body unchanged to control's `POST /edge/v1/auth`, which asks
//! the business webhook (`control_auth_webhook_url`) and answers the identity to use. Only control
//! needs to reach the business network. The call is bounded by `edge_auth_webhook_timeout_ms`.
//!
//! | control's answer | the client gets |
//! |---|---|
//! | accepted | the identity the webhook chose (never the client's own claims) |
//! | refused | `Rejected` with the webhook's reason |
//! | no webhook configured, wrong cluster secret | `Unavailable` with control's explanation |
//! | webhook failed (502), control unreachable or slow | `Unavailable`, "auth unavailable: ..." |

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rim_edge::auth::AuthRequest;
use rim_edge::auth::RoomGrant;
use rim_edge::{AuthError, Identity, Verifier};
use rim_proto::schema;

use crate::client::{CallError, ControlClient};
use crate::config::LinkConfig;

/// A [`Verifier`] asking the control plane's auth webhook; see the module docs.
pub struct WebhookVerifier {
    client: ControlClient,
    node_id: String,
    timeout: Duration,
}

impl WebhookVerifier {
    /// A verifier for the control plane of `config`, reporting as `node_id` (use the reporter's,
    /// [`crate::SessionReporter::node_id`]). Fails on an unusable control URL or an empty secret.
    pub fn new(config: &LinkConfig, node_id: String, cluster_secret: &str) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.edge_auth_webhook_timeout_ms.max(1));
        let client = ControlClient::new(&config.edge_control_url, cluster_secret, timeout)?;
        Ok(Self {
            client,
            node_id,
            timeout,
        })
    }
}

#[async_trait]
impl Verifier for WebhookVerifier {
    async fn verify(&self, request: AuthRequest<'_>) -> Result<Identity, AuthError> {
        let ask = schema::AuthRequest {
            node_id: self.node_id.clone(),
            body: Bytes::copy_from_slice(request.body),
            client_ip: request.client_ip.to_string(),
        };
        match self.client.auth(&ask, self.timeout).await {
            Ok(answer) if answer.accepted => Ok(Identity {
                mid: answer.mid,
                key: answer.key,
                room: answer.room,
                platform: answer.platform,
                accepts: answer.accepts,
                rooms: RoomGrant::patterns(answer.rooms),
            }),
            Ok(answer) if answer.reason.is_empty() => {
                Err(AuthError::Rejected("refused by the auth webhook".into()))
            }
            Ok(answer) => Err(AuthError::Rejected(answer.reason)),
            Err(CallError::Refused { message, .. }) => Err(AuthError::Unavailable(message)),
            Err(error) => Err(AuthError::Unavailable(format!(
                "the control plane could not decide: {error}"
            ))),
        }
    }
}

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
//! | no webhook configured, node token refused | `Unavailable` with control's explanation (a refused token is renewed) |
//! | webhook failed (502), control unreachable or slow | `Unavailable`, "auth unavailable: ..." |

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rim_edge::auth::AuthRequest;
use rim_edge::auth::RoomGrant;
use rim_edge::{AuthError, Identity, Verifier};
use rim_proto::schema;

use std::sync::Arc;

use crate::client::{CallError, ControlClient};
use crate::config::LinkConfig;
use crate::credential::NodeCredentials;

/// A [`Verifier`] asking the control plane's auth webhook; see the module docs.
pub struct WebhookVerifier {
    client: ControlClient,
    credentials: Arc<NodeCredentials>,
    timeout: Duration,
}

impl WebhookVerifier {
    /// A verifier for the control plane of `config`, asking as the node of `credentials` (the
    /// edge's). Fails on an unusable control URL or CA file.
    pub fn new(config: &LinkConfig, credentials: &Arc<NodeCredentials>) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.edge_auth_webhook_timeout_ms.max(1));
        let client = ControlClient::new(
            &config.edge_control_url,
            credentials.token(),
            timeout,
            config.edge_control_ca_file.as_deref(),
        )?;
        Ok(Self {
            client,
            credentials: credentials.clone(),
            timeout,
        })
    }
}

#[async_trait]
impl Verifier for WebhookVerifier {
    async fn verify(&self, request: AuthRequest<'_>) -> Result<Identity, AuthError> {
        let ask = schema::AuthRequest {
            node_id: self.credentials.node_id().to_owned(),
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
            Err(CallError::Unauthorized(message)) => {
                // The client already told the credential to renew.
                Err(AuthError::Unavailable(format!(
                    "the control plane refused this edge's token (renewing): {message}"
                )))
            }
            Err(error) => Err(AuthError::Unavailable(format!(
                "the control plane could not decide: {error}"
            ))),
        }
    }
}

//! rim edgelink: the edge's link to the control plane.
//!
//! The edge (`rim-edge`) holds connections and knows nothing about the rest of the cluster; the
//! control plane learns who is connected where only through this crate, which speaks control's edge
//! API (`POST /edge/v1/{register,heartbeat,sessions,auth}`, protobuf bodies, the node's token as
//! bearer, obtained by enrolling with the cluster secret):
//!
//! | module | idea |
//! |---|---|
//! | [`config`] | [`LinkConfig`]: node identity, where control is, reporting periods and bounds (`[edge]` keys) |
//! | [`credential`] | [`NodeCredentials`]: enrollment, token renewal, and (for edges) who may push |
//! | [`client`] | [`ControlClient`]: the calls, answers reduced to what to do next ([`CallError`]) |
//! | `buffer` | session changes coalesced per key, bounded, never blocking a connection |
//! | [`reporter`] | [`SessionReporter`]: the edge's `EdgeEvents`; registration, batches, renewals, heartbeats |
//! | [`webhook`] | [`WebhookVerifier`]: client auth through control's business auth webhook |
//! | [`durable`] | [`DurableReporter`]: the edge's `DurableLink`; resume calls, acks and `written` receipts in batches |
//! | [`upstream`] | [`UpstreamForwarder`]: client messages to the business backend, verdicts back as replies |
//!
//! # Wiring an edge
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use rim_edge::{Edge, EdgeConfig, EdgeHooks};
//! use rim_edgelink::{LinkConfig, SessionReporter};
//! use rim_edgelink::NodeCredentials;
//! use rim_proto::node_token::NodeRole;
//! let secret = "cluster-secret".to_owned();
//! let link = LinkConfig::local()?;
//! let reporter = SessionReporter::new(link.clone());
//! let credentials = NodeCredentials::new(
//!     NodeRole::Edge, reporter.node_id(), &link.edge_region, &secret, &link.credential_settings())?;
//! let enrolling = credentials.spawn(tokio_util::sync::CancellationToken::new());
//! let config = EdgeConfig::local()?;
//! let verifier = rim_edge::auth::from_config(&config)?;
//! let hooks = EdgeHooks {
//!     events: reporter.clone(),
//!     push_authority: Some(credentials.clone()), // job workers' tokens only
//!     ..EdgeHooks::default()
//! };
//! let edge = Edge::start(config, secret.clone(), verifier, hooks).await?;
//! reporter.start(&credentials, edge.addrs())?; // enrolls, registers, then reports
//! // ... at the end:
//! reporter.drain().await; // no new clients, please
//! edge.shutdown().await;
//! reporter.shutdown(std::time::Duration::from_secs(5)).await; // the disconnects go out
//! # Ok(()) }
//! ```

mod buffer;
pub mod client;
pub mod config;
pub mod credential;
pub mod durable;
mod metrics;
pub mod reporter;
pub mod upstream;
pub mod webhook;

pub use client::{CallError, ControlClient};
pub use config::LinkConfig;
pub use credential::{CredentialSettings, NodeCredentials};
pub use durable::DurableReporter;
pub use reporter::SessionReporter;
pub use upstream::UpstreamForwarder;
pub use webhook::WebhookVerifier;

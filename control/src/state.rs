//! What every request handler shares: the store, the bus, the configuration and the caches built
//! from them. Cheap to clone (one `Arc`), so axum hands a copy to each handler.

use crate::auth::{CallerAuth, EdgeAuth};
use crate::config::ControlConfig;
use crate::takeover::Takeovers;
use crate::webhook::AuthWebhook;
use metrics_exporter_prometheus::PrometheusHandle;
use rim_bus::BusProducer;
use rim_store::inbox::Inbox;
use rim_store::{DirectorySettings, NodeDirectory, Store};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// Handler state; dereferences to [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
pub struct Shared {
    /// The configuration the instance started with.
    pub config: ControlConfig,
    /// Sessions, nodes, regions, API keys.
    pub store: Arc<dyn Store>,
    /// User inboxes, the room log and push receipts (durable delivery), beside the store.
    pub inbox: Arc<dyn Inbox>,
    /// Where accepted pushes go.
    pub bus: Arc<dyn BusProducer>,
    /// Batches durable pushes into shared inbox appends and bus publishes ([`crate::push`]).
    pub writer: crate::push::DurableWriter,
    /// Batches the session look-ups of key and user pushes into shared store calls
    /// ([`crate::push`]).
    pub lookups: crate::push::SessionLookups,
    /// Cached node table (node → region, live regions, the balancer's candidates).
    pub directory: NodeDirectory,
    /// This instance's name as the holder of the store's sweeper lease (random per start).
    pub instance_id: String,
    /// Close notices for connections whose key was taken over.
    pub takeovers: Takeovers,
    /// API key checks for business callers.
    pub callers: CallerAuth,
    /// Cluster-secret check for edges.
    pub edges: EdgeAuth,
    /// Node tokens: issued at enrollment, required by the edge API.
    pub nodes: crate::enroll::NodeIssuer,
    /// The business auth webhook, if configured.
    pub webhook: Option<AuthWebhook>,
    /// Where client upstream messages go (the business backend, if configured).
    pub upstream: crate::upstream::Upstream,
    /// The presence webhook's queue, if configured (fed by the session batches).
    pub presence: Option<crate::presence::PresenceWebhook>,
    /// Locates HTTPDNS clients that send no coordinates (proxy headers, GeoIP database).
    pub locator: rim_balancer::Locator,
    /// HTTPDNS rankings of the latest node snapshot.
    pub httpdns: crate::dns::Answers,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
}

impl AppState {
    /// Checks that the caller's API key (or the bootstrap admin key) carries `scope`: 401 without a
    /// valid key, 403 without the scope. Every business and admin route starts here.
    pub async fn require(
        &self,
        headers: &axum::http::HeaderMap,
        scope: rim_store::Scope,
    ) -> Result<(), crate::error::ApiError> {
        self.callers
            .require(self.store.as_ref(), headers, scope)
            .await
    }

    /// [`AppState::require`], answering the caller for the checks of a push
    /// ([`crate::auth::Caller::admit`]: target kinds and rate).
    pub async fn caller(
        &self,
        headers: &axum::http::HeaderMap,
        scope: rim_store::Scope,
    ) -> Result<crate::auth::Caller, crate::error::ApiError> {
        self.callers
            .caller(self.store.as_ref(), headers, scope)
            .await
    }

    /// Builds the state of one control instance. Fails if the webhook client cannot be built
    /// (an unusable webhook URL) or the inbox settings keep nothing.
    pub fn new(
        config: ControlConfig,
        cluster_secret: &str,
        store: Arc<dyn Store>,
        bus: Arc<dyn BusProducer>,
        prometheus: PrometheusHandle,
    ) -> anyhow::Result<Self> {
        let webhook = match &config.control_auth_webhook_url {
            Some(url) if !url.is_empty() => Some(AuthWebhook::new(
                url,
                Duration::from_millis(config.control_auth_webhook_timeout_ms),
            )?),
            _ => None,
        };
        // A configured GeoIP database that cannot be read would silently locate nobody: refuse.
        let locator = rim_balancer::Locator::new(&config.balancer)?;
        let inbox = store.inbox(config.inbox_settings())?;
        let upstream = crate::upstream::Upstream::new(&config, bus.as_ref())?;
        let presence = config
            .presence_webhook()
            .map(crate::presence::PresenceWebhook::start)
            .transpose()?;
        Ok(Self(Arc::new(Shared {
            locator,
            httpdns: crate::dns::Answers::default(),
            directory: NodeDirectory::new(
                store.clone(),
                "control",
                DirectorySettings::new(Duration::from_millis(config.control_node_cache_ms)),
            ),
            instance_id: format!("control-{}", uuid::Uuid::now_v7().simple()),
            takeovers: Takeovers::default(),
            callers: CallerAuth::new(config.control_admin_key.as_deref()),
            edges: EdgeAuth::new(cluster_secret),
            nodes: crate::enroll::NodeIssuer::new(
                store.clone(),
                Duration::from_millis(config.control_node_token_ttl_ms),
                Duration::from_millis(config.control_node_key_rotation_ms),
            ),
            webhook,
            upstream,
            presence,
            store,
            inbox,
            bus,
            writer: crate::push::DurableWriter::default(),
            lookups: crate::push::SessionLookups::default(),
            prometheus,
            config,
        })))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

//! The control plane's settings, as command-line flags, environment variables and TOML keys.
//!
//! Field names are the TOML keys of the `[control]` section and must stay unique across the edge,
//! control and job configs (the all-in-one `rim dev` flattens them), hence the `control_` prefixes on
//! the ambiguous ones. The cluster secret is deliberately absent: it is a parameter of
//! [`crate::serve`], so it never ends up in a config dump.

use rim_balancer::BalancerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a control-plane instance needs besides its store, bus and the cluster secret.
#[derive(clap::Args, Clone, Debug)]
pub struct ControlConfig {
    /// Address the business, edge and admin HTTP APIs listen on (port 0 picks a free port).
    #[arg(long, env = "RIM_CONTROL_LISTEN", default_value = "0.0.0.0:3111")]
    pub control_listen: SocketAddr,

    /// PEM certificate chain of the listener: with `control_tls_key`, it speaks HTTPS only
    /// (HTTP/1.1 and HTTP/2 by ALPN); reloaded when its files change or on SIGHUP. Nodes trust its
    /// CA with `edge_control_ca_file` / `job_control_ca_file`.
    #[arg(long, env = "RIM_CONTROL_TLS_CERT")]
    pub control_tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `control_tls_cert`.
    #[arg(long, env = "RIM_CONTROL_TLS_KEY")]
    pub control_tls_key: Option<PathBuf>,

    /// Bootstrap admin API key: a caller presenting it has every scope. Used to create the other
    /// keys; leave unset once real keys exist.
    #[arg(long, env = "RIM_CONTROL_ADMIN_KEY")]
    pub control_admin_key: Option<String>,

    /// Serve the goim-compatible `/goim/*` routes without an API key, as goim does (logs a warning).
    #[arg(long, env = "RIM_CONTROL_GOIM_ROUTES_OPEN", default_value_t = false)]
    pub goim_routes_open: bool,

    /// Largest accepted push body (the message payload), in bytes; larger requests get 413.
    #[arg(long, env = "RIM_CONTROL_PUSH_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub control_push_body_limit: usize,

    /// Largest accepted edge API body (a session batch, a heartbeat), in bytes; larger get 413.
    #[arg(long, env = "RIM_CONTROL_EDGE_BODY_LIMIT", default_value_t = 4 * 1024 * 1024)]
    pub control_edge_body_limit: usize,

    /// Most session events accepted in one batch from an edge; larger batches get 413.
    #[arg(long, env = "RIM_CONTROL_MAX_SESSION_BATCH", default_value_t = 20_000)]
    pub control_max_session_batch: usize,

    /// Most targets (keys, user ids or rooms) accepted in one push or query; more get 400. The
    /// records they resolve to are bounded by `control_max_records_per_push`.
    #[arg(long, env = "RIM_CONTROL_MAX_TARGETS", default_value_t = 1_000)]
    pub control_max_targets: usize,

    /// Most sessions of one user a push reaches: a user with more live sessions gets the most
    /// recently connected ones (the answer lists such users in `capped_mids`), so one user id
    /// shared by a runaway client cannot load unbounded rows into one push.
    #[arg(long, env = "RIM_CONTROL_MAX_SESSIONS_PER_USER", default_value_t = 64)]
    pub control_max_sessions_per_user: usize,

    /// Most bus records one push may become (one per key, per user and region, or per region for
    /// rooms and broadcasts); a push resolving to more gets 400 and nothing is sent. Times the body
    /// limit, this bounds the memory of one push.
    #[arg(
        long,
        env = "RIM_CONTROL_MAX_RECORDS_PER_PUSH",
        default_value_t = 2_000
    )]
    pub control_max_records_per_push: usize,

    /// URL of the business backend's auth webhook (edges forward client auth bodies here through
    /// `/edge/v1/auth`). Unset: the auth hook answers 404.
    #[arg(long, env = "RIM_CONTROL_AUTH_WEBHOOK_URL")]
    pub control_auth_webhook_url: Option<String>,

    /// How long the auth webhook may take before the client is refused, in milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_AUTH_WEBHOOK_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub control_auth_webhook_timeout_ms: u64,

    /// How often the expiry sweeper runs, in milliseconds.
    #[arg(long, env = "RIM_CONTROL_SWEEP_INTERVAL_MS", default_value_t = 5_000)]
    pub control_sweep_interval_ms: u64,

    /// A node that has not registered or sent a heartbeat for this long is marked dead and its
    /// sessions are removed, in milliseconds.
    #[arg(long, env = "RIM_CONTROL_NODE_TIMEOUT_MS", default_value_t = 60_000)]
    pub control_node_timeout_ms: i64,

    /// How long the cached node directory (node → region) is trusted before it is re-read from the
    /// store, in milliseconds. A node missing from it forces an earlier refresh; while the store
    /// fails, the last good copy is used.
    #[arg(long, env = "RIM_CONTROL_NODE_CACHE_MS", default_value_t = 1_000)]
    pub control_node_cache_ms: u64,

    /// Most requests handled at once; beyond it requests are refused at once with 503 (counted in
    /// `rim_control_requests_shed_total`) instead of queueing without bound.
    #[arg(long, env = "RIM_CONTROL_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub control_max_in_flight: usize,

    /// Most edge lifecycle requests (register, heartbeat, sessions) handled at once, a limit apart
    /// from the business one and the auth hook's, so business load, a slow broker or a slow auth
    /// webhook cannot starve edge heartbeats (which would get every node declared dead); beyond it
    /// edge calls get 503 and retry.
    #[arg(long, env = "RIM_CONTROL_EDGE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub control_edge_max_in_flight: usize,

    /// Most auth hook requests (`/edge/v1/auth`, each waiting for the business webhook) handled at
    /// once, apart from the other edge calls; beyond it the edge refuses the client as "auth
    /// unavailable" (503).
    #[arg(long, env = "RIM_CONTROL_AUTH_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub control_auth_max_in_flight: usize,

    /// Lifetime of the node tokens issued at enrollment and renewal, in milliseconds. Nodes renew
    /// at half of it; a stolen token is good for at most this long after its node stops renewing.
    #[arg(
        long,
        env = "RIM_CONTROL_NODE_TOKEN_TTL_MS",
        default_value_t = 3_600_000
    )]
    pub control_node_token_ttl_ms: u64,

    /// Age at which the newest node-token signing key is replaced by a new generation, in
    /// milliseconds (keys are shared by every instance through the store; see `enroll`).
    #[arg(
        long,
        env = "RIM_CONTROL_NODE_KEY_ROTATION_MS",
        default_value_t = 7 * 24 * 3_600_000
    )]
    pub control_node_key_rotation_ms: u64,

    /// Longest a user or key push is kept in the user's inbox for a resume, in milliseconds
    /// (7 days).
    #[arg(
        long,
        env = "RIM_CONTROL_INBOX_MAX_AGE_MS",
        default_value_t = 7 * 24 * 3_600_000
    )]
    pub control_inbox_max_age_ms: i64,

    /// Most pushes kept per user inbox; older ones go as newer ones are stored.
    #[arg(long, env = "RIM_CONTROL_INBOX_MAX_PER_USER", default_value_t = 1_000)]
    pub control_inbox_max_per_user: u64,

    /// How far back a room connection resumes (the room window), in milliseconds.
    #[arg(long, env = "RIM_CONTROL_ROOM_WINDOW_MS", default_value_t = 120_000)]
    pub control_room_window_ms: i64,

    /// How long a room without pushes keeps its numbering before its log is dropped (a later push
    /// starts a new epoch), in milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_ROOM_IDLE_MS",
        default_value_t = 24 * 3_600_000
    )]
    pub control_room_idle_ms: i64,

    /// Longest a push receipt (`GET /v1/pushes/{id}`) is kept, in milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_RECEIPT_MAX_AGE_MS",
        default_value_t = 7 * 24 * 3_600_000
    )]
    pub control_receipt_max_age_ms: i64,

    /// Longest a push waits for the bus to acknowledge its records (durable or not), in
    /// milliseconds (at least 1). Past it the push fails (503); a durable batch's numbers are
    /// burned and its inbox heads released, so a broker outage cannot hold the heads (and every
    /// later push of those users) for as long as the broker takes; see `push`.
    #[arg(
        long,
        env = "RIM_CONTROL_PUBLISH_TIMEOUT_MS",
        default_value_t = 3_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub control_publish_timeout_ms: u64,

    /// URL the receipt events (every push receipt: accepted, stored, written, acked, offline,
    /// expired, fallback) are posted to in order, as JSON arrays (see `receipt_events`). Unset: no
    /// receipt webhook.
    #[arg(long, env = "RIM_CONTROL_RECEIPT_WEBHOOK_URL")]
    pub control_receipt_webhook_url: Option<String>,

    /// Most receipt events in one webhook post.
    #[arg(long, env = "RIM_CONTROL_RECEIPT_WEBHOOK_BATCH", default_value_t = 500)]
    pub control_receipt_webhook_batch: usize,

    /// How often new receipt events are looked for and posted (a full batch is posted at once), in
    /// milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_RECEIPT_WEBHOOK_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub control_receipt_webhook_interval_ms: u64,

    /// How long one receipt webhook post may take before it is retried, in milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_RECEIPT_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub control_receipt_webhook_timeout_ms: u64,

    /// URL of the fallback webhook (an APNs/FCM relay): called once per user or key push and target
    /// that was not acked within `control_fallback_deadline_ms`, or whose target had no session
    /// (see `fallback`). Unset: no fallback.
    #[arg(long, env = "RIM_CONTROL_FALLBACK_WEBHOOK_URL")]
    pub control_fallback_webhook_url: Option<String>,

    /// How long a stored push may stay unacked before the fallback webhook is called, in
    /// milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_FALLBACK_DEADLINE_MS",
        default_value_t = 30_000
    )]
    pub control_fallback_deadline_ms: u64,

    /// How often the fallback scanner looks for due pushes, in milliseconds (offline targets are
    /// called within one interval).
    #[arg(
        long,
        env = "RIM_CONTROL_FALLBACK_SCAN_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub control_fallback_scan_interval_ms: u64,

    /// How long one fallback call may take, in milliseconds.
    #[arg(long, env = "RIM_CONTROL_FALLBACK_TIMEOUT_MS", default_value_t = 5_000)]
    pub control_fallback_timeout_ms: u64,

    /// How long a failing fallback call is retried (with backoff) before it is given up
    /// (`fallback_failed` in the log, `rim_control_fallback_failed_total`), in milliseconds.
    #[arg(long, env = "RIM_CONTROL_FALLBACK_RETRY_MS", default_value_t = 60_000)]
    pub control_fallback_retry_ms: u64,

    /// Most receipts one fallback scan step reads (and claims).
    #[arg(long, env = "RIM_CONTROL_FALLBACK_BATCH", default_value_t = 500)]
    pub control_fallback_batch: usize,

    /// Most fallback calls in flight at once; the scanner waits for a free one before claiming more.
    #[arg(long, env = "RIM_CONTROL_FALLBACK_MAX_IN_FLIGHT", default_value_t = 64)]
    pub control_fallback_max_in_flight: usize,

    /// URL the batched presence events (a user came online with its first live session, or
    /// went offline with its last) are posted to, as a JSON array (see `presence`). Unset: no
    /// presence webhook.
    #[arg(long, env = "RIM_CONTROL_PRESENCE_WEBHOOK_URL")]
    pub control_presence_webhook_url: Option<String>,

    /// How long presence events gather before one webhook post, in milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_PRESENCE_WEBHOOK_BATCH_MS",
        default_value_t = 1_000
    )]
    pub control_presence_webhook_batch_ms: u64,

    /// How long one presence webhook post may take before it is retried, in milliseconds.
    #[arg(
        long,
        env = "RIM_CONTROL_PRESENCE_WEBHOOK_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub control_presence_webhook_timeout_ms: u64,

    /// Most presence events waiting to be posted; beyond it events are dropped and counted in
    /// `rim_control_presence_events_dropped_total`.
    #[arg(
        long,
        env = "RIM_CONTROL_PRESENCE_WEBHOOK_QUEUE",
        default_value_t = 10_000
    )]
    pub control_presence_webhook_queue: usize,

    /// URL of the business backend's upstream webhook: client messages (op 4 and business ops)
    /// that edges forward through `/edge/v1/upstream` are posted there in batches (a JSON array;
    /// see `upstream`). At most one of this and `control_upstream_kafka_topic_prefix`.
    #[arg(long, env = "RIM_CONTROL_UPSTREAM_WEBHOOK_URL")]
    pub control_upstream_webhook_url: Option<String>,

    /// How long the upstream webhook may take to answer a batch before its messages are refused as
    /// "upstream unavailable", in milliseconds (keep it under the edges' `edge_upstream_timeout_ms`).
    #[arg(
        long,
        env = "RIM_CONTROL_UPSTREAM_WEBHOOK_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub control_upstream_webhook_timeout_ms: u64,

    /// Instead of a webhook, produce client messages to the Kafka topic `<prefix><region>` of the
    /// sending edge's region (e.g. `rim-upstream-`), keyed by user id (needs the Kafka bus).
    #[arg(long, env = "RIM_CONTROL_UPSTREAM_KAFKA_TOPIC_PREFIX")]
    pub control_upstream_kafka_topic_prefix: Option<String>,

    /// Forward messages of anonymous connections (mid 0) too; by default they are refused with the
    /// reason `anonymous`.
    #[arg(
        long,
        env = "RIM_CONTROL_UPSTREAM_ALLOW_ANONYMOUS",
        default_value_t = false
    )]
    pub control_upstream_allow_anonymous: bool,

    /// Most messages accepted in one upstream batch from an edge; larger batches get 413.
    #[arg(long, env = "RIM_CONTROL_UPSTREAM_MAX_BATCH", default_value_t = 1_000)]
    pub control_upstream_max_batch: usize,

    /// Most upstream batches handled at once (each waits for the backend), apart from the other
    /// edge calls, so a slow backend cannot starve heartbeats; beyond it the edge refuses the
    /// messages as "upstream unavailable" (503).
    #[arg(
        long,
        env = "RIM_CONTROL_UPSTREAM_MAX_IN_FLIGHT",
        default_value_t = 256
    )]
    pub control_upstream_max_in_flight: usize,

    /// HTTPDNS answer settings (`/goim/nodes/weighted`, `/v1/dns`).
    #[command(flatten)]
    pub balancer: BalancerConfig,
}

impl ControlConfig {
    /// The receipt webhook these settings ask for, if a URL is set.
    pub fn receipt_webhook(&self) -> Option<crate::receipt_events::ReceiptWebhookSettings> {
        let url = self.control_receipt_webhook_url.as_deref()?;
        (!url.is_empty()).then(|| crate::receipt_events::ReceiptWebhookSettings {
            url: url.to_owned(),
            batch: self.control_receipt_webhook_batch,
            interval: std::time::Duration::from_millis(self.control_receipt_webhook_interval_ms),
            timeout: std::time::Duration::from_millis(self.control_receipt_webhook_timeout_ms),
        })
    }

    /// The fallback webhook these settings ask for, if a URL is set.
    pub fn fallback_webhook(&self) -> Option<crate::fallback::FallbackSettings> {
        let url = self.control_fallback_webhook_url.as_deref()?;
        let ms = std::time::Duration::from_millis;
        (!url.is_empty()).then(|| crate::fallback::FallbackSettings {
            url: url.to_owned(),
            deadline: ms(self.control_fallback_deadline_ms),
            scan_interval: ms(self.control_fallback_scan_interval_ms),
            timeout: ms(self.control_fallback_timeout_ms),
            retry_for: ms(self.control_fallback_retry_ms),
            batch: self.control_fallback_batch,
            max_in_flight: self.control_fallback_max_in_flight,
        })
    }

    /// The presence webhook these settings ask for, if a URL is set.
    pub fn presence_webhook(&self) -> Option<crate::presence::WebhookSettings> {
        let url = self.control_presence_webhook_url.as_deref()?;
        (!url.is_empty()).then(|| crate::presence::WebhookSettings {
            url: url.to_owned(),
            batch_interval: std::time::Duration::from_millis(
                self.control_presence_webhook_batch_ms,
            ),
            timeout: std::time::Duration::from_millis(self.control_presence_webhook_timeout_ms),
            queue: self.control_presence_webhook_queue,
        })
    }

    /// The inbox retention these settings ask for.
    pub fn inbox_settings(&self) -> rim_store::inbox::InboxSettings {
        rim_store::inbox::InboxSettings {
            max_age_ms: self.control_inbox_max_age_ms,
            max_per_user: self.control_inbox_max_per_user,
            room_window_ms: self.control_room_window_ms,
            room_idle_ms: self.control_room_idle_ms,
            receipt_max_age_ms: self.control_receipt_max_age_ms,
        }
    }
}

impl Default for ControlConfig {
    /// The same values as the flag defaults, listening on a free loopback port (tests, `rim dev`).
    fn default() -> Self {
        Self {
            control_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_tls_cert: None,
            control_tls_key: None,
            control_admin_key: None,
            goim_routes_open: false,
            control_push_body_limit: 64 * 1024,
            control_edge_body_limit: 4 * 1024 * 1024,
            control_max_session_batch: 20_000,
            control_max_targets: 1_000,
            control_max_sessions_per_user: 64,
            control_max_records_per_push: 2_000,
            control_auth_webhook_url: None,
            control_auth_webhook_timeout_ms: 3_000,
            control_sweep_interval_ms: 5_000,
            control_node_timeout_ms: 60_000,
            control_node_cache_ms: 1_000,
            control_max_in_flight: 4096,
            control_edge_max_in_flight: 1024,
            control_auth_max_in_flight: 1024,
            control_node_token_ttl_ms: 3_600_000,
            control_node_key_rotation_ms: 7 * 24 * 3_600_000,
            control_inbox_max_age_ms: 7 * 24 * 3_600_000,
            control_inbox_max_per_user: 1_000,
            control_room_window_ms: 120_000,
            control_room_idle_ms: 24 * 3_600_000,
            control_receipt_max_age_ms: 7 * 24 * 3_600_000,
            control_publish_timeout_ms: 3_000,
            control_receipt_webhook_url: None,
            control_receipt_webhook_batch: 500,
            control_receipt_webhook_interval_ms: 1_000,
            control_receipt_webhook_timeout_ms: 5_000,
            control_fallback_webhook_url: None,
            control_fallback_deadline_ms: 30_000,
            control_fallback_scan_interval_ms: 1_000,
            control_fallback_timeout_ms: 5_000,
            control_fallback_retry_ms: 60_000,
            control_fallback_batch: 500,
            control_fallback_max_in_flight: 64,
            control_presence_webhook_url: None,
            control_presence_webhook_batch_ms: 1_000,
            control_presence_webhook_timeout_ms: 3_000,
            control_presence_webhook_queue: 10_000,
            control_upstream_webhook_url: None,
            control_upstream_webhook_timeout_ms: 3_000,
            control_upstream_kafka_topic_prefix: None,
            control_upstream_allow_anonymous: false,
            control_upstream_max_batch: 1_000,
            control_upstream_max_in_flight: 256,
            balancer: BalancerConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        control: ControlConfig,
    }

    #[test]
    fn default_impl_matches_the_flag_defaults_except_the_listen_address() {
        let parsed = Cli::try_parse_from(["rim"]).unwrap().control;
        assert_eq!(parsed.control_listen, "0.0.0.0:3111".parse().unwrap());
        let default = ControlConfig {
            control_listen: parsed.control_listen,
            ..ControlConfig::default()
        };
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}

//! The edge's configuration: listeners, timing, bounds and auth.
//!
//! One flat `clap::Args` struct so the `rim` binary can fill it from flags, `RIM_EDGE_*` variables or the
//! `[edge]` section of its TOML file (field names are the TOML keys, all prefixed `edge_` so they stay
//! unique when `rim dev` flattens edge, control and job together). Defaults follow goim where goim has one.

use std::path::PathBuf;
use std::time::Duration;

use crate::outbox::Bounds;

/// Everything an edge process can be told; see `--help` for each field.
#[derive(clap::Args, Clone, Debug)]
pub struct EdgeConfig {
    /// Address of the plain TCP listener (goim: 3101). Port 0 picks a free port.
    #[arg(long, env = "RIM_EDGE_TCP_LISTEN", default_value = "0.0.0.0:3101")]
    pub edge_tcp_listen: String,
    /// Address of the WebSocket listener, path /sub (goim: 3102).
    #[arg(long, env = "RIM_EDGE_WS_LISTEN", default_value = "0.0.0.0:3102")]
    pub edge_ws_listen: String,
    /// Address of the WebSocket-over-TLS listener (goim: 3103); started only with a cert and key.
    #[arg(long, env = "RIM_EDGE_WSS_LISTEN", default_value = "0.0.0.0:3103")]
    pub edge_wss_listen: String,
    /// Address of the TCP-over-TLS listener; started only with a cert and key.
    #[arg(long, env = "RIM_EDGE_TLS_LISTEN", default_value = "0.0.0.0:3104")]
    pub edge_tls_listen: String,
    /// PEM certificate chain for the TLS listeners (TLS is off unless both cert and key are set).
    #[arg(long, env = "RIM_EDGE_TLS_CERT")]
    pub edge_tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listeners.
    #[arg(long, env = "RIM_EDGE_TLS_KEY")]
    pub edge_tls_key: Option<PathBuf>,
    /// Milliseconds between checks of the TLS certificate and key files for changes: a changed pair
    /// is served to new connections without a restart (also on SIGHUP); open ones keep theirs.
    #[arg(long, env = "RIM_EDGE_TLS_RELOAD_MS", default_value_t = 5_000)]
    pub edge_tls_reload_ms: u64,
    /// Client listeners that accept a PROXY protocol header (v1 or v2) from `edge_proxy_trusted`
    /// peers, comma-separated: `tcp`, `ws`, `tls`, `wss`. Put them behind an L4 load balancer that
    /// sends the header; the client address it names is then the one limited and reported.
    #[arg(
        long,
        env = "RIM_EDGE_PROXY_PROTOCOL",
        value_enum,
        value_delimiter = ','
    )]
    pub edge_proxy_protocol: Vec<ProxyListener>,
    /// Networks (CIDRs or addresses, comma-separated) of the load balancers allowed to send PROXY
    /// headers. A connection from one of them must start with a header; from anywhere else the
    /// connection is served as a direct client and a PROXY header is just garbage.
    #[arg(long, env = "RIM_EDGE_PROXY_TRUSTED", value_delimiter = ',')]
    pub edge_proxy_trusted: Vec<String>,
    /// Address of the internal HTTP endpoint: POST /internal/push (job workers), /metrics, /healthz.
    #[arg(long, env = "RIM_EDGE_INTERNAL_LISTEN", default_value = "0.0.0.0:3109")]
    pub edge_internal_listen: String,
    /// Milliseconds a new connection has to authenticate before it is closed (goim: 5 s, example 8 s).
    #[arg(long, env = "RIM_EDGE_HANDSHAKE_TIMEOUT_MS", default_value_t = 8_000)]
    pub edge_handshake_timeout_ms: u64,
    /// Milliseconds between the heartbeats a client is expected to send (goim example: 4 min).
    #[arg(
        long,
        env = "RIM_EDGE_HEARTBEAT_INTERVAL_MS",
        default_value_t = 240_000
    )]
    pub edge_heartbeat_interval_ms: u64,
    /// Heartbeat intervals a client may miss before it is closed (goim example: 2).
    #[arg(long, env = "RIM_EDGE_HEARTBEAT_MAX", default_value_t = 2)]
    pub edge_heartbeat_max: u32,
    /// Largest body a client may send, in bytes (goim: 4096).
    #[arg(long, env = "RIM_EDGE_MAX_CLIENT_BODY", default_value_t = rim_proto::packet::DEFAULT_MAX_BODY)]
    pub edge_max_client_body: usize,
    /// Largest request body on the internal push endpoint, in bytes (so it also bounds every push body).
    #[arg(long, env = "RIM_EDGE_MAX_PUSH_BODY", default_value_t = 1 << 20)]
    pub edge_max_push_body: usize,
    /// Number of buckets connections are sharded into by key (split locks).
    #[arg(long, env = "RIM_EDGE_BUCKETS", default_value_t = 32)]
    pub edge_buckets: usize,
    /// Most bytes one connection may be behind: pushes queued for it or being written to it and not
    /// yet taken by its socket (plus a small fixed cost per push). Keep it several times
    /// `edge_max_push_body` (one push request's worth), so that a burst never counts as slow.
    #[arg(long, env = "RIM_EDGE_QUEUE_MAX_BYTES", default_value_t = 4 << 20)]
    pub edge_queue_max_bytes: usize,
    /// Longest time, in milliseconds, a push may wait unwritten for one connection.
    #[arg(long, env = "RIM_EDGE_QUEUE_MAX_AGE_MS", default_value_t = 10_000)]
    pub edge_queue_max_age_ms: u64,
    /// What to do with a push for a connection past `edge_queue_max_bytes` or
    /// `edge_queue_max_age_ms`: close the connection (it reconnects and resumes) or drop the push.
    /// Both are counted.
    #[arg(long, env = "RIM_EDGE_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumerPolicy::Close)]
    pub edge_slow_consumer: SlowConsumerPolicy,
    /// Connections allowed from one IPv4 address or one IPv6 /64 (a single host usually holds a
    /// whole /64) (0 = unlimited).
    #[arg(long, env = "RIM_EDGE_MAX_CONNS_PER_IP", default_value_t = 10_000)]
    pub edge_max_conns_per_ip: usize,
    /// Connections allowed on this edge in total (0 = unlimited).
    #[arg(long, env = "RIM_EDGE_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub edge_max_connections: usize,
    /// Milliseconds a delivery (message id and record) is remembered, to drop the duplicates of
    /// at-least-once delivery; cover the job's retry horizon and a job restart's redelivery.
    #[arg(long, env = "RIM_EDGE_DEDUP_WINDOW_MS", default_value_t = 300_000)]
    pub edge_dedup_window_ms: u64,
    /// Most deliveries remembered (about 32 bytes each); when full, the oldest are forgotten early,
    /// which is counted and logged.
    #[arg(long, env = "RIM_EDGE_DEDUP_CAPACITY", default_value_t = 1 << 20)]
    pub edge_dedup_capacity: usize,
    /// Longest time, in milliseconds, the auth reply waits for the control plane to acknowledge the
    /// connect (so that a push sent right after the reply finds the session). Past it the client is
    /// answered anyway (counted, logged); 0 answers at once.
    #[arg(long, env = "RIM_EDGE_AUTH_REPORT_TIMEOUT_MS", default_value_t = 1_000)]
    pub edge_auth_report_timeout_ms: u64,
    /// Milliseconds graceful shutdown waits for connections to flush and close.
    #[arg(long, env = "RIM_EDGE_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub edge_shutdown_timeout_ms: u64,
    /// How clients are authenticated: `jwt` (signed tokens) or `insecure` (development only: trusts the
    /// client's goim JSON).
    #[arg(long, env = "RIM_EDGE_AUTH", value_enum, default_value_t = AuthMode::Jwt)]
    pub edge_auth: AuthMode,
    /// JWT verification key files, comma-separated, each `PATH` or `KID=PATH` (the key then only
    /// verifies tokens whose header names that `kid`, or none): a PEM public key (RSA, EC or
    /// Ed25519) or a raw shared secret (HMAC, at least 32 bytes). Re-read on change and on SIGHUP, so
    /// keys rotate without a restart.
    #[arg(long, env = "RIM_EDGE_JWT_KEYS", value_delimiter = ',')]
    pub edge_jwt_keys: Vec<PathBuf>,
    /// Required `iss` claim of client tokens (unchecked when empty).
    #[arg(long, env = "RIM_EDGE_JWT_ISSUER", default_value = "")]
    pub edge_jwt_issuer: String,
    /// The internal endpoint's TLS and push credentials.
    #[command(flatten)]
    pub internal: crate::internal::InternalConfig,
    /// Milliseconds between checks of the JWT key files for changes.
    #[arg(long, env = "RIM_EDGE_JWT_RELOAD_MS", default_value_t = 5_000)]
    pub edge_jwt_reload_ms: u64,
    /// The only JWT algorithms accepted, comma-separated (HS256, HS384, HS512, RS256, RS384, RS512,
    /// PS256, PS384, PS512, ES256, ES384, EdDSA); a token naming any other is refused.
    #[arg(
        long,
        env = "RIM_EDGE_JWT_ALGORITHMS",
        value_delimiter = ',',
        default_value = "HS256,RS256"
    )]
    pub edge_jwt_algorithms: Vec<String>,
    /// Accepted `aud` values of client tokens, comma-separated; when set, a token must carry one of
    /// them (unchecked when empty).
    #[arg(long, env = "RIM_EDGE_JWT_AUDIENCE", value_delimiter = ',')]
    pub edge_jwt_audience: Vec<String>,
    /// Clock skew, in seconds, allowed when checking `exp` and `nbf`.
    #[arg(long, env = "RIM_EDGE_JWT_LEEWAY_S", default_value_t = 60)]
    pub edge_jwt_leeway_s: u64,
    /// JWKS URLs (comma-separated) whose keys verify client tokens by `kid`, next to the key files.
    /// Fetched at start, every `edge_jwt_jwks_refresh_ms`, and when a token names an unknown `kid`
    /// (at most once per `edge_jwt_jwks_min_refetch_ms`); a failed fetch keeps the last good set.
    #[arg(long, env = "RIM_EDGE_JWT_JWKS_URLS", value_delimiter = ',')]
    pub edge_jwt_jwks_urls: Vec<String>,
    /// Milliseconds between regular refreshes of the JWKS URLs.
    #[arg(long, env = "RIM_EDGE_JWT_JWKS_REFRESH_MS", default_value_t = 300_000)]
    pub edge_jwt_jwks_refresh_ms: u64,
    /// Least milliseconds between two JWKS fetches caused by unknown `kid`s (so forged `kid`s
    /// cannot make the edge hammer the key server).
    #[arg(
        long,
        env = "RIM_EDGE_JWT_JWKS_MIN_REFETCH_MS",
        default_value_t = 10_000
    )]
    pub edge_jwt_jwks_min_refetch_ms: u64,
}

/// A client listener, as named by `edge_proxy_protocol`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyListener {
    /// goim over plain TCP.
    Tcp,
    /// WebSocket.
    Ws,
    /// goim over TLS.
    Tls,
    /// WebSocket over TLS.
    Wss,
}

/// Policy for a push to a connection that is too far behind.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close the connection with a reason; the client reconnects and resumes.
    Close,
    /// Drop the push and keep the connection.
    Drop,
}

/// How the auth body of a client is turned into an identity.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Signed JWT (HS256/RS256), as a `token` field of the JSON body or as the whole body.
    Jwt,
    /// Trust the goim JSON body as is. Development only; logs a warning at startup.
    Insecure,
}

impl EdgeConfig {
    /// A config with every default (or `RIM_EDGE_*` variable), listening on loopback port 0 everywhere:
    /// what tests and the all-in-one `rim dev` start from.
    pub fn local() -> Result<Self, clap::Error> {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("edge").no_binary_name(true));
        let matches = command.try_get_matches_from(std::iter::empty::<String>())?;
        let mut config = Self::from_arg_matches(&matches)?;
        for listen in [
            &mut config.edge_tcp_listen,
            &mut config.edge_ws_listen,
            &mut config.edge_wss_listen,
            &mut config.edge_tls_listen,
            &mut config.edge_internal_listen,
        ] {
            *listen = "127.0.0.1:0".into();
        }
        Ok(config)
    }

    /// How long a client may stay silent after auth before it is closed.
    pub fn heartbeat_deadline(&self) -> Duration {
        Duration::from_millis(self.edge_heartbeat_interval_ms)
            .saturating_mul(self.edge_heartbeat_max.max(1))
    }

    /// Auth must complete within this.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.edge_handshake_timeout_ms)
    }

    /// How far behind a connection may fall before the slow-consumer policy applies.
    pub fn queue_bounds(&self) -> Bounds {
        Bounds {
            max_bytes: self.edge_queue_max_bytes,
            max_age: Duration::from_millis(self.edge_queue_max_age_ms),
        }
    }
}

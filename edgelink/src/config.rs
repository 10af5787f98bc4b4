//! The edge link's settings: who this edge is to the control plane and how it reports.
//!
//! A flat `clap::Args` struct, flattened next to `EdgeConfig` by `rim edge` and `rim dev`, so the
//! fields are keys of the same `[edge]` TOML section: every name starts with `edge_` and none repeats
//! an `EdgeConfig` field (the node heartbeat is `edge_node_heartbeat_ms`, not the clients'
//! `edge_heartbeat_interval_ms`). The cluster secret is not here: [`crate::NodeCredentials::new`]
//! takes it as a parameter (it is the enrollment credential only).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rim_edge::EdgeAddrs;
use rim_proto::schema::NodeRegistration;

use rim_retry::Backoff;

/// Everything the edge's link to the control plane can be told; see `--help` for each field.
#[derive(clap::Args, Clone, Debug)]
pub struct LinkConfig {
    /// Base URL of the control plane's edge API (`/edge/v1/*` is appended).
    #[arg(
        long,
        env = "RIM_EDGE_CONTROL_URL",
        default_value = "http://127.0.0.1:3111"
    )]
    pub edge_control_url: String,
    /// PEM CA certificate(s) to trust for an `https` control URL, besides the system's roots.
    #[arg(long, env = "RIM_EDGE_CONTROL_CA_FILE")]
    pub edge_control_ca_file: Option<std::path::PathBuf>,
    /// This edge's node id, unique in the cluster and stable across restarts. Default: the host
    /// name (set it when several edges share a host).
    #[arg(long, env = "RIM_EDGE_NODE_ID")]
    pub edge_node_id: Option<String>,
    /// Region this edge serves: pushes reach it through that region's job workers.
    #[arg(long, env = "RIM_EDGE_REGION", default_value = "local")]
    pub edge_region: String,
    /// Latitude of the edge, for the balancer.
    #[arg(
        long,
        env = "RIM_EDGE_LATITUDE",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub edge_latitude: f64,
    /// Longitude of the edge, for the balancer.
    #[arg(
        long,
        env = "RIM_EDGE_LONGITUDE",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub edge_longitude: f64,
    /// Host name web clients are given to connect to (empty: none).
    #[arg(long, env = "RIM_EDGE_PUBLIC_HOSTNAME", default_value = "")]
    pub edge_public_hostname: String,
    /// Public addresses native clients are given, comma-separated.
    #[arg(long, env = "RIM_EDGE_PUBLIC_ADDRESSES", value_delimiter = ',')]
    pub edge_public_addresses: Vec<String>,
    /// Relative capacity of this edge for the balancer (goim's weight).
    #[arg(long, env = "RIM_EDGE_WEIGHT", default_value_t = 10)]
    pub edge_weight: u32,
    /// Base URL job workers push to (`/internal/push` is appended). Default: `http://` and the
    /// internal listener's address, its unspecified IP replaced by the first public address (or
    /// 127.0.0.1).
    #[arg(long, env = "RIM_EDGE_PUSH_URL")]
    pub edge_push_url: Option<String>,
    /// Milliseconds between node heartbeats (counts, room counts, draining); keep it well under the
    /// control plane's `control_node_timeout_ms`.
    #[arg(long, env = "RIM_EDGE_NODE_HEARTBEAT_MS", default_value_t = 10_000)]
    pub edge_node_heartbeat_ms: u64,
    /// Most rooms listed in a node heartbeat: the largest ones; the rest are summed in the
    /// heartbeat's `omitted_*` figures, so the heartbeat's size does not grow with the room names
    /// clients choose (capped at the control plane's `rim_proto::MAX_HEARTBEAT_ROOMS`).
    #[arg(long, env = "RIM_EDGE_HEARTBEAT_MAX_ROOMS", default_value_t = 1_000)]
    pub edge_heartbeat_max_rooms: usize,
    /// Milliseconds between renewals of every live session; keep it well under the store's session
    /// TTL (10 minutes).
    #[arg(long, env = "RIM_EDGE_SESSION_RENEW_MS", default_value_t = 180_000)]
    pub edge_session_renew_ms: u64,
    /// Most session events sent in one request (keep it under `control_max_session_batch`).
    #[arg(long, env = "RIM_EDGE_SESSION_BATCH", default_value_t = 1_000)]
    pub edge_session_batch: usize,
    /// Shortest time, in milliseconds, between the starts of two session requests that are not full:
    /// the longest a session event waits for others to share its request (an isolated event is sent
    /// at once).
    #[arg(long, env = "RIM_EDGE_SESSION_FLUSH_MS", default_value_t = 10)]
    pub edge_session_flush_ms: u64,
    /// First pause before retrying a failed call to the control plane (then doubling), in ms.
    #[arg(long, env = "RIM_EDGE_LINK_RETRY_INITIAL_MS", default_value_t = 100)]
    pub edge_link_retry_initial_ms: u64,
    /// Longest pause between retries of a failed call to the control plane, in ms.
    #[arg(long, env = "RIM_EDGE_LINK_RETRY_MAX_MS", default_value_t = 5_000)]
    pub edge_link_retry_max_ms: u64,
    /// Most ended connections whose disconnect waits for the control plane. Live connections are
    /// always kept (the edge bounds them); past this, the oldest waiting disconnect is dropped and
    /// counted, and its session expires at the control plane by TTL instead.
    #[arg(long, env = "RIM_EDGE_LINK_BUFFER", default_value_t = 100_000)]
    pub edge_link_buffer: usize,
    /// How long one call to the control plane may take, in milliseconds.
    #[arg(long, env = "RIM_EDGE_CONTROL_TIMEOUT_MS", default_value_t = 5_000)]
    pub edge_control_timeout_ms: u64,
    /// Authenticate clients through the control plane's business auth webhook (`/edge/v1/auth`)
    /// instead of `edge_auth`.
    #[arg(long, env = "RIM_EDGE_AUTH_WEBHOOK", default_value_t = false)]
    pub edge_auth_webhook: bool,
    /// How long the auth webhook may take before the client is refused, in milliseconds (keep it
    /// under `edge_handshake_timeout_ms`).
    #[arg(
        long,
        env = "RIM_EDGE_AUTH_WEBHOOK_TIMEOUT_MS",
        default_value_t = 4_000
    )]
    pub edge_auth_webhook_timeout_ms: u64,
    /// Forward client upstream messages (op 4 and business ops) to the control plane
    /// (`/edge/v1/upstream`, on to the business backend) and answer each with the backend's
    /// verdict. Off: goim's answer, the same op with an empty body (see `crate::upstream`).
    #[arg(long, env = "RIM_EDGE_UPSTREAM", default_value_t = false)]
    pub edge_upstream: bool,
    /// Most upstream messages sent in one request (keep it under `control_upstream_max_batch`).
    #[arg(long, env = "RIM_EDGE_UPSTREAM_BATCH", default_value_t = 256)]
    pub edge_upstream_batch: usize,
    /// Shortest time, in milliseconds, between the starts of two upstream requests of one lane
    /// that are not full (an isolated message is sent at once).
    #[arg(long, env = "RIM_EDGE_UPSTREAM_FLUSH_MS", default_value_t = 5)]
    pub edge_upstream_flush_ms: u64,
    /// Most messages of one connection waiting for their verdicts; a message beyond it is refused
    /// at once (reason `too_many_pending`), the connection stays open.
    #[arg(long, env = "RIM_EDGE_UPSTREAM_MAX_PENDING", default_value_t = 16)]
    pub edge_upstream_max_pending: usize,
    /// Most messages waiting for their verdicts on this edge in all; beyond it messages are refused
    /// at once as `upstream_unavailable`.
    #[arg(long, env = "RIM_EDGE_UPSTREAM_QUEUE", default_value_t = 10_000)]
    pub edge_upstream_queue: usize,
    /// How long one upstream request may take, in milliseconds, before its messages are refused as
    /// `upstream_unavailable` (keep it above control's `control_upstream_webhook_timeout_ms`).
    #[arg(long, env = "RIM_EDGE_UPSTREAM_TIMEOUT_MS", default_value_t = 5_000)]
    pub edge_upstream_timeout_ms: u64,
}

impl LinkConfig {
    /// Every default (or `RIM_EDGE_*` variable): what tests start from.
    pub fn local() -> Result<Self, clap::Error> {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("edgelink").no_binary_name(true));
        let matches = command.try_get_matches_from(std::iter::empty::<String>())?;
        Self::from_arg_matches(&matches)
    }

    /// The configured node id, or the host name, or (no host name known) a random id.
    pub fn node_id(&self) -> String {
        if let Some(id) = self.edge_node_id.clone().filter(|id| !id.is_empty()) {
            return id;
        }
        let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        from_kernel
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("edge-{:016x}", rand::random::<u64>()))
    }

    /// The push URL job workers should use for an edge whose internal listener is `internal`.
    pub fn push_url(&self, internal: SocketAddr) -> String {
        if let Some(url) = self.edge_push_url.clone().filter(|url| !url.is_empty()) {
            return url;
        }
        let mut addr = internal;
        if addr.ip().is_unspecified() {
            let public = self
                .edge_public_addresses
                .iter()
                .find_map(|a| a.parse::<IpAddr>().ok());
            addr.set_ip(public.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        format!("http://{addr}")
    }

    /// What this edge registers as: identity, this life's `boot_id`, location, client ports and
    /// push URL.
    pub fn registration(
        &self,
        node_id: &str,
        boot_id: &str,
        addrs: &EdgeAddrs,
    ) -> NodeRegistration {
        NodeRegistration {
            node_id: node_id.to_owned(),
            boot_id: boot_id.to_owned(),
            region: self.edge_region.clone(),
            latitude: self.edge_latitude,
            longitude: self.edge_longitude,
            hostname: self.edge_public_hostname.clone(),
            addresses: self.edge_public_addresses.clone(),
            tcp_port: addrs.tcp.port().into(),
            ws_port: addrs.ws.port().into(),
            wss_port: addrs.wss.map_or(0, |a| a.port().into()),
            push_url: self.push_url(addrs.internal),
            weight: self.edge_weight,
        }
    }

    /// The retry policy of calls to the control plane.
    pub(crate) fn backoff(&self) -> Backoff {
        let initial = Duration::from_millis(self.edge_link_retry_initial_ms.max(1));
        let max = Duration::from_millis(self.edge_link_retry_max_ms).max(initial);
        Backoff::new(initial, max)
    }

    /// How this edge enrolls with the control plane (see [`crate::credential`]).
    pub fn credential_settings(&self) -> crate::credential::CredentialSettings {
        crate::credential::CredentialSettings {
            control_url: self.edge_control_url.clone(),
            control_ca_file: self.edge_control_ca_file.clone(),
            timeout: self.control_timeout(),
            backoff: self.backoff(),
        }
    }

    /// The request timeout of calls to the control plane.
    pub fn control_timeout(&self) -> Duration {
        Duration::from_millis(self.edge_control_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(internal: &str) -> EdgeAddrs {
        let any: SocketAddr = "127.0.0.1:1".parse().unwrap();
        EdgeAddrs {
            tcp: "0.0.0.0:3101".parse().unwrap(),
            ws: "0.0.0.0:3102".parse().unwrap(),
            tls: None,
            wss: None,
            internal: internal.parse().unwrap_or(any),
        }
    }

    #[test]
    fn push_url_replaces_an_unspecified_ip_with_a_public_address_or_loopback() {
        let mut config = LinkConfig::local().unwrap();
        assert_eq!(
            config.push_url("0.0.0.0:3109".parse().unwrap()),
            "http://127.0.0.1:3109"
        );
        config.edge_public_addresses = vec!["host.example".into(), "10.0.0.5".into()];
        assert_eq!(
            config.push_url("0.0.0.0:3109".parse().unwrap()),
            "http://10.0.0.5:3109"
        );
        assert_eq!(
            config.push_url("10.1.1.1:4000".parse().unwrap()),
            "http://10.1.1.1:4000"
        );
        config.edge_push_url = Some("http://edge-1.internal:3109".into());
        assert_eq!(
            config.push_url("0.0.0.0:3109".parse().unwrap()),
            "http://edge-1.internal:3109"
        );
    }

    #[test]
    fn registration_carries_the_bound_ports_and_no_wss_port_without_tls() {
        let mut config = LinkConfig::local().unwrap();
        config.edge_node_id = Some("edge-a".into());
        let reg = config.registration(&config.node_id(), "boot-1", &addrs("0.0.0.0:3109"));
        assert_eq!(
            (reg.node_id.as_str(), reg.boot_id.as_str()),
            ("edge-a", "boot-1")
        );
        assert_eq!((reg.tcp_port, reg.ws_port, reg.wss_port), (3101, 3102, 0));
        assert_eq!(reg.push_url, "http://127.0.0.1:3109");
        assert_eq!(reg.region, "local");
    }

    #[test]
    fn a_node_id_is_always_found() {
        let config = LinkConfig::local().unwrap();
        assert!(!config.node_id().is_empty());
    }
}

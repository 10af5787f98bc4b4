//! Tuning of the HTTPDNS answer: how many nodes, how distance is bucketed, how clients are spread, how old a
//! report may be, how a client without coordinates is located, and the client timers (heartbeat, reconnect backoff)
//! the answer carries.
//!
//! The struct derives `clap::Args` so the control plane can flatten it into its own configuration; every field is
//! prefixed `httpdns_` because edge, control and job fields share one namespace in `rim dev`. Defaults come from
//! named constants used by both clap and [`Default`], so the two can never drift apart; heartbeat and backoff
//! defaults are goim's.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;

/// goim's default heartbeat interval (4 minutes).
const DEFAULT_HEARTBEAT_SECS: u32 = 240;
/// goim's default number of missed heartbeats before a client gives up on a connection.
const DEFAULT_HEARTBEAT_MAX: u32 = 2;
/// goim's default longest reconnect delay.
const DEFAULT_BACKOFF_MAX_DELAY_SECS: u32 = 300;
/// goim's default first reconnect delay.
const DEFAULT_BACKOFF_BASE_DELAY_SECS: u32 = 3;
/// goim's default growth factor between reconnect delays.
const DEFAULT_BACKOFF_FACTOR: f64 = 1.8;
/// goim's default random spread of reconnect delays.
const DEFAULT_BACKOFF_JITTER: f64 = 0.3;
/// goim's answer holds at most 5 nodes.
const DEFAULT_MAX_NODES: usize = 5;
/// Nodes within this many km of each other, seen from the client, count as equally near.
const DEFAULT_DISTANCE_BAND_KM: u32 = 300;
/// The edges' default node heartbeat (`edge_node_heartbeat_ms` of the edge link).
const DEFAULT_EDGE_HEARTBEAT_MS: u64 = 10_000;
/// Missed node heartbeats after which a node is no longer answered: a dead edge leaves within ~30 s.
const DEFAULT_STALE_HEARTBEATS: u32 = 3;
/// Connections per weight unit that new clients are expected to add to a group between two load reports.
const DEFAULT_HEADROOM_PER_WEIGHT: u32 = 100;

/// Parameters of ranking, of locating clients and of the goim answer; see each field.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct BalancerConfig {
    /// Host name put in the answer's `domain` field, for goim clients that keep a DNS name to fall back on
    /// (empty: none). It is never answered as a node: an answer without eligible nodes lists no node.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_DOMAIN", default_value = "")]
    pub httpdns_domain: String,
    /// Most nodes (or addresses) in one answer, best first.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_MAX_NODES", default_value_t = DEFAULT_MAX_NODES,
          value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub httpdns_max_nodes: usize,
    /// Width in km of a distance band: nodes less than this much further from the client than the nearest
    /// eligible node compete on free capacity; each further band ranks after all nodes of nearer bands.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_DISTANCE_BAND_KM", default_value_t = DEFAULT_DISTANCE_BAND_KM,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub httpdns_distance_band_km: u32,
    /// Interval in milliseconds at which edges report (their `edge_node_heartbeat_ms`); staleness is counted in
    /// these heartbeats.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_EDGE_HEARTBEAT_MS", default_value_t = DEFAULT_EDGE_HEARTBEAT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub httpdns_edge_heartbeat_ms: u64,
    /// Node heartbeats a node may miss before it is considered gone and no longer answered (default 3 × 10 s).
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_STALE_HEARTBEATS", default_value_t = DEFAULT_STALE_HEARTBEATS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub httpdns_stale_heartbeats: u32,
    /// Connections per unit of weight that new clients are expected to add between two load reports. Inside a
    /// distance band and region, a seeded client picks a node at random in proportion to its free weighted
    /// capacity, `weight × (group mean load + headroom) − connections`: large values spread by weight alone,
    /// small ones send nearly everyone to the emptiest nodes.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_HEADROOM_PER_WEIGHT", default_value_t = DEFAULT_HEADROOM_PER_WEIGHT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub httpdns_headroom_per_weight: u32,
    /// MaxMind DB file (`.mmdb`, City or any database with `location.latitude/longitude`) locating clients that
    /// send no coordinates, by IP address. Unset: no IP lookup.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_GEOIP_DB")]
    pub httpdns_geoip_db: Option<PathBuf>,
    /// Request header carrying the client's latitude, set by a trusted proxy in front of the control plane
    /// (e.g. Cloudflare's `cf-iplatitude`). Unset: no header is trusted for the location.
    #[arg(
        long,
        env = "RIM_CONTROL_HTTPDNS_LATITUDE_HEADER",
        requires = "httpdns_longitude_header"
    )]
    pub httpdns_latitude_header: Option<String>,
    /// Request header carrying the client's longitude (e.g. `cf-iplongitude`); set together with the latitude one.
    #[arg(
        long,
        env = "RIM_CONTROL_HTTPDNS_LONGITUDE_HEADER",
        requires = "httpdns_latitude_header"
    )]
    pub httpdns_longitude_header: Option<String>,
    /// Request header carrying the client's IP address, set by a trusted proxy (e.g. `cf-connecting-ip`,
    /// `x-forwarded-for`: its right-most entry is used). Unset: the connection's peer address is the client's.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_CLIENT_IP_HEADER")]
    pub httpdns_client_ip_header: Option<String>,
    /// Region preferred for clients that cannot be located at all and name no region. Unset: none.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_DEFAULT_REGION")]
    pub httpdns_default_region: Option<String>,
    /// Client heartbeat interval in seconds, passed through in the answer.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_HEARTBEAT_SECS", default_value_t = DEFAULT_HEARTBEAT_SECS)]
    pub httpdns_heartbeat_secs: u32,
    /// Missed heartbeats after which a client reconnects, passed through in the answer.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_HEARTBEAT_MAX", default_value_t = DEFAULT_HEARTBEAT_MAX)]
    pub httpdns_heartbeat_max: u32,
    /// Longest client reconnect delay in seconds.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_BACKOFF_MAX_DELAY_SECS", default_value_t = DEFAULT_BACKOFF_MAX_DELAY_SECS)]
    pub httpdns_backoff_max_delay_secs: u32,
    /// First client reconnect delay in seconds.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_BACKOFF_BASE_DELAY_SECS", default_value_t = DEFAULT_BACKOFF_BASE_DELAY_SECS)]
    pub httpdns_backoff_base_delay_secs: u32,
    /// Growth factor between consecutive reconnect delays (at least 1).
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_BACKOFF_FACTOR", default_value_t = DEFAULT_BACKOFF_FACTOR,
          value_parser = parse_factor)]
    pub httpdns_backoff_factor: f64,
    /// Random spread of reconnect delays, as a fraction in [0, 1].
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_BACKOFF_JITTER", default_value_t = DEFAULT_BACKOFF_JITTER,
          value_parser = parse_jitter)]
    pub httpdns_backoff_jitter: f64,
}

impl BalancerConfig {
    /// The staleness bound, `httpdns_stale_heartbeats × httpdns_edge_heartbeat_ms`, in the form the health check
    /// takes.
    pub fn node_staleness(&self) -> Duration {
        Duration::from_millis(self.httpdns_edge_heartbeat_ms)
            .saturating_mul(self.httpdns_stale_heartbeats)
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            httpdns_domain: String::new(),
            httpdns_max_nodes: DEFAULT_MAX_NODES,
            httpdns_distance_band_km: DEFAULT_DISTANCE_BAND_KM,
            httpdns_edge_heartbeat_ms: DEFAULT_EDGE_HEARTBEAT_MS,
            httpdns_stale_heartbeats: DEFAULT_STALE_HEARTBEATS,
            httpdns_headroom_per_weight: DEFAULT_HEADROOM_PER_WEIGHT,
            httpdns_geoip_db: None,
            httpdns_latitude_header: None,
            httpdns_longitude_header: None,
            httpdns_client_ip_header: None,
            httpdns_default_region: None,
            httpdns_heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
            httpdns_heartbeat_max: DEFAULT_HEARTBEAT_MAX,
            httpdns_backoff_max_delay_secs: DEFAULT_BACKOFF_MAX_DELAY_SECS,
            httpdns_backoff_base_delay_secs: DEFAULT_BACKOFF_BASE_DELAY_SECS,
            httpdns_backoff_factor: DEFAULT_BACKOFF_FACTOR,
            httpdns_backoff_jitter: DEFAULT_BACKOFF_JITTER,
        }
    }
}

fn parse_factor(s: &str) -> Result<f64, String> {
    parse_in_range(s, 1.0, f64::MAX)
}

fn parse_jitter(s: &str) -> Result<f64, String> {
    parse_in_range(s, 0.0, 1.0)
}

fn parse_in_range(s: &str, min: f64, max: f64) -> Result<f64, String> {
    let value: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not in [{min}, {max}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        balancer: BalancerConfig,
    }

    #[test]
    fn command_line_defaults_equal_default_impl() {
        let cli = Cli::try_parse_from(["rim"]).unwrap();
        assert_eq!(cli.balancer, BalancerConfig::default());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for args in [
            ["rim", "--httpdns-max-nodes", "0"],
            ["rim", "--httpdns-max-nodes", "65"],
            ["rim", "--httpdns-distance-band-km", "0"],
            ["rim", "--httpdns-stale-heartbeats", "0"],
            ["rim", "--httpdns-edge-heartbeat-ms", "0"],
            ["rim", "--httpdns-headroom-per-weight", "0"],
            ["rim", "--httpdns-latitude-header", "cf-iplatitude"],
            ["rim", "--httpdns-backoff-factor", "0.5"],
            ["rim", "--httpdns-backoff-jitter", "1.5"],
            ["rim", "--httpdns-backoff-jitter", "NaN"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
        let cli = Cli::try_parse_from([
            "rim",
            "--httpdns-max-nodes",
            "64",
            "--httpdns-backoff-jitter",
            "0",
        ])
        .unwrap();
        assert_eq!(cli.balancer.httpdns_max_nodes, 64);
        assert_eq!(cli.balancer.httpdns_backoff_jitter, 0.0);
    }

    #[test]
    fn staleness_is_counted_in_edge_heartbeats() {
        assert_eq!(
            BalancerConfig::default().node_staleness(),
            Duration::from_secs(30)
        );
        let cli = Cli::try_parse_from([
            "rim",
            "--httpdns-edge-heartbeat-ms",
            "2000",
            "--httpdns-stale-heartbeats",
            "4",
        ])
        .unwrap();
        assert_eq!(cli.balancer.node_staleness(), Duration::from_secs(8));
    }
}

//! Tuning of the HTTPDNS answer: how many nodes, how distance is bucketed, how old a report may be, and the
//! client timers (heartbeat, reconnect backoff) the answer carries.
//!
//! The struct derives `clap::Args` so the control plane can flatten it into its own configuration; every field is
//! prefixed `httpdns_` because edge, control and job fields share one namespace in `rim dev`. Defaults come from
//! named constants used by both clap and [`Default`], so the two can never drift apart; heartbeat and backoff
//! defaults are goim's.

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
/// A node silent for longer than this is not handed out.
const DEFAULT_NODE_STALENESS_SECS: u64 = 60;
/// Fallback host name (answered only when no node is eligible) suited to a single-machine setup.
const DEFAULT_DOMAIN: &str = "localhost";
/// goim's default ports, answered with the fallback host name.
const DEFAULT_TCP_PORT: u16 = 3101;
const DEFAULT_WS_PORT: u16 = 3102;
const DEFAULT_WSS_PORT: u16 = 3103;

/// Parameters of ranking and of the goim answer; see each field.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct BalancerConfig {
    /// Host name put in the answer's `domain`, and answered as the only node (with the port flags below) when no
    /// edge node is eligible, so that clients can still fall back to DNS.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_DOMAIN", default_value = DEFAULT_DOMAIN)]
    pub httpdns_domain: String,
    /// TCP port answered with the fallback domain.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_TCP_PORT", default_value_t = DEFAULT_TCP_PORT)]
    pub httpdns_tcp_port: u16,
    /// WebSocket port answered with the fallback domain.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_WS_PORT", default_value_t = DEFAULT_WS_PORT)]
    pub httpdns_ws_port: u16,
    /// WebSocket-over-TLS port answered with the fallback domain.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_WSS_PORT", default_value_t = DEFAULT_WSS_PORT)]
    pub httpdns_wss_port: u16,
    /// Most nodes (or addresses) in one answer, best first.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_MAX_NODES", default_value_t = DEFAULT_MAX_NODES,
          value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub httpdns_max_nodes: usize,
    /// Width in km of a distance band: nodes less than this much further from the client than the nearest
    /// eligible node compete on load; each further band ranks after all nodes of nearer bands.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_DISTANCE_BAND_KM", default_value_t = DEFAULT_DISTANCE_BAND_KM,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub httpdns_distance_band_km: u32,
    /// Seconds after a node's last report beyond which it is considered gone and no longer answered.
    #[arg(long, env = "RIM_CONTROL_HTTPDNS_NODE_STALENESS_SECS", default_value_t = DEFAULT_NODE_STALENESS_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub httpdns_node_staleness_secs: u64,
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
    /// The staleness bound as a [`Duration`], the form the health check takes.
    pub fn node_staleness(&self) -> Duration {
        Duration::from_secs(self.httpdns_node_staleness_secs)
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            httpdns_domain: DEFAULT_DOMAIN.to_owned(),
            httpdns_tcp_port: DEFAULT_TCP_PORT,
            httpdns_ws_port: DEFAULT_WS_PORT,
            httpdns_wss_port: DEFAULT_WSS_PORT,
            httpdns_max_nodes: DEFAULT_MAX_NODES,
            httpdns_distance_band_km: DEFAULT_DISTANCE_BAND_KM,
            httpdns_node_staleness_secs: DEFAULT_NODE_STALENESS_SECS,
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
            ["rim", "--httpdns-node-staleness-secs", "0"],
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
}

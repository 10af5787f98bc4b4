//! A job worker's settings, as command-line flags, environment variables and TOML keys.
//!
//! Field names are the TOML keys of the `[job]` section and must stay unique across the edge,
//! control and job configs (the all-in-one `rim dev` flattens them), hence the `job_` prefix on
//! all of them. The cluster secret is deliberately absent: `rim job` trades it for a node token at
//! enrollment (`job_control_url`) and [`crate::run`] takes the token, so neither ends up in a
//! config dump.

use rim_bus::kafka::{DEFAULT_TOPIC_PREFIX, KafkaOptions, KafkaSettings};
use std::net::SocketAddr;
use std::time::Duration;

/// Everything a regional job worker needs besides its bus consumer, edge directory and secret.
#[derive(clap::Args, Clone, Debug)]
pub struct JobConfig {
    /// Region whose pushes this worker delivers: its bus topic and the edges it sends to.
    #[arg(long, env = "RIM_JOB_REGION", default_value = "local")]
    pub job_region: String,

    /// Kafka bootstrap servers (`host:port,...`) of `rim job`; `rim dev` uses its in-process bus.
    #[arg(long, env = "RIM_JOB_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub job_kafka_brokers: String,

    /// Prefix of the region topics (region `R` is topic `<prefix>R`); must match the control plane's.
    #[arg(long, env = "RIM_JOB_TOPIC_PREFIX", default_value = DEFAULT_TOPIC_PREFIX)]
    pub job_topic_prefix: String,

    /// Partitions of the region topic if this worker is the first to create it.
    #[arg(long, env = "RIM_JOB_TOPIC_PARTITIONS", default_value_t = 12)]
    pub job_topic_partitions: i32,

    /// Consumer group of the region's workers (default `rim-job-<region>`); workers of one group
    /// share the region's partitions.
    #[arg(long, env = "RIM_JOB_GROUP_ID")]
    pub job_group_id: Option<String>,

    /// Static group membership of `rim job` (Kafka's `group.instance.id`): a worker restarted under the same id
    /// takes its partitions back at once instead of waiting for the group to expire its previous
    /// life. Default `rim-job-<region>-<hostname>`; every live worker needs its own (two on one host
    /// and region must set it). An empty value means dynamic membership.
    #[arg(long, env = "RIM_JOB_GROUP_INSTANCE_ID")]
    pub job_group_instance_id: Option<String>,

    /// Extra librdkafka properties of `rim job`'s Kafka clients, `KEY=VALUE` (repeatable; the environment
    /// variable and a TOML list take several, comma-separated), applied after rim's defaults:
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `sasl.username=...`,
    /// `ssl.ca.location=/etc/rim/ca.pem`, tuning such as `fetch.wait.max.ms=50`.
    #[arg(
        long = "job-kafka-option",
        env = "RIM_JOB_KAFKA_OPTIONS",
        value_name = "KEY=VALUE"
    )]
    pub job_kafka_option: Vec<KafkaOptions>,

    /// Where `rim job` serves `/healthz` (200 while its broker answers and the group assigned it
    /// partitions, else 503 with the reason) and `/metrics` (Prometheus). `rim dev` has no such
    /// port: its control plane serves both.
    #[arg(long, env = "RIM_JOB_LISTEN", default_value = "127.0.0.1:3121")]
    pub job_listen: SocketAddr,

    /// Base URL of the control plane, where `rim job` enrolls (with the cluster secret) for the node
    /// token it presents to edges, and renews it.
    #[arg(
        long,
        env = "RIM_JOB_CONTROL_URL",
        default_value = "http://127.0.0.1:3111"
    )]
    pub job_control_url: String,

    /// PEM CA certificate(s) to trust for an `https` `job_control_url`, besides the system's.
    #[arg(long, env = "RIM_JOB_CONTROL_CA_FILE")]
    pub job_control_ca_file: Option<std::path::PathBuf>,

    /// PEM CA certificate(s) to trust for edges' `https` push URLs (edges serving their internal
    /// endpoint over TLS), besides the system's.
    #[arg(long, env = "RIM_JOB_EDGE_CA_FILE")]
    pub job_edge_ca_file: Option<std::path::PathBuf>,

    /// This worker's node id, the subject of its node token. Default: its static group member id
    /// (`rim-job-<region>-<hostname>`), else `rim-job-<region>`.
    #[arg(long, env = "RIM_JOB_NODE_ID")]
    pub job_node_id: Option<String>,

    /// Most pushes taken from the bus in one batch. A batch is whatever is queued, up to this;
    /// the worker never waits to fill it.
    #[arg(long, env = "RIM_JOB_BATCH_SIZE", default_value_t = 256)]
    pub job_batch_size: usize,

    /// Most batches handed to edges and not yet committed. Bounds memory while an edge is slow;
    /// when reached, the worker stops reading the bus until a batch completes.
    #[arg(long, env = "RIM_JOB_MAX_INFLIGHT_BATCHES", default_value_t = 64)]
    pub job_max_inflight_batches: usize,

    /// Largest push request sent to an edge, in bytes (a batch's part is cut into several); keep it
    /// under the edges' `edge_max_push_body`. A request an edge still refuses as too large is halved.
    #[arg(long, env = "RIM_JOB_MAX_REQUEST_BYTES", default_value_t = 512 * 1024)]
    pub job_max_request_bytes: usize,

    /// How long one push request to an edge may take before it counts as failed, in milliseconds.
    #[arg(long, env = "RIM_JOB_EDGE_TIMEOUT_MS", default_value_t = 5_000)]
    pub job_edge_timeout_ms: u64,

    /// Longest an edge's part of a batch waits for that edge, from when the worker handed it over,
    /// in milliseconds. Past it the part is dropped and counted
    /// (`rim_job_dropped_total{reason="edge_unreachable"}`), so one dead edge never holds up the
    /// region's other edges for longer than this.
    #[arg(long, env = "RIM_JOB_EDGE_DEADLINE_MS", default_value_t = 5_000)]
    pub job_edge_deadline_ms: u64,

    /// First pause before retrying a failed edge request (then doubling), in milliseconds.
    #[arg(long, env = "RIM_JOB_RETRY_INITIAL_MS", default_value_t = 100)]
    pub job_retry_initial_ms: u64,

    /// Longest pause between retries of a failed edge request, in milliseconds. An edge is retried
    /// until it takes the push, its deadline passes, or the directory no longer lists it as live.
    #[arg(long, env = "RIM_JOB_RETRY_MAX_MS", default_value_t = 5_000)]
    pub job_retry_max_ms: u64,

    /// How long the list of the region's live edges is cached before it is re-read, in
    /// milliseconds. A push naming an edge missing from it forces an earlier re-read.
    #[arg(long, env = "RIM_JOB_DIRECTORY_CACHE_MS", default_value_t = 1_000)]
    pub job_directory_cache_ms: u64,
}

impl Default for JobConfig {
    /// The same values as the flag defaults (tests, `rim dev`).
    fn default() -> Self {
        Self {
            job_region: "local".into(),
            job_kafka_brokers: "127.0.0.1:9092".into(),
            job_topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
            job_topic_partitions: 12,
            job_group_id: None,
            job_group_instance_id: None,
            job_kafka_option: Vec::new(),
            job_listen: SocketAddr::from(([127, 0, 0, 1], 3121)),
            job_control_url: "http://127.0.0.1:3111".into(),
            job_control_ca_file: None,
            job_edge_ca_file: None,
            job_node_id: None,
            job_batch_size: 256,
            job_max_inflight_batches: 64,
            job_max_request_bytes: 512 * 1024,
            job_edge_timeout_ms: 5_000,
            job_edge_deadline_ms: 5_000,
            job_retry_initial_ms: 100,
            job_retry_max_ms: 5_000,
            job_directory_cache_ms: 1_000,
        }
    }
}

impl JobConfig {
    /// The consumer group: configured, or `rim-job-<region>`.
    pub fn group_id(&self) -> String {
        self.job_group_id
            .clone()
            .unwrap_or_else(|| format!("rim-job-{}", self.job_region))
    }

    /// The static group member id: configured (empty means none), or `rim-job-<region>-<hostname>`.
    pub fn group_instance_id(&self) -> Option<String> {
        match &self.job_group_instance_id {
            Some(id) if id.is_empty() => None,
            Some(id) => Some(id.clone()),
            None => Some(format!("rim-job-{}-{}", self.job_region, hostname())),
        }
    }

    /// The node id this worker enrolls as: configured, else its static group member id, else
    /// `rim-job-<region>`.
    pub fn node_id(&self) -> String {
        self.job_node_id
            .clone()
            .filter(|id| !id.is_empty())
            .or_else(|| self.group_instance_id())
            .unwrap_or_else(|| format!("rim-job-{}", self.job_region))
    }

    /// Kafka settings for this worker's consumer.
    pub fn kafka_settings(&self) -> KafkaSettings {
        let mut settings = KafkaSettings::new(self.job_kafka_brokers.clone());
        settings.topic_prefix = self.job_topic_prefix.clone();
        settings.partitions = self.job_topic_partitions;
        settings.client_options = self.job_kafka_option.iter().cloned().collect();
        settings
    }

    /// The edge request timeout.
    pub fn edge_timeout(&self) -> Duration {
        Duration::from_millis(self.job_edge_timeout_ms.max(1))
    }

    /// How long a part may wait for its edge.
    pub fn edge_deadline(&self) -> Duration {
        Duration::from_millis(self.job_edge_deadline_ms.max(1))
    }

    /// How long the edge directory may be cached.
    pub fn directory_cache(&self) -> Duration {
        Duration::from_millis(self.job_directory_cache_ms)
    }

    /// The retry policy for failed edge requests, bus reads and enrollment.
    pub fn backoff(&self) -> rim_retry::Backoff {
        rim_retry::Backoff::new(
            Duration::from_millis(self.job_retry_initial_ms.max(1)),
            Duration::from_millis(self.job_retry_max_ms.max(self.job_retry_initial_ms).max(1)),
        )
    }
}

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse(args: &[&str]) -> JobConfig {
        let command = JobConfig::augment_args(clap::Command::new("job").no_binary_name(true));
        JobConfig::from_arg_matches(&command.try_get_matches_from(args).unwrap()).unwrap()
    }

    #[test]
    fn kafka_options_from_repeated_flags_reach_the_settings_in_order() {
        let config = parse(&[
            "--job-kafka-option",
            "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512",
            "--job-kafka-option",
            "fetch.wait.max.ms=50",
        ]);
        let settings = config.kafka_settings();
        let keys: Vec<&str> = settings
            .client_options
            .pairs()
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["security.protocol", "sasl.mechanism", "fetch.wait.max.ms"]
        );
        assert!(settings.check().is_ok());
    }

    #[test]
    fn an_unknown_kafka_property_is_a_setup_error() {
        let settings = parse(&["--job-kafka-option", "no.such.property=1"]).kafka_settings();
        assert!(settings.check().is_err());
    }

    #[test]
    fn static_membership_by_default_and_off_when_empty() {
        let default = parse(&["--job-region", "sh"]).group_instance_id().unwrap();
        assert!(default.starts_with("rim-job-sh-"), "{default}");
        let named = parse(&["--job-group-instance-id", "job-7"]);
        assert_eq!(named.group_instance_id().as_deref(), Some("job-7"));
        assert_eq!(
            parse(&["--job-group-instance-id", ""]).group_instance_id(),
            None
        );
    }
}

//! The command line of the `rim` binary: global options and one subcommand per role.
//!
//! Every role's options come from that role's crate (`EdgeConfig`, `ControlConfig`, `JobConfig`), so a
//! crate documents its own settings once and `--help`, environment variables and the TOML file (see
//! [`crate::config`]) all follow from it. What only the binary knows — which store and which bus a role
//! runs on — is declared here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use rim_control::ControlConfig;
use rim_edge::EdgeConfig;
use rim_edgelink::LinkConfig;
use rim_job::JobConfig;
use std::path::PathBuf;

/// rim: a goim-compatible long-connection gateway.
///
/// Without a subcommand, runs `rim dev`: edge, control plane and job worker in one process with an
/// in-memory store and bus.
#[derive(Parser, Debug)]
#[command(name = "rim", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file: top-level keys set global options, `[edge]`, `[control]` and `[job]`
    /// set the options of that role (keys are the option names with `_`, e.g. `edge_tcp_listen`).
    /// Environment variables and flags override the file.
    #[arg(long, global = true, env = crate::config::CONFIG_ENV)]
    pub config: Option<PathBuf>,

    /// Shared secret with which edges, job workers and the control plane authenticate each other.
    /// Required by `edge`, `control` and `job`; `dev` makes a random one when unset.
    #[arg(
        long,
        global = true,
        env = "RIM_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,

    /// Log output format.
    #[arg(long, global = true, env = "RIM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which role to run.
    #[command(subcommand)]
    pub role: Option<Role>,
}

/// The roles one `rim` process can play.
// Parsed once per process: the size of the largest variant (`dev` carries every role's options)
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Role {
    /// All in one process (edge + control + job), in-memory store and bus: for development and demos.
    Dev(DevArgs),
    /// An edge (comet): holds client connections of one region.
    Edge(EdgeArgs),
    /// A control-plane instance: business, edge and admin APIs, on PostgreSQL and Kafka.
    Control(ControlArgs),
    /// A job worker of one region: delivers that region's pushes from Kafka to its edges.
    Job(JobArgs),
    /// A terminal client: connects to an edge, prints every push as a JSON line, sends each line
    /// typed on standard input upstream (`/room <id>` changes room), and reconnects by itself.
    Client(crate::client::ClientArgs),
}

/// `rim dev`: every role's options, with defaults suited to one machine.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Options of the embedded edge.
    #[command(flatten, next_help_heading = "Edge")]
    pub edge: EdgeConfig,
    /// The embedded edge's link to the control plane (`dev` points it at the embedded control plane
    /// and the job worker's region).
    #[command(flatten, next_help_heading = "Edge link")]
    pub link: LinkConfig,
    /// Options of the embedded control plane.
    #[command(flatten, next_help_heading = "Control plane")]
    pub control: ControlConfig,
    /// Options of the embedded job worker (its Kafka options are unused: `dev` has an in-process bus).
    #[command(flatten, next_help_heading = "Job worker")]
    pub job: JobConfig,
}

/// `rim edge`.
#[derive(Args, Debug)]
pub struct EdgeArgs {
    /// The edge's options.
    #[command(flatten)]
    pub edge: EdgeConfig,
    /// How the edge registers with and reports to the control plane.
    #[command(flatten, next_help_heading = "Edge link")]
    pub link: LinkConfig,
}

/// `rim control`.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// The control plane's options.
    #[command(flatten)]
    pub control: ControlConfig,
    /// PostgreSQL URL of the store, e.g. `postgres://rim:secret@db:5432/rim` (migrated at start).
    #[arg(long, env = "RIM_CONTROL_DATABASE_URL", hide_env_values = true)]
    pub control_database_url: String,
    /// Longest one PostgreSQL statement may run, waiting on locks included, in milliseconds (0:
    /// unbounded). Past it the call fails (503) and gives its connection back, so a lock nobody
    /// releases cannot hold requests and connections for good. A durable push may wait on a
    /// user's or room's head that other instances hold while they publish, so it must be above
    /// `--control-publish-timeout-ms`.
    #[arg(
        long,
        env = "RIM_CONTROL_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = millis(rim_store::postgres::DEFAULT_STATEMENT_TIMEOUT)
    )]
    pub control_database_statement_timeout_ms: u64,
    /// Kafka bootstrap servers (`host:port,...`) the push pipeline produces to.
    #[arg(
        long,
        env = "RIM_CONTROL_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub control_kafka_brokers: String,
    /// Prefix of the per-region push topics (must match the job workers' `job_topic_prefix`).
    #[arg(long, env = "RIM_CONTROL_TOPIC_PREFIX", default_value = rim_bus::kafka::DEFAULT_TOPIC_PREFIX)]
    pub control_topic_prefix: String,
    /// Extra librdkafka properties for the producer, `KEY=VALUE[,KEY=VALUE...]`, applied after
    /// rim's defaults (so they override them): TLS (`security.protocol=SSL`, `ssl.ca.location=...`),
    /// SASL (`sasl.mechanism=SCRAM-SHA-512`, `sasl.username=...`, `sasl.password=...`), tuning.
    /// Repeatable; unknown properties are refused at start.
    #[arg(
        long = "control-kafka-option",
        env = "RIM_CONTROL_KAFKA_OPTIONS",
        value_name = "KEY=VALUE",
        hide_env_values = true
    )]
    pub control_kafka_option: Vec<rim_bus::kafka::KafkaOptions>,
}

/// `rim job`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job worker's options.
    #[command(flatten)]
    pub job: JobConfig,
    /// PostgreSQL URL of the store, where the worker finds the edges of its region.
    #[arg(long, env = "RIM_JOB_DATABASE_URL", hide_env_values = true)]
    pub job_database_url: String,
    /// Longest one PostgreSQL statement may run, in milliseconds (0: unbounded); past it the
    /// worker keeps its last view of the region's edges and reads again later.
    #[arg(
        long,
        env = "RIM_JOB_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = millis(rim_store::postgres::DEFAULT_STATEMENT_TIMEOUT)
    )]
    pub job_database_statement_timeout_ms: u64,
}

/// `duration` in whole milliseconds, for a flag's default.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How log lines are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Every on/off flag of `command` and its subcommands made switchable both ways: clap's `bool`
/// fields are `SetTrue` flags that only switch on, so `--goim-routes-open=false` would be refused
/// and only the environment variable could switch such an option off. Here `--flag` still switches
/// it on, `--flag=false` (or `=no`, `=off`, `=0`) off, and the environment variable takes the same
/// words. The value needs the `=`, so `--flag` never swallows the argument after it. Applied to the
/// whole tree in one place, so a flag added later gets it too.
pub fn switchable_flags(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                arg.action(clap::ArgAction::Set)
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_parser(clap::builder::BoolishValueParser::new())
            } else {
                arg
            }
        })
        .mut_subcommands(switchable_flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// Parses `argv` as `main` does (flags switchable).
    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        let matches = switchable_flags(Cli::command()).try_get_matches_from(argv)?;
        Cli::from_arg_matches(&matches)
    }

    fn control(argv: &[&str]) -> ControlConfig {
        match parse(argv).unwrap().role {
            Some(Role::Control(args)) => args.control,
            other => panic!("not a control role: {other:?}"),
        }
    }

    const CONTROL: [&str; 4] = ["rim", "control", "--control-database-url", "postgres://x"];

    #[test]
    fn bool_flags_switch_on_and_off_on_the_command_line() {
        let with = |extra: &[&str]| {
            let argv: Vec<&str> = CONTROL.iter().chain(extra).copied().collect();
            control(&argv).goim_routes_open
        };
        assert!(!with(&[]));
        assert!(with(&["--goim-routes-open"]));
        assert!(with(&["--goim-routes-open=true"]));
        assert!(!with(&["--goim-routes-open=false"]));
        assert!(!with(&["--goim-routes-open=no"]));
        assert!(
            parse(&[CONTROL.as_slice(), &["--goim-routes-open=maybe"]].concat()).is_err(),
            "a word that is not a yes or no is refused"
        );
        // The flag does not take the next argument as its value.
        let Some(Role::Dev(dev)) = parse(&[
            "rim",
            "dev",
            "--edge-auth-webhook",
            "--goim-routes-open=false",
        ])
        .unwrap()
        .role
        else {
            panic!("not dev");
        };
        assert!(dev.link.edge_auth_webhook);
        assert!(!dev.control.goim_routes_open);
    }

    #[test]
    fn no_flag_in_the_tree_is_left_switch_on_only() {
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                assert!(
                    !matches!(arg.get_action(), clap::ArgAction::SetTrue),
                    "`{}` of `{}` can only be switched on",
                    arg.get_id(),
                    command.get_name()
                );
            }
            command.get_subcommands().for_each(check);
        }
        let mut command = switchable_flags(Cli::command());
        command.build();
        check(&command);
    }
}

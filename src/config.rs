//! Layered configuration: built-in defaults < TOML file < environment < command-line flags.
//!
//! Every option is declared once, as a clap argument of a role's config struct (with its doc comment as
//! `--help` and its `RIM_*` environment variable). A TOML file does not get a parser of its own: its
//! values are installed as the *defaults* of those same arguments before clap parses the command line,
//! so clap's own precedence (flag, then environment, then default) gives the layering for free and a
//! misspelt key is an error instead of a silently ignored line.
//!
//! File layout: top-level keys set global options (`cluster_secret = "..."`); sections `[edge]`,
//! `[control]` and `[job]` set the options of that role. `rim dev` runs all roles, so it takes every
//! section.

use anyhow::{Context, bail};
use clap::Command;
use std::ffi::OsString;
use std::path::PathBuf;

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "RIM_CONFIG";

/// Sections of the file, each naming the subcommands whose arguments it may set.
const SECTIONS: &[(&str, &[&str])] = &[
    ("edge", &["edge", "dev"]),
    ("control", &["control", "dev"]),
    ("job", &["job", "dev"]),
];

/// Finds the configuration file named by `--config FILE`, `--config=FILE` or `RIM_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if text == "--" {
            break;
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// Reads `path` and installs its values as defaults of `command`'s arguments.
pub fn apply_file(command: Command, path: &std::path::Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading configuration file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing configuration file {}", path.display()))?;
    apply_table(command, &table)
        .with_context(|| format!("in configuration file {}", path.display()))
}

/// Installs the values of a parsed TOML document as argument defaults (see the module docs).
pub fn apply_table(mut command: Command, table: &toml::Table) -> anyhow::Result<Command> {
    for (key, value) in table {
        if let Some((_, subcommands)) = SECTIONS.iter().find(|(name, _)| name == key) {
            let toml::Value::Table(section) = value else {
                bail!("[{key}] must be a table");
            };
            for name in *subcommands {
                let sub = command
                    .find_subcommand(name)
                    .cloned()
                    .with_context(|| format!("no `{name}` subcommand"))?;
                let sub = set_defaults(sub, section, key)?;
                command = command.mut_subcommand(name, |_| sub);
            }
        } else {
            let single = toml::Table::from_iter([(key.clone(), value.clone())]);
            command = set_defaults(command, &single, "top level")?;
        }
    }
    Ok(command)
}

/// Sets each `key = value` of `section` as the default of the argument whose id is `key`.
fn set_defaults(
    mut command: Command,
    section: &toml::Table,
    place: &str,
) -> anyhow::Result<Command> {
    for (key, value) in section {
        let exists = command.get_arguments().any(|arg| arg.get_id() == key);
        if !exists {
            bail!(
                "unknown option `{key}` ({place}); see `rim {} --help`",
                command.get_name()
            );
        }
        let values = scalar_texts(value).with_context(|| format!("option `{key}` ({place})"))?;
        command = command.mut_arg(key, |arg| arg.default_values(values));
    }
    Ok(command)
}

/// The textual form clap parses for a TOML value; arrays give one text per element.
fn scalar_texts(value: &toml::Value) -> anyhow::Result<Vec<String>> {
    match value {
        toml::Value::String(text) => Ok(vec![text.clone()]),
        toml::Value::Integer(n) => Ok(vec![n.to_string()]),
        toml::Value::Float(x) => Ok(vec![x.to_string()]),
        toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    bail!("arrays may hold only plain values")
                }
                scalar => Ok(scalar_texts(scalar)?.remove(0)),
            })
            .collect(),
        other => bail!("unsupported value {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn command() -> Command {
        Command::new("rim")
            .arg(
                Arg::new("cluster_secret")
                    .long("cluster-secret")
                    .env("RIM_TEST_SECRET_UNSET"),
            )
            .subcommand(edge_args(Command::new("edge")))
            .subcommand(edge_args(Command::new("dev")))
            .subcommand(Command::new("job"))
            .subcommand(Command::new("control"))
    }

    /// The same arguments on `edge` and `dev`, as the real binary flattens role configs into `dev`.
    fn edge_args(command: Command) -> Command {
        command
            .arg(
                Arg::new("tcp_listen")
                    .long("tcp-listen")
                    .default_value("0.0.0.0:3101"),
            )
            .arg(
                Arg::new("insecure")
                    .long("insecure")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("addresses").long("addresses").num_args(1..))
    }

    fn parse(toml_text: &str, argv: &[&str]) -> anyhow::Result<clap::ArgMatches> {
        let table: toml::Table = toml_text.parse()?;
        Ok(apply_table(command(), &table)?.try_get_matches_from(argv)?)
    }

    #[test]
    fn file_values_replace_builtin_defaults() {
        let m = parse(
            "cluster_secret = \"s3\"\n[edge]\ntcp_listen = \"127.0.0.1:9\"\ninsecure = true\naddresses = [\"a\", \"b\"]",
            &["rim", "edge"],
        )
        .unwrap();
        assert_eq!(m.get_one::<String>("cluster_secret").unwrap(), "s3");
        let edge = m.subcommand_matches("edge").unwrap();
        assert_eq!(edge.get_one::<String>("tcp_listen").unwrap(), "127.0.0.1:9");
        assert!(edge.get_flag("insecure"));
        let addresses: Vec<_> = edge.get_many::<String>("addresses").unwrap().collect();
        assert_eq!(addresses, ["a", "b"]);
    }

    #[test]
    fn flags_override_the_file() {
        let m = parse(
            "[edge]\ntcp_listen = \"127.0.0.1:9\"",
            &["rim", "edge", "--tcp-listen", "1.2.3.4:5"],
        )
        .unwrap();
        let edge = m.subcommand_matches("edge").unwrap();
        assert_eq!(edge.get_one::<String>("tcp_listen").unwrap(), "1.2.3.4:5");
    }

    #[test]
    fn dev_takes_every_section() {
        let m = parse("[edge]\ntcp_listen = \"127.0.0.1:9\"", &["rim", "dev"]).unwrap();
        let dev = m.subcommand_matches("dev").unwrap();
        assert_eq!(dev.get_one::<String>("tcp_listen").unwrap(), "127.0.0.1:9");
    }

    #[test]
    fn unknown_keys_and_bad_shapes_are_errors() {
        let err = parse("[edge]\ntcp_lisen = \"x\"", &["rim", "edge"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown option `tcp_lisen`"),
            "{err:#}"
        );
        assert!(parse("edge = 3", &["rim", "edge"]).is_err());
        assert!(parse("nonsense = 1", &["rim", "edge"]).is_err());
        assert!(parse("[edge]\naddresses = [[1]]", &["rim", "edge"]).is_err());
    }

    #[test]
    fn config_path_is_found_in_either_form() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["rim", "--config", "a.toml", "dev"])),
            Some("a.toml".into())
        );
        assert_eq!(
            config_path(&args(&["rim", "dev", "--config=b.toml"])),
            Some("b.toml".into())
        );
    }
}

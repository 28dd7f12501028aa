//! `--config FILE`: a TOML file with the same settings as the command's flags, for an agent
//! that runs as a service (`/etc/tcpviz/agent.toml`).
//!
//! Keys are the flags' long names (`iface`, `metrics-addr`, `capture`, ...). The file is
//! turned into the flags it stands for and the command line is parsed again with them, so a
//! value in the file is checked exactly as the same flag would be, and cannot mean anything
//! the flag does not. What the command line (or a TCPVIZ_* environment variable) gives
//! wins: a key is used only when clap says its flag's value did not come from there.
//! Keys that name no setting are an error (a misspelt key silently ignored would leave an
//! agent on a fleet running with a default nobody chose).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The argument (on each command that takes one) that names the file.
pub const CONFIG_ARG: &str = "config";

/// Flags that are actions rather than settings, never read from a file.
const NOT_SETTINGS: &[&str] = &["config", "cleanup"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid TOML file: {source}", .path.display())]
    Syntax { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{}: unknown key `{key}`{hint}", .path.display())]
    UnknownKey { path: PathBuf, key: String, hint: String },
    #[error("{}: `{key}` must be {expected}", .path.display())]
    Type { path: PathBuf, key: String, expected: &'static str },
    #[error("{}: {detail}", .path.display())]
    Invalid { path: PathBuf, detail: String },
}

/// Parses `argv` with `cmd`; when the subcommand was given `--config FILE`, adds the
/// file's settings that the command line (or the environment) did not give, and parses
/// again. A command-line error is clap's own (the caller prints it and exits with 2).
pub fn matches_with_config(cmd: &Command, argv: Vec<OsString>) -> Result<ArgMatches, Error> {
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let Some((name, sub)) = first.subcommand() else { return Ok(first) };
    let Some(path) = sub.try_get_one::<PathBuf>(CONFIG_ARG).ok().flatten() else { return Ok(first) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.clone(), source })?;
    let mut built = cmd.clone();
    built.build();
    let sub_cmd = built.find_subcommand(name).expect("the subcommand clap just matched");
    let extra = flags_from_file(sub_cmd, sub, path, &text)?;
    if extra.is_empty() {
        return Ok(first);
    }
    let mut argv = argv;
    argv.extend(extra);
    cmd.clone()
        .try_get_matches_from(&argv)
        .map_err(|e| ConfigFileError::Invalid { path: path.clone(), detail: clap_detail(&e) }.into())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    File(#[from] ConfigFileError),
}

/// clap's message without its "error: " prefix and usage lines.
fn clap_detail(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The flags (`--key=value`) the file stands for, leaving out those already given.
pub fn flags_from_file(
    cmd: &Command,
    given: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigFileError> {
    let table: toml::Table =
        text.parse().map_err(|e| ConfigFileError::Syntax { path: path.to_path_buf(), source: Box::new(e) })?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg =
            cmd.get_arguments().find(|a| a.get_long() == Some(key.as_str()) && is_setting(a)).ok_or_else(|| {
                ConfigFileError::UnknownKey { path: path.to_path_buf(), key: key.clone(), hint: hint(cmd, key) }
            })?;
        let id = arg.get_id().as_str();
        if matches!(given.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let type_err = |expected| ConfigFileError::Type { path: path.to_path_buf(), key: key.clone(), expected };
        let flag = format!("--{key}");
        match arg.get_action() {
            ArgAction::SetTrue => {
                if value.as_bool().ok_or_else(|| type_err("true or false"))? {
                    flags.push(flag.into());
                }
            }
            ArgAction::Count => {
                let n = value.as_integer().filter(|n| (0..=8).contains(n)).ok_or_else(|| type_err("a count (0-8)"))?;
                flags.extend((0..n).map(|_| OsString::from(&flag)));
            }
            ArgAction::Append => {
                let items = match value {
                    toml::Value::Array(items) => items.iter().collect(),
                    one => vec![one],
                };
                for item in items {
                    flags.push(
                        format!("{flag}={}", scalar(item).ok_or_else(|| type_err("a value or a list of values"))?)
                            .into(),
                    );
                }
            }
            _ => flags.push(format!("{flag}={}", scalar(value).ok_or_else(|| type_err("a single value"))?).into()),
        }
    }
    Ok(flags)
}

/// A setting a file may hold: a visible flag that is not an action.
fn is_setting(a: &clap::Arg) -> bool {
    !a.is_hide_set()
        && !NOT_SETTINGS.contains(&a.get_id().as_str())
        && !matches!(a.get_action(), ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version)
}

/// A TOML value as the text of a flag's value.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `metrics_addr` is `metrics-addr`: the keys are spelt as the flags are.
fn hint(cmd: &Command, key: &str) -> String {
    let dashed = key.replace('_', "-");
    let known = cmd.get_arguments().any(|a| a.get_long() == Some(dashed.as_str()) && is_setting(a));
    if known && dashed != key {
        format!(" (did you mean `{dashed}`?)")
    } else {
        let keys: Vec<&str> = cmd.get_arguments().filter(|a| is_setting(a)).filter_map(|a| a.get_long()).collect();
        format!(" (known keys: {})", keys.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(short, long, action = clap::ArgAction::Count, global = true)]
        verbose: u8,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Live {
            #[arg(long)]
            config: Option<PathBuf>,
            #[arg(long)]
            iface: Vec<String>,
            #[arg(long = "port")]
            ports: Vec<u16>,
            #[arg(long, default_value_t = 8)]
            ring_mb: u32,
            #[arg(long, default_value_t = 60.0)]
            window: f64,
            #[arg(long)]
            metrics_addr: Option<std::net::SocketAddr>,
            #[arg(long)]
            cleanup: bool,
            #[arg(long, hide = true)]
            secret: Option<u32>,
        },
    }

    fn parse(file: &str, args: &[&str]) -> Result<Cli, Error> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(file.as_bytes()).unwrap();
        let mut argv: Vec<OsString> = vec!["tcpviz".into(), "live".into(), "--config".into(), f.path().into()];
        argv.extend(args.iter().map(OsString::from));
        let m = matches_with_config(&Cli::command(), argv)?;
        Ok(Cli::from_arg_matches(&m).unwrap())
    }

    fn live(cli: Cli) -> (Vec<String>, Vec<u16>, u32, f64, Option<std::net::SocketAddr>, u8) {
        let Sub::Live { iface, ports, ring_mb, window, metrics_addr, .. } = cli.command;
        (iface, ports, ring_mb, window, metrics_addr, cli.verbose)
    }

    #[test]
    fn the_file_gives_what_the_command_line_does_not() {
        let cli = parse(
            "iface = [\"eth0\", \"eth1\"]\nport = 443\nring-mb = 64\nwindow = 30.5\nmetrics-addr = \"127.0.0.1:9464\"\nverbose = 2\n",
            &[],
        )
        .unwrap();
        let (iface, ports, ring, window, metrics, verbose) = live(cli);
        assert_eq!(iface, ["eth0", "eth1"]);
        assert_eq!(ports, [443]);
        assert_eq!(ring, 64);
        assert_eq!(window, 30.5);
        assert_eq!(metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(verbose, 2);
    }

    #[test]
    fn flags_override_the_file_lists_included() {
        let cli = parse("iface = [\"eth0\"]\nport = [80, 443]\nring-mb = 64\n", &["--iface", "lo", "--ring-mb", "16"])
            .unwrap();
        let (iface, ports, ring, ..) = live(cli);
        assert_eq!(iface, ["lo"], "a list on the command line replaces the file's, not added to it");
        assert_eq!(ports, [80, 443]);
        assert_eq!(ring, 16);
    }

    #[test]
    fn a_flag_equal_to_its_default_still_overrides_the_file() {
        let (_, _, ring, ..) = live(parse("ring-mb = 64\n", &["--ring-mb", "8"]).unwrap());
        assert_eq!(ring, 8);
    }

    fn file_error(file: &str) -> String {
        match parse(file, &[]) {
            Err(Error::File(e)) => e.to_string(),
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_file() {
        let e = file_error("iface = [\"eth0\"]\nmax-flowz = 3\n");
        assert!(e.contains("unknown key `max-flowz`") && e.contains(".tmp"), "{e}");
        let e = file_error("metrics_addr = \"127.0.0.1:1\"\n");
        assert!(e.contains("did you mean `metrics-addr`"), "{e}");
        // Actions and hidden flags are not settings.
        assert!(file_error("cleanup = true\n").contains("unknown key `cleanup`"));
        assert!(file_error("secret = 1\n").contains("unknown key `secret`"));
        assert!(file_error("config = \"/x\"\n").contains("unknown key `config`"));
        assert!(file_error("[live]\niface = \"x\"\n").contains("unknown key `live`"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = file_error("port = \"http\"\n");
        assert!(e.contains("--port") && e.contains("http"), "{e}");
        let e = file_error("ring-mb = [1, 2]\n");
        assert!(e.contains("`ring-mb` must be a single value"), "{e}");
        let e = file_error("verbose = \"loud\"\n");
        assert!(e.contains("`verbose` must be a count"), "{e}");
        let e = file_error("iface = \n");
        assert!(e.contains("not a valid TOML file"), "{e}");
    }

    #[test]
    fn a_missing_file_says_so() {
        let argv: Vec<OsString> = ["tcpviz", "live", "--config", "/nonexistent/agent.toml"].map(OsString::from).into();
        let e = matches_with_config(&Cli::command(), argv).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/agent.toml"), "{e}");
    }

    #[test]
    fn booleans_set_a_flag_only_when_true() {
        let cmd = Command::new("t").arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue));
        let m = cmd.clone().get_matches_from(["t"]);
        let p = Path::new("f.toml");
        assert_eq!(flags_from_file(&cmd, &m, p, "quiet = true").unwrap(), [OsString::from("--quiet")]);
        assert!(flags_from_file(&cmd, &m, p, "quiet = false").unwrap().is_empty());
        assert!(flags_from_file(&cmd, &m, p, "quiet = 1").is_err());
    }
}

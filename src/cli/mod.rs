//! The `odradek` command line's client commands: topics, produce, consume, groups, configs and
//! cluster, with the flags Kafka's shell tools use. They are clients of any Kafka-compatible
//! broker and use only the wire protocol ([`client`], on the broker's own codec), never a data
//! directory.
//!
//! Exit codes scripts can rely on: 0 done; 1 the broker refused or failed the operation; 2 bad
//! usage (unknown flag, bad value); 3 no broker reachable or the connection broke; 130
//! interrupted before finishing.

pub mod client;
pub mod cluster;
pub mod configs;
pub mod consume;
pub mod group;
pub mod output;
pub mod produce;
pub mod records;
pub mod topic;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::protocol::api::ApiKey;
use crate::protocol::ErrorCode;

use client::{ClientConfig, Cluster};

/// Where the commands find the cluster, when `--bootstrap-server` is not given.
pub const BOOTSTRAP_ENV: &str = "ODRADEK_BOOTSTRAP";
const DEFAULT_BOOTSTRAP: &str = "localhost:9092";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to {addr}: {source} (is a broker listening there? set --bootstrap-server or {BOOTSTRAP_ENV})")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{op} on the connection to {addr}: {source}")]
    Io {
        op: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("the broker at {0} closed the connection")]
    Closed(String),
    #[error("no answer to {api:?} from {addr} within the request timeout (request.timeout.ms)")]
    Timeout { api: ApiKey, addr: String },
    #[error("the broker at {addr} does not speak {api:?} in a version this client knows")]
    NoVersion { api: ApiKey, addr: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("unexpected response to {0:?}")]
    Unexpected(ApiKey),
    #[error("topic {0} does not exist (create it with `odradek topic create {0}`)")]
    UnknownTopic(String),
    #[error("{what} failed: {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        what: String,
        code: ErrorCode,
        message: Option<String>,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    pub fn kafka(what: &str, code: i16, message: Option<String>) -> CliError {
        if ErrorCode(code) == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
            if let Some(topic) = what.strip_prefix("topic ") {
                return CliError::UnknownTopic(topic.to_string());
            }
        }
        CliError::Kafka {
            what: what.to_string(),
            code: ErrorCode(code),
            message: message.filter(|m| !m.is_empty()),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) => 2,
            CliError::Connect { .. }
            | CliError::Io { .. }
            | CliError::Closed(_)
            | CliError::Timeout { .. } => 3,
            CliError::Interrupted => 130,
            _ => 1,
        })
    }
}

/// Options every client command takes (before or after the subcommand).
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker(s) to start from, host:port[,host:port...] (default: $ODRADEK_BOOTSTRAP, else
    /// localhost:9092).
    #[arg(long = "bootstrap-server", global = true, value_name = "HOST:PORT")]
    pub bootstrap_server: Option<String>,
    /// A client property, KEY=VALUE (repeatable): client.id, request.timeout.ms, and the
    /// producer and consumer properties each command lists.
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Output of read commands.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Client properties given with `-X`, checked against the keys a command knows.
#[derive(Debug, Clone, Default)]
pub struct Properties(BTreeMap<String, String>);

/// Keys every command accepts.
const COMMON_KEYS: &[&str] = &["client.id", "request.timeout.ms"];

impl Properties {
    pub fn parse(list: &[String]) -> Result<Properties, CliError> {
        let mut map = BTreeMap::new();
        for kv in list {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("-X {kv}: expected KEY=VALUE")))?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Properties(map))
    }

    /// Refuses keys neither common nor in `known`, naming them.
    pub fn check(&self, known: &[&str]) -> Result<(), CliError> {
        for k in self.0.keys() {
            if !COMMON_KEYS.contains(&k.as_str()) && !known.contains(&k.as_str()) {
                let mut all: Vec<&str> = COMMON_KEYS.iter().chain(known).copied().collect();
                all.sort_unstable();
                return Err(CliError::Usage(format!(
                    "-X {k}: not a property this command uses (it knows: {})",
                    all.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key` parsed as a number, if set.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, CliError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| CliError::Usage(format!("-X {key}={v}: expected a number"))),
        }
    }
}

/// What a command needs to reach the cluster and print.
pub struct Context {
    pub cluster: Cluster,
    pub props: Properties,
    pub output: OutputFormat,
}

impl Context {
    /// Builds the context, accepting `-X` keys common to all commands plus `known`.
    pub fn new(common: &Common, known: &[&str]) -> Result<Context, CliError> {
        let props = Properties::parse(&common.properties)?;
        props.check(known)?;
        let bootstrap = common
            .bootstrap_server
            .clone()
            .or_else(|| std::env::var(BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_string());
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err(CliError::Usage("--bootstrap-server is empty".into()));
        }
        let timeout_ms: u64 = props.num("request.timeout.ms")?.unwrap_or(30_000);
        let config = ClientConfig {
            bootstrap,
            client_id: props.get("client.id").unwrap_or("odradek-cli").to_string(),
            request_timeout: Duration::from_millis(timeout_ms.max(1)),
        };
        Ok(Context {
            cluster: Cluster::new(config),
            props,
            output: common.output,
        })
    }
}

/// The client subcommands of `odradek`.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce lines from stdin (or a file) to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Consume records from a topic and print them, alone or in a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Describe and alter topic and broker configs.
    #[command(subcommand)]
    Config(configs::ConfigCommand),
    /// The cluster: brokers, controller, cluster id, API versions.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Runs a client command; prints its error (if any) to stderr and returns the exit code.
pub fn run(command: ClientCommand, common: &Common) -> ExitCode {
    let result = match command {
        ClientCommand::Topic(c) => topic::run(c, common),
        ClientCommand::Produce(a) => produce::run(a, common),
        ClientCommand::Consume(a) => consume::run(a, common),
        ClientCommand::Group(c) => group::run(c, common),
        ClientCommand::Config(c) => configs::run(c, common),
        ClientCommand::Cluster(c) => cluster::run(c, common),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odradek: {e}");
            e.exit_code()
        }
    }
}

/// Splits "k=v" (a `--config` value); Kafka's tools take the same form.
pub fn key_value(s: &str) -> Result<(String, String), CliError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| CliError::Usage(format!("{s}: expected KEY=VALUE")))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(CliError::Usage(format!("{s}: empty key")));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Set by the SIGINT/SIGTERM handler of commands that stop cleanly (consume, produce).
pub fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration only fails for signals that cannot be caught; these can.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_checked_by_name() {
        let p = Properties::parse(&["acks=all".into(), "client.id = me".into()]).unwrap();
        assert_eq!(p.get("client.id"), Some("me"));
        assert!(p.check(&["acks"]).is_ok());
        let e = p.check(&[]).unwrap_err().to_string();
        assert!(e.contains("-X acks"), "{e}");
        assert!(matches!(
            Properties::parse(&["novalue".into()]),
            Err(CliError::Usage(_))
        ));
        let p = Properties::parse(&["request.timeout.ms=x".into()]).unwrap();
        assert!(p.num::<u64>("request.timeout.ms").is_err());
    }

    #[test]
    fn exit_codes_tell_usage_from_connection_from_refusal() {
        let code = |e: CliError| format!("{:?}", e.exit_code());
        assert_eq!(
            code(CliError::Usage("x".into())),
            format!("{:?}", ExitCode::from(2))
        );
        assert_eq!(
            code(CliError::Closed("a".into())),
            format!("{:?}", ExitCode::from(3))
        );
        assert_eq!(
            code(CliError::kafka("x", 36, None)),
            format!("{:?}", ExitCode::from(1))
        );
        assert!(matches!(
            CliError::kafka("topic t", 3, None),
            CliError::UnknownTopic(t) if t == "t"
        ));
    }

    #[test]
    fn key_values_split_at_the_first_equals() {
        assert_eq!(
            key_value("retention.ms=1000").unwrap(),
            ("retention.ms".into(), "1000".into())
        );
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
    }
}

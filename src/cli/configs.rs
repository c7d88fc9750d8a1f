//! `odradek config describe|alter` for topics and brokers (`kafka-configs.sh`), and the
//! DescribeConfigs / IncrementalAlterConfigs calls other commands share.

use clap::{ArgGroup, Args, Subcommand};

use crate::protocol::api::ApiKey;
use crate::protocol::{
    DescribeConfigsRequest, DescribeConfigsResource, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource, IncrementalAlterableConfig, ResponseBody,
};

use super::output::{self, Cell, Table};
use super::{key_value, CliError, Common, Context};

/// Config sources as DescribeConfigs reports them.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;

fn source_name(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

/// What configs belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Topic(String),
    /// A broker id; empty for the cluster-wide default of every broker.
    Broker(String),
}

impl Resource {
    fn kind(&self) -> i8 {
        match self {
            Resource::Topic(_) => 2,
            Resource::Broker(_) => 4,
        }
    }

    fn name(&self) -> &str {
        match self {
            Resource::Topic(n) | Resource::Broker(n) => n,
        }
    }

    fn describe_what(&self) -> String {
        match self {
            Resource::Topic(n) => format!("topic {n}"),
            Resource::Broker(n) if n.is_empty() => "the broker defaults".into(),
            Resource::Broker(n) => format!("broker {n}"),
        }
    }
}

/// One config as described.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// Every config of `r` with its value and source.
pub fn describe(
    cluster: &mut super::client::Cluster,
    r: &Resource,
    synonyms: bool,
) -> Result<Vec<ConfigEntry>, CliError> {
    let req = DescribeConfigsRequest {
        resources: vec![DescribeConfigsResource {
            resource_type: r.kind(),
            resource_name: r.name().to_string(),
            configuration_keys: None,
        }],
        include_synonyms: synonyms,
        include_documentation: false,
    };
    let conn = match r {
        // Broker configs are answered by that broker.
        Resource::Broker(id) if !id.is_empty() => {
            let node = id
                .parse()
                .map_err(|_| CliError::Usage(format!("--broker {id}: expected a broker id")))?;
            cluster.broker(node)?
        }
        _ => cluster.any()?,
    };
    let ResponseBody::DescribeConfigs(resp) = conn.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::DescribeConfigs));
    };
    let mut out = Vec::new();
    for res in resp.results {
        if res.error_code != 0 {
            return Err(CliError::kafka(
                &r.describe_what(),
                res.error_code,
                res.error_message,
            ));
        }
        for c in res.configs {
            out.push(ConfigEntry {
                name: c.name,
                value: c.value,
                source: c.config_source,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Sets `set` and removes `delete` (back to the default) on `r`, in one request.
pub fn alter(
    cluster: &mut super::client::Cluster,
    r: &Resource,
    set: &[(String, String)],
    delete: &[String],
) -> Result<(), CliError> {
    let mut configs: Vec<IncrementalAlterableConfig> = set
        .iter()
        .map(|(k, v)| IncrementalAlterableConfig {
            name: k.clone(),
            config_operation: 0, // SET
            value: Some(v.clone()),
        })
        .collect();
    configs.extend(delete.iter().map(|k| IncrementalAlterableConfig {
        name: k.clone(),
        config_operation: 1, // DELETE
        value: None,
    }));
    let req = IncrementalAlterConfigsRequest {
        resources: vec![IncrementalAlterConfigsResource {
            resource_type: r.kind(),
            resource_name: r.name().to_string(),
            configs,
        }],
        validate_only: false,
    };
    let ResponseBody::IncrementalAlterConfigs(resp) = cluster.any()?.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::IncrementalAlterConfigs));
    };
    for res in resp.responses {
        if res.error_code != 0 {
            return Err(CliError::kafka(
                &format!("altering the configs of {}", r.describe_what()),
                res.error_code,
                res.error_message,
            ));
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Configs of a topic or broker: overrides only, or every config with `--all`.
    Describe(DescribeArgs),
    /// Set or remove configs of a topic or broker.
    Alter(AlterArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("entity").required(true).args(["topic", "broker", "broker_defaults"])))]
pub struct Target {
    /// A topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// A broker, by id.
    #[arg(long)]
    pub broker: Option<i32>,
    /// The cluster-wide default of every broker.
    #[arg(long)]
    pub broker_defaults: bool,
}

impl Target {
    fn resource(&self) -> Resource {
        match (&self.topic, self.broker) {
            (Some(t), _) => Resource::Topic(t.clone()),
            (None, Some(b)) => Resource::Broker(b.to_string()),
            (None, None) => Resource::Broker(String::new()),
        }
    }
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Every config, defaults included (otherwise only values set on this topic or broker).
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    pub target: Target,
    /// Configs to set: k1=v1,k2=v2 (repeatable). A value with commas goes in brackets:
    /// cleanup.policy=[compact,delete].
    #[arg(long = "add-config", value_name = "K=V,...")]
    pub add: Vec<String>,
    /// Configs to remove (back to their default): k1,k2 (repeatable).
    #[arg(long = "delete-config", value_name = "K,...")]
    pub delete: Vec<String>,
}

pub fn run(cmd: ConfigCommand, common: &Common) -> Result<(), CliError> {
    let mut ctx = Context::new(common, &[])?;
    match cmd {
        ConfigCommand::Describe(a) => {
            let r = a.target.resource();
            if let Resource::Topic(t) = &r {
                ctx.cluster.topic(t)?;
            }
            let entries = describe(&mut ctx.cluster, &r, false)?;
            let overrides_only = !a.all;
            let mut table = Table::new(
                &["NAME", "VALUE", "SOURCE", "READ-ONLY"],
                &["name", "value", "source", "read_only"],
            );
            for e in entries {
                let is_override = match r {
                    Resource::Topic(_) => e.source == SOURCE_DYNAMIC_TOPIC,
                    Resource::Broker(ref id) if id.is_empty() => e.source == 3,
                    Resource::Broker(_) => e.source == 2,
                };
                if overrides_only && !is_override {
                    continue;
                }
                let value = if e.sensitive {
                    Cell::Text("(sensitive)".into())
                } else {
                    Cell::from(e.value)
                };
                table.push(vec![
                    e.name.into(),
                    value,
                    source_name(e.source).into(),
                    e.read_only.into(),
                ]);
            }
            table.print(ctx.output)
        }
        ConfigCommand::Alter(a) => {
            let r = a.target.resource();
            if a.add.is_empty() && a.delete.is_empty() {
                return Err(CliError::Usage(
                    "nothing to alter: give --add-config or --delete-config".into(),
                ));
            }
            if let Resource::Topic(t) = &r {
                ctx.cluster.topic(t)?;
            }
            let mut set = Vec::new();
            for list in &a.add {
                for kv in split_config_list(list) {
                    set.push(key_value(&kv)?);
                }
            }
            let delete: Vec<String> = a
                .delete
                .iter()
                .flat_map(|l| l.split(','))
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
            alter(&mut ctx.cluster, &r, &set, &delete)?;
            output::write_out(&format!(
                "Completed updating the configs of {}.\n",
                r.describe_what()
            ))
        }
    }
}

/// Splits `k1=v1,k2=[a,b]` at the commas outside brackets, dropping the brackets (the syntax of
/// `kafka-configs.sh --add-config`).
pub fn split_config_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for ch in s.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_split_outside_brackets() {
        assert_eq!(
            split_config_list("retention.ms=1000,cleanup.policy=[compact,delete], a=b"),
            vec!["retention.ms=1000", "cleanup.policy=compact,delete", "a=b"]
        );
        assert!(split_config_list(" , ").is_empty());
    }
}

//! `odradek topic create|list|describe|delete|alter`, as `kafka-topics.sh` does them.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::protocol::api::ApiKey;
use crate::protocol::{
    CreatableTopic, CreatableTopicConfig, CreatePartitionsRequest, CreatePartitionsTopic,
    CreateTopicsRequest, DeleteTopicsRequest, ResponseBody,
};

use super::client::{EARLIEST, LATEST};
use super::configs::{self, Resource, SOURCE_DYNAMIC_TOPIC};
use super::output::{self, Cell, Table};
use super::{key_value, CliError, Common, Context, OutputFormat};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    List(ListArgs),
    /// Partitions, leaders, replicas, ISR, log start/end offsets and configs of topics.
    Describe(DescribeArgs),
    /// Delete topics.
    Delete(DeleteArgs),
    /// Add partitions or change configs of a topic.
    Alter(AlterArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub topic: String,
    /// Partitions (default: the broker's num.partitions).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor (default: the broker's default.replication.factor).
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// A topic config KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub configs: Vec<String>,
    /// Succeed if the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Include internal topics (__consumer_offsets).
    #[arg(long)]
    pub include_internal: bool,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Topics to describe (default: all but internal ones).
    pub topics: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[arg(required = true)]
    pub topics: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    pub topic: String,
    /// New total number of partitions (can only grow).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Set a topic config KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub configs: Vec<String>,
    /// Remove a topic config override, back to the broker default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete_configs: Vec<String>,
}

pub fn run(cmd: TopicCommand, common: &Common) -> Result<(), CliError> {
    let mut ctx = Context::new(common, &[])?;
    match cmd {
        TopicCommand::Create(a) => create(&mut ctx, a),
        TopicCommand::List(a) => list(&mut ctx, a),
        TopicCommand::Describe(a) => describe(&mut ctx, a),
        TopicCommand::Delete(a) => delete(&mut ctx, a),
        TopicCommand::Alter(a) => alter(&mut ctx, a),
    }
}

fn create(ctx: &mut Context, a: CreateArgs) -> Result<(), CliError> {
    let configs = a
        .configs
        .iter()
        .map(|kv| {
            key_value(kv).map(|(name, value)| CreatableTopicConfig {
                name,
                value: Some(value),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let req = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: a.topic.clone(),
            num_partitions: a.partitions.unwrap_or(-1),
            replication_factor: a.replication_factor.unwrap_or(-1),
            configs,
            ..Default::default()
        }],
        timeout_ms: ctx.cluster.config.request_timeout.as_millis() as i32,
        validate_only: false,
    };
    let ResponseBody::CreateTopics(r) = ctx.cluster.any()?.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::CreateTopics));
    };
    for t in r.topics {
        match t.error_code {
            0 => {}
            // TOPIC_ALREADY_EXISTS
            36 if a.if_not_exists => {
                eprintln!("topic {} already exists", t.name);
                return Ok(());
            }
            code => {
                return Err(CliError::kafka(
                    &format!("creating topic {}", t.name),
                    code,
                    t.error_message,
                ))
            }
        }
    }
    output::write_out(&format!("Created topic {}.\n", a.topic))
}

fn list(ctx: &mut Context, a: ListArgs) -> Result<(), CliError> {
    let m = ctx.cluster.metadata(None)?;
    let mut topics: Vec<_> = m
        .topics
        .iter()
        .filter(|t| t.error_code == 0 && (a.include_internal || !t.is_internal))
        .filter_map(|t| Some((t.name.clone()?, t.partitions.len() as i64, t.is_internal)))
        .collect();
    topics.sort();
    let mut table = Table::new(
        &["TOPIC", "PARTITIONS", "INTERNAL"],
        &["topic", "partitions", "internal"],
    );
    for (name, n, internal) in topics {
        table.push(vec![name.into(), n.into(), internal.into()]);
    }
    table.print(ctx.output)
}

fn describe(ctx: &mut Context, a: DescribeArgs) -> Result<(), CliError> {
    let names = if a.topics.is_empty() {
        let m = ctx.cluster.metadata(None)?;
        let mut n: Vec<String> = m
            .topics
            .into_iter()
            .filter(|t| !t.is_internal && t.error_code == 0)
            .filter_map(|t| t.name)
            .collect();
        n.sort();
        n
    } else {
        a.topics.clone()
    };
    let mut described = Vec::new();
    for name in &names {
        let info = ctx.cluster.topic(name)?;
        let parts: Vec<i32> = info.partitions.iter().map(|p| p.index).collect();
        let start = ctx.cluster.list_offsets(&info, &parts, EARLIEST)?;
        let end = ctx.cluster.list_offsets(&info, &parts, LATEST)?;
        let configs: Vec<(String, String)> =
            configs::describe(&mut ctx.cluster, &Resource::Topic(name.clone()), false)?
                .into_iter()
                .filter(|c| c.source == SOURCE_DYNAMIC_TOPIC)
                .map(|c| (c.name, c.value.unwrap_or_default()))
                .collect();
        described.push((info, start, end, configs));
    }
    if ctx.output == OutputFormat::Json {
        let list: Vec<Value> = described
            .iter()
            .map(|(info, start, end, configs)| {
                json!({
                    "topic": info.name,
                    "internal": info.internal,
                    "partitions": info.partitions.iter().map(|p| json!({
                        "partition": p.index,
                        "leader": p.leader,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "log_start_offset": start.get(&p.index),
                        "log_end_offset": end.get(&p.index),
                    })).collect::<Vec<_>>(),
                    "configs": configs
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        return output::print_json(&Value::Array(list));
    }
    let mut text = String::new();
    for (info, start, end, configs) in &described {
        let rf = info.partitions.first().map_or(0, |p| p.replicas.len());
        let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(
            "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}\n",
            info.name,
            info.partitions.len(),
            rf,
            configs.join(",")
        ));
        let mut table = Table::new(
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "LOG-START-OFFSET",
                "LOG-END-OFFSET",
            ],
            &[],
        );
        for p in &info.partitions {
            let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            table.push(vec![
                p.index.into(),
                p.leader.into(),
                ids(&p.replicas).into(),
                ids(&p.isr).into(),
                Cell::from(start.get(&p.index).copied()),
                Cell::from(end.get(&p.index).copied()),
            ]);
        }
        text.push_str(&table.render(false));
        text.push('\n');
    }
    output::write_out(&text)
}

fn delete(ctx: &mut Context, a: DeleteArgs) -> Result<(), CliError> {
    let req = DeleteTopicsRequest {
        topic_names: a.topics.clone(),
        timeout_ms: ctx.cluster.config.request_timeout.as_millis() as i32,
        ..Default::default()
    };
    let ResponseBody::DeleteTopics(r) = ctx.cluster.any()?.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::DeleteTopics));
    };
    let mut text = String::new();
    for t in r.responses {
        let name = t.name.unwrap_or_default();
        if t.error_code != 0 {
            return Err(CliError::kafka(
                &format!("topic {name}"),
                t.error_code,
                t.error_message,
            ));
        }
        text.push_str(&format!("Deleted topic {name}.\n"));
    }
    output::write_out(&text)
}

fn alter(ctx: &mut Context, a: AlterArgs) -> Result<(), CliError> {
    if a.partitions.is_none() && a.configs.is_empty() && a.delete_configs.is_empty() {
        return Err(CliError::Usage(
            "nothing to alter: give --partitions, --config or --delete-config".into(),
        ));
    }
    // Fail early, with the usual hint, for a topic that does not exist.
    ctx.cluster.topic(&a.topic)?;
    if let Some(count) = a.partitions {
        let req = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: a.topic.clone(),
                count,
                assignments: None,
            }],
            timeout_ms: ctx.cluster.config.request_timeout.as_millis() as i32,
            validate_only: false,
        };
        let ResponseBody::CreatePartitions(r) = ctx.cluster.any()?.call(req.into())? else {
            return Err(CliError::Unexpected(ApiKey::CreatePartitions));
        };
        for t in r.results {
            if t.error_code != 0 {
                return Err(CliError::kafka(
                    &format!("adding partitions to {}", t.name),
                    t.error_code,
                    t.error_message,
                ));
            }
        }
        output::write_out(&format!("Topic {} now has {count} partitions.\n", a.topic))?;
    }
    if !a.configs.is_empty() || !a.delete_configs.is_empty() {
        let set = a
            .configs
            .iter()
            .map(|kv| key_value(kv))
            .collect::<Result<Vec<_>, _>>()?;
        configs::alter(
            &mut ctx.cluster,
            &Resource::Topic(a.topic.clone()),
            &set,
            &a.delete_configs,
        )?;
        output::write_out(&format!("Updated the configs of topic {}.\n", a.topic))?;
    }
    Ok(())
}

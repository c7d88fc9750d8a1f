//! `odradek cluster info`: brokers, controller, cluster id and the API versions the broker
//! answering speaks.

use clap::Subcommand;
use serde_json::json;

use crate::protocol::api::ApiKey;
use crate::protocol::{DescribeClusterRequest, ResponseBody};

use super::output::{self, Table};
use super::{CliError, Common, Context, OutputFormat};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers, and the API versions of the broker answering.
    Info,
}

pub fn run(cmd: ClusterCommand, common: &Common) -> Result<(), CliError> {
    let mut ctx = Context::new(common, &[])?;
    match cmd {
        ClusterCommand::Info => info(&mut ctx),
    }
}

fn info(ctx: &mut Context) -> Result<(), CliError> {
    // Metadata works everywhere; DescribeCluster (KIP-700) is used when the broker has it.
    let m = ctx.cluster.metadata(Some(&[]))?;
    let mut cluster_id = m.cluster_id.clone().unwrap_or_default();
    let mut controller = m.controller_id;
    let mut brokers: Vec<(i32, String, i32, Option<String>)> = m
        .brokers
        .iter()
        .map(|b| (b.node_id, b.host.clone(), b.port, b.rack.clone()))
        .collect();
    let conn = ctx.cluster.any()?;
    let answering = conn.addr.clone();
    if conn.version(ApiKey::DescribeCluster).is_ok() {
        if let ResponseBody::DescribeCluster(d) =
            conn.call(DescribeClusterRequest::default().into())?
        {
            if d.error_code == 0 {
                cluster_id = d.cluster_id;
                controller = d.controller_id;
                brokers = d
                    .brokers
                    .into_iter()
                    .map(|b| (b.broker_id, b.host, b.port, b.rack))
                    .collect();
            }
        }
    }
    brokers.sort();
    let versions = conn.broker_versions();
    let api_name =
        |k: i16| ApiKey::from_i16(k).map_or_else(|| format!("Unknown({k})"), |a| format!("{a:?}"));
    if ctx.output == OutputFormat::Json {
        return output::print_json(&json!({
            "cluster_id": cluster_id,
            "controller_id": controller,
            "brokers": brokers.iter().map(|(id, host, port, rack)| json!({
                "id": id, "host": host, "port": port, "rack": rack,
            })).collect::<Vec<_>>(),
            "api_versions_of": answering,
            "api_versions": versions.iter().map(|(k, lo, hi)| json!({
                "api_key": k, "name": api_name(*k), "min_version": lo, "max_version": hi,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut text = format!("Cluster id: {cluster_id}\nController: {controller}\n\n");
    let mut t = Table::new(&["ID", "HOST", "PORT", "RACK"], &[]);
    for (id, host, port, rack) in &brokers {
        t.push(vec![
            (*id).into(),
            host.clone().into(),
            (*port).into(),
            rack.clone().into(),
        ]);
    }
    text.push_str(&t.render(false));
    text.push_str(&format!("\nAPI versions of {answering}:\n"));
    let mut t = Table::new(&["KEY", "API", "MIN", "MAX"], &[]);
    for (k, lo, hi) in versions {
        t.push(vec![k.into(), api_name(k).into(), lo.into(), hi.into()]);
    }
    text.push_str(&t.render(false));
    output::write_out(&text)
}

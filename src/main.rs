//! The `odradek` binary: `odradek serve` runs the broker; `topic`, `produce`, `consume`,
//! `group`, `config` and `cluster` are Kafka client commands (see `odradek::cli`) that work
//! against any Kafka-compatible broker; `completions` prints shell completions.

/// mimalloc instead of glibc's malloc: a heap per thread suits thread-per-core, and glibc's
/// `_int_malloc`/`_int_free`/`unlink_chunk` were ~8% of a shard's core under W5 (request
/// frames, batch lists, per-request vectors). Alternating A/B on 2026-12-05: W1's shape
/// 1.67M/1.69M against 1.51M/1.48M rec/s; W5, with freed memory kept with the process
/// (`odradek::allocator`, without which W5 did not gain), 1.19M/1.24M against 0.97M/0.95M;
/// W1 peak RSS 259 MiB against 209, an idle partition 5.2 KiB against 3.7
/// (`perf/2026-12-05-w5-cpu-bound.md`).
#[global_allocator]
static ALLOCATOR: odradek::allocator::CountingMiMalloc = odradek::allocator::CountingMiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use odradek::cli::{ClientCommand, Common};
use odradek::config::{parse_override, BrokerConfig};

#[derive(Parser)]
#[command(
    name = "odradek",
    version,
    about = "A Kafka-compatible streaming broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Check a broker configuration file (and overrides) without starting: exit 0 when valid,
    /// 2 with a message naming the key when not.
    CheckConfig {
        /// The properties file.
        file: PathBuf,
        /// Set KEY=VALUE, over the file (repeatable), as `serve --override`.
        #[arg(long = "override", short = 'o', value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    #[command(flatten)]
    Client(ClientCommand),
    /// Print a shell completion script: `odradek completions bash > /etc/bash_completion.d/odradek`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Properties file with Kafka's key names (listeners, log.dirs, num.partitions, ...).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Set KEY=VALUE, over the file (repeatable).
    #[arg(long = "override", short = 'o', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Address to listen on (the `listeners` key), e.g. 127.0.0.1:9092.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (the `log.dirs` key).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cores to run shards on: a count (`2`) or a CPU list (`0,2-3`) (the `cores` key).
    #[arg(long)]
    cores: Option<String>,
}

fn main() -> ExitCode {
    odradek::allocator::keep_freed_memory();
    odradek::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file, overrides } => check_config(&file, &overrides),
        Command::Client(c) => odradek::cli::run(c, &cli.common),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "odradek", &mut script);
            match odradek::cli::output::write_out(&String::from_utf8_lossy(&script)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("odradek: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn check_config(file: &std::path::Path, overrides: &[String]) -> ExitCode {
    let mut kvs = Vec::new();
    for text in overrides {
        match parse_override(text) {
            Ok(kv) => kvs.push(kv),
            Err(e) => {
                eprintln!("odradek: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match BrokerConfig::load(Some(file), &kvs) {
        Ok(c) => {
            println!(
                "{}: valid ({} shard(s) on cores {:?}, listening on {}, data in {})",
                file.display(),
                c.cores.cpus.len(),
                c.cores.cpus,
                c.listen,
                c.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("odradek: {}: configuration error: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut overrides = Vec::new();
    for text in &args.overrides {
        match parse_override(text) {
            Ok(kv) => overrides.push(kv),
            Err(e) => {
                eprintln!("odradek: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(listen) = args.listen {
        overrides.push(("listeners".into(), listen));
    }
    if let Some(dir) = args.data_dir {
        overrides.push(("log.dirs".into(), dir.display().to_string()));
    }
    if let Some(cores) = args.cores {
        overrides.push(("cores".into(), cores));
    }
    let config = match BrokerConfig::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("odradek: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    log::info!(
        "starting odradek {} on {} core(s) {:?}",
        env!("CARGO_PKG_VERSION"),
        config.cores.cpus.len(),
        config.cores.cpus
    );
    raise_open_file_limit();
    if !odradek::memory::keep_large_blocks() {
        log::warn!("cannot set the allocator's thresholds: large blocks are mapped per allocation");
    }
    match odradek::shard::run_broker(config) {
        Ok(()) => {
            log::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("odradek: {e}");
            ExitCode::from(1)
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, and logs the figure. Every
/// client connection holds a descriptor (and every segment file of every partition), and the
/// usual soft default of 1024 would refuse connections long before anything else runs out;
/// the hard limit is what the administrator (or systemd's LimitNOFILE) allows.
fn raise_open_file_limit() {
    let show = |n: libc::rlim_t| {
        if n == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        log::warn!(
            "cannot read the open file limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            log::warn!(
                "cannot raise the open file limit from {} to {}: {}",
                show(before),
                show(limit.rlim_max),
                std::io::Error::last_os_error()
            );
        }
    }
    log::info!(
        "open file limit {} (soft limit was {}, hard limit {}): each connection takes one",
        show(limit.rlim_cur),
        show(before),
        show(limit.rlim_max)
    );
}

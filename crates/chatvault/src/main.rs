//! The `chatvault` binary: parses the command line and configuration, then wires the
//! library crates together. No business logic lives here.

mod commands;
mod config;
mod report;
mod runtime;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "chatvault",
    version,
    about = "Archive completed live-chat documents durably and serve them to BI tools",
    long_about = "Chatvault ingests the chat server's completed-chat documents (webhook, watched folder, bulk import), \
validates them, keeps every version in an append-only Avro archive, and indexes them in a catalog (SQLite or PostgreSQL).\n\n\
Configuration comes from defaults, then --config FILE (TOML), then CHATVAULT_* environment variables, then flags."
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "CHATVAULT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (archive, catalog, store); overrides the file and CHATVAULT_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: webhook, folder watcher, health and metrics endpoints.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8480 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Load chat documents from files and folders (.json, .ndjson, .jsonl, optionally .gz).
    Import {
        #[arg(required_unless_present = "from_cosmos", value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Backfill from the configured Cosmos DB container instead (CHATVAULT_COSMOS_*).
        #[arg(long)]
        from_cosmos: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Generate realistic synthetic chat documents (deterministic for a seed).
    Gen {
        #[arg(long, value_name = "N")]
        chats: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A folder (one .json file per chat), a .ndjson/.jsonl file (.gz to compress),
        /// or omitted for NDJSON on stdout.
        #[arg(long, value_name = "DIR|FILE")]
        out: Option<PathBuf>,
        /// First day of the generated period.
        #[arg(long, default_value = "2024-01-01")]
        start: chrono::NaiveDate,
        /// Length of the generated period in days.
        #[arg(long, default_value_t = 366)]
        days: u32,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check the archive's hash chain, and that the catalog and the columnar store agree with it.
    Verify {
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Merge small Parquet files and drop superseded and deleted rows now.
    Compact,
    /// Recreate the whole columnar store from the archive.
    Rebuild,
    /// Show the effective configuration (secrets masked) and where each setting can come from.
    Config,
    /// List and run reports (the built-in library and custom reports).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ReportCommand {
    /// List the report definitions.
    List,
    /// Run a report for one site and period; the result goes to stdout.
    Run {
        /// The report's id (see `report list`).
        id: String,
        /// SiteKey to report on.
        #[arg(long)]
        site: i32,
        /// First day, YYYY-MM-DD (inclusive); defaults to the report's date selector.
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        #[arg(long, value_enum, default_value = "json")]
        format: report::Format,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key; the secret is printed once, alone on the last line of stdout.
    Create {
        #[arg(long)]
        name: String,
        /// read, ingest or admin (admin includes the others); repeat or comma-separate.
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<chatvault_catalog::Scope>,
        /// Limit the key to these SiteKeys (comma-separated); all sites when omitted.
        #[arg(long, value_delimiter = ',')]
        sites: Option<Vec<i64>>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id (as shown by `keys list`).
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(mut config) => {
            if let Some(dir) = &cli.data_dir {
                config.data_dir = dir.clone();
            }
            config
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    commands::init_logging(&config);
    // The Cosmos DB client reads extra trusted CAs only from this variable, and it must be
    // set before any thread starts.
    if let Some(ca) = &config.cosmos.ca_file {
        std::env::set_var(chatvault_ingest::CA_FILE_ENV, ca);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { listen } => commands::serve(config, listen).await,
            Command::Import {
                paths,
                json,
                from_cosmos: false,
            } => commands::import(config, paths, json).await,
            Command::Import {
                json,
                from_cosmos: true,
                ..
            } => commands::import_cosmos(config, json).await,
            Command::Gen {
                chats,
                seed,
                out,
                start,
                days,
            } => commands::gen(chats, seed, out, start, days),
            Command::Keys { command } => match command {
                KeysCommand::Create { name, scope, sites } => {
                    commands::keys_create(config, name, scope, sites).await
                }
                KeysCommand::List => commands::keys_list(config).await,
                KeysCommand::Revoke { id } => commands::keys_revoke(config, id).await,
            },
            Command::Verify { json } => commands::verify(config, json).await,
            Command::Config => commands::show_config(config),
            Command::Compact => commands::compact(config).await,
            Command::Rebuild => commands::rebuild(config).await,
            Command::Report { command } => match command {
                ReportCommand::List => report::list(config).await,
                ReportCommand::Run {
                    id,
                    site,
                    from,
                    to,
                    format,
                } => report::run(config, id, site, from, to, format).await,
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

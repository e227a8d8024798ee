//! The `chatvault` binary: parses the command line and configuration, then wires the
//! library crates together. No business logic lives here.

mod backup;
mod commands;
mod compliance;
mod config;
mod reference;
mod report;
mod runtime;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

// glibc's allocator spent a quarter of an import's CPU in malloc/free and kept gigabytes
// of freed fragments per thread; polars and the JSON model allocate heavily on every core.
// Without transparent huge pages: the kernel zeroing 2 MiB pages for short-lived buffers
// was a third of a CSV export's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    ///
    /// Speaks HTTPS when CHATVAULT_TLS_CERT and CHATVAULT_TLS_KEY name a PEM certificate
    /// and key; without them it listens on loopback addresses only, unless told
    /// --allow-plain-http.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8480 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Serve plain HTTP on a non-loopback address, for a deployment behind a proxy
        /// that terminates TLS (CHATVAULT_ALLOW_PLAIN_HTTP=true). Without TLS and without
        /// this, serve listens on loopback addresses only.
        #[arg(long)]
        allow_plain_http: bool,
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
    /// A first look: generates realistic chats of the last days into a fresh data
    /// directory, imports them, then serves them (the console, the OData feed, the API
    /// docs) and prints where, with an admin key.
    Demo {
        /// How many chats to generate.
        #[arg(long, value_name = "N", default_value_t = 20_000)]
        chats: u64,
        /// Over how many days up to today.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Address to listen on, e.g. 127.0.0.1:8480 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
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
    /// Export an entity set as CSV or Parquet, filtered and ordered in the OData feed's
    /// language (for example --filter "SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z").
    Export {
        /// Chats, ChatLines, SurveyAnswers, PageViews or ChatTags.
        entity_set: String,
        /// An OData $filter expression.
        #[arg(long, value_name = "ODATA_FILTER")]
        filter: Option<String>,
        /// Comma-separated properties (default: all).
        #[arg(long, value_name = "PROPERTIES")]
        select: Option<String>,
        /// An OData $orderby, e.g. "Started desc" (default: site, month, key).
        #[arg(long, value_name = "ORDER")]
        orderby: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormatArg::Csv)]
        format: ExportFormatArg,
        /// Start the CSV with a UTF-8 byte-order mark, which Excel needs to read UTF-8.
        #[arg(long)]
        bom: bool,
        /// Output file (a .gz name compresses it); '-' writes to stdout.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Copy the data directory into a new folder, consistently even while `serve` runs:
    /// the catalog, the columnar store's files, the archive, the signing key and digests,
    /// with a manifest of every file's size and SHA-256.
    Backup {
        /// A new or empty folder (on another disk, ideally).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into the data directory, which must be new or empty: every file is
    /// checked against the backup's manifest, then the archive's records past the catalog
    /// are replayed.
    Restore {
        /// The backup's folder, as `chatvault backup` wrote it.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Merge small Parquet files and drop superseded and deleted rows now.
    Compact,
    /// Recreate the whole columnar store from the archive.
    Rebuild,
    /// Show the effective configuration (secrets masked) and where each setting can come from.
    Config,
    /// The hash-chained audit log of administrative actions.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Legal holds: held chats are exempt from retention and erasure until released.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Erase every chat of a person from the archive, catalog and store (right to be
    /// forgotten); chats under legal hold are kept. A receipt goes to the audit log.
    Erase {
        #[command(flatten)]
        person: PersonArgs,
        /// Show what would be erased and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export one chat, or every chat of a person, for legal review: a JSON bundle of every
    /// archived version and a readable HTML transcript.
    LegalExport {
        #[command(flatten)]
        person: PersonArgs,
        /// Folder to write bundle.json and transcript.html into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Retention policies ([retention] in the configuration).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Signed digests of the archive and audit log (serve also writes one daily).
    Digest {
        #[command(subcommand)]
        command: DigestCommand,
    },
    /// Check a signed digest against the data: nothing it covers may have changed.
    VerifyDigest {
        /// The digest file (from `digest export` or DATA_DIR/digests/).
        file: PathBuf,
        /// The Ed25519 public key (hex) you trust; defaults to the one the digest names.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write the manual's reference pages (configuration, command line) as Markdown.
    Reference {
        /// The folder to write config.md and cli.md into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Write a man page for chatvault and each of its commands.
    ManPages {
        /// The folder to write the pages (chatvault.1, chatvault-serve.1, …) into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// List and run reports (the built-in library and custom reports).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Subcommand, Debug)]
enum HoldCommand {
    /// Place a hold on one chat, a site's chats (optionally by Started date), or a
    /// visitor's chats by email; prints the hold id on the last line.
    Place {
        #[arg(long, group = "what", value_name = "CHATUID")]
        chat: Option<String>,
        #[arg(long, group = "what", value_name = "SITEKEY")]
        site: Option<i64>,
        /// First Started date covered (with --site).
        #[arg(long, requires = "site")]
        from: Option<chrono::NaiveDate>,
        /// Last Started date covered (with --site).
        #[arg(long, requires = "site")]
        to: Option<chrono::NaiveDate>,
        #[arg(long, group = "what", value_name = "ADDR")]
        email: Option<String>,
        /// Why (a case or matter reference).
        #[arg(long)]
        reason: String,
    },
    /// Release a hold by id.
    Release { id: String },
    /// List active holds (all with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RetentionCommand {
    /// Delete chats older than their site's retention period from the archive, catalog
    /// and store; chats under legal hold are kept.
    Apply {
        /// Show what would be deleted and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DigestCommand {
    /// Sign a digest now; prints its path (DATA_DIR/digests/ unless --out).
    Export {
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check every entry's hash and link; names the first entry that was altered or removed.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Print entries, oldest first.
    List {
        /// Only entries after this seq.
        #[arg(long)]
        after: Option<u64>,
        /// Only this action (`key` matches `key.create` and `key.revoke`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormatArg {
    Csv,
    Parquet,
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

/// What `hold place` names: exactly one of a chat, a site (with dates), an email.
fn hold_scope(
    chat: Option<String>,
    site: Option<i64>,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
    email: Option<String>,
) -> Option<chatvault_catalog::HoldScope> {
    use chatvault_catalog::HoldScope;
    match (chat, site, email) {
        (Some(chat_uid), None, None) => Some(HoldScope::Chat { chat_uid }),
        (None, Some(site_key), None) => Some(HoldScope::Site {
            site_key,
            from_date: from.map(|d| d.to_string()),
            to_date: to.map(|d| d.to_string()),
        }),
        (None, None, Some(email)) => Some(HoldScope::Email { email }),
        _ => None,
    }
}

/// Whose chats `erase` and `legal-export` mean: exactly one of these.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct PersonArgs {
    #[arg(long, value_name = "CHATUID")]
    chat: Option<String>,
    /// Matched case-insensitively in the header, the visit's contact email and surveys.
    #[arg(long, value_name = "ADDR")]
    email: Option<String>,
    /// Matched in the header, the visit and GeoIP.
    #[arg(long, value_name = "ADDR")]
    ip: Option<String>,
}

impl From<PersonArgs> for chatvault_compliance::Person {
    fn from(args: PersonArgs) -> Self {
        use chatvault_compliance::Person;
        match (args.chat, args.email, args.ip) {
            (Some(uid), _, _) => Person::Chat(uid),
            (None, Some(email), _) => Person::Email(email),
            // clap's group guarantees one of the three; an empty IP matches nothing.
            (None, None, ip) => Person::Ip(ip.unwrap_or_default()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Pages generated from the code alone, whatever the configuration says.
    let generated = match &cli.command {
        Command::Reference { out } => Some(reference::write_reference(&Cli::command(), out)),
        Command::ManPages { out } => Some(reference::write_man_pages(Cli::command(), out)),
        Command::Completions { shell } => {
            reference::write_completions(Cli::command(), *shell, &mut std::io::stdout());
            Some(Ok(()))
        }
        _ => None,
    };
    if let Some(result) = generated {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime_workers(cores))
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
            Command::Serve {
                listen,
                allow_plain_http,
            } => commands::serve(config, listen, allow_plain_http).await,
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
            Command::Demo {
                chats,
                days,
                listen,
            } => commands::demo(config, chats, days, listen).await,
            Command::Keys { command } => match command {
                KeysCommand::Create { name, scope, sites } => {
                    commands::keys_create(config, name, scope, sites).await
                }
                KeysCommand::List => commands::keys_list(config).await,
                KeysCommand::Revoke { id } => commands::keys_revoke(config, id).await,
            },
            Command::Verify { json } => commands::verify(config, json).await,
            Command::Config => commands::show_config(config),
            Command::Export {
                entity_set,
                filter,
                select,
                orderby,
                format,
                bom,
                out,
            } => {
                let format = match format {
                    ExportFormatArg::Csv => chatvault_odata::export::ExportFormat::Csv { bom },
                    ExportFormatArg::Parquet => chatvault_odata::export::ExportFormat::Parquet,
                };
                let query = commands::ExportQuery {
                    filter,
                    select,
                    orderby,
                };
                commands::export(config, entity_set, query, format, out).await
            }
            Command::Backup { out, json } => backup::backup(config, out, json).await,
            Command::Restore { from, json } => backup::restore(config, from, json).await,
            Command::Compact => commands::compact(config).await,
            Command::Rebuild => commands::rebuild(config).await,
            Command::Audit { command } => match command {
                AuditCommand::Verify { json } => compliance::audit_verify(config, json).await,
                AuditCommand::List {
                    after,
                    action,
                    limit,
                } => compliance::audit_list(config, after, action, limit).await,
            },
            Command::Hold { command } => match command {
                HoldCommand::Place {
                    chat,
                    site,
                    from,
                    to,
                    email,
                    reason,
                } => match hold_scope(chat, site, from, to, email) {
                    Some(scope) => compliance::hold_place(config, scope, reason).await,
                    None => Err(anyhow::anyhow!(
                        "name what to hold: --chat, --site or --email"
                    )),
                },
                HoldCommand::Release { id } => compliance::hold_release(config, id).await,
                HoldCommand::List { all, json } => compliance::hold_list(config, all, json).await,
            },
            Command::Erase {
                person,
                dry_run,
                json,
            } => compliance::erase(config, person.into(), dry_run, json).await,
            Command::LegalExport { person, out } => {
                compliance::legal_export(config, person.into(), out).await
            }
            Command::Retention {
                command: RetentionCommand::Apply { dry_run, json },
            } => compliance::retention_apply(config, dry_run, json).await,
            Command::Digest {
                command: DigestCommand::Export { out },
            } => compliance::digest_export(config, out).await,
            Command::VerifyDigest {
                file,
                public_key,
                json,
            } => compliance::verify_digest(config, file, public_key, json).await,
            Command::Reference { .. } | Command::ManPages { .. } | Command::Completions { .. } => {
                unreachable!("generated before the configuration is read")
            }
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

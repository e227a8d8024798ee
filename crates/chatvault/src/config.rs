//! One configuration: defaults, then the TOML file, then environment variables, then
//! command-line flags, each overriding the one before.

use anyhow::{bail, Context};
use chatvault_compliance::RetentionAction;
use chatvault_model::{Anonymisation, PersonalField};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Archive, catalog (SQLite) and store live here.
    pub data_dir: PathBuf,
    /// The address `serve` listens on (`serve --listen`); port 0 picks a free one.
    pub listen: String,
    /// `sqlite://PATH` or `postgres://…`; defaults to `sqlite://DATA_DIR/catalog.db`.
    pub catalog_url: Option<String>,
    /// IANA zone of the chat server's wall-clock timestamps.
    pub site_timezone: String,
    /// Rows per OData page.
    pub page_size: u32,
    /// Threads of the async runtime (HTTP, sources, the pipeline). Unset: one fewer than
    /// the cores, at least one. The heavy work has threads of its own (SQLite's
    /// connections, the archive writer, polars, bulk validation), and a runtime thread
    /// for every core only competes with them and parks and wakes more often.
    pub runtime_workers: Option<usize>,
    /// Logs on stderr (`[log]`).
    pub log: LogConfig,
    pub server: ServerSection,
    pub auth: AuthSection,
    pub ingest: IngestConfig,
    pub archive: ArchiveSection,
    pub store: StoreSection,
    pub folder: FolderSection,
    pub cosmos: CosmosSection,
    pub retention: RetentionSection,
    pub reports: ReportsSection,
    pub console: ConsoleSection,
}

/// How `serve` meets the network: TLS, and who may read the metrics.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// PEM certificate chain; with `tls_key`, `serve` speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// PEM CA: the webhook then takes documents only from clients with a certificate it
    /// issued (mutual TLS). Other routes do not ask for one.
    pub tls_client_ca: Option<PathBuf>,
    /// How often the certificate files are checked for a renewal.
    pub tls_reload_secs: u64,
    /// Serve plain HTTP on a non-loopback address (behind a proxy that terminates TLS).
    pub allow_plain_http: bool,
    /// `Strict-Transport-Security: max-age=…` on HTTPS responses; 0 leaves it out.
    pub hsts_max_age_secs: u64,
    /// Response compression: `fastest` (default), `default`, `best`, or a number on each
    /// algorithm's own scale.
    pub compression: String,
    /// `/metrics` for anyone (`open`, the default) or only for an admin key, an admin
    /// token, or `metrics_token` (`admin`). Setting `metrics_token` implies `admin`.
    pub metrics_auth: MetricsAuth,
    /// A token that may read `/metrics` and nothing else (`Authorization: Bearer …`).
    pub metrics_token: Option<String>,
    /// Addresses of proxies in front of `serve`: for requests from them, the client is
    /// the address they add to `X-Forwarded-For`.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAuth {
    #[default]
    Open,
    Admin,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_secs: 10,
            allow_plain_http: false,
            hsts_max_age_secs: 365 * 24 * 3600,
            compression: "fastest".into(),
            metrics_auth: MetricsAuth::Open,
            metrics_token: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// How callers prove who they are, besides API keys in headers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// The query parameter the feed and exports take a key from (Power BI's "Web API"
    /// credential); empty turns it off.
    pub api_key_param: String,
    /// SiteKeys published read-only: requests without any credential may read them.
    pub anonymous_sites: Vec<i64>,
    /// Failed authentications an address may make in a burst…
    pub failures_burst: u32,
    /// …and how many a minute it earns back; past the burst it is refused (429).
    pub failures_per_minute: u32,
    /// Single sign-on (`[auth.oidc]`): enabled when `issuer` is set.
    pub oidc: chatvault_oidc::OidcConfig,
}

impl Default for AuthSection {
    fn default() -> Self {
        let throttle = chatvault_server::ThrottleConfig::default();
        AuthSection {
            api_key_param: "api_key".into(),
            anonymous_sites: Vec::new(),
            failures_burst: throttle.burst,
            failures_per_minute: throttle.per_minute,
            oidc: chatvault_oidc::OidcConfig::default(),
        }
    }
}

/// How long chats are kept after Started, per SiteKey and by default; none when unset;
/// and whether `chatvault retention apply` (and `serve`, on a schedule) then deletes them
/// from all three stores or anonymises them (masks their personal fields, keeping the chat
/// for reports).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// `serve` applies the policy shortly after it starts and then this often; 0 leaves
    /// it to `chatvault retention apply`.
    pub run_every_secs: u64,
    /// Days a chat is kept after it Started, for sites without their own entry in
    /// `sites`; unset: kept for ever.
    pub default_days: Option<u32>,
    /// SiteKey (as a TOML key) → days, overriding `default_days`.
    pub sites: BTreeMap<String, u32>,
    /// What happens to an expired chat by default.
    pub action: RetentionActionKind,
    /// The fields `anonymise` masks by default; every personal field when unset.
    pub anonymise_fields: Option<BTreeSet<PersonalField>>,
    /// SiteKey (as a TOML key) → its own action and fields, each falling back to the
    /// default above when unset.
    pub site_actions: BTreeMap<String, SiteRetentionAction>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetentionActionKind {
    #[default]
    Delete,
    #[serde(alias = "anonymize")]
    Anonymise,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SiteRetentionAction {
    /// `delete` or `anonymise`; unset: the default `action`.
    pub action: Option<RetentionActionKind>,
    /// The fields masked; unset: the default `anonymise_fields`.
    pub anonymise_fields: Option<BTreeSet<PersonalField>>,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            run_every_secs: 24 * 3600,
            default_days: None,
            sites: BTreeMap::new(),
            action: RetentionActionKind::default(),
            anonymise_fields: None,
            site_actions: BTreeMap::new(),
        }
    }
}

impl RetentionSection {
    /// True when some site's chats expire.
    pub fn has_policy(&self) -> bool {
        self.default_days.is_some() || !self.sites.is_empty()
    }

    /// The policy in words, for the console (None without a policy).
    pub fn describe(&self) -> Option<String> {
        if !self.has_policy() {
            return None;
        }
        let action = |a: RetentionActionKind| match a {
            RetentionActionKind::Delete => "deleted",
            RetentionActionKind::Anonymise => "anonymised",
        };
        let action_of = |site: &str| {
            action(
                self.site_actions
                    .get(site)
                    .and_then(|s| s.action)
                    .unwrap_or(self.action),
            )
        };
        let mut parts = Vec::new();
        if let Some(days) = self.default_days {
            parts.push(format!(
                "chats are {} after {days} days",
                action(self.action)
            ));
        }
        for (site, days) in &self.sites {
            parts.push(format!(
                "site {site}: {} after {days} days",
                action_of(site)
            ));
        }
        Some(parts.join("; "))
    }

    /// Days `site_key`'s chats are kept, if a policy applies to it.
    pub fn days(&self, site_key: i64) -> Option<u32> {
        self.sites
            .get(&site_key.to_string())
            .copied()
            .or(self.default_days)
    }

    /// What happens to `site_key`'s chats once their period ends.
    pub fn action(&self, site_key: i64) -> RetentionAction {
        let site = self.site_actions.get(&site_key.to_string());
        match site.and_then(|s| s.action).unwrap_or(self.action) {
            RetentionActionKind::Delete => RetentionAction::Delete,
            RetentionActionKind::Anonymise => {
                let fields = site
                    .and_then(|s| s.anonymise_fields.clone())
                    .or_else(|| self.anonymise_fields.clone());
                RetentionAction::Anonymise(
                    fields.map_or_else(Anonymisation::default, |fields| Anonymisation { fields }),
                )
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsSection {
    /// A report running longer is abandoned with an error (it may finish in the background).
    pub time_limit_secs: u64,
}

impl Default for ReportsSection {
    fn default() -> Self {
        ReportsSection {
            time_limit_secs: 60,
        }
    }
}

/// The console's sign-in sessions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSection {
    /// A session ends after this many minutes without a request.
    pub session_idle_mins: u64,
    /// And after this many hours in any case.
    pub session_hours: u64,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            session_idle_mins: 30,
            session_hours: 12,
        }
    }
}

/// The Azure Cosmos DB source; enabled when `endpoint` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CosmosSection {
    /// The account endpoint, e.g. `https://account.documents.azure.com:443/`; setting it
    /// enables the source.
    pub endpoint: Option<String>,
    /// The account key; prefer `key_file` or the environment so it is not in the file.
    pub key: Option<String>,
    /// A file holding the account key (a mounted secret, say).
    pub key_file: Option<PathBuf>,
    /// The database holding the container the chat server writes to.
    pub database: String,
    /// The container the chat server writes completed chats to.
    pub container: String,
    /// Emulators only: accept a self-signed certificate (refused for non-local hosts).
    pub accept_invalid_certs: bool,
    /// Trust this CA (PEM) in addition to nothing else: for private CAs.
    pub ca_file: Option<PathBuf>,
    /// Seconds between polls once the source has caught up (default 1).
    pub poll_secs: Option<u64>,
    /// Seconds before the checkpoint that every poll reads again, for writes that became
    /// visible late (default 60); re-read documents are recognised and stored once.
    pub overlap_secs: Option<u64>,
    /// Delete from the archive the chats whose documents were deleted from the container
    /// (off: the archive outlives the chat server's retention).
    pub mirror_deletes: bool,
    /// Seconds between reconciles of the container with the archive (mirror_deletes).
    pub reconcile_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `chatvault_ingest=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// A webhook request body above this is refused (413), also after decompression.
    pub max_body_bytes: usize,
    /// A single document above this is rejected.
    pub max_document_bytes: usize,
    /// Bytes of documents accepted but not yet durable; past it the webhook answers 503
    /// with `Retry-After`.
    pub max_inflight_bytes: usize,
    /// Documents written to the archive together, under one fsync (group commit).
    pub max_batch_documents: usize,
    /// Webhook requests served at once; past it the webhook answers 429 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Shared secret for the webhook's HMAC-SHA256 signature header.
    pub webhook_secret: Option<String>,
    /// What is never stored, by default (`[ingest.redact]`)…
    pub redact: chatvault_model::Redaction,
    /// …and per SiteKey (`[ingest.redact_sites."3"]`), replacing the default.
    pub redact_sites: std::collections::BTreeMap<String, chatvault_model::Redaction>,
}

impl IngestConfig {
    pub fn redaction_policy(&self) -> anyhow::Result<chatvault_model::RedactionPolicy> {
        let sites = self
            .redact_sites
            .iter()
            .map(|(site, r)| {
                site.parse::<i64>()
                    .map(|s| (s, *r))
                    .with_context(|| format!("[ingest.redact_sites] key {site:?} is not a SiteKey"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(chatvault_model::RedactionPolicy {
            default: self.redact,
            sites,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveSection {
    /// An archive segment is closed, and the next one begun, past this size.
    pub segment_max_bytes: u64,
}

/// When the columnar store writes its buffer to Parquet.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Flush once this many chats are buffered…
    pub flush_chats: usize,
    /// …or the oldest buffered change is this many seconds old.
    pub flush_age_secs: u64,
    /// Flush size of a replay (recovery, `rebuild`): larger means fewer, bigger files
    /// and a faster rebuild, and more memory (two flushes' worth are held).
    pub replay_flush_chats: usize,
    /// A rebuild keeps the rows waiting to fill a row group in memory up to this many
    /// MiB; past it, the largest waiting ones are written as a smaller row group.
    pub rebuild_hold_mib: usize,
    /// zstd level (1–22) of the files a compaction or a rebuild writes: higher is a
    /// smaller store and a slower rebuild.
    pub zstd_level: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FolderSection {
    /// Enables the folder source when set.
    pub path: Option<PathBuf>,
    /// A file is taken once its size and modification time have not changed for this
    /// many milliseconds (a file renamed into place is taken at once).
    pub settle_ms: u64,
    /// Seconds between full rescans of the folder, which catch anything the operating
    /// system's notifications missed.
    pub rescan_secs: u64,
    /// Files committed together under one fsync.
    pub batch_files: usize,
    /// A file above this (or, compressed, expanding past it) is refused whole: moved to
    /// `rejected/` beside a file giving the reason.
    pub max_file_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./chatvault-data"),
            listen: "127.0.0.1:8480".into(),
            catalog_url: None,
            site_timezone: "UTC".into(),
            page_size: 5000,
            runtime_workers: None,
            log: LogConfig::default(),
            server: ServerSection::default(),
            auth: AuthSection::default(),
            ingest: IngestConfig::default(),
            archive: ArchiveSection::default(),
            store: StoreSection::default(),
            folder: FolderSection::default(),
            cosmos: CosmosSection::default(),
            retention: RetentionSection::default(),
            console: ConsoleSection::default(),
            reports: ReportsSection::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 32 * 1024 * 1024,
            max_document_bytes: chatvault_model::MAX_DOCUMENT_BYTES,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_batch_documents: 2048,
            max_concurrent_requests: 256,
            webhook_secret: None,
            redact: chatvault_model::Redaction::default(),
            redact_sites: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for ArchiveSection {
    fn default() -> Self {
        ArchiveSection {
            segment_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        let store = chatvault_store::StoreConfig::new(PathBuf::new());
        StoreSection {
            flush_chats: store.flush_chats,
            flush_age_secs: store.flush_age.as_secs(),
            replay_flush_chats: store.replay_flush_chats,
            rebuild_hold_mib: store.rebuild_hold_bytes >> 20,
            zstd_level: store.zstd_level,
        }
    }
}

impl Default for FolderSection {
    fn default() -> Self {
        FolderSection {
            path: None,
            settle_ms: 500,
            rescan_secs: 10,
            batch_files: 256,
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Environment variables and the setting each overrides. These names are a contract with
/// deployment scripts: add, never rename.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("CHATVAULT_DATA_DIR", "data_dir"),
    ("CHATVAULT_LISTEN", "listen"),
    ("CHATVAULT_CATALOG_URL", "catalog_url"),
    ("CHATVAULT_SITE_TIMEZONE", "site_timezone"),
    ("CHATVAULT_PAGE_SIZE", "page_size"),
    ("CHATVAULT_RUNTIME_WORKERS", "runtime_workers"),
    ("CHATVAULT_LOG", "log.level"),
    ("CHATVAULT_LOG_FORMAT", "log.format"),
    ("CHATVAULT_TLS_CERT", "server.tls_cert"),
    ("CHATVAULT_TLS_KEY", "server.tls_key"),
    ("CHATVAULT_TLS_CLIENT_CA", "server.tls_client_ca"),
    ("CHATVAULT_TLS_RELOAD_SECS", "server.tls_reload_secs"),
    ("CHATVAULT_ALLOW_PLAIN_HTTP", "server.allow_plain_http"),
    ("CHATVAULT_COMPRESSION", "server.compression"),
    ("CHATVAULT_METRICS_AUTH", "server.metrics_auth"),
    ("CHATVAULT_METRICS_TOKEN", "server.metrics_token"),
    ("CHATVAULT_TRUSTED_PROXIES", "server.trusted_proxies"),
    ("CHATVAULT_API_KEY_PARAM", "auth.api_key_param"),
    ("CHATVAULT_ANONYMOUS_SITES", "auth.anonymous_sites"),
    ("CHATVAULT_OIDC_ISSUER", "auth.oidc.issuer"),
    ("CHATVAULT_OIDC_AUDIENCE", "auth.oidc.audience"),
    ("CHATVAULT_MAX_BODY_BYTES", "ingest.max_body_bytes"),
    ("CHATVAULT_WEBHOOK_SECRET", "ingest.webhook_secret"),
    ("CHATVAULT_FOLDER_PATH", "folder.path"),
    (
        "CHATVAULT_STORE_REPLAY_FLUSH_CHATS",
        "store.replay_flush_chats",
    ),
    ("CHATVAULT_STORE_REBUILD_HOLD_MIB", "store.rebuild_hold_mib"),
    ("CHATVAULT_STORE_ZSTD_LEVEL", "store.zstd_level"),
    ("CHATVAULT_COSMOS_ENDPOINT", "cosmos.endpoint"),
    ("CHATVAULT_COSMOS_KEY", "cosmos.key"),
    ("CHATVAULT_COSMOS_KEY_FILE", "cosmos.key_file"),
    ("CHATVAULT_COSMOS_DATABASE", "cosmos.database"),
    ("CHATVAULT_COSMOS_CONTAINER", "cosmos.container"),
    (
        "CHATVAULT_COSMOS_ACCEPT_INVALID_CERTS",
        "cosmos.accept_invalid_certs",
    ),
    ("CHATVAULT_COSMOS_CA_FILE", "cosmos.ca_file"),
    ("CHATVAULT_COSMOS_MIRROR_DELETES", "cosmos.mirror_deletes"),
    ("CHATVAULT_COSMOS_RECONCILE_SECS", "cosmos.reconcile_secs"),
    ("CHATVAULT_COSMOS_POLL_SECS", "cosmos.poll_secs"),
    (
        "CHATVAULT_REPORT_TIME_LIMIT_SECS",
        "reports.time_limit_secs",
    ),
    (
        "CHATVAULT_RETENTION_RUN_EVERY_SECS",
        "retention.run_every_secs",
    ),
    (
        "CHATVAULT_CONSOLE_SESSION_IDLE_MINS",
        "console.session_idle_mins",
    ),
    ("CHATVAULT_CONSOLE_SESSION_HOURS", "console.session_hours"),
];

/// Settings a flag overrides, and the flag (after the command it belongs to, if any).
pub const FLAGS: &[(&str, &str)] = &[
    ("data_dir", "--data-dir"),
    ("listen", "serve --listen"),
    ("server.allow_plain_http", "serve --allow-plain-http"),
];

impl Config {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {} is invalid", path.display()))?
            }
            None => Config::default(),
        };
        for (var, key) in ENV_VARS {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                config
                    .set(key, &value)
                    .with_context(|| format!("environment variable {var}={value:?}"))?;
            }
        }
        Ok(config)
    }

    /// Sets one setting by its dotted name from text (environment and flags).
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        fn num<T: std::str::FromStr>(value: &str) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            value
                .trim()
                .parse::<T>()
                .map_err(|e| anyhow::anyhow!("{value:?} is not a valid number: {e}"))
        }
        fn flag(value: &str) -> anyhow::Result<bool> {
            match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                other => bail!("{other:?} is not true or false"),
            }
        }
        /// A comma-separated list, blanks dropped.
        fn list<T>(
            value: &str,
            item: impl Fn(&str) -> anyhow::Result<T>,
        ) -> anyhow::Result<Vec<T>> {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(item)
                .collect()
        }
        match key {
            "data_dir" => self.data_dir = PathBuf::from(value),
            "listen" => self.listen = value.to_owned(),
            "catalog_url" => self.catalog_url = Some(value.to_owned()),
            "site_timezone" => self.site_timezone = value.to_owned(),
            "page_size" => self.page_size = num(value)?,
            "runtime_workers" => self.runtime_workers = Some(num(value)?),
            "log.level" => self.log.level = value.to_owned(),
            "log.format" => {
                if value != "text" && value != "json" {
                    bail!("log format must be text or json");
                }
                self.log.format = value.to_owned();
            }
            "server.tls_cert" => self.server.tls_cert = Some(PathBuf::from(value)),
            "server.tls_key" => self.server.tls_key = Some(PathBuf::from(value)),
            "server.tls_client_ca" => self.server.tls_client_ca = Some(PathBuf::from(value)),
            "server.tls_reload_secs" => self.server.tls_reload_secs = num(value)?,
            "server.allow_plain_http" => self.server.allow_plain_http = flag(value)?,
            "server.compression" => self.server.compression = value.to_owned(),
            "server.metrics_auth" => {
                self.server.metrics_auth = match value.trim() {
                    "open" => MetricsAuth::Open,
                    "admin" => MetricsAuth::Admin,
                    other => bail!("{other:?} is not open or admin"),
                }
            }
            "server.metrics_token" => self.server.metrics_token = Some(value.to_owned()),
            "server.trusted_proxies" => {
                self.server.trusted_proxies = list(value, |a| {
                    a.parse()
                        .map_err(|_| anyhow::anyhow!("{a:?} is not an IP address"))
                })?
            }
            "auth.api_key_param" => self.auth.api_key_param = value.trim().to_owned(),
            "auth.anonymous_sites" => self.auth.anonymous_sites = list(value, num)?,
            "auth.oidc.issuer" => self.auth.oidc.issuer = value.trim().to_owned(),
            "auth.oidc.audience" => self.auth.oidc.audience = list(value, |a| Ok(a.to_owned()))?,
            "ingest.max_body_bytes" => self.ingest.max_body_bytes = num(value)?,
            "ingest.webhook_secret" => self.ingest.webhook_secret = Some(value.to_owned()),
            "folder.path" => self.folder.path = Some(PathBuf::from(value)),
            "store.replay_flush_chats" => self.store.replay_flush_chats = num(value)?,
            "store.rebuild_hold_mib" => self.store.rebuild_hold_mib = num(value)?,
            "store.zstd_level" => self.store.zstd_level = num(value)?,
            "cosmos.endpoint" => self.cosmos.endpoint = Some(value.to_owned()),
            "cosmos.key" => self.cosmos.key = Some(value.to_owned()),
            "cosmos.key_file" => self.cosmos.key_file = Some(PathBuf::from(value)),
            "cosmos.database" => self.cosmos.database = value.to_owned(),
            "cosmos.container" => self.cosmos.container = value.to_owned(),
            "cosmos.accept_invalid_certs" => self.cosmos.accept_invalid_certs = flag(value)?,
            "cosmos.ca_file" => self.cosmos.ca_file = Some(PathBuf::from(value)),
            "cosmos.mirror_deletes" => self.cosmos.mirror_deletes = flag(value)?,
            "cosmos.reconcile_secs" => self.cosmos.reconcile_secs = Some(num(value)?),
            "cosmos.poll_secs" => self.cosmos.poll_secs = Some(num(value)?),
            "reports.time_limit_secs" => self.reports.time_limit_secs = num(value)?,
            "console.session_idle_mins" => self.console.session_idle_mins = num(value)?,
            "console.session_hours" => self.console.session_hours = num(value)?,
            "retention.run_every_secs" => self.retention.run_every_secs = num(value)?,
            other => bail!("unknown setting {other}"),
        }
        Ok(())
    }

    /// The async runtime's threads: `runtime_workers`, or one fewer than `cores`.
    pub fn runtime_workers(&self, cores: usize) -> usize {
        self.runtime_workers
            .unwrap_or_else(|| cores.saturating_sub(1))
            .max(1)
    }

    pub fn catalog_url(&self) -> String {
        self.catalog_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("catalog.db").display()))
    }

    /// The embedded catalog's file, or None when the catalog is a PostgreSQL server.
    pub fn embedded_catalog_file(&self) -> Option<PathBuf> {
        let url = self.catalog_url();
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        Some(PathBuf::from(path))
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.data_dir.join("archive")
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Settings printed for users: secrets masked.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        if shown.ingest.webhook_secret.is_some() {
            shown.ingest.webhook_secret = Some("***".into());
        }
        if shown.cosmos.key.is_some() {
            shown.cosmos.key = Some("***".into());
        }
        if shown.server.metrics_token.is_some() {
            shown.server.metrics_token = Some("***".into());
        }
        shown
    }
}

impl Config {
    /// The certificate files, when TLS is configured: both or neither of cert and key.
    pub fn tls_files(&self) -> anyhow::Result<Option<chatvault_server::TlsFiles>> {
        let server = &self.server;
        match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(chatvault_server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: server.tls_client_ca.clone(),
                reload_every: std::time::Duration::from_secs(server.tls_reload_secs.max(1)),
            })),
            (None, None) if server.tls_client_ca.is_some() => bail!(
                "tls_client_ca (CHATVAULT_TLS_CLIENT_CA) needs TLS: set tls_cert and tls_key too"
            ),
            (None, None) => Ok(None),
            (Some(_), None) => {
                bail!("tls_cert is set but tls_key is not: set CHATVAULT_TLS_KEY too")
            }
            (None, Some(_)) => {
                bail!("tls_key is set but tls_cert is not: set CHATVAULT_TLS_CERT too")
            }
        }
    }

    pub fn compression_level(&self) -> anyhow::Result<chatvault_server::CompressionLevel> {
        use chatvault_server::CompressionLevel;
        Ok(match self.server.compression.trim() {
            "fastest" => CompressionLevel::Fastest,
            "default" => CompressionLevel::Default,
            "best" => CompressionLevel::Best,
            n => CompressionLevel::Precise(n.parse().map_err(|_| {
                anyhow::anyhow!("compression {n:?} is not fastest, default, best or a number")
            })?),
        })
    }

    pub fn metrics_access(&self) -> chatvault_server::MetricsAccess {
        let token = self.server.metrics_token.clone().filter(|t| !t.is_empty());
        if token.is_some() || self.server.metrics_auth == MetricsAuth::Admin {
            chatvault_server::MetricsAccess::Restricted { token }
        } else {
            chatvault_server::MetricsAccess::Open
        }
    }

    /// Single sign-on, when an issuer is configured.
    pub fn oidc(&self) -> Option<&chatvault_oidc::OidcConfig> {
        (!self.auth.oidc.issuer.trim().is_empty()).then_some(&self.auth.oidc)
    }

    /// The site time zone that stored wall-clock timestamps are read in.
    pub fn site_tz(&self) -> anyhow::Result<chrono_tz::Tz> {
        self.site_timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            anyhow::anyhow!(
                "site_timezone '{}' is not an IANA time zone name (such as UTC or Europe/London)",
                self.site_timezone
            )
        })
    }

    /// The Cosmos DB source's settings, when an endpoint is configured. The key comes
    /// from `cosmos.key` (or CHATVAULT_COSMOS_KEY) or the key file; it is never printed.
    pub fn cosmos(&self) -> anyhow::Result<Option<chatvault_ingest::CosmosConfig>> {
        let Some(endpoint) = &self.cosmos.endpoint else {
            return Ok(None);
        };
        let key = match (&self.cosmos.key, &self.cosmos.key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(file)) => chatvault_ingest::CosmosConfig::read_key_file(file)?,
            (None, None) => bail!("the Cosmos DB source needs a key: set CHATVAULT_COSMOS_KEY or CHATVAULT_COSMOS_KEY_FILE"),
        };
        if self.cosmos.database.is_empty() || self.cosmos.container.is_empty() {
            bail!("the Cosmos DB source needs CHATVAULT_COSMOS_DATABASE and CHATVAULT_COSMOS_CONTAINER");
        }
        let mut config = chatvault_ingest::CosmosConfig::new(
            endpoint,
            key,
            &self.cosmos.database,
            &self.cosmos.container,
        );
        config.accept_invalid_certs = self.cosmos.accept_invalid_certs;
        config.ca_file = self.cosmos.ca_file.clone();
        if let Some(secs) = self.cosmos.poll_secs {
            config.poll_interval = std::time::Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.cosmos.overlap_secs {
            config.overlap_secs = secs;
        }
        config.mirror_deletes = self.cosmos.mirror_deletes;
        if let Some(secs) = self.cosmos.reconcile_secs {
            config.reconcile_interval = std::time::Duration::from_secs(secs.max(1));
        }
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\npage_size = 100\n[folder]\npath = \"/in\"\n[store]\nflush_chats = 500\n",
        )
        .expect("write");
        let env: HashMap<&str, &str> = [
            ("CHATVAULT_PAGE_SIZE", "250"),
            ("CHATVAULT_DATA_DIR", "/data"),
            ("CHATVAULT_STORE_REPLAY_FLUSH_CHATS", "7000"),
            ("CHATVAULT_STORE_REBUILD_HOLD_MIB", "64"),
            ("CHATVAULT_STORE_ZSTD_LEVEL", "9"),
        ]
        .into();
        let config =
            Config::load(Some(&file), |k| env.get(k).map(|v| v.to_string())).expect("load");
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.page_size, 250);
        assert_eq!(config.folder.path, Some(PathBuf::from("/in")));
        assert_eq!(config.catalog_url(), "sqlite:///data/catalog.db");
        assert_eq!(
            (
                config.store.flush_chats,
                config.store.flush_age_secs,
                config.store.replay_flush_chats,
                config.store.rebuild_hold_mib,
                config.store.zstd_level
            ),
            (500, 10, 7000, 64, 9)
        );
    }

    #[test]
    fn the_runtime_leaves_a_core_to_the_threads_beside_it() {
        let mut config = Config::default();
        assert_eq!(
            [1, 2, 8].map(|cores| config.runtime_workers(cores)),
            [1, 1, 7]
        );
        config.set("runtime_workers", "3").expect("set");
        assert_eq!(config.runtime_workers(2), 3);
        config.set("runtime_workers", "0").expect("set");
        assert_eq!(config.runtime_workers(8), 1);
    }

    #[test]
    fn mistakes_are_reported_with_their_source() {
        let err = Config::load(None, |k| {
            (k == "CHATVAULT_PAGE_SIZE").then(|| "many".into())
        })
        .expect_err("bad number");
        assert!(
            format!("{err:#}").contains("CHATVAULT_PAGE_SIZE"),
            "{err:#}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "lisen = \"x\"\n").expect("write");
        let err = Config::load(Some(&file), |_| None).expect_err("typo");
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }

    #[test]
    fn network_settings_from_the_environment() {
        let env: std::collections::HashMap<&str, &str> = [
            ("CHATVAULT_TLS_CERT", "/tls/cert.pem"),
            ("CHATVAULT_TLS_KEY", "/tls/key.pem"),
            ("CHATVAULT_ALLOW_PLAIN_HTTP", "true"),
            (
                "CHATVAULT_OIDC_ISSUER",
                "https://login.microsoftonline.com/t/v2.0",
            ),
            (
                "CHATVAULT_OIDC_AUDIENCE",
                "api://cv, https://cv.example.com",
            ),
            ("CHATVAULT_ANONYMOUS_SITES", "3,4"),
            ("CHATVAULT_METRICS_TOKEN", "scrape"),
            ("CHATVAULT_COMPRESSION", "6"),
        ]
        .into_iter()
        .collect();
        let config = Config::load(None, |k| env.get(k).map(|v| (*v).to_owned())).expect("load");
        let tls = config.tls_files().expect("tls").expect("TLS configured");
        assert_eq!(tls.cert, PathBuf::from("/tls/cert.pem"));
        assert!(config.server.allow_plain_http);
        let oidc = config.oidc().expect("single sign-on configured");
        assert_eq!(oidc.audience, ["api://cv", "https://cv.example.com"]);
        assert_eq!(config.auth.anonymous_sites, [3, 4]);
        assert!(matches!(
            config.metrics_access(),
            chatvault_server::MetricsAccess::Restricted { token: Some(t) } if t == "scrape"
        ));
        assert_eq!(
            config.compression_level().expect("level"),
            chatvault_server::CompressionLevel::Precise(6)
        );
        assert_eq!(
            config.redacted().server.metrics_token.as_deref(),
            Some("***")
        );

        let defaults = Config::default();
        assert!(defaults.tls_files().expect("tls").is_none());
        assert!(defaults.oidc().is_none());
        assert!(matches!(
            defaults.metrics_access(),
            chatvault_server::MetricsAccess::Open
        ));
        let mut half = Config::default();
        half.server.tls_cert = Some("/tls/cert.pem".into());
        let error = half.tls_files().expect_err("a certificate without a key");
        assert!(error.to_string().contains("CHATVAULT_TLS_KEY"), "{error}");
        half.server.compression = "fast".into();
        assert!(half.compression_level().is_err());
    }

    #[test]
    fn every_env_var_names_a_real_setting() {
        let mut config = Config::default();
        for (var, key) in ENV_VARS {
            let sample = if key.contains("bytes")
                || key.contains("size")
                || key.ends_with("secs")
                || key.ends_with("mins")
                || key.ends_with("hours")
                || key.ends_with("chats")
                || key.ends_with("mib")
                || key.ends_with("workers")
                || key.ends_with("level")
            {
                "7"
            } else if key.ends_with("format") {
                "json"
            } else if key.ends_with("certs")
                || key.ends_with("deletes")
                || key.ends_with("plain_http")
            {
                "true"
            } else if key.ends_with("metrics_auth") {
                "admin"
            } else if key.ends_with("sites") {
                "3, 4"
            } else if key.ends_with("proxies") {
                "10.0.0.5, ::1"
            } else {
                "x"
            };
            config
                .set(key, sample)
                .unwrap_or_else(|e| panic!("{var}: {e}"));
        }
    }
}

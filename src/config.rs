//! Server configuration: one TOML file, option names after the vendor's
//! (`[settings]`, `[cluster-settings]`, the DAP's `connection-string`).
//! docs/configuration.md lists every option with its default.
//!
//! Unknown options and bad values stop the start with the file, line and
//! reason: serde reports syntax and type errors with their position, and the
//! checks made after parsing use spans kept on the values they look at.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ixn_shard::catalog::{Catalog, Tenant, WorkbinKind};
use ixn_shard::machine::{AgentParams, ClientTypes, MultipleConnections};
use ixn_shard::proto::frame::{ABSOLUTE_MAX_FRAME, DEFAULT_MAX_FRAME, HEADER_LEN};
use ixn_shard::proto::ClientType;
use serde::Deserialize;
use toml::Spanned;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:7120";
pub const DEFAULT_DATA_DIR: &str = "ixn-data";

/// The whole configuration, after defaults and validation.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (`None`: the embedded default, or text).
    pub file: Option<PathBuf>,
    /// Where it came from, for messages ("embedded default" or a path).
    pub source: String,
    pub server: ServerSection,
    pub settings: Settings,
    pub cluster: ClusterSettings,
    /// `[logger-settings]`: the event log, on when the section is present.
    pub logger: Option<LoggerSettings>,
    pub clients: Vec<ClientEntry>,
    pub catalog: Catalog,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerSection {
    /// Application name sent to clients at registration.
    pub application_name: String,
    /// Address every executor listens on (SO_REUSEPORT).
    #[serde(deserialize_with = "de_addr")]
    pub listen: SocketAddr,
    /// Cores to run one executor on each: "all", or a list such as "0-3,6".
    #[serde(deserialize_with = "de_cores")]
    pub cores: CoreList,
    /// Directory for the embedded SQLite database.
    pub data_dir: PathBuf,
    /// Node id inside interaction ids, unique within a cluster (0-255).
    pub node_id: u8,
    /// Largest frame a client may send, header included.
    pub max_frame_size: usize,
    /// Unanswered requests per connection before the server stops reading it.
    pub max_pending_requests: usize,
    /// Unsent bytes per connection before the client is disconnected.
    pub max_output_buffer: usize,
    /// Sessions one connection may have open besides its own (SessionId);
    /// 0: none.
    pub max_sessions_per_connection: usize,
    /// Bytes of io_uring registered memory per executor (needs memlock).
    pub io_memory: usize,
    /// Seconds to wait for writes to drain on SIGTERM/SIGINT.
    pub shutdown_timeout: u64,
    /// TCP listen backlog of each executor's socket.
    pub listen_backlog: i32,
    /// Most client connections the node accepts (split evenly over shards).
    pub max_connections: usize,
    /// Messages waiting in one shard's queue to another shard before the
    /// shard refuses new client requests (error 52).
    pub max_shard_queue: usize,
    /// Seconds a connection may be idle before TCP keepalive probes start
    /// (then every third of it, three probes); 0: no keepalive.
    pub tcp_keepalive: u64,
    /// Seconds a connection's writes may make no progress before the
    /// server closes it; 0: no limit.
    pub write_timeout: u64,
    /// The management HTTP listener (metrics, health, readiness, the
    /// dashboard): an address, or "off". Default: loopback, on `listen`'s
    /// port + 1000 (an ephemeral one when `listen`'s port is 0).
    #[serde(deserialize_with = "de_management")]
    pub management_listen: ManagementListen,
    /// A second client listener, TLS only (beside `listen`, plain).
    #[serde(deserialize_with = "de_opt_addr")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM files: the server's certificate chain and its private key.
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA that issues client certificates: mutual TLS.
    pub tls_client_ca: Option<PathBuf>,
}

/// `management-listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementListen {
    /// Loopback, on `listen`'s port + 1000.
    Default,
    Off,
    At(SocketAddr),
}

/// The default management port is the client port plus this (7120: 8120).
pub const MANAGEMENT_PORT_OFFSET: u16 = 1000;

impl ManagementListen {
    /// "off" or an address.
    pub fn parse(s: &str) -> Result<ManagementListen, String> {
        if s == "off" {
            return Ok(ManagementListen::Off);
        }
        s.parse()
            .map(ManagementListen::At)
            .map_err(|_| format!("'{s}' is neither \"off\" nor an address such as 127.0.0.1:8120"))
    }
}

impl ServerSection {
    /// Where the management listener listens, if it is on.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        match self.management_listen {
            ManagementListen::Off => None,
            ManagementListen::At(a) => Some(a),
            ManagementListen::Default => {
                let port = match self.listen.port() {
                    0 => 0,
                    p => p.checked_add(MANAGEMENT_PORT_OFFSET).unwrap_or(0),
                };
                Some(SocketAddr::from(([127, 0, 0, 1], port)))
            }
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            application_name: "ixn".into(),
            listen: DEFAULT_LISTEN.parse().expect("valid"),
            cores: CoreList::All,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            node_id: 1,
            max_frame_size: DEFAULT_MAX_FRAME,
            max_pending_requests: 1024,
            max_output_buffer: 8 << 20,
            max_sessions_per_connection: 10_000,
            io_memory: 1 << 20,
            shutdown_timeout: 10,
            listen_backlog: 4096,
            max_connections: 20000,
            max_shard_queue: 16384,
            tcp_keepalive: 60,
            write_timeout: 60,
            management_listen: ManagementListen::Default,
            tls_listen: None,
            tls_certificate: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

/// Which cores run executors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreList {
    /// Every core the process may run on.
    All,
    List(Vec<usize>),
}

impl CoreList {
    pub fn parse(s: &str) -> Result<CoreList, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(CoreList::All);
        }
        let mut cores = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: usize = a.parse().map_err(|_| format!("'{part}' is not a core number or range"))?;
            let b: usize = b.parse().map_err(|_| format!("'{part}' is not a core number or range"))?;
            if a > b {
                return Err(format!("range '{part}' runs backwards"));
            }
            for c in a..=b {
                if cores.contains(&c) {
                    return Err(format!("core {c} is listed twice"));
                }
                cores.push(c);
            }
        }
        if cores.is_empty() || cores.len() > 1024 {
            return Err("the core list must name 1 to 1024 cores".into());
        }
        Ok(CoreList::List(cores))
    }

    /// The cores, with "all" resolved against what the process may use.
    pub fn resolve(&self) -> Result<Vec<usize>, String> {
        let allowed = allowed_cores();
        match self {
            CoreList::All => Ok(allowed),
            CoreList::List(l) => {
                if let Some(c) = l.iter().find(|c| !allowed.contains(c)) {
                    return Err(format!("core {c} is not available to this process (available: {allowed:?})"));
                }
                Ok(l.clone())
            }
        }
    }
}

/// Cores in this process's affinity mask.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes into the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// `[settings]`: the vendor's Interaction Server and DAP options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Settings {
    /// Only "odbc" is supported.
    pub dbprotocol: Spanned<String>,
    /// ODBC connection string; absent: embedded SQLite in the data dir.
    pub connection_string: Option<String>,
    /// Writer threads, one ODBC connection each (SQLite uses one).
    pub number_of_database_connections: Spanned<usize>,
    /// Most changes committed in one transaction.
    pub database_batch_size: Spanned<usize>,
    /// "array", "multirow" or "json"; absent: the engine's measured default.
    pub insert_strategy: Option<Spanned<String>>,
    /// Milliseconds a writer that has caught up with the load waits, after
    /// the first write of a batch, for more before it commits (0: commits
    /// whatever is queued at once). Default 1: at low load that halves the
    /// commits, and a writer kept busy never waits.
    pub database_commit_delay_ms: f64,
    /// Seconds a pulled interaction stays locked to its routing client
    /// before it goes back to its place in its queue.
    pub routing_timeout: f64,
    /// Seconds a pull from an empty view waits for an interaction.
    pub pull_hold_timeout: f64,
    /// Most interactions one snapshot holds.
    pub max_interactions_per_snapshot: u32,
    /// Reporting events each shard keeps for subscribers that resume after
    /// a lost connection (0: none kept).
    pub reporting_replay_events: usize,
    /// Most property keys of one interaction, nested lists' keys included.
    pub max_properties_per_interaction: usize,
    /// Client types that may search (RequestFindInteractions).
    #[serde(deserialize_with = "de_client_types")]
    pub find_client_types: ClientTypes,
    /// Client types that may take snapshots.
    #[serde(deserialize_with = "de_client_types")]
    pub snapshot_client_types: ClientTypes,
    /// Seconds an invitation to an agent waits for an answer before it is
    /// revoked and the interaction goes back to its place in its queue.
    pub delivering_timeout: f64,
    /// Seconds an agent may handle an interaction before it goes back to
    /// its queue.
    pub handling_timeout: f64,
    /// Whether an invitation that times out sets the agent not ready for
    /// its media type.
    pub not_ready_on_invitation_timeout: bool,
    /// Seconds an agent stays logged in after its last connection dropped;
    /// 0: logged out at once.
    pub login_session_timeout: f64,
    /// `true`, `false` or `"force-logout"`.
    #[serde(deserialize_with = "de_multiple_connections")]
    pub allow_multiple_agent_connections: MultipleConnections,
    /// A place holds one agent at a time.
    pub agent_login_control: bool,
    /// Licensed agent seats of this node (logins at once); absent: unlimited.
    pub agent_seats: Option<u32>,
    /// `"queue"` or `"workbin:NAME"`; absent: `"queue"`. Checked and turned
    /// into [`Catalog::handled_at_restart_workbin`].
    pub handled_at_restart: Option<Spanned<String>>,
}

impl Settings {
    /// The agent options as the shards take them (milliseconds).
    pub fn agent_params(&self) -> AgentParams {
        AgentParams {
            delivering_timeout_ms: secs_to_ms(self.delivering_timeout),
            handling_timeout_ms: secs_to_ms(self.handling_timeout),
            not_ready_on_invitation_timeout: self.not_ready_on_invitation_timeout,
            login_session_timeout_ms: secs_to_ms(self.login_session_timeout),
            multiple_connections: self.allow_multiple_agent_connections,
            agent_login_control: self.agent_login_control,
            agent_seats: self.agent_seats.unwrap_or(u32::MAX),
        }
    }
}

/// Largest `max-properties-per-interaction`: a frame (1 MiB at most by
/// default) holds no more entries than this anyway.
const MAX_PROPERTIES_PER_INTERACTION: usize = 100_000;
/// The most reporting events a shard may keep for resuming subscribers:
/// about 200 bytes each, so 2 GiB per shard at most.
const MAX_REPLAY_EVENTS: usize = 10_000_000;

/// Seconds (checked to be 0 to 1e9 at parse) to whole milliseconds.
fn secs_to_ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dbprotocol: Spanned::new(0..0, "odbc".into()),
            connection_string: None,
            number_of_database_connections: Spanned::new(0..0, 5),
            database_batch_size: Spanned::new(0..0, 1000),
            insert_strategy: None,
            database_commit_delay_ms: 1.0,
            routing_timeout: 720.0 * 60.0,
            pull_hold_timeout: 0.0,
            max_interactions_per_snapshot: 500,
            reporting_replay_events: ixn_shard::machine::DEFAULT_REPLAY_EVENTS,
            max_properties_per_interaction: ixn_shard::machine::DEFAULT_MAX_PROPERTY_KEYS,
            find_client_types: ClientTypes::all(),
            snapshot_client_types: ClientTypes::all(),
            delivering_timeout: 30.0,
            handling_timeout: 180.0 * 60.0,
            not_ready_on_invitation_timeout: false,
            login_session_timeout: 1440.0,
            allow_multiple_agent_connections: MultipleConnections::Allow,
            agent_login_control: true,
            agent_seats: None,
            handled_at_restart: None,
        }
    }
}

/// `[cluster-settings]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClusterSettings {
    /// Media types this node serves, for proxies; absent: all.
    pub media_types: Option<Vec<String>>,
    /// Whether this node accepts RequestSubmit.
    pub enable_submit: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { media_types: None, enable_submit: true }
    }
}

/// `[logger-settings]`: the Event Logger (the vendor's Event Logger DAP
/// options). Present: every reporting event is stored in the event log.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LoggerSettings {
    /// Only "odbc" is supported.
    pub delivery_protocol: Spanned<String>,
    /// The event log's database (ODBC connection string); absent: the main
    /// database.
    pub connection_string: Option<String>,
    /// Most events shipped to the event log per transaction.
    pub batch_size: usize,
    /// Milliseconds events wait for a batch to fill before they are
    /// shipped anyway.
    pub storing_timeout: u64,
    /// Events waiting in the outbox past which the server warns.
    pub max_queue_size: u64,
    /// Reporting event names logged (`EventAgentLogin`...); absent: all.
    pub event_types: Option<Vec<Spanned<String>>>,
    /// Media types whose events are logged; absent: all.
    pub media_types: Option<Vec<String>>,
}

impl Default for LoggerSettings {
    fn default() -> Self {
        LoggerSettings {
            delivery_protocol: Spanned::new(0..0, "odbc".into()),
            connection_string: None,
            batch_size: 500,
            storing_timeout: 1000,
            max_queue_size: 1_000_000,
            event_types: None,
            media_types: None,
        }
    }
}

impl LoggerSettings {
    /// The storage crate's form (checked at parse: every event type known).
    pub fn storage_config(&self, create_schema: bool) -> ixn_storage::LoggerConfig {
        ixn_storage::LoggerConfig {
            connection_string: self.connection_string.clone(),
            batch_size: self.batch_size,
            storing_timeout: std::time::Duration::from_millis(self.storing_timeout),
            max_queue_size: self.max_queue_size,
            filter: ixn_storage::EventFilter {
                event_types: self
                    .event_types
                    .as_ref()
                    .map(|l| l.iter().filter_map(|t| ixn_storage::EventFilter::event_type_of(t.get_ref())).collect()),
                media_types: self.media_types.clone(),
            },
            create_schema,
        }
    }
}

/// `[[client]]`: an application allowed to register.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientEntry {
    pub name: String,
    #[serde(rename = "type", deserialize_with = "de_client_type")]
    pub client_type: ClientType,
    pub password: String,
    /// The tenants the client may act on; absent: every tenant.
    #[serde(default)]
    pub tenants: Option<Vec<Spanned<String>>>,
}

impl ClientEntry {
    /// Its `tenants` as catalog indexes (checked at load: each exists).
    pub fn tenant_scope(&self, catalog: &Catalog) -> ixn_shard::machine::TenantScope {
        match &self.tenants {
            None => ixn_shard::machine::TenantScope::all(),
            Some(names) => ixn_shard::machine::TenantScope::only(
                names.iter().filter_map(|n| catalog.tenant(n.get_ref())).collect(),
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TenantEntry {
    name: Spanned<String>,
    /// Media type name to enabled flag.
    #[serde(default)]
    media_types: std::collections::BTreeMap<String, bool>,
    #[serde(default)]
    business_process: Vec<ProcessEntry>,
    #[serde(default)]
    workbin: Vec<WorkbinEntry>,
    #[serde(default)]
    agent: Vec<AgentEntry>,
    #[serde(default)]
    place: Vec<PlaceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AgentEntry {
    login_id: Spanned<String>,
    /// Skill name to level (1-10).
    #[serde(default)]
    skills: std::collections::BTreeMap<String, i64>,
    /// Media type name to the most interactions of it held at once.
    #[serde(default)]
    capacity: std::collections::BTreeMap<String, i64>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PlaceEntry {
    name: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WorkbinEntry {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProcessEntry {
    name: Spanned<String>,
    #[serde(default)]
    queue: Vec<QueueEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct QueueEntry {
    name: Spanned<String>,
    next: Option<Spanned<String>>,
    #[serde(default)]
    view: Vec<ViewEntry>,
    /// The built-in routing strategy: only "longest-idle".
    strategy: Option<Spanned<String>>,
    /// The view the strategy delivers from; absent: the queue's first.
    strategy_view: Option<Spanned<String>>,
    /// The property naming an interaction's required skills.
    skills_property: Option<Spanned<String>>,
}

/// The only built-in strategy.
pub const STRATEGY_LONGEST_IDLE: &str = "longest-idle";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ViewEntry {
    name: Spanned<String>,
    condition: Option<Spanned<String>>,
    order: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct FileConfig {
    server: ServerSection,
    settings: Settings,
    cluster_settings: ClusterSettings,
    logger_settings: Option<LoggerSettings>,
    client: Vec<ClientEntry>,
    tenant: Vec<TenantEntry>,
}

fn de_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("'{s}' is not an address such as 0.0.0.0:7120")))
}

fn de_opt_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("'{s}' is not an address such as 0.0.0.0:7443")))
}

fn de_management<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ManagementListen, D::Error> {
    let s = String::deserialize(d)?;
    ManagementListen::parse(&s).map_err(serde::de::Error::custom)
}

fn de_cores<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CoreList, D::Error> {
    let s = String::deserialize(d)?;
    CoreList::parse(&s).map_err(serde::de::Error::custom)
}

/// `allow-multiple-agent-connections`: a TOML boolean or one of the strings
/// "true", "false", "force-logout".
fn de_multiple_connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MultipleConnections, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Str(String),
    }
    let bad = |what: String| {
        serde::de::Error::custom(format!(
            "allow-multiple-agent-connections {what} must be true, false or \"force-logout\""
        ))
    };
    match Raw::deserialize(d).map_err(|_| bad("value".into()))? {
        Raw::Bool(true) => Ok(MultipleConnections::Allow),
        Raw::Bool(false) => Ok(MultipleConnections::Refuse),
        Raw::Str(s) => match s.as_str() {
            "true" => Ok(MultipleConnections::Allow),
            "false" => Ok(MultipleConnections::Refuse),
            "force-logout" => Ok(MultipleConnections::ForceLogout),
            _ => Err(bad(format!("'{s}'"))),
        },
    }
}

/// A list of client type names, such as `["operator", "routing-engine"]`.
fn de_client_types<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClientTypes, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    let mut types = Vec::new();
    for n in &names {
        let t = ClientType::from_name(n).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown client type '{n}' (one of {:?})", ClientTypes::all().names()))
        })?;
        types.push(t);
    }
    Ok(ClientTypes::of(&types))
}

fn de_client_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClientType, D::Error> {
    let s = String::deserialize(d)?;
    ClientType::from_name(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "'{s}' is not a client type (media-server, agent-desktop, routing-engine, reporting-engine, proxy, operator)"
        ))
    })
}

/// A configuration error: where and why.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// The embedded default: no file. See README, "Quick start".
    pub fn embedded_default() -> Config {
        Config {
            file: None,
            source: "embedded default".into(),
            server: ServerSection::default(),
            settings: Settings::default(),
            cluster: ClusterSettings::default(),
            logger: None,
            clients: Vec::new(),
            catalog: Catalog::embedded_default(),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read the configuration: {e}", path.display())))?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// What of the file a reload may not change: the whole file as TOML,
    /// without its `[[client]]` and `[[tenant]]` tables (compared, not
    /// interpreted; what of a tenant a reload may change is checked by
    /// `Catalog::evolve`).
    pub fn fixed_part(text: &str) -> Option<toml::Table> {
        let mut t: toml::Table = text.parse().ok()?;
        t.remove("client");
        t.remove("tenant");
        Some(t)
    }

    /// Parses configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError(format!("{source}:{line}: {}", e.message()))
        })?;
        let at = |span: std::ops::Range<usize>, msg: String| {
            ConfigError(format!("{source}:{}: {msg}", line_of(text, span.start)))
        };
        let s = &file.settings;
        if s.dbprotocol.get_ref() != "odbc" {
            return Err(at(
                s.dbprotocol.span(),
                format!("dbprotocol '{}' is not supported: use \"odbc\"", s.dbprotocol.get_ref()),
            ));
        }
        if !(1..=64).contains(s.number_of_database_connections.get_ref()) {
            return Err(at(
                s.number_of_database_connections.span(),
                "number-of-database-connections must be 1 to 64".into(),
            ));
        }
        if !(1..=100_000).contains(s.database_batch_size.get_ref()) {
            return Err(at(s.database_batch_size.span(), "database-batch-size must be 1 to 100000".into()));
        }
        if let Some(st) = &s.insert_strategy {
            if !matches!(st.get_ref().as_str(), "array" | "multirow" | "json") {
                return Err(at(
                    st.span(),
                    format!("insert-strategy '{}' must be \"array\", \"multirow\" or \"json\"", st.get_ref()),
                ));
            }
        }
        let key_at = |key: &str, msg: String| ConfigError(format!("{source}:{}: {msg}", line_of_key(text, key)));
        if !(s.routing_timeout > 0.0 && s.routing_timeout <= 1e9) {
            return Err(key_at("routing-timeout", "[settings] routing-timeout must be more than 0 seconds".into()));
        }
        if !(0.0..=1000.0).contains(&s.database_commit_delay_ms) {
            return Err(key_at(
                "database-commit-delay-ms",
                "[settings] database-commit-delay-ms must be 0 to 1000 milliseconds".into(),
            ));
        }
        if !(0.0..=3600.0).contains(&s.pull_hold_timeout) {
            return Err(key_at("pull-hold-timeout", "[settings] pull-hold-timeout must be 0 to 3600 seconds".into()));
        }
        if s.max_interactions_per_snapshot == 0 {
            return Err(key_at(
                "max-interactions-per-snapshot",
                "[settings] max-interactions-per-snapshot must be at least 1".into(),
            ));
        }
        if s.reporting_replay_events > MAX_REPLAY_EVENTS {
            return Err(key_at(
                "reporting-replay-events",
                format!("[settings] reporting-replay-events must be 0 to {MAX_REPLAY_EVENTS}"),
            ));
        }
        if !(1..=MAX_PROPERTIES_PER_INTERACTION).contains(&s.max_properties_per_interaction) {
            return Err(key_at(
                "max-properties-per-interaction",
                format!("[settings] max-properties-per-interaction must be 1 to {MAX_PROPERTIES_PER_INTERACTION}"),
            ));
        }
        if !(s.delivering_timeout > 0.0 && s.delivering_timeout <= 1e9) {
            return Err(key_at(
                "delivering-timeout",
                "[settings] delivering-timeout must be more than 0 seconds, at most 1000000000".into(),
            ));
        }
        if !(s.handling_timeout > 0.0 && s.handling_timeout <= 1e9) {
            return Err(key_at(
                "handling-timeout",
                "[settings] handling-timeout must be more than 0 seconds, at most 1000000000".into(),
            ));
        }
        if !(0.0..=1e9).contains(&s.login_session_timeout) {
            return Err(key_at(
                "login-session-timeout",
                "[settings] login-session-timeout must be 0 to 1000000000 seconds".into(),
            ));
        }
        let sv = &file.server;
        // These values parsed fine but break a rule; point at their line.
        if !(HEADER_LEN..=ABSOLUTE_MAX_FRAME).contains(&sv.max_frame_size) {
            return Err(key_at(
                "max-frame-size",
                format!("[server] max-frame-size must be {HEADER_LEN} to {ABSOLUTE_MAX_FRAME}"),
            ));
        }
        if sv.max_pending_requests == 0 {
            return Err(key_at("max-pending-requests", "[server] max-pending-requests must be at least 1".into()));
        }
        if sv.max_output_buffer < sv.max_frame_size {
            return Err(key_at(
                "max-output-buffer",
                "[server] max-output-buffer must be at least max-frame-size".into(),
            ));
        }
        if sv.max_connections == 0 {
            return Err(key_at("max-connections", "[server] max-connections must be at least 1".into()));
        }
        if !(1..=1 << 24).contains(&sv.max_shard_queue) {
            return Err(key_at("max-shard-queue", "[server] max-shard-queue must be 1 to 16777216".into()));
        }
        if sv.tcp_keepalive > 86_400 {
            return Err(key_at("tcp-keepalive", "[server] tcp-keepalive must be 0 to 86400 seconds".into()));
        }
        if sv.write_timeout > 86_400 {
            return Err(key_at("write-timeout", "[server] write-timeout must be 0 to 86400 seconds".into()));
        }
        let tls_files = sv.tls_certificate.is_some() && sv.tls_key.is_some();
        if sv.tls_listen.is_some() && !tls_files {
            return Err(key_at("tls-listen", "[server] tls-listen needs tls-certificate and tls-key".into()));
        }
        for key in ["tls-certificate", "tls-key", "tls-client-ca"] {
            let set = match key {
                "tls-certificate" => sv.tls_certificate.is_some(),
                "tls-key" => sv.tls_key.is_some(),
                _ => sv.tls_client_ca.is_some(),
            };
            if set && sv.tls_listen.is_none() {
                return Err(key_at(key, format!("[server] {key} is set but tls-listen is not")));
            }
        }
        if sv.listen_backlog < 1 {
            return Err(key_at("listen-backlog", "[server] listen-backlog must be at least 1".into()));
        }
        if let Some(l) = &file.logger_settings {
            check_logger(l, &at, &key_at)?;
        }
        let catalog = if file.tenant.is_empty() {
            Catalog::embedded_default()
        } else {
            build_catalog(&file.tenant, file.cluster_settings.enable_submit).map_err(|(span, msg)| at(span, msg))?
        };
        let mut catalog = catalog;
        catalog.enable_submit = file.cluster_settings.enable_submit;
        if let Some(h) = &file.settings.handled_at_restart {
            catalog.handled_at_restart_workbin =
                handled_at_restart(h.get_ref(), &catalog).map_err(|msg| at(h.span(), msg))?;
        }
        for (i, c) in file.client.iter().enumerate() {
            if file.client[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError(format!(
                    "{source}:{}: client '{}' is listed twice",
                    line_of_value(text, &c.name),
                    c.name
                )));
            }
            if let Err(e) = crate::credentials::Stored::parse(&c.password) {
                return Err(ConfigError(format!(
                    "{source}:{}: client '{}': password {e}; make one with `ixnctl hash-password`",
                    line_of_value(text, &c.name),
                    c.name
                )));
            }
            for t in c.tenants.iter().flatten() {
                if catalog.tenant(t.get_ref()).is_none() {
                    return Err(at(
                        t.span(),
                        format!("client '{}': no tenant '{}' is configured", c.name, t.get_ref()),
                    ));
                }
            }
            if c.tenants.as_ref().is_some_and(Vec::is_empty) {
                return Err(ConfigError(format!(
                    "{source}:{}: client '{}': tenants must list at least one tenant (leave it out for every tenant)",
                    line_of_value(text, &c.name),
                    c.name
                )));
            }
        }
        Ok(Config {
            file: None,
            source: source.to_string(),
            server: file.server,
            settings: file.settings,
            cluster: file.cluster_settings,
            logger: file.logger_settings,
            clients: file.client,
            catalog,
        })
    }

    /// The ODBC connection string to use, and whether it is the embedded
    /// SQLite default (whose schema the server creates).
    pub fn connection_string(&self) -> (String, bool) {
        match &self.settings.connection_string {
            Some(s) => (s.clone(), false),
            None => (ixn_storage::sqlite_connection_string(&self.sqlite_path()), true),
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.server.data_dir.join("ixn.db")
    }
}

/// The rules of `[logger-settings]` serde does not check.
fn check_logger(
    l: &LoggerSettings,
    at: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
    key_at: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if l.delivery_protocol.get_ref() != "odbc" {
        return Err(at(
            l.delivery_protocol.span(),
            format!("delivery-protocol '{}' is not supported: use \"odbc\"", l.delivery_protocol.get_ref()),
        ));
    }
    if !(1..=100_000).contains(&l.batch_size) {
        return Err(key_at("batch-size", "[logger-settings] batch-size must be 1 to 100000".into()));
    }
    if !(1..=3_600_000).contains(&l.storing_timeout) {
        return Err(key_at("storing-timeout", "[logger-settings] storing-timeout must be 1 to 3600000 ms".into()));
    }
    if l.max_queue_size == 0 {
        return Err(key_at("max-queue-size", "[logger-settings] max-queue-size must be at least 1".into()));
    }
    for t in l.event_types.iter().flatten() {
        if ixn_storage::EventFilter::event_type_of(t.get_ref()).is_none() {
            return Err(at(
                t.span(),
                format!("'{}' is not a reporting event (EventInteractionSubmitted, EventAgentLogin...)", t.get_ref()),
            ));
        }
    }
    Ok(())
}

type SpannedError = (std::ops::Range<usize>, String);

/// `handled-at-restart`: `"queue"` (None) or `"workbin:NAME"` (Some(NAME)),
/// NAME a workbin of type agent in at least one tenant.
fn handled_at_restart(value: &str, catalog: &Catalog) -> Result<Option<String>, String> {
    if value == "queue" {
        return Ok(None);
    }
    let Some(name) = value.strip_prefix("workbin:") else {
        return Err(format!("handled-at-restart '{value}' must be \"queue\" or \"workbin:NAME\""));
    };
    let kinds: Vec<WorkbinKind> =
        catalog.tenants.iter().filter_map(|t| t.workbin(name).map(|w| t.workbins[w as usize].kind)).collect();
    if kinds.contains(&WorkbinKind::Agent) {
        return Ok(Some(name.to_string()));
    }
    Err(match kinds.first() {
        Some(k) => format!("handled-at-restart: workbin '{name}' has type \"{}\", not \"agent\"", k.name()),
        None if name.is_empty() => "handled-at-restart: \"workbin:\" must name a workbin".to_string(),
        None => format!("handled-at-restart: no tenant has a workbin '{name}' (it must have type \"agent\")"),
    })
}

fn build_catalog(tenants: &[TenantEntry], enable_submit: bool) -> Result<Catalog, SpannedError> {
    let mut built = Vec::new();
    for te in tenants {
        let mut t = Tenant::new(te.name.get_ref().as_str());
        if te.media_types.is_empty() {
            return Err((te.name.span(), format!("tenant '{}' has no media-types", te.name.get_ref())));
        }
        for (m, enabled) in &te.media_types {
            t.add_media(m, *enabled).map_err(|e| (te.name.span(), e))?;
        }
        for p in &te.business_process {
            let names: Vec<&str> = p.queue.iter().map(|q| q.name.get_ref().as_str()).collect();
            t.add_process(p.name.get_ref(), &names).map_err(|e| (p.name.span(), e))?;
        }
        for w in &te.workbin {
            let kind = WorkbinKind::from_name(w.kind.get_ref()).ok_or_else(|| {
                (
                    w.kind.span(),
                    format!(
                        "workbin type '{}' must be \"agent\", \"place\", \"agent-group\" or \"place-group\"",
                        w.kind.get_ref()
                    ),
                )
            })?;
            t.add_workbin(w.name.get_ref(), kind).map_err(|e| (w.name.span(), e))?;
        }
        for a in &te.agent {
            let skills: Vec<(&str, i64)> = a.skills.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let capacity: Vec<(&str, i64)> = a.capacity.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let groups: Vec<&str> = a.groups.iter().map(String::as_str).collect();
            t.add_agent(a.login_id.get_ref(), &skills, &capacity, &groups).map_err(|e| (a.login_id.span(), e))?;
        }
        for p in &te.place {
            t.add_place(p.name.get_ref()).map_err(|e| (p.name.span(), e))?;
        }
        for p in &te.business_process {
            for q in &p.queue {
                if let Some(next) = &q.next {
                    t.link_next(q.name.get_ref(), next.get_ref()).map_err(|e| (next.span(), e))?;
                }
                for v in &q.view {
                    let cond = v.condition.as_ref().map(|c| c.get_ref().as_str());
                    let order = v.order.as_ref().map(|o| o.get_ref().as_str());
                    t.add_view(q.name.get_ref(), v.name.get_ref(), cond, order).map_err(|e| {
                        // Point at the value that is wrong.
                        let span = if e.contains(": condition ") {
                            v.condition.as_ref().map(|c| c.span())
                        } else if e.contains(": order ") {
                            v.order.as_ref().map(|o| o.span())
                        } else {
                            None
                        };
                        (span.unwrap_or_else(|| v.name.span()), e)
                    })?;
                }
                match &q.strategy {
                    Some(st) => {
                        if st.get_ref() != STRATEGY_LONGEST_IDLE {
                            return Err((
                                st.span(),
                                format!(
                                    "queue '{}': strategy '{}' is not a built-in strategy: use \"{STRATEGY_LONGEST_IDLE}\"",
                                    q.name.get_ref(),
                                    st.get_ref()
                                ),
                            ));
                        }
                        let view = q.strategy_view.as_ref().map(|v| v.get_ref().as_str());
                        let skills = q.skills_property.as_ref().map(|p| p.get_ref().as_str());
                        t.set_strategy(q.name.get_ref(), view, skills).map_err(|e| {
                            let span = if e.contains("skills-property") {
                                q.skills_property.as_ref().map(|p| p.span())
                            } else {
                                None
                            };
                            (span.unwrap_or_else(|| q.name.span()), e)
                        })?;
                    }
                    None => {
                        for (key, value) in
                            [("strategy-view", &q.strategy_view), ("skills-property", &q.skills_property)]
                        {
                            if let Some(v) = value {
                                return Err((
                                    v.span(),
                                    format!(
                                        "queue '{}': {key} needs strategy = \"{STRATEGY_LONGEST_IDLE}\"",
                                        q.name.get_ref()
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        if t.queues.is_empty() {
            return Err((te.name.span(), format!("tenant '{}' has no queue", te.name.get_ref())));
        }
        built.push(t);
    }
    Catalog::new(built, enable_submit).map_err(|e| (catalog_error_span(tenants, &e), e))
}

/// Where an error of [`Catalog::new`] points: for a strategy's view (an
/// error "tenant 'T': queue 'Q': strategy-view ..."), that queue's
/// strategy-view value (or its name); otherwise the last tenant's name.
fn catalog_error_span(tenants: &[TenantEntry], e: &str) -> std::ops::Range<usize> {
    let strategy_queue = e.strip_prefix("tenant '").and_then(|r| {
        let (tn, r) = r.split_once("': queue '")?;
        let (qn, _) = r.split_once("': ")?;
        Some((tn, qn))
    });
    if let Some((tn, qn)) = strategy_queue {
        let queue = tenants
            .iter()
            .filter(|t| t.name.get_ref() == tn)
            .flat_map(|t| t.business_process.iter())
            .flat_map(|p| p.queue.iter())
            .find(|q| q.name.get_ref() == qn);
        if let Some(q) = queue {
            return q.strategy_view.as_ref().map(|v| v.span()).unwrap_or_else(|| q.name.span());
        }
    }
    tenants.last().map(|t| t.name.span()).unwrap_or(0..0)
}

/// 1-based line where `key = ...` is set (the last such line), or 0.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')))
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or(0)
}

/// 1-based line of the last occurrence of a quoted string value, or 0.
fn line_of_value(text: &str, value: &str) -> usize {
    let quoted = format!("\"{value}\"");
    text.lines().enumerate().filter(|(_, l)| l.contains(&quoted)).map(|(i, _)| i + 1).last().unwrap_or(0)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a catalog defines, in a comparable form.
    fn shape(c: &Catalog) -> Vec<String> {
        let mut out = Vec::new();
        for t in &c.tenants {
            out.push(format!("tenant {}", t.name));
            // Files list media types in a map, so their order is not kept.
            let mut media: Vec<String> = t.media.iter().map(|m| format!("media {} {}", m.name, m.enabled)).collect();
            media.sort();
            out.extend(media);
            out.extend(t.processes.iter().map(|p| format!("process {}", p.name)));
            for q in &t.queues {
                let next = q.next.map(|n| t.queues[n as usize].name.clone());
                out.push(format!("queue {} process {} next {next:?} views {:?}", q.name, q.process, q.views));
                // The strategy by what it resolved to, not how it was named.
                let strategy =
                    q.strategy.as_ref().map(|s| (t.views[s.view as usize].name.clone(), s.skills_property.clone()));
                out.push(format!("queue {} strategy {strategy:?}", q.name));
            }
            for v in &t.views {
                out.push(format!("view {} queue {} {:?} {:?} {}", v.name, v.queue, v.condition, v.order, v.implicit));
            }
            out.extend(t.workbins.iter().map(|w| format!("workbin {} {:?}", w.name, w.kind)));
            out.extend(t.agents.iter().map(|a| format!("agent {a:?}")));
            out.extend(t.places.iter().map(|p| format!("place {}", p.name)));
            out.push(format!("groups {:?}", t.groups));
        }
        out.push(format!("handled-at-restart {:?}", c.handled_at_restart_workbin));
        out
    }

    #[test]
    fn the_commit_delay_is_checked_and_read() {
        let ok = Config::parse("[settings]\ndatabase-commit-delay-ms = 1.5\n", "delay.toml").unwrap();
        assert_eq!(ok.settings.database_commit_delay_ms, 1.5);
        assert_eq!(Config::embedded_default().settings.database_commit_delay_ms, 1.0);
        let err = Config::parse("[settings]\ndatabase-commit-delay-ms = 1001\n", "delay.toml").unwrap_err();
        assert_eq!(err.0, "delay.toml:2: [settings] database-commit-delay-ms must be 0 to 1000 milliseconds");
    }

    #[test]
    fn the_documented_embedded_default_is_the_embedded_default() {
        let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"));
        let section = &doc[doc.find("## The embedded default").expect("section")..];
        let start = section.find("```toml").expect("a toml block") + "```toml".len();
        let text = &section[start..start + section[start..].find("```").expect("block end")];
        let file = Config::parse(text, "docs/configuration.md").unwrap();
        let default = Config::embedded_default();
        assert_eq!(shape(&file.catalog), shape(&default.catalog));
        assert_eq!(format!("{:?}", file.server), format!("{:?}", default.server));
        let (a, b) = (&file.settings, &default.settings);
        assert_eq!(a.dbprotocol.get_ref(), b.dbprotocol.get_ref());
        assert_eq!(a.connection_string, b.connection_string);
        assert_eq!(a.number_of_database_connections.get_ref(), b.number_of_database_connections.get_ref());
        assert_eq!(a.database_batch_size.get_ref(), b.database_batch_size.get_ref());
        assert_eq!(a.insert_strategy.is_none(), b.insert_strategy.is_none());
        assert_eq!(a.database_commit_delay_ms, b.database_commit_delay_ms);
        assert_eq!(a.routing_timeout, b.routing_timeout);
        assert_eq!(a.pull_hold_timeout, b.pull_hold_timeout);
        assert_eq!(a.max_interactions_per_snapshot, b.max_interactions_per_snapshot);
        assert_eq!(a.reporting_replay_events, b.reporting_replay_events);
        assert_eq!(a.max_properties_per_interaction, b.max_properties_per_interaction);
        assert_eq!(a.find_client_types, b.find_client_types);
        assert_eq!(a.snapshot_client_types, b.snapshot_client_types);
        assert_eq!(format!("{:?}", a.agent_params()), format!("{:?}", b.agent_params()));
        assert_eq!(format!("{:?}", file.cluster), format!("{:?}", default.cluster));
        assert!(file.clients.is_empty());
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(*c.settings.number_of_database_connections.get_ref(), 5);
        assert!(c.catalog.tenant("default").is_some());
    }

    #[test]
    fn the_management_listener_defaults_to_loopback_on_the_client_port_plus_1000() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.server.management_addr(), Some("127.0.0.1:8120".parse().unwrap()));
        let c = Config::parse("[server]\nlisten = \"0.0.0.0:0\"\n", "t.toml").unwrap();
        assert_eq!(c.server.management_addr(), Some("127.0.0.1:0".parse().unwrap()));
        let c = Config::parse("[server]\nlisten = \"0.0.0.0:65000\"\n", "t.toml").unwrap();
        assert_eq!(c.server.management_addr(), Some("127.0.0.1:0".parse().unwrap()), "past the last port");
        let c = Config::parse("[server]\nmanagement-listen = \"off\"\n", "t.toml").unwrap();
        assert_eq!(c.server.management_addr(), None);
        let c = Config::parse("[server]\nmanagement-listen = \"0.0.0.0:9100\"\n", "t.toml").unwrap();
        assert_eq!(c.server.management_addr(), Some("0.0.0.0:9100".parse().unwrap()));
        let e = Config::parse("[server]\nmanagement-listen = \"x\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("neither \"off\" nor an address"), "{e}");
    }

    #[test]
    fn tls_options_go_together() {
        let c = Config::parse(
            "[server]\ntls-listen = \"127.0.0.1:7443\"\ntls-certificate = \"c.pem\"\ntls-key = \"k.pem\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.server.tls_listen, Some("127.0.0.1:7443".parse().unwrap()));
        let e = Config::parse("[server]\ntls-listen = \"127.0.0.1:7443\"\n", "t.toml").unwrap_err().to_string();
        assert_eq!(e, "t.toml:2: [server] tls-listen needs tls-certificate and tls-key");
        let e =
            Config::parse("[server]\nlisten = \"0.0.0.0:1\"\ntls-key = \"k.pem\"\n", "t.toml").unwrap_err().to_string();
        assert_eq!(e, "t.toml:3: [server] tls-key is set but tls-listen is not");
        let e = Config::parse("[server]\ntls-listen = \"x\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("'x' is not an address"), "{e}");
    }

    #[test]
    fn logger_settings_turn_the_event_log_on_with_their_defaults_and_filters() {
        assert!(Config::parse("", "t.toml").unwrap().logger.is_none(), "off unless the section is there");
        let c = Config::parse("[logger-settings]\n", "t.toml").unwrap();
        let l = c.logger.expect("on");
        let cfg = l.storage_config(true);
        assert_eq!((cfg.batch_size, cfg.storing_timeout.as_millis(), cfg.max_queue_size), (500, 1000, 1_000_000));
        assert!(cfg.connection_string.is_none() && cfg.filter.event_types.is_none() && cfg.create_schema);
        let text = "[logger-settings]\nconnection-string = \"DSN=log\"\nbatch-size = 50\nstoring-timeout = 20\n\
                    event-types = [\"eventagentlogin\", \"EventProcessingStopped\"]\nmedia-types = [\"chat\"]\n";
        let cfg = Config::parse(text, "t.toml").unwrap().logger.unwrap().storage_config(false);
        assert_eq!(cfg.connection_string.as_deref(), Some("DSN=log"));
        assert_eq!((cfg.batch_size, cfg.storing_timeout.as_millis()), (50, 20));
        use ixn_shard::proto::msg_type::{EVENT_AGENT_LOGIN, EVENT_PROCESSING_STOPPED};
        assert_eq!(cfg.filter.event_types, Some(vec![EVENT_AGENT_LOGIN, EVENT_PROCESSING_STOPPED]));
        assert_eq!(cfg.filter.media_types, Some(vec!["chat".to_string()]));
        let e = Config::parse("[logger-settings]\nevent-types = [\"EventNope\"]\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:") && e.0.contains("'EventNope' is not a reporting event"), "{}", e.0);
        let e = Config::parse("[logger-settings]\n\nbatch-size = 0\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:3:") && e.0.contains("batch-size"), "{}", e.0);
        let e = Config::parse("[logger-settings]\ndelivery-protocol = \"kafka\"\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:"), "{}", e.0);
        let e = Config::parse("[logger-settings]\nstoring-delay = 5\n", "x.toml").unwrap_err();
        assert!(e.0.contains("storing-delay"), "{}", e.0);
    }

    #[test]
    fn unknown_option_names_file_and_line() {
        let e = Config::parse("[server]\nnode-id = 2\nlisten-port = 5\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:3:"), "{}", e.0);
        assert!(e.0.contains("listen-port"), "{}", e.0);
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = Config::parse("[server]\n\ncores = \"3-1\"\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:3:") && e.0.contains("backwards"), "{}", e.0);
        let e = Config::parse("[settings]\ndbprotocol = \"db-server\"\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:"), "{}", e.0);
        let e = Config::parse("[settings]\nnumber-of-database-connections = 0\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:"), "{}", e.0);
    }

    #[test]
    fn scan_client_types_are_read_and_checked() {
        let c = Config::parse("[settings]\nsnapshot-client-types = [\"operator\", \"routing-engine\"]\n", "x.toml")
            .unwrap();
        let t = c.settings.snapshot_client_types;
        assert!(t.contains(ClientType::Operator) && t.contains(ClientType::RoutingEngine));
        assert!(!t.contains(ClientType::AgentDesktop));
        assert_eq!(c.settings.find_client_types, ClientTypes::all());
        let e = Config::parse("[settings]\n\nfind-client-types = [\"desk\"]\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:3:") && e.0.contains("unknown client type 'desk'"), "{}", e.0);
        let e = Config::parse("[settings]\nmax-properties-per-interaction = 0\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:"), "{}", e.0);
    }

    #[test]
    fn tenants_queues_and_next_links_are_checked() {
        let ok = r#"
[[tenant]]
name = "acme"
media-types = { chat = true, voice = false }
[[tenant.business-process]]
name = "bp"
[[tenant.business-process.queue]]
name = "in"
next = "out"
[[tenant.business-process.queue]]
name = "out"
"#;
        let c = Config::parse(ok, "t.toml").unwrap();
        let t = c.catalog.tenant_at(c.catalog.tenant("acme").unwrap());
        assert_eq!(t.queues[t.queue("in").unwrap() as usize].next, t.queue("out"));
        let bad = ok.replace("next = \"out\"", "next = \"nowhere\"");
        let e = Config::parse(&bad, "t.toml").unwrap_err();
        assert!(e.0.starts_with("t.toml:9:") && e.0.contains("nowhere"), "{}", e.0);
    }

    #[test]
    fn checks_after_parsing_name_their_line() {
        let e = Config::parse("[server]\nnode-id = 2\nmax-frame-size = 4\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:3:") && e.0.contains("max-frame-size"), "{}", e.0);
        let e = Config::parse("[server]\nmax-connections = 0\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:"), "{}", e.0);
        let e = Config::parse("[server]\nmax-shard-queue = 0\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:") && e.0.contains("max-shard-queue"), "{}", e.0);
        let e = Config::parse("[server]\ntcp-keepalive = 86401\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:") && e.0.contains("tcp-keepalive"), "{}", e.0);
        let e = Config::parse("[server]\nwrite-timeout = 86401\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:") && e.0.contains("write-timeout"), "{}", e.0);
        let two = "[[client]]\nname = \"a\"\ntype = \"proxy\"\npassword = \"p\"\n";
        let e = Config::parse(&format!("{two}{two}"), "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:6:") && e.0.contains("twice"), "{}", e.0);
    }

    #[test]
    fn views_parse_and_bad_views_name_their_line() {
        let ok = r#"
[[tenant]]
name = "acme"
media-types = { chat = true }
[[tenant.business-process]]
name = "bp"
[[tenant.business-process.queue]]
name = "in"
[[tenant.business-process.queue.view]]
name = "vip-chat"
condition = "media_type = 'chat' AND segment = 'vip'"
order = "priority DESC, submitted_at"
"#;
        let c = Config::parse(ok, "v.toml").unwrap();
        let t = c.catalog.tenant_at(0);
        let v = t.view("vip-chat").unwrap();
        assert_eq!((v.queue, v.order.len()), (t.queue("in").unwrap(), 2));
        let bad = ok.replace("segment = 'vip'", "segment == 'vip'");
        let e = Config::parse(&bad, "v.toml").unwrap_err();
        assert!(e.0.starts_with("v.toml:11:") && e.0.contains("vip-chat") && e.0.contains("character"), "{}", e.0);
        let bad = ok.replace("submitted_at\"", "submitted_at sideways\"");
        let e = Config::parse(&bad, "v.toml").unwrap_err();
        assert!(e.0.starts_with("v.toml:12:"), "{}", e.0);
        let d = Config::embedded_default();
        assert!(d.catalog.tenant_at(0).view("inbound-by-priority").is_some());
    }

    #[test]
    fn agent_settings_default_to_the_vendor_values() {
        let c = Config::parse("", "t.toml").unwrap();
        let p = c.settings.agent_params();
        assert_eq!(p.delivering_timeout_ms, 30_000);
        assert_eq!(p.handling_timeout_ms, 10_800_000);
        assert!(!p.not_ready_on_invitation_timeout);
        assert_eq!(p.login_session_timeout_ms, 1_440_000);
        assert_eq!(p.multiple_connections, MultipleConnections::Allow);
        assert!(p.agent_login_control);
        assert_eq!(p.agent_seats, u32::MAX);
        assert_eq!(c.catalog.handled_at_restart_workbin, None);
        let d = AgentParams::default();
        assert_eq!(format!("{p:?}"), format!("{d:?}"));
        assert_eq!(format!("{:?}", Config::embedded_default().settings.agent_params()), format!("{d:?}"));
    }

    #[test]
    fn agent_settings_take_good_values() {
        let text = "[settings]\ndelivering-timeout = 2.5\nhandling-timeout = 600\n\
                    not-ready-on-invitation-timeout = true\nlogin-session-timeout = 0\n\
                    allow-multiple-agent-connections = \"force-logout\"\nagent-login-control = false\n\
                    agent-seats = 25\nhandled-at-restart = \"queue\"\n";
        let c = Config::parse(text, "t.toml").unwrap();
        let p = c.settings.agent_params();
        assert_eq!(p.delivering_timeout_ms, 2_500);
        assert_eq!(p.handling_timeout_ms, 600_000);
        assert!(p.not_ready_on_invitation_timeout);
        assert_eq!(p.login_session_timeout_ms, 0);
        assert_eq!(p.multiple_connections, MultipleConnections::ForceLogout);
        assert!(!p.agent_login_control);
        assert_eq!(p.agent_seats, 25);
        assert_eq!(c.catalog.handled_at_restart_workbin, None);
        let p = Config::parse("[settings]\nagent-seats = 0\nlogin-session-timeout = 0.25\n", "t.toml")
            .unwrap()
            .settings
            .agent_params();
        assert_eq!((p.agent_seats, p.login_session_timeout_ms), (0, 250));
    }

    #[test]
    fn allow_multiple_agent_connections_takes_booleans_and_strings() {
        for (value, want) in [
            ("true", MultipleConnections::Allow),
            ("false", MultipleConnections::Refuse),
            ("\"true\"", MultipleConnections::Allow),
            ("\"false\"", MultipleConnections::Refuse),
            ("\"force-logout\"", MultipleConnections::ForceLogout),
        ] {
            let text = format!("[settings]\nallow-multiple-agent-connections = {value}\n");
            let c = Config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(c.settings.allow_multiple_agent_connections, want, "{value}");
        }
        for value in ["\"yes\"", "1", "\"Force-Logout\""] {
            let text = format!("[settings]\n\nallow-multiple-agent-connections = {value}\n");
            let e = Config::parse(&text, "t.toml").unwrap_err();
            assert!(
                e.0.starts_with("t.toml:3:") && e.0.contains("allow-multiple-agent-connections"),
                "{value}: {}",
                e.0
            );
        }
    }

    #[test]
    fn bad_agent_settings_name_their_line() {
        for (line, what) in [
            ("delivering-timeout = 0", "delivering-timeout must be more than 0"),
            ("delivering-timeout = -1.5", "delivering-timeout must be more than 0"),
            ("delivering-timeout = nan", "delivering-timeout must be more than 0"),
            ("handling-timeout = 0", "handling-timeout must be more than 0"),
            ("handling-timeout = 2e9", "handling-timeout must be more than 0"),
            ("login-session-timeout = -1", "login-session-timeout must be 0 to"),
            ("agent-seats = -1", "expected u32"),
            ("agent-seats = \"ten\"", "invalid type"),
            ("agent-login-control = \"yes\"", "invalid type"),
            ("not-ready-on-invitation-timeout = 1", "invalid type"),
            ("handled-at-restart = \"stay\"", "must be \"queue\" or \"workbin:NAME\""),
            ("handled-at-restart = \"workbin:\"", "must name a workbin"),
            ("handled-at-restart = \"workbin:nope\"", "no tenant has a workbin 'nope'"),
            ("handled-at-restart = \"workbin:team\"", "has type \"agent-group\", not \"agent\""),
        ] {
            let text = format!("[settings]\nrouting-timeout = 10\n{line}\n");
            let e = Config::parse(&text, "x.toml").unwrap_err();
            assert!(e.0.starts_with("x.toml:3:") && e.0.contains(what), "{line}: {}", e.0);
        }
        let e = Config::parse("[settings]\nhandling-timeout-secs = 5\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:2:") && e.0.contains("unknown field"), "{}", e.0);
    }

    #[test]
    fn handled_at_restart_names_an_agent_workbin() {
        let c = Config::parse("[settings]\nhandled-at-restart = \"workbin:personal\"\n", "t.toml").unwrap();
        assert_eq!(c.catalog.handled_at_restart_workbin.as_deref(), Some("personal"));
        // Enough that one tenant has it with type agent.
        let two = r#"
[settings]
handled-at-restart = "workbin:mine"
[[tenant]]
name = "a"
media-types = { chat = true }
[[tenant.business-process]]
name = "bp"
[[tenant.business-process.queue]]
name = "in"
[[tenant.workbin]]
name = "mine"
type = "agent"
[[tenant]]
name = "b"
media-types = { chat = true }
[[tenant.business-process]]
name = "bp"
[[tenant.business-process.queue]]
name = "in"
"#;
        let c = Config::parse(two, "t.toml").unwrap();
        assert_eq!(c.catalog.handled_at_restart_workbin.as_deref(), Some("mine"));
        let e = Config::parse(&two.replace("type = \"agent\"", "type = \"place\""), "t.toml").unwrap_err();
        assert!(e.0.starts_with("t.toml:3:") && e.0.contains("\"place\""), "{}", e.0);
    }

    const STRATEGY_BASE: &str = r#"
[[tenant]]
name = "acme"
media-types = { chat = true }
[[tenant.business-process]]
name = "bp"
[[tenant.business-process.queue]]
name = "in"
strategy = "longest-idle"
[[tenant.business-process.queue.view]]
name = "in-first"
[[tenant.business-process.queue.view]]
name = "in-second"
order = "priority DESC"
[[tenant.business-process.queue]]
name = "out"
"#;

    #[test]
    fn queue_strategies_parse() {
        let c = Config::parse(STRATEGY_BASE, "s.toml").unwrap();
        let t = c.catalog.tenant_at(0);
        let q = &t.queues[t.queue("in").unwrap() as usize];
        let s = q.strategy.as_ref().expect("a strategy");
        assert_eq!(t.views[s.view as usize].name, "in-first");
        assert_eq!(s.skills_property, ixn_shard::catalog::DEFAULT_SKILLS_PROPERTY);
        assert!(t.queues[t.queue("out").unwrap() as usize].strategy.is_none());

        let named = STRATEGY_BASE.replace(
            "strategy = \"longest-idle\"\n",
            "strategy = \"longest-idle\"\nstrategy-view = \"in-second\"\nskills-property = \"Skills\"\n",
        );
        let c = Config::parse(&named, "s.toml").unwrap();
        let t = c.catalog.tenant_at(0);
        let s = t.queues[t.queue("in").unwrap() as usize].strategy.as_ref().unwrap();
        assert_eq!((t.views[s.view as usize].name.as_str(), s.skills_property.as_str()), ("in-second", "Skills"));

        // A queue without configured views: its implicit view.
        let implicit = STRATEGY_BASE.replace("name = \"out\"\n", "name = \"out\"\nstrategy = \"longest-idle\"\n");
        let c = Config::parse(&implicit, "s.toml").unwrap();
        let t = c.catalog.tenant_at(0);
        let s = t.queues[t.queue("out").unwrap() as usize].strategy.as_ref().unwrap();
        assert!(t.views[s.view as usize].implicit);
        assert_eq!(t.views[s.view as usize].name, "out");

        let d = Config::embedded_default();
        let t = d.catalog.tenant_at(0);
        let s = t.queues[t.queue("inbound").unwrap() as usize].strategy.as_ref().unwrap();
        assert_eq!(t.views[s.view as usize].name, "inbound-by-priority");
    }

    #[test]
    fn bad_strategies_name_their_line() {
        let cases = [
            // (replace what, with what, line, message part)
            (
                "strategy = \"longest-idle\"\n",
                "strategy = \"round-robin\"\n",
                9,
                "'round-robin' is not a built-in strategy",
            ),
            (
                "strategy = \"longest-idle\"\n",
                "strategy = \"longest-idle\"\nstrategy-view = \"nowhere\"\n",
                10,
                "strategy-view names unknown view 'nowhere'",
            ),
            (
                "name = \"out\"\n",
                "name = \"out\"\nstrategy = \"longest-idle\"\nstrategy-view = \"in-first\"\n",
                18,
                "strategy-view 'in-first' is a view of another queue",
            ),
            (
                "strategy = \"longest-idle\"\n",
                "strategy = \"longest-idle\"\nskills-property = \"\"\n",
                10,
                "skills-property must not be empty",
            ),
            ("strategy = \"longest-idle\"\n", "strategy-view = \"in-first\"\n", 9, "strategy-view needs strategy"),
            ("strategy = \"longest-idle\"\n", "skills-property = \"Skills\"\n", 9, "skills-property needs strategy"),
            ("strategy = \"longest-idle\"\n", "strategy = 1\n", 9, "invalid type"),
            ("strategy = \"longest-idle\"\n", "strategy-name = \"longest-idle\"\n", 9, "unknown field"),
        ];
        for (from, to, line, what) in cases {
            let text = STRATEGY_BASE.replace(from, to);
            assert_ne!(text, STRATEGY_BASE);
            let e = Config::parse(&text, "s.toml").unwrap_err();
            assert!(e.0.starts_with(&format!("s.toml:{line}:")) && e.0.contains(what), "{to}: {}", e.0);
        }
    }

    #[test]
    fn the_complete_example_parses() {
        let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"));
        let section = &doc[doc.find("## A complete example").expect("section")..];
        let start = section.find("```toml").expect("a toml block") + "```toml".len();
        let text = &section[start..start + section[start..].find("```").expect("block end")];
        let c = Config::parse(text, "docs/configuration.md").unwrap();
        let p = c.settings.agent_params();
        assert_eq!(p.multiple_connections, MultipleConnections::Refuse);
        assert_eq!(c.catalog.handled_at_restart_workbin.as_deref(), Some("agent-drafts"));
        let t = c.catalog.tenant_at(c.catalog.tenant("acme").unwrap());
        assert!(t.queues[t.queue("support-routing").unwrap() as usize].strategy.is_some());
    }

    #[test]
    fn core_lists_parse() {
        assert_eq!(CoreList::parse("0-2,5").unwrap(), CoreList::List(vec![0, 1, 2, 5]));
        assert_eq!(CoreList::parse("all").unwrap(), CoreList::All);
        assert!(CoreList::parse("1,1").is_err());
        assert!(CoreList::parse("x").is_err());
    }
}

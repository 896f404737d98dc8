//! The configuration the fuzzer runs its server with, and the names in it
//! that requests draw from.
//!
//! The configuration is made to reach much of the server: several queues
//! and business processes, views filtered and ordered by fields that change
//! while an interaction lives (`version`, `priority`, properties), two
//! queues with the built-in strategy (one ordered by `version`) and agents
//! with skills, workbins of each kind, a second tenant, configured clients
//! with passwords, searches and snapshots refused to one client type each,
//! and small bounds (frame size, pending requests, output buffer,
//! connections, seats, snapshot size, property keys, every timeout) so
//! that each is reached within seconds. A few settings with several meaningful
//! values are drawn from the seed.

use std::fmt::Write;
use std::path::Path;

use super::rng::Rng;

/// `[server] max-frame-size`: small, so oversize frames and values are cheap.
pub const MAX_FRAME: usize = 65536;
/// `[server] max-pending-requests`: floods reach it.
pub const MAX_PENDING: usize = 32;
/// `[settings] pull-hold-timeout`, milliseconds.
pub const PULL_HOLD_MS: u64 = 200;
/// `[settings] max-properties-per-interaction`: submissions and changes
/// with many keys reach it.
pub const MAX_PROPERTIES: usize = 40;
/// Connections each shard accepts (`max-connections` is this times the
/// shard count): the regular connections and the control connections fit,
/// connection floods do not.
pub const CONNECTIONS_PER_SHARD: usize = 48;

/// One configured client per type, all with passwords.
pub const CLIENTS: &[(&str, &str, &str)] = &[
    ("fz-media", "media-server", "media-pw"),
    ("fz-desktop", "agent-desktop", "desktop-pw"),
    ("fz-router", "routing-engine", "router-pw"),
    ("fz-report", "reporting-engine", "report-pw"),
    ("fz-proxy", "proxy", "proxy-pw"),
    ("fz-operator", "operator", "operator-pw"),
    ("fz-control", "operator", "control-pw"),
];

pub struct Tenant {
    pub name: &'static str,
    /// Enabled media types.
    pub media: &'static [&'static str],
    /// Configured but disabled.
    pub disabled_media: &'static [&'static str],
    pub queues: &'static [&'static str],
    /// Every view, implicit ones included.
    pub views: &'static [&'static str],
    pub workbins: &'static [&'static str],
    /// (login id, its own place).
    pub agents: &'static [(&'static str, &'static str)],
    pub places: &'static [&'static str],
}

pub const TENANTS: &[Tenant] = &[
    Tenant {
        name: "default",
        media: &["chat", "email", "sms"],
        disabled_media: &["voice"],
        queues: &["inbound", "work", "mail", "done", "probe"],
        views: &[
            "inbound-by-version",
            "inbound-vip",
            "work-by-version",
            "work-en",
            "work-fifo",
            "mail",
            "done",
            "probe",
        ],
        workbins: &["personal", "team", "desk", "groupdesk"],
        agents: &[
            ("agent1", "place1"),
            ("agent2", "place2"),
            ("agent3", "place3"),
            ("agent4", "place4"),
            ("agent5", "place5"),
            ("agent6", "place6"),
        ],
        places: &["place1", "place2", "place3", "place4", "place5", "place6", "spare"],
    },
    Tenant {
        name: "t2",
        media: &["chat"],
        disabled_media: &[],
        queues: &["t2-in", "t2-done"],
        views: &["t2-by-prio", "t2-done"],
        workbins: &["t2-bin"],
        agents: &[("t2a1", "t2p1"), ("t2a2", "t2p2")],
        places: &["t2p1", "t2p2"],
    },
];

/// The queue the control connections submit their probes to.
pub const PROBE_QUEUE: &str = "probe";

/// Settings drawn from the seed, printed at start.
#[derive(Clone, Debug)]
pub struct Variant {
    pub multiple_connections: &'static str,
    pub login_control: bool,
    pub not_ready_on_timeout: bool,
    pub login_session_timeout: &'static str,
    pub batch_size: u32,
    /// The event log on (in the main database): every change's events go
    /// through the outbox, and cursors of earlier runs resume from it.
    pub event_log: bool,
}

const MULTIPLE_CONNECTIONS: [&str; 3] = ["true", "false", "\"force-logout\""];
const LOGIN_SESSION_TIMEOUTS: [&str; 3] = ["0", "1", "3"];

impl Variant {
    pub fn draw(rng: &mut Rng) -> Variant {
        Variant {
            multiple_connections: MULTIPLE_CONNECTIONS[rng.index(MULTIPLE_CONNECTIONS.len())],
            login_control: rng.chance(0.5),
            not_ready_on_timeout: rng.chance(0.5),
            login_session_timeout: LOGIN_SESSION_TIMEOUTS[rng.index(LOGIN_SESSION_TIMEOUTS.len())],
            batch_size: *rng.pick(&[1, 16, 1000]),
            event_log: rng.chance(0.5),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "allow-multiple-agent-connections = {}, agent-login-control = {}, not-ready-on-invitation-timeout = {}, login-session-timeout = {}, database-batch-size = {}, event log {}",
            self.multiple_connections,
            self.login_control,
            self.not_ready_on_timeout,
            self.login_session_timeout,
            self.batch_size,
            if self.event_log { "on" } else { "off" }
        )
    }
}

/// The whole configuration file for `shards` shards (cores 0..shards).
pub fn config_text(data_dir: &Path, shards: usize, v: &Variant) -> String {
    let mut s = String::new();
    let cores = if shards == 1 { "0".to_string() } else { format!("0-{}", shards - 1) };
    let _ = write!(
        s,
        r#"# Written by ixn-bench fuzz.
[server]
application-name = "ixn-fuzz"
listen = "127.0.0.1:0"
cores = "{cores}"
data-dir = "{data}"
max-frame-size = {MAX_FRAME}
max-pending-requests = {MAX_PENDING}
max-output-buffer = 262144
shutdown-timeout = 5
listen-backlog = 64
max-connections = {maxconn}
max-shard-queue = 256
tcp-keepalive = 5
write-timeout = 5

[settings]
database-batch-size = {batch}
routing-timeout = 2.5
pull-hold-timeout = {hold}
max-interactions-per-snapshot = 16
max-properties-per-interaction = {MAX_PROPERTIES}
find-client-types = ["media-server", "routing-engine", "reporting-engine", "proxy", "operator"]
snapshot-client-types = ["agent-desktop", "routing-engine", "reporting-engine", "proxy", "operator"]
delivering-timeout = 1.5
handling-timeout = 4
not-ready-on-invitation-timeout = {nrt}
login-session-timeout = {lst}
allow-multiple-agent-connections = {multi}
agent-login-control = {alc}
agent-seats = 7
handled-at-restart = "queue"

[cluster-settings]
media-types = ["chat", "email", "sms"]
enable-submit = true
"#,
        data = data_dir.display().to_string().replace('\\', "\\\\").replace('"', "\\\""),
        maxconn = CONNECTIONS_PER_SHARD * shards,
        batch = v.batch_size,
        hold = PULL_HOLD_MS as f64 / 1000.0,
        nrt = v.not_ready_on_timeout,
        lst = v.login_session_timeout,
        multi = v.multiple_connections,
        alc = v.login_control,
    );
    if v.event_log {
        s.push_str("\n[logger-settings]\nstoring-timeout = 50\nbatch-size = 100\n");
    }
    for (name, kind, password) in CLIENTS {
        let _ = write!(s, "\n[[client]]\nname = \"{name}\"\ntype = \"{kind}\"\npassword = \"{password}\"\n");
    }
    s.push_str(TENANT_DEFAULT);
    let levels = [8, 5, 3, 9, 2, 6];
    for (i, (agent, _)) in TENANTS[0].agents.iter().enumerate() {
        let billing = if i % 2 == 0 { ", billing = 4" } else { "" };
        let capacity = if i == 5 { "{ chat = 2 }" } else { "{ chat = 2, email = 1, sms = 1 }" };
        let _ = write!(
            s,
            "\n[[tenant.agent]]\nlogin-id = \"{agent}\"\nskills = {{ english = {}{billing} }}\ncapacity = {capacity}\ngroups = [\"g{}\"]\n",
            levels[i],
            i % 2
        );
    }
    for place in TENANTS[0].places {
        let _ = write!(s, "\n[[tenant.place]]\nname = \"{place}\"\n");
    }
    s.push_str(TENANT_T2);
    s
}

const TENANT_DEFAULT: &str = r#"
[[tenant]]
name = "default"
media-types = { chat = true, email = true, sms = true, voice = false }

[[tenant.business-process]]
name = "front"

[[tenant.business-process.queue]]
name = "inbound"
next = "work"
strategy = "longest-idle"
strategy-view = "inbound-by-version"

[[tenant.business-process.queue.view]]
name = "inbound-by-version"
order = "version, priority DESC"

[[tenant.business-process.queue.view]]
name = "inbound-vip"
condition = "segment = 'vip' OR priority >= 5"
order = "score DESC, version DESC"

[[tenant.business-process.queue]]
name = "work"
next = "done"

[[tenant.business-process.queue.view]]
name = "work-by-version"
order = "version DESC"

[[tenant.business-process.queue.view]]
name = "work-en"
condition = "lang = 'en' AND version < 6"
order = "priority DESC, lang"

[[tenant.business-process.queue.view]]
name = "work-fifo"

[[tenant.business-process]]
name = "back"

[[tenant.business-process.queue]]
name = "mail"
next = "done"
strategy = "longest-idle"
skills-property = "Skills"

[[tenant.business-process.queue]]
name = "done"

[[tenant.business-process.queue]]
name = "probe"

[[tenant.workbin]]
name = "personal"
type = "agent"

[[tenant.workbin]]
name = "team"
type = "agent-group"

[[tenant.workbin]]
name = "desk"
type = "place"

[[tenant.workbin]]
name = "groupdesk"
type = "place-group"
"#;

const TENANT_T2: &str = r#"
[[tenant]]
name = "t2"
media-types = { chat = true }

[[tenant.business-process]]
name = "t2-bp"

[[tenant.business-process.queue]]
name = "t2-in"
next = "t2-done"
strategy = "longest-idle"

[[tenant.business-process.queue.view]]
name = "t2-by-prio"
order = "priority DESC, version"

[[tenant.business-process.queue]]
name = "t2-done"

[[tenant.workbin]]
name = "t2-bin"
type = "agent"

[[tenant.agent]]
login-id = "t2a1"
skills = { english = 4 }
capacity = { chat = 1 }

[[tenant.agent]]
login-id = "t2a2"
capacity = { chat = 3 }

[[tenant.place]]
name = "t2p1"

[[tenant.place]]
name = "t2p2"
"#;

//! Live reconfiguration (SIGHUP, or `POST /reload` on the management
//! listener, which `ixnctl reload` uses): the `[[client]]` entries and the
//! agents, places, queues and views of the tenants.
//!
//! A reload reads the configuration file again and checks all of it as a
//! start would; a file that fails any check is refused with its file:line
//! message, and the running configuration stays. The clients are the part
//! reloaded: added clients may register at once, a changed password or
//! tenant list holds for the next registrations (and the tenant list for
//! the sessions already registered, at once), and a removed client's
//! sessions end (a connection whose own registration names it is closed).
//! The tenants' agents, places, queues and views are laid over the running
//! catalog so every object keeps its index (ixn_shard::evolve): added ones
//! work at once, changed ones hold at once, removed agents (and agents on
//! removed places) are logged out, and interactions in a removed queue stay
//! there, reachable by id. Any other change in the file (server, settings,
//! the tenants themselves, their media types and workbins) is refused:
//! those still need a restart, and the reload says what differs.
//!
//! The TLS certificate, key and client CA files (same paths) are read
//! again: new connections of the TLS listener use them, those already
//! open keep their session.
//!
//! The shards follow a published value (one atomic load per input, the lock
//! only when it changed) and each applies a new one before its next input,
//! so no shard handles a message that names an object it does not know
//! yet: the sender took the value after it was published, and so does the
//! receiver before it reads the message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ixn_shard::catalog::Catalog;
use ixn_shard::versioned::Versioned;

use crate::config::{ClientEntry, Config};

use super::msgid;
use super::notify::Inbox;

/// What the shards run with: the client list, the TLS configuration made
/// from the certificate files, and the catalog. A reload publishes a new
/// one; a shard takes it before its next input.
pub struct Reloaded {
    pub clients: Arc<Vec<ClientEntry>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub catalog: Arc<Catalog>,
}

/// Wakes a shard to take a published reload at once (it would take it
/// before its next input anyway).
pub type ReloadInbox = Inbox<()>;

pub struct Reloader {
    file: Option<PathBuf>,
    /// The file's fixed part as the server started with it.
    fixed: Option<toml::Table>,
    /// Two reloads at once (SIGHUP and the management listener) run one
    /// after the other.
    one_at_a_time: Mutex<()>,
    /// What the shards follow.
    pub board: Arc<Versioned<Reloaded>>,
    /// The catalog alone, for the event log's writers and the management
    /// listener: published before the shards', so that they name
    /// everything a shard may have made under the new one.
    pub catalog: Arc<Versioned<Catalog>>,
    wake: Vec<Arc<ReloadInbox>>,
    /// Per shard: the generation of `board` it has applied with every
    /// view index built.
    pub built: Arc<[AtomicU64]>,
}

/// How long a reload waits for the shards to build the indexes of the views
/// it adds before it gives up (the views then stay unusable, nothing else
/// changes; a later reload finds their indexes built).
const BUILD_LIMIT: Duration = Duration::from_secs(600);

impl Reloader {
    /// `catalog`: the catalog in force (the event log's writers already
    /// follow it).
    pub fn new(
        config: &Config,
        catalog: Arc<Versioned<Catalog>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        wake: Vec<Arc<ReloadInbox>>,
    ) -> Reloader {
        let fixed =
            config.file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).and_then(|t| Config::fixed_part(&t));
        let first = Reloaded { clients: Arc::new(config.clients.clone()), tls, catalog: catalog.get() };
        Reloader {
            file: config.file.clone(),
            fixed,
            one_at_a_time: Mutex::new(()),
            board: Arc::new(Versioned::new(Arc::new(first))),
            catalog,
            built: wake.iter().map(|_| AtomicU64::new(0)).collect(),
            wake,
        }
    }

    /// Reads and checks the file; applies its clients, agents, places,
    /// queues and views. Ok: what changed. Err: why nothing did.
    pub fn reload(&self) -> Result<String, String> {
        let Some(file) = &self.file else {
            return Err("the server runs on the embedded default: there is no configuration file to reload".into());
        };
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read the configuration: {e}", file.display()))?;
        let config = Config::parse(&text, &file.display().to_string()).map_err(|e| e.to_string())?;
        let fixed = Config::fixed_part(&text).ok_or("the file does not parse as TOML")?;
        if let Some(started) = &self.fixed {
            let changed = changed_sections(started, &fixed);
            if !changed.is_empty() {
                return Err(format!(
                    "{}: {} changed since the start: a restart applies that (only [[client]] and the agents, \
                     places, queues and views of [[tenant]] are reloaded; nothing was changed)",
                    file.display(),
                    changed.join(", ")
                ));
            }
        }
        let current = self.board.get();
        let (catalog, evolution) = current
            .catalog
            .evolve(&config.catalog)
            .map_err(|e| format!("{}: {e} (nothing was changed)", file.display()))?;
        // The certificate files are read again (a renewed certificate or
        // key, or CA): a file that does not load refuses the whole reload.
        let tls = super::tls::from_section(&config.server)?;
        let mut summary = describe(&current.clients, &config.clients);
        if evolution.is_empty() {
            summary.push_str("; agents, places, queues and views unchanged");
        } else {
            summary.push_str("; ");
            summary.push_str(&evolution.describe());
        }
        if tls.is_some() {
            summary.push_str("; TLS certificate files read again");
        }
        let catalog = if evolution.is_empty() { current.catalog.clone() } else { Arc::new(catalog) };
        if catalog.adds_views(&current.catalog) {
            // First the added views, hidden, so every shard builds their
            // indexes (in slices) while nothing uses them yet.
            let staged = Arc::new(current.catalog.staged(&catalog));
            self.catalog.publish(staged.clone());
            let reloaded = Reloaded { clients: current.clients.clone(), tls: current.tls.clone(), catalog: staged };
            self.publish(reloaded);
            self.wait_for_views(file)?;
        }
        if !evolution.is_empty() {
            self.catalog.publish(catalog.clone());
        }
        let tls = tls.or_else(|| current.tls.clone());
        self.publish(Reloaded { clients: Arc::new(config.clients), tls, catalog });
        Ok(summary)
    }

    /// Publishes what the shards are to run with, and wakes them.
    fn publish(&self, reloaded: Reloaded) {
        self.board.publish(Arc::new(reloaded));
        for shard in &self.wake {
            shard.push(());
        }
    }

    /// Waits until every shard has applied the last publication and built
    /// the indexes of the views it added.
    fn wait_for_views(&self, file: &std::path::Path) -> Result<(), String> {
        let generation = self.board.generation();
        let started = Instant::now();
        while self.built.iter().any(|b| b.load(Ordering::Acquire) < generation) {
            if started.elapsed() > BUILD_LIMIT {
                return Err(format!(
                    "{}: the shards did not build the indexes of the added views within {} s; nothing else was \
                     changed (reload again to apply it)",
                    file.display(),
                    BUILD_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

/// Reloads on every SIGHUP (a thread of its own); logs the outcome.
pub fn on_sighup(reloader: Arc<Reloader>) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("ixn-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                log_outcome(&reloader.reload(), "SIGHUP");
            }
        })
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    Ok(())
}

pub fn log_outcome(outcome: &Result<String, String>, by: &str) {
    match outcome {
        Ok(summary) => tracing::info!(msg_id = msgid::RELOADED, by, "configuration reloaded: {summary}"),
        Err(why) => tracing::warn!(msg_id = msgid::RELOAD_REFUSED, by, "configuration reload refused: {why}"),
    }
}

/// The top-level keys (sections) whose content differs.
fn changed_sections(a: &toml::Table, b: &toml::Table) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            if matches!(a.get(k).or(b.get(k)), Some(toml::Value::Array(_))) {
                format!("[[{k}]]")
            } else {
                format!("[{k}]")
            }
        })
        .collect()
}

/// "clients: 1 added (x), 1 removed (y), 1 changed (z), 3 unchanged".
pub fn describe(old: &[ClientEntry], new: &[ClientEntry]) -> String {
    let names = |l: &[&ClientEntry]| l.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let added: Vec<&ClientEntry> = new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)).collect();
    let removed: Vec<&ClientEntry> = old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)).collect();
    let changed: Vec<&ClientEntry> =
        new.iter().filter(|n| old.iter().any(|o| o.name == n.name && !same_client(o, n))).collect();
    let unchanged = new.len() - added.len() - changed.len();
    format!(
        "clients reloaded: {} added ({}), {} removed ({}), {} changed ({}), {unchanged} unchanged",
        added.len(),
        names(&added),
        removed.len(),
        names(&removed),
        changed.len(),
        names(&changed)
    )
}

fn same_client(a: &ClientEntry, b: &ClientEntry) -> bool {
    let tenants =
        |c: &ClientEntry| c.tenants.as_ref().map(|l| l.iter().map(|t| t.get_ref().clone()).collect::<Vec<_>>());
    a.client_type == b.client_type && a.password == b.password && tenants(a) == tenants(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_sections_are_named_and_clients_are_not_among_them() {
        let a =
            Config::fixed_part("[server]\nnode-id = 1\n[[client]]\nname = \"a\"\n[[tenant]]\nname = \"t\"\n").unwrap();
        let b =
            Config::fixed_part("[server]\nnode-id = 2\n[[client]]\nname = \"b\"\n[[tenant]]\nname = \"t\"\n").unwrap();
        assert_eq!(changed_sections(&a, &b), vec!["[server]".to_string()]);
        // Tenants are compared by the catalog's evolution, not here.
        let c = Config::fixed_part("[server]\nnode-id = 1\n[[tenant]]\nname = \"u\"\n[settings]\n").unwrap();
        assert_eq!(changed_sections(&a, &c), vec!["[settings]".to_string()]);
        assert!(changed_sections(&a, &a).is_empty());
    }

    #[test]
    fn a_reload_summary_names_what_changed() {
        let parse = |t: &str| Config::parse(t, "t.toml").unwrap().clients;
        let old = parse("[[client]]\nname = \"a\"\ntype = \"operator\"\npassword = \"1\"\n[[client]]\nname = \"b\"\ntype = \"operator\"\npassword = \"1\"\n[[client]]\nname = \"c\"\ntype = \"operator\"\npassword = \"1\"\n");
        let new = parse("[[client]]\nname = \"a\"\ntype = \"operator\"\npassword = \"2\"\n[[client]]\nname = \"c\"\ntype = \"operator\"\npassword = \"1\"\n[[client]]\nname = \"d\"\ntype = \"media-server\"\npassword = \"1\"\n");
        assert_eq!(describe(&old, &new), "clients reloaded: 1 added (d), 1 removed (b), 1 changed (a), 1 unchanged");
    }
}

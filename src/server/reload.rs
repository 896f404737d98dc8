//! Live reconfiguration of the `[[client]]` entries (SIGHUP, or `POST
//! /reload` on the management listener, which `ixnctl reload` uses).
//!
//! A reload reads the configuration file again and checks all of it as a
//! start would; a file that fails any check is refused with its file:line
//! message, and the running configuration stays. The clients are the part
//! reloaded: added clients may register at once, a changed password or
//! tenant list holds for the next registrations (and the tenant list for
//! the sessions already registered, at once), and a removed client's
//! sessions end (a connection whose own registration names it is closed).
//! Any other change in the file (server, settings, tenants, agents,
//! queues, views) is refused: those still need a restart, and the reload
//! says which sections differ.
//!
//! The TLS certificate, key and client CA files (same paths) are read
//! again: new connections of the TLS listener use them, those already
//! open keep their session.
//!
//! The shards hear of the new list through their inbox (lock-free), and
//! each applies it between two inputs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{ClientEntry, Config};

use super::msgid;
use super::notify::Inbox;

/// What a shard is to use from now on: the client list, and the TLS
/// configuration made from the certificate files read again.
#[derive(Clone)]
pub struct Reloaded {
    pub clients: Arc<Vec<ClientEntry>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub type ClientsInbox = Inbox<Reloaded>;

pub struct Reloader {
    file: Option<PathBuf>,
    /// The file's fixed part as the server started with it.
    fixed: Option<toml::Table>,
    clients: Mutex<Arc<Vec<ClientEntry>>>,
    shards: Vec<Arc<ClientsInbox>>,
}

impl Reloader {
    pub fn new(config: &Config, shards: Vec<Arc<ClientsInbox>>) -> Reloader {
        let fixed =
            config.file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).and_then(|t| Config::fixed_part(&t));
        Reloader { file: config.file.clone(), fixed, clients: Mutex::new(Arc::new(config.clients.clone())), shards }
    }

    /// Reads and checks the file; applies its clients. Ok: what changed.
    /// Err: why nothing did.
    pub fn reload(&self) -> Result<String, String> {
        let Some(file) = &self.file else {
            return Err("the server runs on the embedded default: there is no configuration file to reload".into());
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read the configuration: {e}", file.display()))?;
        let config = Config::parse(&text, &file.display().to_string()).map_err(|e| e.to_string())?;
        let fixed = Config::fixed_part(&text).ok_or("the file does not parse as TOML")?;
        if let Some(started) = &self.fixed {
            let changed = changed_sections(started, &fixed);
            if !changed.is_empty() {
                return Err(format!(
                    "{}: only [[client]] entries are reloaded; {} changed since the start: restart to apply that \
                     (nothing was changed)",
                    file.display(),
                    changed.join(", ")
                ));
            }
        }
        // The certificate files are read again (a renewed certificate or
        // key, or CA): a file that does not load refuses the whole reload.
        let tls = super::tls::from_section(&config.server)?;
        let mut current = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = describe(&current, &config.clients);
        if tls.is_some() {
            summary.push_str("; TLS certificate files read again");
        }
        let new = Reloaded { clients: Arc::new(config.clients), tls };
        *current = new.clients.clone();
        for shard in &self.shards {
            shard.push(new.clone());
        }
        Ok(summary)
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
        let c = Config::fixed_part("[server]\nnode-id = 1\n[[tenant]]\nname = \"u\"\n[settings]\n").unwrap();
        assert_eq!(changed_sections(&a, &c), vec!["[settings]".to_string(), "[[tenant]]".to_string()]);
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

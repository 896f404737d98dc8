//! Crash test for the agent half of the lifecycle: interactions
//! queued, offered to agents and being handled when the server is killed
//! with SIGKILL are all there after a restart, each once: the queued and
//! the offered ones in their queue, the handled ones where
//! `handled-at-restart` says (their queue by default, or the handling
//! agent's workbin).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{engines, two_cores, write_config_with, Engine, Server, TempDir};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode};
use ixn_shard::{KvList, Value};

const TENANT: &str = r#"
[[tenant]]
name = "default"
media-types = { chat = true }

[[tenant.business-process]]
name = "default"

[[tenant.business-process.queue]]
name = "inbound"
strategy = "longest-idle"

[[tenant.workbin]]
name = "personal"
type = "agent"
"#;

const AGENTS: usize = 4;
const CAPACITY: usize = 2;
const SUBMITTED: usize = 24;

fn config(dir: &TempDir, engine: &Engine, settings: &str) -> std::path::PathBuf {
    let mut extra = TENANT.to_string();
    for i in 0..AGENTS {
        extra.push_str(&format!("\n[[tenant.agent]]\nlogin-id = \"a{i}\"\ncapacity = {{ chat = {CAPACITY} }}\n"));
        extra.push_str(&format!("\n[[tenant.place]]\nname = \"p{i}\"\n"));
    }
    write_config_with(&dir.0, engine, two_cores(), settings, &extra)
}

/// Logs the agents in, fills the queue, and lets each agent accept one
/// of its two invitations: returns (handled id -> agent, invited ids,
/// all submitted ids).
fn load(s: &Server) -> (BTreeMap<String, String>, Vec<String>, Vec<String>, Vec<Client>) {
    let mut desks = Vec::new();
    for i in 0..AGENTS {
        let mut d = s.client_as(ClientType::AgentDesktop, &format!("desk{i}"));
        d.login(&format!("a{i}"), &format!("p{i}"), &[]).unwrap();
        d.ready().unwrap();
        desks.push(d);
    }
    let mut ms = s.media_server();
    let ids: Vec<String> = (0..SUBMITTED)
        .map(|_| ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new())).unwrap())
        .collect();
    let mut handled = BTreeMap::new();
    let mut invited = Vec::new();
    for (i, d) in desks.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < CAPACITY {
            let f =
                d.wait_event(msg_type::EVENT_INVITE, Duration::from_secs(10)).unwrap().expect("invited up to capacity");
            got.push((f.get_str(attr::INTERACTION_ID).unwrap().to_string(), f.get_int(attr::TICKET).unwrap() as u64));
        }
        let (id, ticket) = got.remove(0);
        d.accept(&id, Some(ticket)).unwrap();
        handled.insert(id, format!("a{i}"));
        invited.extend(got.into_iter().map(|(id, _)| id));
    }
    (handled, invited, ids, desks)
}

/// Every interaction live after the restart, by id: (queue or workbin, owner).
fn live(s: &Server) -> BTreeMap<String, (String, Option<String>)> {
    let mut op = s.client();
    let (found, total) = op.find("priority >= 0", 10_000).unwrap();
    assert_eq!(found.len() as u64, total);
    let mut out = BTreeMap::new();
    for l in found {
        let id = l.get("id").and_then(Value::as_str).unwrap().to_string();
        let place = l.get("queue").or_else(|| l.get("workbin")).and_then(Value::as_str).unwrap().to_string();
        let owner = l.get("workbin_owner").and_then(Value::as_str).map(str::to_string);
        assert!(l.get("locked_by").is_none(), "{id} is still locked after the restart");
        assert!(out.insert(id.clone(), (place, owner)).is_none(), "{id} listed twice");
    }
    out
}

#[test]
fn queued_invited_and_handled_interactions_survive_kill_9() {
    for engine in engines("crash-agents") {
        let dir = TempDir::new("crash-agents");
        let cfg = config(&dir, &engine, "");
        let mut s = Server::start(&cfg);
        let (handled, invited, ids, desks) = load(&s);
        assert_eq!(handled.len(), AGENTS);
        assert_eq!(invited.len(), AGENTS * (CAPACITY - 1));
        s.kill9();
        drop(desks);
        let s = Server::start(&cfg);
        let after = live(&s);
        let want: BTreeMap<String, (String, Option<String>)> =
            ids.iter().map(|id| (id.clone(), ("inbound".to_string(), None))).collect();
        assert_eq!(after, want, "{engine:?}: every interaction once, all back in inbound");
        // A handled one kept the history of its handling.
        let mut op = s.client();
        let (id, _) = handled.iter().next().unwrap();
        let f = op.get(id).unwrap();
        assert!(f.get_int(attr::ASSIGNED_AT).is_some(), "assigned_at is kept");
        // And they are offered again once agents are back.
        let mut d = s.client_as(ClientType::AgentDesktop, "again");
        d.login("a0", "p0", &[]).unwrap();
        d.ready().unwrap();
        assert!(d.wait_event(msg_type::EVENT_INVITE, Duration::from_secs(10)).unwrap().is_some());
    }
}

#[test]
fn handled_interactions_can_go_to_the_agents_workbin_at_restart() {
    let engine = Engine::Sqlite;
    let dir = TempDir::new("crash-agents-wb");
    let cfg = config(&dir, &engine, "handled-at-restart = \"workbin:personal\"\n");
    let mut s = Server::start(&cfg);
    let (handled, _invited, ids, desks) = load(&s);
    s.kill9();
    drop(desks);
    let s = Server::start(&cfg);
    let after = live(&s);
    assert_eq!(after.len(), ids.len(), "none lost, none duplicated");
    for id in &ids {
        let want = match handled.get(id) {
            Some(agent) => ("personal".to_string(), Some(agent.clone())),
            None => ("inbound".to_string(), None),
        };
        assert_eq!(after.get(id), Some(&want), "{id}");
    }
    let mut op = s.client();
    let (agent_id, agent) = handled.iter().next().map(|(i, a)| (i.clone(), a.clone())).unwrap();
    let content = op.workbin_content("personal", &agent).unwrap();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0].get("id"), Some(&Value::Str(agent_id.clone())));
    // Nothing else waits, so the strategy offers the agent nothing else.
    for id in ids.iter().filter(|id| !handled.contains_key(*id)) {
        op.stop(id, None).unwrap();
    }
    // The agent takes it back from its workbin (a delivery to itself),
    // which another agent may not do.
    let mut other = s.client_as(ClientType::AgentDesktop, "other");
    let other_agent = if agent == "a0" { "a1" } else { "a0" };
    other.login(other_agent, if agent == "a0" { "p1" } else { "p0" }, &[]).unwrap();
    assert!(other.deliver(&agent_id, other_agent).is_err());
    let mut d = s.client_as(ClientType::AgentDesktop, "back");
    let n: usize = agent[1..].parse().unwrap();
    d.login(&agent, &format!("p{n}"), &[]).unwrap();
    d.ready().unwrap();
    let ticket = d.deliver(&agent_id, &agent).unwrap();
    let f = d.wait_event(msg_type::EVENT_INVITE, Duration::from_secs(10)).unwrap().expect("invited from its workbin");
    assert_eq!(f.get_str(attr::INTERACTION_ID), Some(agent_id.as_str()));
    d.accept(&agent_id, Some(ticket)).unwrap();
    d.stop(&agent_id, Some("done")).unwrap();
}

// ----- accepts and stops in flight ---------------------------------------------

/// What the test sent and was told about one interaction.
#[derive(Clone, Debug, Default)]
struct Sent {
    /// The agent an accept was sent for, and whether it was acknowledged.
    accept: Option<(String, bool)>,
    /// A stop was sent, and whether it was acknowledged.
    stop: Option<bool>,
}

/// Where an interaction is after the restart.
#[derive(Clone, Debug, PartialEq)]
enum Found {
    Inbound,
    Workbin(String),
    Gone,
}

/// Agents accept every invitation and stop what they accepted, in a loop,
/// while a media server submits; the server is killed with SIGKILL at a
/// random moment. After the restart (handled-at-restart = the agent's
/// workbin): an acknowledged stop stays gone, an acknowledged accept is in
/// its agent's workbin unless a stop was sent, and whatever was only sent
/// is either as before it or as after it.
#[test]
fn acknowledged_accepts_and_stops_survive_kill_9() {
    for engine in engines("crash-agents-flight") {
        let seed = std::env::var("IXN_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
        eprintln!("crash test seed {seed} (IXN_CRASH_SEED={seed} to replay the kill timing)");
        let dir = TempDir::new("crash-agents-flight");
        let cfg = config(&dir, &engine, "handled-at-restart = \"workbin:personal\"\n");
        let mut s = Server::start(&cfg);
        let sent: Arc<Mutex<HashMap<String, Sent>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..AGENTS {
            let mut d = s.client_as(ClientType::AgentDesktop, &format!("desk{i}"));
            d.login(&format!("a{i}"), &format!("p{i}"), &[]).unwrap();
            d.ready().unwrap();
            let (sent, stop) = (sent.clone(), stop.clone());
            threads.push(std::thread::spawn(move || handle(d, format!("a{i}"), &sent, &stop)));
        }
        let mut ms = s.media_server();
        let submitter = {
            let (sent, stop) = (sent.clone(), stop.clone());
            std::thread::spawn(move || submit(&mut ms, &sent, &stop))
        };
        let kill_after = Duration::from_millis(300 + (seed >> 33) % 1200);
        std::thread::sleep(kill_after);
        s.kill9();
        stop.store(true, Ordering::SeqCst);
        submitter.join().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let sent = sent.lock().unwrap();
        let count = |f: &dyn Fn(&Sent) -> bool| sent.values().filter(|x| f(x)).count();
        let accepts = count(&|x| matches!(x.accept, Some((_, true))));
        let stops = count(&|x| x.stop == Some(true));
        let name = if matches!(engine, Engine::Sqlite) { "SQLite" } else { "PostgreSQL" };
        eprintln!(
            "{name}: killed after {kill_after:?}; {} submitted, {accepts} accepts and {stops} stops acknowledged",
            sent.len()
        );
        assert!(accepts > 0, "agents accepted before the kill");

        let s = Server::start(&cfg);
        let mut op = s.client();
        for (id, x) in sent.iter() {
            let found = match op.get(id) {
                Ok(f) => match (f.get_str(attr::QUEUE), f.get_str(attr::WORKBIN), f.get_str(attr::WORKBIN_OWNER)) {
                    (Some("inbound"), None, None) => Found::Inbound,
                    (None, Some("personal"), Some(owner)) => Found::Workbin(owner.to_string()),
                    other => panic!("{id} is somewhere unexpected: {other:?}"),
                },
                Err(ClientError::Server(e)) if e.code == ErrorCode::UnknownInteraction => Found::Gone,
                Err(e) => panic!("{id}: {e}"),
            };
            let mut may: Vec<Found> = Vec::new();
            match (&x.accept, x.stop) {
                (_, Some(true)) => may.push(Found::Gone),
                (Some((agent, true)), Some(false)) => may.extend([Found::Workbin(agent.clone()), Found::Gone]),
                (Some((agent, true)), None) => may.push(Found::Workbin(agent.clone())),
                (Some((agent, false)), _) => may.extend([Found::Inbound, Found::Workbin(agent.clone())]),
                (None, _) => may.push(Found::Inbound),
            }
            assert!(may.contains(&found), "{name}: {id} is {found:?} after the restart; sent {x:?}");
        }
    }
}

/// Submits until the server dies; records each acknowledged submission.
fn submit(ms: &mut Client, sent: &Mutex<HashMap<String, Sent>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new())) {
            Ok(id) => {
                // The agent may have been invited and have accepted before
                // this acknowledgement came back: keep what it recorded.
                sent.lock().unwrap().entry(id).or_default();
            }
            Err(ClientError::Io(_)) => return,
            Err(e) => panic!("submit refused during the crash test: {e}"),
        }
    }
}

/// An agent's desktop: accepts each invitation, then stops the interaction;
/// records what it sent and what was acknowledged, until the server dies.
fn handle(mut d: Client, agent: String, sent: &Mutex<HashMap<String, Sent>>, stop: &AtomicBool) {
    let io = |e: ClientError, what: &str| match e {
        ClientError::Io(_) => (),
        e => panic!("{what} refused during the crash test: {e}"),
    };
    while !stop.load(Ordering::SeqCst) {
        let f = match d.wait_event(msg_type::EVENT_INVITE, Duration::from_millis(100)) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => return io(e, "waiting for an invitation"),
        };
        let id = f.get_str(attr::INTERACTION_ID).unwrap().to_string();
        let ticket = f.get_int(attr::TICKET).map(|t| t as u64);
        let record = |f: &dyn Fn(&mut Sent)| f(sent.lock().unwrap().entry(id.clone()).or_default());
        record(&|x| x.accept = Some((agent.clone(), false)));
        if let Err(e) = d.accept(&id, ticket) {
            return io(e, "accept");
        }
        record(&|x| x.accept = Some((agent.clone(), true)));
        record(&|x| x.stop = Some(false));
        if let Err(e) = d.stop(&id, Some("done")) {
            return io(e, "stop");
        }
        record(&|x| x.stop = Some(true));
    }
}

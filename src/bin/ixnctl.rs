//! `ixnctl`: the operator and scripting CLI. Human output by default,
//! `--json` for scripts; any error exits non-zero with a one-line reason.
//!
//! ixnctl makes its requests on one connection and exits, so locks it takes
//! (`pull`, `snapshot --lock`) end when it exits: the interactions go back
//! to their views (docs/protocol.md, "Locks").
//!
//! Two commands stay connected: `watch` prints the reporting stream live,
//! and `agent work` is an agent desktop in the terminal (it registers as
//! `agent-desktop`, logs the agent in, takes invitations and logs out on
//! Ctrl-C). Both keep heartbeats up (`--heartbeat`, default 30 s), so the
//! server closes one that hangs or is cut off, and it notices a server
//! that went silent.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser, Subcommand};
use ixn::client::{submit_request, Client, ClientError, Heartbeat};
use ixn_shard::proto::request::{DEFAULT_FIND_LIMIT, DEFAULT_SNAPSHOT_PAGE, MAX_SNAPSHOT_PAGE};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request};
use ixn_shard::{KvList, Value};
use serde_json::{json, Map, Value as Json};

#[derive(Parser, Debug)]
#[command(name = "ixnctl", version, about = "ixn operator CLI")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7120", global = true)]
    server: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Client name to register as (a [[client]] entry of type operator when clients are configured).
    #[arg(long, default_value = "ixnctl", global = true)]
    name: String,
    /// Credential (password) for the client name.
    #[arg(long, global = true, env = "IXN_CREDENTIAL")]
    credential: Option<String>,
    /// Heartbeats for the commands that stay connected (`watch`, `agent
    /// work`): seconds either side may hear nothing from the other before
    /// it closes the connection (1 to 86400; 0 turns them off).
    #[arg(long, default_value_t = 30, global = true)]
    heartbeat: u64,
    /// Connect over TLS (the server's tls-listen port), trusting the CA certificates in this PEM
    /// file.
    #[arg(long, global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The name the server's certificate must be valid for; default: the host part of --server.
    #[arg(long, global = true)]
    tls_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the server answers; prints the round trip time.
    Ping,
    /// Reload the server's configuration file (its [[client]] entries and the agents, places,
    /// queues and views of its tenants) through its management listener; prints what changed,
    /// or why nothing did.
    Reload {
        /// The server's management listener.
        #[arg(long, default_value = "127.0.0.1:8120")]
        management: String,
    },
    /// Print a salted Argon2id hash of a password, for `[[client]] password`. Reads the password from
    /// the first line of standard input; connects to no server.
    HashPassword,
    /// Submit a new interaction; prints its id.
    Submit {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        media: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// String property KEY=VALUE (repeatable).
        #[arg(long = "prop")]
        props: Vec<String>,
        /// Integer property KEY=NUMBER (repeatable).
        #[arg(long = "int-prop")]
        int_props: Vec<String>,
        /// Interaction type.
        #[arg(long = "type", default_value = "Inbound")]
        interaction_type: String,
        /// Interaction subtype.
        #[arg(long, default_value = "InboundNew")]
        subtype: String,
        /// Use this id instead of a server-generated one.
        #[arg(long)]
        id: Option<String>,
    },
    /// Show an interaction and its properties.
    Get { id: String },
    /// Add, change or delete properties.
    Change {
        id: String,
        #[arg(long = "prop")]
        props: Vec<String>,
        #[arg(long = "int-prop")]
        int_props: Vec<String>,
        /// Key to delete (repeatable).
        #[arg(long = "del")]
        del: Vec<String>,
    },
    /// Place an interaction in a queue: the one given, or with --next the
    /// next queue of the workflow.
    #[command(group(ArgGroup::new("to").required(true).args(["queue", "next"])))]
    Place {
        id: String,
        /// The queue to place it in.
        #[arg(long)]
        queue: Option<String>,
        /// Place it in the queue configured as `next` of the queue it is in.
        #[arg(long)]
        next: bool,
    },
    /// Stop processing an interaction (it leaves the server).
    Stop {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take the next interactions of a view, as routing would; they are
    /// locked to ixnctl until it exits, then go back to the view.
    Pull {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        view: String,
        /// How many to take (1 to 1000).
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Search the live interactions with a condition (docs/conditions.md),
    /// in submission order.
    Find {
        /// The condition, e.g. "media_type = 'chat' AND priority > 3".
        #[arg(long = "where")]
        condition: String,
        /// Most interactions to show (1 to 10000).
        #[arg(long, default_value_t = DEFAULT_FIND_LIMIT)]
        limit: u32,
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Take a snapshot of the interactions meeting a condition, print all
    /// of it page by page, and release it.
    Snapshot {
        /// The condition, e.g. "queue = 'inbound'".
        #[arg(long = "where")]
        condition: String,
        /// Lock the interactions while the snapshot is read.
        #[arg(long)]
        lock: bool,
        /// Entries read per request (1 to 1000).
        #[arg(long, default_value_t = DEFAULT_SNAPSHOT_PAGE)]
        page: u32,
        /// Most interactions the snapshot holds (default: the server's
        /// max-interactions-per-snapshot).
        #[arg(long)]
        limit: Option<u32>,
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show each queue's interactions, locked ones, and what each view holds.
    QueueDepth {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Put interactions in a workbin, or list a workbin's content.
    Workbin {
        #[command(subcommand)]
        command: WorkbinCommand,
    },
    /// Agents: log in and out, ready and not ready, state, and a desktop in
    /// the terminal (`agent work`).
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Accept an invitation for the agent it was sent to (an operator may
    /// answer any agent's invitation); the agent then handles it.
    Accept {
        id: String,
        /// The invitation's ticket (from EventInvite or `deliver`); without
        /// it, whatever invitation is open.
        #[arg(long)]
        ticket: Option<u64>,
    },
    /// Reject an invitation: the interaction goes back to its place in its
    /// queue and is routed again.
    Reject {
        id: String,
        #[arg(long)]
        ticket: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Offer a queued interaction to an agent (EventInvite to its
    /// desktops); prints the invitation's ticket.
    Deliver {
        id: String,
        #[arg(long)]
        agent: String,
    },
    /// Put an interaction an agent handles on hold.
    Hold { id: String },
    /// Take an interaction an agent handles off hold.
    Resume { id: String },
    /// Pass an interaction an agent handles to another agent (it is
    /// offered to that agent; the first one leaves it once invited).
    Transfer {
        id: String,
        #[arg(long)]
        agent: String,
    },
    /// Take an interaction from the agent handling it: back to its place in
    /// its queue, or into --queue.
    Leave {
        id: String,
        #[arg(long)]
        queue: Option<String>,
    },
    /// Print the reporting stream live, one line per event, until Ctrl-C
    /// (or --count events).
    Watch {
        /// Only this tenant's events (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Log an agent in on a place, from this ixnctl connection. The agent
    /// starts not ready. ixnctl then exits, closing the connection: the
    /// server keeps the agent logged in for login-session-timeout (1440 s
    /// by default), offering it nothing meanwhile, until a desktop logs it
    /// in again on the same place (or the session ends and logs it out).
    Login {
        agent: String,
        #[arg(long)]
        place: String,
        /// Media type to log in on, with a capacity: `chat` or `chat:2`
        /// (repeatable; default every media type configured for the agent,
        /// at its configured capacity).
        #[arg(long = "media")]
        media: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Log an agent out (its invitations are revoked; what it handles stays
    /// with it until it ends).
    Logout {
        agent: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Make an agent ready (RequestCancelNotReadyForMedia) for one media
    /// type, or every one it is logged in on.
    Ready {
        agent: String,
        #[arg(long)]
        media: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Make an agent not ready for one media type, or every one.
    NotReady {
        agent: String,
        #[arg(long)]
        media: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Turn an agent's do-not-disturb on or off.
    Dnd {
        agent: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// One agent's state, or every agent's: login state, place, per media
    /// type capacity, readiness and interactions held, and the interactions.
    Status {
        agent: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// An agent desktop in the terminal: registers as agent-desktop (client
    /// name --name), logs the agent in, makes it ready, and prints every
    /// invitation and what it does with it, until Ctrl-C; then it rejects
    /// open invitations, leaves what it handles (back to the queue) and
    /// logs out.
    Work {
        agent: String,
        /// The place (default: place K for agent K, from the digits ending
        /// the agent's login id).
        #[arg(long)]
        place: Option<String>,
        /// Accept every invitation at once, handle it for --handle-ms, then
        /// stop processing it (reason `handled`). Without it, ask on stdin
        /// when stdin is a terminal, else reject.
        #[arg(long)]
        auto_accept: bool,
        /// How long an accepted interaction is handled before it is
        /// stopped, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        handle_ms: u64,
        /// Media type to log in on (`chat` or `chat:2`, repeatable; default
        /// every configured one).
        #[arg(long = "media")]
        media: Vec<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
enum WorkbinCommand {
    /// Place an interaction in an owner's content of a workbin.
    Place {
        id: String,
        #[arg(long)]
        workbin: String,
        /// Whose content (an agent, place or group name).
        #[arg(long)]
        owner: String,
    },
    /// List an owner's content of a workbin.
    List {
        #[arg(long)]
        workbin: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            if args.json {
                println!("{}", json!({ "ok": false, "error": e }));
            } else {
                eprintln!("ixnctl: {e}");
            }
            std::process::exit(1);
        }
    }
}

/// `reload`: POST /reload to the management listener.
fn reload(args: &Args, management: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(management)
        .map_err(|e| format!("cannot connect to the management listener at {management}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let req = format!("POST /reload HTTP/1.1\r\nHost: {management}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let status: u16 = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.trim_end()).unwrap_or("").to_string();
    if status != 200 {
        return Err(format!("reload refused: {body}"));
    }
    if args.json {
        println!("{}", json!({ "ok": true, "result": body }));
    } else {
        println!("{body}");
    }
    Ok(())
}

/// `hash-password`: the first line of stdin (without its line end) hashed.
fn hash_password(args: &Args) -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.is_empty() {
        return Err("no password on stdin: give it as the first line (e.g. `ixnctl hash-password < file`)".into());
    }
    let phc = ixn::credentials::hash_password(password)?;
    if args.json {
        println!("{}", json!({ "ok": true, "hash": phc }));
    } else {
        println!("{phc}");
    }
    Ok(())
}

/// Connects to `--server`, over TLS with `--tls-ca`.
fn connect(args: &Args) -> Result<Client, String> {
    let failed = |e: ClientError| format!("cannot connect to {}: {e}", args.server);
    let Some(ca) = &args.tls_ca else {
        return Client::connect(args.server.as_str()).map_err(failed);
    };
    let client = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let config = ixn::client::tls_config(ca, client)?;
    let host = args.server.rsplit_once(':').map_or(args.server.as_str(), |(h, _)| h).trim_matches(['[', ']']);
    let name = args.tls_name.as_deref().unwrap_or(host);
    Client::connect_tls(args.server.as_str(), config, name).map_err(failed)
}

/// Registers as `--name` with `--credential`, with heartbeats if given.
fn register(c: &mut Client, args: &Args, t: ClientType, hb: Option<Heartbeat>) -> Result<Frame, ClientError> {
    match hb {
        Some(hb) => c.register_with_heartbeat(t, &args.name, args.credential.as_deref(), hb),
        None => c.register(t, &args.name, args.credential.as_deref()),
    }
}

/// The heartbeat `--heartbeat` asks for: the same bound both ways.
fn heartbeat(args: &Args) -> Result<Option<Heartbeat>, String> {
    match args.heartbeat {
        0 => Ok(None),
        s @ 1..=86_400 => Ok(Some(Heartbeat::new(Duration::from_secs(s)))),
        s => Err(format!("--heartbeat {s}: give 1 to 86400 seconds, or 0 for none")),
    }
}

fn err(e: ClientError) -> String {
    e.to_string()
}

fn run(args: &Args) -> Result<(), String> {
    if let Command::HashPassword = &args.command {
        return hash_password(args);
    }
    if let Command::Reload { management } = &args.command {
        return reload(args, management);
    }
    if let Command::Agent { command: AgentCommand::Work { agent, place, auto_accept, handle_ms, media, tenant } } =
        &args.command
    {
        let w = Work {
            tenant: tenant.clone(),
            agent: agent.clone(),
            place: match place {
                Some(p) => p.clone(),
                None => default_place(agent)?,
            },
            media: parse_media(media)?,
            auto_accept: *auto_accept,
            handle: Duration::from_millis(*handle_ms),
        };
        return agent_work(args, &w);
    }
    let mut c = connect(args)?;
    // Only `watch` stays connected; one-shot commands end long before a
    // heartbeat would matter.
    let hb = heartbeat(args)?.filter(|_| matches!(args.command, Command::Watch { .. }));
    let reg = register(&mut c, args, ClientType::Operator, hb).map_err(err)?;
    match &args.command {
        Command::HashPassword | Command::Reload { .. } => unreachable!("handled before connecting"),
        Command::Ping => {
            let t = std::time::Instant::now();
            c.ping().map_err(err)?;
            let us = t.elapsed().as_micros();
            let server = reg.get_str(attr::SERVER_NAME).unwrap_or("?").to_string();
            let shards = reg.get_int(attr::SHARD_COUNT).unwrap_or(0);
            out(args, json!({"ok": true, "server": server, "shards": shards, "rtt_us": us}), || {
                format!("pong from {server} ({shards} shards) in {us} us")
            });
        }
        Command::Submit { tenant, queue, media, priority, props, int_props, interaction_type, subtype, id } => {
            let mut s = submit_request(tenant, queue, media, *priority, parse_props(props, int_props)?);
            s.interaction_type = interaction_type.clone();
            s.interaction_subtype = subtype.clone();
            s.id = id.clone();
            let id = c.submit(s).map_err(err)?;
            out(args, json!({"ok": true, "id": id}), || id.clone());
        }
        Command::Get { id } => {
            let f = c.get(id).map_err(err)?;
            let j = interaction_json(&f);
            out(args, j.clone(), || interaction_text(&j));
        }
        Command::Change { id, props, int_props, del } => {
            c.change(id, parse_props(props, int_props)?, del.clone()).map_err(err)?;
            out(args, json!({"ok": true}), || format!("changed {id}"));
        }
        Command::Place { id, queue, next } => match queue {
            Some(queue) if !next => {
                c.place(id, queue).map_err(err)?;
                out(args, json!({"ok": true}), || format!("placed {id} in {queue}"));
            }
            _ => {
                c.place_next(id).map_err(err)?;
                // Say where it went: the answer is a bare EventAck.
                let queue = c.get(id).ok().and_then(|f| f.get_str(attr::QUEUE).map(str::to_string));
                let j = json!({"ok": true, "queue": queue});
                out(args, j, || match &queue {
                    Some(q) => format!("placed {id} in {q} (next)"),
                    None => format!("placed {id} in its next queue"),
                });
            }
        },
        Command::Stop { id, reason } => {
            c.stop(id, reason.as_deref()).map_err(err)?;
            out(args, json!({"ok": true}), || format!("stopped {id}"));
        }
        Command::Pull { tenant, view, count } => {
            let got = c.pull_in(tenant, view, *count).map_err(err)?;
            let j = json!({"ok": true, "count": got.len(), "interactions": lists_json(&got)});
            out(args, j, || if got.is_empty() { format!("nothing to pull from view {view}") } else { lines(&got) });
        }
        Command::Find { condition, limit, tenant } => {
            let (got, total) = c.find_in(tenant.as_deref(), condition, *limit).map_err(err)?;
            let j = json!({"ok": true, "count": got.len(), "total": total, "interactions": lists_json(&got)});
            out(args, j, || with_footer(lines(&got), format!("{} of {total} matching", got.len())));
        }
        Command::Snapshot { condition, lock, page, limit, tenant } => {
            if !(1..=MAX_SNAPSHOT_PAGE).contains(page) {
                return Err(format!("--page must be 1 to {MAX_SNAPSHOT_PAGE}"));
            }
            let (id, held, total) = c.take_snapshot_with(tenant.as_deref(), condition, *lock, *limit).map_err(err)?;
            let mut all = Vec::new();
            while (all.len() as u64) < held {
                let got = c.snapshot_page(id, all.len() as u32, *page).map_err(err)?;
                if got.is_empty() {
                    break;
                }
                all.extend(got);
            }
            c.release_snapshot(id).map_err(err)?;
            let j = json!({
                "ok": true, "snapshot": id, "count": held, "total": total, "interactions": lists_json(&all)
            });
            out(args, j, || {
                let locked = if *lock { ", locked while read" } else { "" };
                with_footer(lines(&all), format!("snapshot {id}: {held} of {total} matching{locked}; released"))
            });
        }
        Command::QueueDepth { tenant } => {
            let queues = c.queue_depth_in(tenant).map_err(err)?;
            out(args, json!({"ok": true, "queues": lists_json(&queues)}), || depth_text(&queues));
        }
        Command::Workbin { command: WorkbinCommand::Place { id, workbin, owner } } => {
            c.place_in_workbin(id, workbin, owner).map_err(err)?;
            out(args, json!({"ok": true}), || format!("placed {id} in workbin {workbin} of {owner}"));
        }
        Command::Workbin { command: WorkbinCommand::List { workbin, owner, tenant } } => {
            let (got, total) = c.workbin_content_in(tenant, workbin, owner).map_err(err)?;
            let j = json!({"ok": true, "count": got.len(), "total": total, "interactions": lists_json(&got)});
            out(args, j, || {
                if total == 0 {
                    format!("workbin {workbin} of {owner} is empty")
                } else {
                    with_footer(lines(&got), format!("{} of {total} in workbin {workbin} of {owner}", got.len()))
                }
            });
        }
        Command::Agent { command } => agent_command(args, &mut c, command)?,
        Command::Accept { id, ticket } => {
            c.accept(id, *ticket).map_err(err)?;
            out(args, json!({"ok": true}), || format!("accepted {id}"));
        }
        Command::Reject { id, ticket, reason } => {
            c.reject(id, *ticket, reason.as_deref()).map_err(err)?;
            out(args, json!({"ok": true}), || format!("rejected {id}"));
        }
        Command::Deliver { id, agent } => {
            let ticket = c.deliver(id, agent).map_err(err)?;
            out(args, json!({"ok": true, "ticket": ticket}), || format!("delivered {id} to {agent} (ticket {ticket})"));
        }
        Command::Hold { id } => {
            c.hold(id).map_err(err)?;
            out(args, json!({"ok": true}), || format!("held {id}"));
        }
        Command::Resume { id } => {
            c.resume(id).map_err(err)?;
            out(args, json!({"ok": true}), || format!("resumed {id}"));
        }
        Command::Transfer { id, agent } => {
            let ticket = c.transfer(id, agent).map_err(err)?;
            out(args, json!({"ok": true, "ticket": ticket}), || {
                format!("transferred {id} to {agent} (ticket {ticket})")
            });
        }
        Command::Leave { id, queue } => {
            c.leave(id, queue.as_deref()).map_err(err)?;
            out(args, json!({"ok": true}), || match queue {
                Some(q) => format!("{id} left its agent, placed in {q}"),
                None => format!("{id} left its agent, back in its queue"),
            });
        }
        Command::Watch { tenant, count } => watch(args, &mut c, tenant.as_deref(), *count)?,
    }
    Ok(())
}

fn out(args: &Args, j: Json, text: impl FnOnce() -> String) {
    if args.json {
        println!("{j}");
    } else {
        println!("{}", text());
    }
}

fn parse_props(strs: &[String], ints: &[String]) -> Result<KvList, String> {
    let mut l = KvList::new();
    for p in strs {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("--prop '{p}' must be KEY=VALUE"))?;
        l.set(k, Value::Str(v.to_string()));
    }
    for p in ints {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("--int-prop '{p}' must be KEY=NUMBER"))?;
        let n: i64 = v.parse().map_err(|_| format!("--int-prop '{p}': '{v}' is not an integer"))?;
        l.set(k, Value::Int(n));
    }
    Ok(l)
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Int(i) => json!(i),
        Value::Str(s) => json!(s),
        Value::Bin(b) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        Value::List(l) => {
            let mut m = Map::new();
            for (k, v) in l.iter() {
                m.insert(k.to_string(), value_json(v));
            }
            Json::Object(m)
        }
    }
}

fn interaction_json(f: &Frame) -> Json {
    debug_assert_eq!(f.msg_type, msg_type::EVENT_INTERACTION_PROPERTIES);
    let names = [
        (attr::INTERACTION_ID, "id"),
        (attr::TENANT, "tenant"),
        (attr::MEDIA_TYPE, "media_type"),
        (attr::INTERACTION_TYPE, "type"),
        (attr::INTERACTION_SUBTYPE, "subtype"),
        (attr::BUSINESS_PROCESS, "business_process"),
        (attr::QUEUE, "queue"),
        (attr::WORKBIN, "workbin"),
        (attr::WORKBIN_OWNER, "workbin_owner"),
        (attr::PRIORITY, "priority"),
        (attr::SUBMITTED_BY, "submitted_by"),
        (attr::VERSION, "version"),
        (attr::RECEIVED_AT, "received_at"),
        (attr::SUBMITTED_AT, "submitted_at"),
        (attr::PLACED_IN_QUEUE_AT, "placed_in_queue_at"),
        (attr::MOVED_TO_QUEUE_AT, "moved_to_queue_at"),
        (attr::DELIVERED_AT, "delivered_at"),
        (attr::ASSIGNED_AT, "assigned_at"),
        (attr::HELD_AT, "held_at"),
        (attr::COMPLETED_AT, "completed_at"),
        (attr::PROPERTIES, "properties"),
    ];
    let mut m = Map::new();
    m.insert("ok".to_string(), json!(true));
    for (id, name) in names {
        if let Some(v) = f.get(id) {
            m.insert(name.to_string(), value_json(v));
        }
    }
    Json::Object(m)
}

fn interaction_text(j: &Json) -> String {
    let mut s = String::new();
    if let Json::Object(m) = j {
        for (k, v) in m {
            if k == "properties" || k == "ok" {
                continue;
            }
            s.push_str(&format!("{k:<20} {}\n", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
        }
        if let Some(Json::Object(p)) = m.get("properties") {
            s.push_str("properties:\n");
            for (k, v) in p {
                s.push_str(&format!("  {k} = {}\n", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
            }
        }
    }
    s.trim_end().to_string()
}

fn lists_json(l: &[KvList]) -> Json {
    Json::Array(l.iter().map(|x| value_json(&Value::List(x.clone()))).collect())
}

/// One line per interaction: id, where it is, priority, who locks it, and
/// its properties as `key=value`.
fn lines(l: &[KvList]) -> String {
    l.iter().map(interaction_line).collect::<Vec<_>>().join("\n")
}

fn with_footer(body: String, footer: String) -> String {
    if body.is_empty() {
        footer
    } else {
        format!("{body}\n{footer}")
    }
}

fn interaction_line(l: &KvList) -> String {
    let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("");
    let id = s("id");
    if l.get("gone").is_some() {
        return format!("{id:<16}  (gone)");
    }
    let place = match l.get("workbin") {
        Some(_) => format!("{}[{}]", s("workbin"), s("workbin_owner")),
        None => s("queue").to_string(),
    };
    let priority = l.get("priority").and_then(Value::as_int).unwrap_or(0);
    let mut line = format!("{id:<16}  {place:<20}  prio {priority:<4}");
    if let Some(who) = l.get("locked_by").and_then(Value::as_str) {
        line.push_str(&format!("  locked by {who}"));
    }
    if let Some(props) = l.get("properties").and_then(Value::as_list) {
        let props: Vec<String> = props.iter().map(|(k, v)| format!("{}={}", word(k), compact(v))).collect();
        if !props.is_empty() {
            line.push_str("  ");
            line.push_str(&props.join(" "));
        }
    }
    line.trim_end().to_string()
}

/// A value on one line: plain words as they are, other strings quoted.
fn compact(v: &Value) -> String {
    match v {
        Value::Str(s) => word(s),
        Value::Int(i) => i.to_string(),
        Value::Bin(b) => format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        Value::List(_) => value_json(v).to_string(),
    }
}

fn word(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"\"'=".contains(c));
    if plain {
        s.to_string()
    } else {
        json!(s).to_string()
    }
}

fn depth_text(queues: &[KvList]) -> String {
    let mut t = format!("{:<24} {:>12} {:>8}  views", "queue", "interactions", "locked");
    for q in queues {
        let name = q.get("queue").and_then(Value::as_str).unwrap_or("?");
        let n = |k: &str| q.get(k).and_then(Value::as_int).unwrap_or(0);
        let views: Vec<String> = q
            .get("views")
            .and_then(Value::as_list)
            .map(|v| v.iter().map(|(k, v)| format!("{}={}", word(k), compact(v))).collect())
            .unwrap_or_default();
        t.push_str(&format!("\n{name:<24} {:>12} {:>8}  {}", n("interactions"), n("locked"), views.join(" ")));
    }
    t
}

// ----- agents ------------------------------------------------------------------

fn agent_command(args: &Args, c: &mut Client, command: &AgentCommand) -> Result<(), String> {
    match command {
        AgentCommand::Login { agent, place, media, reason, tenant } => {
            let req = Request::AgentLogin {
                tenant: tenant.clone(),
                agent: agent.clone(),
                place: place.clone(),
                media: parse_media(media)?,
                reason: reason.clone(),
            };
            let f = c.call(&req).map_err(err)?;
            let place = f.get_str(attr::PLACE).unwrap_or(place).to_string();
            out(args, json!({"ok": true, "agent": agent, "place": place}), || {
                format!(
                    "{agent} logged in on {place}, not ready\n\
                     note: from this ixnctl connection, which closes now: the server keeps {agent} logged in \
                     for login-session-timeout (1440 s by default) and offers it nothing until a desktop logs \
                     it in again on {place}"
                )
            });
        }
        AgentCommand::Logout { agent, reason, tenant } => {
            let req =
                Request::AgentLogout { tenant: tenant.clone(), agent: Some(agent.clone()), reason: reason.clone() };
            c.call(&req).map_err(err)?;
            out(args, json!({"ok": true}), || format!("{agent} logged out"));
        }
        AgentCommand::Ready { agent, media, tenant } => {
            set_ready(c, tenant, agent, media.as_deref(), true, None)?;
            out(args, json!({"ok": true}), || format!("{agent} ready for {}", media_words(media.as_deref())));
        }
        AgentCommand::NotReady { agent, media, reason, tenant } => {
            set_ready(c, tenant, agent, media.as_deref(), false, reason.as_deref())?;
            out(args, json!({"ok": true}), || {
                let why = reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
                format!("{agent} not ready for {}{why}", media_words(media.as_deref()))
            });
        }
        AgentCommand::Dnd { agent, state, tenant } => {
            let on = state == "on";
            let req = Request::SetDoNotDisturb { tenant: tenant.clone(), agent: Some(agent.clone()), on };
            c.call(&req).map_err(err)?;
            out(args, json!({"ok": true}), || format!("{agent} do-not-disturb {state}"));
        }
        AgentCommand::Status { agent, tenant } => {
            let req = Request::GetAgentState { tenant: tenant.clone(), agent: agent.clone() };
            let f = c.call(&req).map_err(err)?;
            if f.msg_type != msg_type::EVENT_AGENT_STATE {
                return Err(format!("expected EventAgentState, got {}", msg_type::name(f.msg_type)));
            }
            let agents = f.lists(attr::AGENT_STATE);
            let total = f.get_int(attr::TOTAL).unwrap_or(agents.len() as i64);
            let j = json!({"ok": true, "count": agents.len(), "total": total, "agents": lists_json(&agents)});
            out(args, j, || match (agent, agents.first()) {
                (Some(_), Some(a)) => agent_block(a),
                _ => {
                    let mut t = agent_table(&agents);
                    if total > agents.len() as i64 {
                        t.push_str(&format!("\n{} of {total} agents listed (the answer is full)", agents.len()));
                    }
                    t
                }
            });
        }
        AgentCommand::Work { .. } => unreachable!("run() handles agent work"),
    }
    Ok(())
}

fn set_ready(
    c: &mut Client,
    tenant: &str,
    agent: &str,
    media: Option<&str>,
    ready: bool,
    reason: Option<&str>,
) -> Result<(), String> {
    let req = Request::SetReady {
        tenant: tenant.to_string(),
        agent: Some(agent.to_string()),
        media: media.map(str::to_string),
        ready,
        reason: reason.map(str::to_string),
    };
    c.call(&req).map(drop).map_err(err)
}

fn media_words(media: Option<&str>) -> String {
    match media {
        Some(m) => m.to_string(),
        None => "every media type".to_string(),
    }
}

/// `chat` or `chat:N` (0: the configured capacity).
fn parse_media(media: &[String]) -> Result<Vec<(String, u16)>, String> {
    media
        .iter()
        .map(|m| match m.split_once(':') {
            None => Ok((m.clone(), 0)),
            Some((name, n)) => {
                let n: u16 = n.parse().map_err(|_| format!("--media '{m}': capacity '{n}' is not 0 to 65535"))?;
                Ok((name.to_string(), n))
            }
        })
        .collect()
}

/// place K for agent K.
fn default_place(agent: &str) -> Result<String, String> {
    let digits: String =
        agent.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
    if digits.is_empty() {
        return Err(format!("agent '{agent}' does not end with a number: give --place"));
    }
    Ok(format!("place{digits}"))
}

fn int_of(l: &KvList, k: &str) -> Option<i64> {
    l.get(k).and_then(Value::as_int)
}

fn str_of<'a>(l: &'a KvList, k: &str) -> &'a str {
    l.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Per media type: `chat 1/3 ready`, `email 0/1 not-ready(break)`.
fn media_summary(l: &KvList) -> Vec<String> {
    let Some(media) = l.get("media").and_then(Value::as_list) else { return Vec::new() };
    media
        .iter()
        .map(|(name, v)| {
            let m = v.as_list().cloned().unwrap_or_default();
            let ready = if int_of(&m, "ready") == Some(1) {
                "ready".to_string()
            } else {
                match m.get("reason").and_then(Value::as_str) {
                    Some(r) => format!("not-ready({})", word(r)),
                    None => "not-ready".to_string(),
                }
            };
            format!("{name} {}/{} {ready}", int_of(&m, "held").unwrap_or(0), int_of(&m, "capacity").unwrap_or(0))
        })
        .collect()
}

/// The interactions an agent holds: `ID(handling)`, `ID(invited)`.
fn held_summary(l: &KvList) -> Vec<String> {
    l.get("interactions")
        .and_then(Value::as_list)
        .map(|h| h.iter().map(|(id, v)| format!("{id}({})", v.as_str().unwrap_or("?"))).collect())
        .unwrap_or_default()
}

fn agent_table(agents: &[KvList]) -> String {
    let mut t = format!(
        "{:<16} {:<12} {:<12} {:<4} {:<36} interactions",
        "agent", "state", "place", "dnd", "media (held/capacity)"
    );
    for a in agents {
        let dnd = if int_of(a, "do_not_disturb") == Some(1) { "on" } else { "-" };
        let line = format!(
            "\n{:<16} {:<12} {:<12} {:<4} {:<36} {}",
            str_of(a, "agent_id"),
            str_of(a, "state"),
            str_of(a, "place"),
            if a.get("place").is_some() { dnd } else { "" },
            media_summary(a).join(", "),
            held_summary(a).join(" ")
        );
        t.push_str(line.trim_end());
    }
    t
}

fn agent_block(a: &KvList) -> String {
    let mut s = format!("{:<16} {}\n{:<16} {}", "agent", str_of(a, "agent_id"), "state", str_of(a, "state"));
    if a.get("place").is_some() {
        s.push_str(&format!("\n{:<16} {}", "place", str_of(a, "place")));
        if let Some(at) = int_of(a, "logged_in_at") {
            s.push_str(&format!("\n{:<16} {}", "logged_in_at", utc(at)));
        }
        let dnd = if int_of(a, "do_not_disturb") == Some(1) { "on" } else { "off" };
        s.push_str(&format!("\n{:<16} {dnd}", "do_not_disturb"));
        s.push_str(&format!("\n{:<16} {}", "connections", int_of(a, "connections").unwrap_or(0)));
        s.push_str("\nmedia:");
        for m in media_summary(a) {
            s.push_str(&format!("\n  {m}"));
        }
    }
    let held = held_summary(a);
    if !held.is_empty() {
        s.push_str("\ninteractions:");
        for h in held {
            s.push_str(&format!("\n  {h}"));
        }
    }
    s
}

/// Milliseconds since the Unix epoch as `2026-11-28T13:59:33.522Z`.
fn utc(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ----- watch -------------------------------------------------------------------

/// The key an event attribute is shown under (text and JSON).
fn attr_key(id: u16) -> String {
    match id {
        attr::INTERACTION_ID => "id",
        attr::TENANT => "tenant",
        attr::MEDIA_TYPE => "media_type",
        attr::INTERACTION_TYPE => "type",
        attr::INTERACTION_SUBTYPE => "subtype",
        attr::QUEUE => "queue",
        attr::PRIORITY => "priority",
        attr::PROPERTIES => "properties",
        attr::DELETED_KEYS => "deleted",
        attr::REASON => "reason",
        attr::SUBMITTED_BY => "submitted_by",
        attr::BUSINESS_PROCESS => "business_process",
        attr::VIEW => "view",
        attr::INTERACTION => "interaction",
        attr::WORKBIN => "workbin",
        attr::WORKBIN_OWNER => "workbin_owner",
        attr::AGENT_ID => "agent",
        attr::PLACE => "place",
        attr::MEDIA_LIST => "media",
        attr::CAPACITY => "capacity",
        attr::DO_NOT_DISTURB => "do_not_disturb",
        attr::TICKET => "ticket",
        attr::FROM_QUEUE => "from_queue",
        attr::FROM_AGENT => "from_agent",
        attr::EVENT_SEQUENCE => "seq",
        attr::EVENT_TIME => "time",
        attr::EVENT_CURSOR => "cursor",
        other => return format!("attr{other}"),
    }
    .to_string()
}

/// One reporting event as JSON: `seq`, `time`, `event`, then its other
/// attributes in wire order.
fn event_json(f: &Frame) -> Json {
    let mut m = Map::new();
    m.insert("seq".into(), json!(f.get_int(attr::EVENT_SEQUENCE)));
    m.insert("time".into(), json!(f.get_int(attr::EVENT_TIME)));
    m.insert("event".into(), json!(msg_type::name(f.msg_type)));
    for a in f.attrs.iter().filter(|a| a.id != attr::EVENT_SEQUENCE && a.id != attr::EVENT_TIME) {
        m.entry(attr_key(a.id)).or_insert_with(|| value_json(&a.value));
    }
    Json::Object(m)
}

/// One reporting event on one line: sequence, time, name, attributes.
fn event_line(f: &Frame) -> String {
    let seq = f.get_int(attr::EVENT_SEQUENCE).map(|s| s.to_string()).unwrap_or_else(|| "-".into());
    let time = f.get_int(attr::EVENT_TIME).map(utc).unwrap_or_else(|| "-".repeat(24));
    let mut line = format!("{seq:>6} {time} {:<26}", msg_type::name(f.msg_type));
    let shown = |id: u16| ![attr::EVENT_SEQUENCE, attr::EVENT_TIME, attr::EVENT_CURSOR].contains(&id);
    for a in f.attrs.iter().filter(|a| shown(a.id)) {
        let v = match &a.value {
            Value::List(l) if a.id == attr::INTERACTION => interaction_line(l),
            v => compact(v),
        };
        line.push_str(&format!(" {}={v}", attr_key(a.id)));
    }
    line
}

fn watch(args: &Args, c: &mut Client, tenant: Option<&str>, count: Option<u64>) -> Result<(), String> {
    c.subscribe(tenant).map_err(err)?;
    if !args.json {
        eprintln!(
            "ixnctl: watching {} (Ctrl-C to stop)",
            tenant.map(|t| format!("tenant {t}")).unwrap_or("every tenant".into())
        );
    }
    let mut seen = 0u64;
    // The cursor of the last event printed: a lost connection resumes
    // after it, so nothing is missed or printed twice.
    let mut cursor: Option<String> = None;
    let stdout = std::io::stdout();
    while count.is_none_or(|n| seen < n) {
        let f = match c.next_event(Duration::from_secs(1)) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(ClientError::Io(e)) => {
                eprintln!("ixnctl: connection lost ({e}); resuming");
                *c = resume(args, tenant, cursor.as_deref())?;
                continue;
            }
            Err(e) => return Err(err(e)),
        };
        if let Some(at) = f.get_str(attr::EVENT_CURSOR) {
            cursor = Some(at.to_string());
        }
        seen += 1;
        let mut o = stdout.lock();
        let line = if args.json { event_json(&f).to_string() } else { event_line(&f) };
        // A closed pipe (`| head`) ends the watch quietly.
        if writeln!(o, "{line}").and_then(|()| o.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Connects again (every second, until it works) and subscribes after
/// `cursor`; if the server no longer keeps what follows it (error 56:
/// restarted, or too far behind), subscribes from now and says so.
fn resume(args: &Args, tenant: Option<&str>, cursor: Option<&str>) -> Result<Client, String> {
    loop {
        match connect(args) {
            Ok(mut c) => {
                if let Err(e) = register(&mut c, args, ClientType::Operator, heartbeat(args)?) {
                    eprintln!("ixnctl: cannot register again: {}", err(e));
                } else {
                    match c.subscribe_after(tenant, cursor) {
                        Ok(()) => return Ok(c),
                        Err(ClientError::Server(e)) if e.code == ErrorCode::CursorExpired => {
                            eprintln!(
                                "ixnctl: events after the last one shown are lost ({}); watching from now",
                                e.text
                            );
                            c.subscribe(tenant).map_err(err)?;
                            return Ok(c);
                        }
                        Err(ClientError::Server(e)) => return Err(format!("cannot subscribe again: {}", e.text)),
                        Err(e) => eprintln!("ixnctl: cannot subscribe again: {}", err(e)),
                    }
                }
            }
            Err(e) => eprintln!("ixnctl: {e}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

// ----- agent work --------------------------------------------------------------

/// How long `agent work` without a terminal waits before it rejects.
const REJECT_DELAY: Duration = Duration::from_secs(1);

/// Takes the elements meeting `due` out of `v`, in order.
fn extract<T>(v: &mut Vec<T>, due: impl Fn(&T) -> bool) -> Vec<T> {
    let (out, keep): (Vec<T>, Vec<T>) = std::mem::take(v).into_iter().partition(|x| due(x));
    *v = keep;
    out
}

struct Work {
    tenant: String,
    agent: String,
    place: String,
    media: Vec<(String, u16)>,
    auto_accept: bool,
    handle: Duration,
}

/// What `agent work` prints: a line of text, or one JSON object per line.
fn say(args: &Args, j: Json, text: impl FnOnce() -> String) {
    let line = if args.json { j.to_string() } else { text() };
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}").and_then(|()| o.flush());
}

/// An invitation waiting for an answer typed on stdin.
struct Asking {
    id: String,
    ticket: Option<u64>,
    shown: bool,
}

fn agent_work(args: &Args, w: &Work) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C ends ixnctl at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone()).map_err(|e| e.to_string())?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let mut c = connect(args)?;
    register(&mut c, args, ClientType::AgentDesktop, heartbeat(args)?).map_err(err)?;
    let login = Request::AgentLogin {
        tenant: w.tenant.clone(),
        agent: w.agent.clone(),
        place: w.place.clone(),
        media: w.media.clone(),
        reason: None,
    };
    c.call(&login).map_err(err)?;
    let ready = |c: &mut Client, media: Option<&str>| {
        let req = Request::SetReady {
            tenant: w.tenant.clone(),
            agent: None,
            media: media.map(str::to_string),
            ready: true,
            reason: None,
        };
        c.call(&req).map(drop).map_err(err)
    };
    if w.media.is_empty() {
        ready(&mut c, None)?;
    } else {
        for (m, _) in &w.media {
            ready(&mut c, Some(m))?;
        }
    }
    let interactive = !w.auto_accept && std::io::stdin().is_terminal();
    let mode = if w.auto_accept {
        format!("accepting every invitation, handling each for {} ms", w.handle.as_millis())
    } else if interactive {
        "asking on stdin for each invitation".to_string()
    } else {
        "rejecting every invitation after a second (stdin is not a terminal; use --auto-accept)".to_string()
    };
    say(args, json!({"event": "ready", "agent": w.agent, "place": w.place}), || {
        format!("{} logged in on {}, ready; {mode}; Ctrl-C logs out", w.agent, w.place)
    });
    let lines = interactive.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    });
    let mut asking: VecDeque<Asking> = VecDeque::new();
    // Accepted interactions and when to stop them.
    let mut handling: Vec<(Instant, String)> = Vec::new();
    // Interactions this desktop stopped itself: the server sends no
    // EventRevoked for those; kept so that one arriving anyway (a media
    // server or an operator stopped it at the same moment) is not news.
    let mut stopped: VecDeque<String> = VecDeque::new();
    // Invitations to reject (no terminal, no --auto-accept), and when.
    let mut unanswered: Vec<(Instant, String, Option<u64>)> = Vec::new();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        // The next invitation waiting for an answer is asked once.
        if let Some(a) = asking.front_mut().filter(|a| !a.shown) {
            a.shown = true;
            eprint!("accept/reject {}? [a/r] ", a.id);
            let _ = std::io::stderr().flush();
        }
        if let Some(rx) = &lines {
            while let Ok(line) = rx.try_recv() {
                let Some(a) = asking.front() else { continue };
                match line.trim().to_ascii_lowercase().as_str() {
                    "a" | "accept" | "y" | "yes" => {
                        let a = asking.pop_front().expect("checked");
                        accept(args, &mut c, w, &a.id, a.ticket, &mut handling);
                    }
                    "r" | "reject" | "n" | "no" => {
                        let a = asking.pop_front().expect("checked");
                        reject(args, &mut c, &a.id, a.ticket, "rejected by the agent");
                    }
                    _ => {
                        eprint!("type a (accept) or r (reject) for {}: ", a.id);
                        let _ = std::io::stderr().flush();
                    }
                }
            }
        }
        let now = Instant::now();
        for (_, id, ticket) in extract(&mut unanswered, |(d, _, _)| *d <= now) {
            reject(args, &mut c, &id, ticket, "no one at the desk");
        }
        for (_, id) in extract(&mut handling, |(d, _)| *d <= now) {
            match c.stop(&id, Some("handled")) {
                Ok(()) => {
                    say(args, json!({"event": "stopped", "id": id, "reason": "handled"}), || {
                        format!("stopped {id} (handled)")
                    });
                    stopped.push_back(id);
                    if stopped.len() > 64 {
                        stopped.pop_front();
                    }
                }
                Err(ClientError::Io(e)) => return Err(format!("connection lost: {e}")),
                Err(e) => say(args, json!({"event": "error", "id": id, "error": e.to_string()}), || {
                    format!("could not stop {id}: {e}")
                }),
            }
        }
        let wait = handling
            .iter()
            .map(|(d, _)| d)
            .chain(unanswered.iter().map(|(d, _, _)| d))
            .map(|d| d.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        let f = match c.next_event(wait) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            // Ctrl-C interrupts the read: the loop sees the flag.
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("connection lost: {e}")),
        };
        match f.msg_type {
            msg_type::EVENT_INVITE => {
                let id = f.get_str(attr::INTERACTION_ID).unwrap_or("").to_string();
                let ticket = f.get_int(attr::TICKET).map(|t| t as u64);
                let media = f.get_str(attr::MEDIA_TYPE).unwrap_or("").to_string();
                let detail = f.get_list(attr::INTERACTION).map(interaction_line).unwrap_or_default();
                say(args, json!({"event": "invited", "id": id, "ticket": ticket, "media_type": media}), || {
                    format!("invited to {id} ({media}, ticket {}): {detail}", ticket.unwrap_or(0))
                });
                if w.auto_accept {
                    accept(args, &mut c, w, &id, ticket, &mut handling);
                } else if interactive {
                    asking.push_back(Asking { id, ticket, shown: false });
                } else {
                    // A second later: the server may offer it straight
                    // back to this agent, and a loop of instant rejects
                    // helps no one.
                    unanswered.push((Instant::now() + REJECT_DELAY, id, ticket));
                }
            }
            msg_type::EVENT_REVOKED => {
                let id = f.get_str(attr::INTERACTION_ID).unwrap_or("").to_string();
                let reason = f.get_str(attr::REASON).unwrap_or("").to_string();
                if let Some(i) = stopped.iter().position(|s| *s == id) {
                    stopped.remove(i);
                    continue;
                }
                if asking.front().is_some_and(|a| a.id == id && a.shown) {
                    eprintln!();
                }
                asking.retain(|a| a.id != id);
                handling.retain(|(_, h)| *h != id);
                unanswered.retain(|(_, u, _)| *u != id);
                say(args, json!({"event": "revoked", "id": id, "reason": reason}), || {
                    format!("revoked {id}: {reason}")
                });
            }
            msg_type::EVENT_LOGGED_OUT => {
                let reason = f.get_str(attr::REASON).unwrap_or("").to_string();
                say(args, json!({"event": "logged-out", "agent": w.agent, "reason": reason}), || {
                    format!("{} was logged out by the server: {reason}", w.agent)
                });
                return Err(format!("{} was logged out by the server: {reason}", w.agent));
            }
            msg_type::EVENT_PROPERTIES_CHANGED => {
                let id = f.get_str(attr::INTERACTION_ID).unwrap_or("").to_string();
                say(args, json!({"event": "properties-changed", "id": id}), || event_line(&f).trim_start().to_string());
            }
            other => say(args, json!({"event": msg_type::name(other)}), || format!("event {}", msg_type::name(other))),
        }
    };
    result?;
    // Ctrl-C: answer what is open, give back what is handled, log out.
    eprintln!();
    for (id, ticket) in
        asking.into_iter().map(|a| (a.id, a.ticket)).chain(unanswered.into_iter().map(|(_, i, t)| (i, t)))
    {
        reject(args, &mut c, &id, ticket, "agent leaving");
    }
    for (_, id) in handling {
        match c.leave(&id, None) {
            Ok(()) => say(args, json!({"event": "left", "id": id}), || format!("left {id} (back in its queue)")),
            Err(e) => say(args, json!({"event": "error", "id": id, "error": e.to_string()}), || {
                format!("could not leave {id}: {e}")
            }),
        }
    }
    let logout =
        Request::AgentLogout { tenant: w.tenant.clone(), agent: None, reason: Some("ixnctl agent work ended".into()) };
    c.call(&logout).map_err(err)?;
    say(args, json!({"event": "logged-out", "agent": w.agent}), || format!("{} logged out", w.agent));
    Ok(())
}

fn accept(args: &Args, c: &mut Client, w: &Work, id: &str, ticket: Option<u64>, handling: &mut Vec<(Instant, String)>) {
    match c.accept(id, ticket) {
        Ok(()) => {
            handling.push((Instant::now() + w.handle, id.to_string()));
            say(args, json!({"event": "accepted", "id": id}), || {
                format!("accepted {id}; stopping it in {} ms", w.handle.as_millis())
            });
        }
        Err(e) => say(args, json!({"event": "error", "id": id, "error": e.to_string()}), || {
            format!("could not accept {id}: {e}")
        }),
    }
}

fn reject(args: &Args, c: &mut Client, id: &str, ticket: Option<u64>, reason: &str) {
    match c.reject(id, ticket, Some(reason)) {
        Ok(()) => {
            say(args, json!({"event": "rejected", "id": id, "reason": reason}), || format!("rejected {id} ({reason})"))
        }
        Err(e) => say(args, json!({"event": "error", "id": id, "error": e.to_string()}), || {
            format!("could not reject {id}: {e}")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: Vec<(&str, Value)>) -> KvList {
        KvList::from_entries(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn interaction_lines_show_place_priority_lock_and_properties() {
        let props = list(vec![("lang", Value::Str("en".into())), ("who", Value::Str("Ada L".into()))]);
        let queued = list(vec![
            ("id", Value::Str("X1".into())),
            ("queue", Value::Str("inbound".into())),
            ("priority", Value::Int(5)),
            ("locked_by", Value::Str("router".into())),
            ("properties", Value::List(props)),
        ]);
        let line = interaction_line(&queued);
        assert!(line.starts_with("X1  "), "{line}");
        assert!(line.contains(" inbound ") && line.contains("prio 5") && line.contains("locked by router"), "{line}");
        assert!(line.ends_with("lang=en who=\"Ada L\""), "{line}");
        let binned = list(vec![
            ("id", Value::Str("X2".into())),
            ("workbin", Value::Str("personal".into())),
            ("workbin_owner", Value::Str("agent1".into())),
            ("priority", Value::Int(0)),
            ("properties", Value::List(KvList::new())),
        ]);
        assert!(interaction_line(&binned).contains("personal[agent1]"));
        let gone = list(vec![("id", Value::Str("X3".into())), ("gone", Value::Int(1))]);
        assert_eq!(interaction_line(&gone), "X3                (gone)");
    }

    #[test]
    fn times_places_and_media_lists() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_795_875_122_952), "2026-11-28T14:12:02.952Z");
        assert_eq!(utc(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(default_place("agent12").unwrap(), "place12");
        assert!(default_place("alice").is_err());
        assert_eq!(
            parse_media(&["chat".into(), "email:1".into()]).unwrap(),
            vec![("chat".into(), 0), ("email".into(), 1)]
        );
        assert!(parse_media(&["chat:x".into()]).is_err());
    }

    #[test]
    fn agent_state_lines() {
        let chat = list(vec![("capacity", Value::Int(3)), ("ready", Value::Int(1)), ("held", Value::Int(1))]);
        let email = list(vec![
            ("capacity", Value::Int(1)),
            ("ready", Value::Int(0)),
            ("held", Value::Int(0)),
            ("reason", Value::Str("break".into())),
        ]);
        let a = list(vec![
            ("agent_id", Value::Str("agent1".into())),
            ("state", Value::Str("logged-in".into())),
            ("place", Value::Str("place1".into())),
            ("do_not_disturb", Value::Int(0)),
            ("media", Value::List(list(vec![("chat", Value::List(chat)), ("email", Value::List(email))]))),
            ("interactions", Value::List(list(vec![("X1", Value::Str("handling".into()))]))),
        ]);
        assert_eq!(media_summary(&a), vec!["chat 1/3 ready", "email 0/1 not-ready(break)"]);
        let t = agent_table(std::slice::from_ref(&a));
        assert!(t.lines().nth(1).unwrap().starts_with("agent1 ") && t.ends_with("X1(handling)"), "{t}");
        assert!(agent_block(&a).contains("\ninteractions:\n  X1(handling)"));
    }

    #[test]
    fn events_show_their_attributes() {
        let f = Frame::new(msg_type::EVENT_AGENT_INVITED, 0)
            .with(attr::EVENT_TIME, 0i64)
            .with(attr::TENANT, "default")
            .with(attr::INTERACTION_ID, "X1")
            .with(attr::AGENT_ID, "agent1")
            .with(attr::TICKET, 7i64)
            .with(attr::EVENT_SEQUENCE, 4i64);
        let line = event_line(&f);
        assert!(line.starts_with("     4 1970-01-01T00:00:00.000Z EventAgentInvited"), "{line}");
        assert!(line.ends_with("tenant=default id=X1 agent=agent1 ticket=7"), "{line}");
        let j = event_json(&f);
        assert_eq!(j["seq"], 4);
        assert_eq!(j["event"], "EventAgentInvited");
        assert_eq!(j["agent"], "agent1");
        assert_eq!(j["ticket"], 7);
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(word("en"), "en");
        assert_eq!(word(""), "\"\"");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word("k=v"), "\"k=v\"");
        assert_eq!(compact(&Value::Bin(vec![1, 0xab])), "0x01ab");
    }
}

//! `ixnctl`: the operator and scripting CLI. Human output by default,
//! `--json` for scripts; any error exits non-zero with a one-line reason.
//!
//! ixnctl makes its requests on one connection and exits, so locks it takes
//! (`pull`, `snapshot --lock`) end when it exits: the interactions go back
//! to their views (docs/protocol.md, "Locks").

use clap::{ArgGroup, Parser, Subcommand};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::proto::request::{DEFAULT_FIND_LIMIT, DEFAULT_SNAPSHOT_PAGE, MAX_SNAPSHOT_PAGE};
use ixn_shard::proto::{attr, msg_type, ClientType, Frame};
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the server answers; prints the round trip time.
    Ping,
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

fn err(e: ClientError) -> String {
    e.to_string()
}

fn run(args: &Args) -> Result<(), String> {
    let mut c = Client::connect(args.server.as_str()).map_err(|e| format!("cannot connect to {}: {e}", args.server))?;
    let reg = c.register(ClientType::Operator, &args.name, args.credential.as_deref()).map_err(err)?;
    match &args.command {
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
    fn words_are_quoted_only_when_needed() {
        assert_eq!(word("en"), "en");
        assert_eq!(word(""), "\"\"");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word("k=v"), "\"k=v\"");
        assert_eq!(compact(&Value::Bin(vec![1, 0xab])), "0x01ab");
    }
}

//! `ixnctl`: the operator and scripting CLI. Human output by default,
//! `--json` for scripts; any error exits non-zero with a one-line reason.

use clap::{Parser, Subcommand};
use ixn::client::{submit_request, Client, ClientError};
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
    /// Place an interaction in a queue.
    Place {
        id: String,
        #[arg(long)]
        queue: String,
    },
    /// Stop processing an interaction (it leaves the server).
    Stop {
        id: String,
        #[arg(long)]
        reason: Option<String>,
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
        Command::Place { id, queue } => {
            c.place(id, queue).map_err(err)?;
            out(args, json!({"ok": true}), || format!("placed {id} in {queue}"));
        }
        Command::Stop { id, reason } => {
            c.stop(id, reason.as_deref()).map_err(err)?;
            out(args, json!({"ok": true}), || format!("stopped {id}"));
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

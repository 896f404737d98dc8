//! `ixn-bench`: the load harness. Each scenario writes one JSON object
//! (brief section 4) with `--json FILE` and prints a summary.
//!
//! Scenarios:
//! - `submit`: media-server connections submit with a window of outstanding
//!   requests; reports acknowledged submissions per second and ack latency,
//!   then reads every acknowledged id back and counts the missing (`lost`).
//! - `backlog`: fills `inbound` with a large backlog, then times pulls in
//!   view order, a snapshot of the whole backlog and two finds
//!   (`backlog.rs`).
//! - `cycle`: agents log in and become ready, media servers submit chats,
//!   the built-in strategy invites the agents, which accept and stop each
//!   one; reports cycles per second, submit-to-invite and invite-to-accept
//!   latency, and checks nothing was lost, duplicated or over capacity
//!   (`cycle.rs`).
//! - `idle`: opens many idle registered connections and reports the
//!   server's resident memory per connection (`idle.rs`).
//! - `gen-config`: prints a configuration with many agents (`genconfig.rs`).
//! - `fuzz`: starts its own server and fuzzes it over many TCP connections
//!   with valid and mutated frames, checking that it survives and answers
//!   (`fuzz.rs`).

mod backlog;
mod cycle;
mod epoll;
mod fuzz;
mod genconfig;
mod idle;
mod peer;
mod report;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use ixn::client::{submit_request, Client};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Request};
use ixn_shard::{KvList, Value};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "ixn-bench", version, about = "ixn load harness")]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Durable submissions: rate, ack latency, and a read-back of every acknowledged id.
    Submit(SubmitArgs),
    /// A large backlog: fill, pulls in view order, a snapshot of it all, finds.
    Backlog(backlog::BacklogArgs),
    /// Whole cycles: agents log in, media servers submit, the built-in strategy invites, agents accept and stop.
    Cycle(cycle::CycleArgs),
    /// Idle registered connections: the server's resident memory per connection.
    Idle(idle::IdleArgs),
    /// Print a server configuration: the embedded default with A agents and places.
    GenConfig(genconfig::GenConfigArgs),
    /// Fuzz a server it starts: many connections, valid and mutated frames, resets and floods.
    Fuzz(fuzz::FuzzArgs),
    /// The same durable workloads against a peer system (Redis), for bench/peers-report.sh.
    Peer(peer::PeerArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct SubmitArgs {
    #[arg(long, default_value = "127.0.0.1:7120")]
    server: String,
    /// Media-server connections, one thread each.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Outstanding requests per connection.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Total submissions per second to aim for; 0 = as fast as acks come.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value = "default")]
    tenant: String,
    #[arg(long, default_value = "inbound")]
    queue: String,
    #[arg(long, default_value = "chat")]
    media: String,
    /// String properties per interaction.
    #[arg(long, default_value_t = 5)]
    props: usize,
    /// Credential, when the server lists clients (the bench registers as
    /// media-server `bench`).
    #[arg(long)]
    credential: Option<String>,
    /// Skip the read-back of acknowledged ids.
    #[arg(long)]
    no_verify: bool,
    /// The server's process id (on this machine): its CPU time over the
    /// load (not the read-back) is reported (`server_cpu_s`), with the
    /// bench's.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the result object here.
    #[arg(long)]
    json: Option<String>,
    /// Connect over TLS (the server's tls-listen port), trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must be valid for.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
}

/// A registered media-server connection, over TLS with `--tls-ca`.
fn media_connection(a: &SubmitArgs, name: &str) -> Result<Client, String> {
    let tls = a.tls_ca.as_deref().map(|ca| (ca, a.tls_name.as_str()));
    registered(&a.server, tls, ClientType::MediaServer, name, a.credential.as_deref()).map(|(c, _)| c)
}

/// A connection to `server`, over TLS with `tls` (the CA file and the
/// name the server's certificate must be valid for), registered as `t`
/// named `name`; with the registration's answer.
fn registered(
    server: &str,
    tls: Option<(&std::path::Path, &str)>,
    t: ClientType,
    name: &str,
    credential: Option<&str>,
) -> Result<(Client, ixn_shard::proto::Frame), String> {
    let mut c = match tls {
        None => Client::connect(server),
        Some((ca, server_name)) => {
            let config = ixn::client::tls_config(ca, None)?;
            Client::connect_tls(server, config, server_name)
        }
    }
    .map_err(|e| format!("cannot connect to {server}: {e}"))?;
    let ack = c.register(t, name, credential).map_err(|e| format!("cannot register at {server}: {e}"))?;
    Ok((c, ack))
}

fn main() {
    let args = Args::parse();
    let result = match args.scenario {
        Scenario::Submit(a) => submit(a),
        Scenario::Backlog(a) => backlog::backlog(a),
        Scenario::Cycle(a) => cycle::cycle(a),
        Scenario::Idle(a) => idle::idle(a),
        Scenario::GenConfig(a) => genconfig::gen_config(a),
        Scenario::Fuzz(a) => fuzz::fuzz(a),
        Scenario::Peer(a) => peer::peer(a),
    };
    if let Err(e) = result {
        eprintln!("ixn-bench: {e}");
        std::process::exit(1);
    }
}

struct ClientResult {
    hist: Histogram<u64>,
    timeline: report::Timeline,
    ids: Vec<String>,
    errors: u64,
    first_error: Option<String>,
}

fn submit(a: SubmitArgs) -> Result<(), String> {
    let mut probe = media_connection(&a, "bench")?;
    probe.ping().map_err(|e| format!("ping failed: {e}"))?;
    let cpu0 = (a.server_pid.map(peer::proc_cpu_s).transpose()?, peer::own_cpu_s());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.duration);
    let acked_so_far = Arc::new(AtomicU64::new(0));
    let progress = {
        let counter = acked_so_far.clone();
        report::Progress::start("acked", Duration::from_secs(a.duration), move || counter.load(Ordering::Relaxed))
    };
    let threads: Vec<_> = (0..a.clients)
        .map(|i| {
            let (a, counter) = (a.clone(), acked_so_far.clone());
            std::thread::spawn(move || submit_client(i, &a, start, deadline, &counter))
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut timeline = report::Timeline::new(start);
    let mut ids = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in threads {
        let r = t.join().map_err(|_| "a client thread panicked".to_string())??;
        hist.add(&r.hist).expect("same bounds");
        timeline.merge(&r.timeline);
        ids.extend(r.ids);
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let per_second = progress.finish();
    let server_cpu_s = match (a.server_pid, cpu0.0) {
        (Some(pid), Some(c0)) => Some(peer::proc_cpu_s(pid)? - c0),
        _ => None,
    };
    let bench_cpu_s = peer::own_cpu_s() - cpu0.1;
    let acked = ids.len() as u64;
    let lost = if a.no_verify { None } else { Some(read_back(&mut probe, &ids)?) };
    let ops = acked as f64 / elapsed;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let out = json!({
        "scenario": "submit",
        "target": a.server,
        "duration_s": elapsed,
        "clients": a.clients,
        "window": a.window,
        "rate_target": a.rate,
        "tls": a.tls_ca.is_some(),
        "acked": acked,
        "ops_per_sec": ops,
        "p50_us": hist.value_at_quantile(0.50),
        "p99_us": hist.value_at_quantile(0.99),
        "p999_us": hist.value_at_quantile(0.999),
        "max_us": hist.max(),
        "errors": errors,
        "lost": lost,
        "server_cpu_s": server_cpu_s,
        "bench_cpu_s": bench_cpu_s,
        "cores": cores,
        "timeline": timeline.to_json(&per_second),
    });
    println!(
        "submit: {acked} acked in {elapsed:.1} s = {ops:.0}/s; ack latency p50 {} us, p99 {} us, p99.9 {} us, max {} us; errors {errors}; lost {}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        lost.map(|l| l.to_string()).unwrap_or_else(|| "not checked".into())
    );
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
    if let Some(path) = &a.json {
        report::write(path, "ixn-bench submit", &out, "acknowledged submissions", "submit to EventAck")?;
    }
    Ok(())
}

fn properties(n: usize, seq: u64) -> KvList {
    let mut l = KvList::new();
    for i in 0..n {
        l.set(format!("key{i}"), Value::Str(format!("value-{seq}-{i}")));
    }
    l
}

fn submit_client(
    i: usize,
    a: &SubmitArgs,
    start: Instant,
    deadline: Instant,
    acked_so_far: &AtomicU64,
) -> Result<ClientResult, String> {
    let name = "bench";
    let mut c = media_connection(a, name).map_err(|e| format!("client {i}: {e}"))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut timeline = report::Timeline::new(start);
    let mut inflight: HashMap<u32, Instant> = HashMap::with_capacity(a.window * 2);
    let mut answers = Vec::with_capacity(a.window);
    let mut ids = Vec::new();
    let (mut errors, mut first_error) = (0u64, None);
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(a.clients as f64 / a.rate as f64));
    let mut next_send = Instant::now();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        if sending {
            while inflight.len() < a.window && interval.is_none_or(|_| Instant::now() >= next_send) {
                let s = submit_request(&a.tenant, &a.queue, &a.media, (seq % 10) as i64, properties(a.props, seq));
                seq += 1;
                let r = c.queue(&Request::Submit(Box::new(s)));
                inflight.insert(r, Instant::now());
                if let Some(iv) = interval {
                    next_send += iv;
                }
            }
            c.flush().map_err(|e| format!("client {i}: {e}"))?;
        }
        if inflight.is_empty() {
            if !sending {
                break;
            }
            std::thread::sleep(next_send.saturating_duration_since(Instant::now()));
            continue;
        }
        // Every answer already read is taken before the window is filled
        // again, so the submissions that replace them go out in one write,
        // as a pipelining media server sends them (one write per answer
        // cost the generator most of its CPU in the kernel).
        c.recv_waiting(&mut answers).map_err(|e| format!("client {i}: {e}"))?;
        for f in answers.drain(..) {
            let Some(sent) = inflight.remove(&f.ref_id) else {
                return Err(format!("client {i}: answer for unknown reference id {}", f.ref_id));
            };
            let now = Instant::now();
            hist.record(now.saturating_duration_since(sent).as_micros().max(1) as u64).ok();
            timeline.record(now, now.saturating_duration_since(sent));
            match (f.msg_type, error_of(&f)) {
                (msg_type::EVENT_ACK, _) => match f.get_str(attr::INTERACTION_ID) {
                    Some(id) => {
                        ids.push(id.to_string());
                        acked_so_far.fetch_add(1, Ordering::Relaxed);
                    }
                    None => return Err(format!("client {i}: EventAck without InteractionId")),
                },
                (_, Some(e)) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
                (t, None) => return Err(format!("client {i}: unexpected {}", msg_type::name(t))),
            }
        }
    }
    Ok(ClientResult { hist, timeline, ids, errors, first_error })
}

/// Reads every acknowledged id back (pipelined); returns how many are gone.
fn read_back(c: &mut Client, ids: &[String]) -> Result<u64, String> {
    let mut lost = 0;
    for chunk in ids.chunks(256) {
        for id in chunk {
            c.queue(&Request::GetInteractionProperties { id: id.clone() });
        }
        c.flush().map_err(|e| e.to_string())?;
        for _ in chunk {
            let f = c.recv().map_err(|e| e.to_string())?;
            match error_of(&f) {
                None => {}
                Some(e) if e.code == ErrorCode::UnknownInteraction => lost += 1,
                Some(e) => return Err(format!("read-back failed: {e}")),
            }
        }
    }
    Ok(lost)
}

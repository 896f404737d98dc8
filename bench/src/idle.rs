//! `ixn-bench idle`: the server's memory per idle registered connection,
//! or per idle session when connections carry sessions (`--sessions`:
//! each connection registers as a proxy and opens that many sessions of
//! `--client-type`, as the proxy carries desktops; protocol 6.9).
//!
//! 1. Reads the server's VmRSS (`--server-pid`, from /proc/PID/status).
//! 2. Opens `--connections` connections, each registered as
//!    `--client-type` (agent-desktop by default, the contact center's many
//!    idle desktops), spread over `--threads` threads in each of
//!    `--processes` processes (one process may hold only RLIMIT_NOFILE
//!    descriptors: 20,000 on the reference machine). Every registration is
//!    timed (the latency fields).
//! 3. Leaves them idle `--settle` seconds, reads VmRSS again and reports
//!    the difference divided by the number of connections.
//! 4. Checks that a connection opened before them still answers a ping,
//!    closes everything, and reads VmRSS once more after `--settle`
//!    seconds (what the server gave back).
//!
//! Extra processes are this binary again, with the hidden `--hold` flag:
//! each opens its share, prints `ready`, and keeps the connections until
//! its standard input closes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ixn::client::Client;
use ixn_shard::proto::ClientType;
use serde_json::json;

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    #[arg(long, default_value = "127.0.0.1:7120")]
    server: String,
    /// Process id of the server (it must run on this machine): its VmRSS
    /// is what the scenario measures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Idle registered connections to open, in all.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Threads opening connections, in each process.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Client processes sharing the connections (this one and helpers).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Client type to register as (a client of that type named
    /// `bench-idle` must be configured when the server lists clients).
    #[arg(long, default_value = "agent-desktop")]
    client_type: String,
    /// Credential, when the server lists clients.
    #[arg(long)]
    credential: Option<String>,
    /// Sessions each connection opens (0: none; the connection itself is
    /// the client). With sessions, each connection registers as a proxy
    /// and its sessions as `--client-type`; the server must allow them
    /// (`max-sessions-per-connection`).
    #[arg(long, default_value_t = 0)]
    sessions: u32,
    /// Seconds to wait before each VmRSS reading after the connections
    /// opened or closed.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// Write the result object here.
    #[arg(long)]
    json: Option<String>,
    /// Internal: a helper process (see the module comment).
    #[arg(long, hide = true)]
    hold: bool,
}

const CLIENT_NAME: &str = "bench-idle";

/// The resident set of process `pid` in KiB (VmRSS in /proc/PID/status).
fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| format!("{path} has no VmRSS"))?;
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| format!("{path}: cannot read '{line}'"))
}

/// Open connections and the registration latencies, in microseconds.
struct Opened {
    streams: Vec<TcpStream>,
    hist: Histogram<u64>,
}

/// Opens `n` registered connections over `threads` threads.
fn open(a: &IdleArgs, client_type: ClientType, n: usize) -> Result<Opened, String> {
    let threads = a.threads.clamp(1, n.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share = n / threads + usize::from(t < n % threads);
            let a = a.clone();
            std::thread::spawn(move || -> Result<Opened, String> {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut streams = Vec::with_capacity(share);
                for i in 0..share {
                    let t0 = Instant::now();
                    let own = if a.sessions > 0 { ClientType::Proxy } else { client_type };
                    let mut c = Client::connect_as(a.server.as_str(), own, CLIENT_NAME, a.credential.as_deref())
                        .map_err(|e| format!("connection {i} of thread {t}: {e}"))?;
                    hist.record(t0.elapsed().as_micros().max(1) as u64).ok();
                    for s in 1..=a.sessions {
                        let t0 = Instant::now();
                        c.open_session(s, client_type, CLIENT_NAME, a.credential.as_deref())
                            .map_err(|e| format!("session {s} of connection {i} of thread {t}: {e}"))?;
                        hist.record(t0.elapsed().as_micros().max(1) as u64).ok();
                    }
                    // Keep only the socket: the server sees an idle client.
                    streams.push(c.into_parts().0);
                }
                Ok(Opened { streams, hist })
            })
        })
        .collect();
    let mut all =
        Opened { streams: Vec::with_capacity(n), hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap() };
    for h in handles {
        let o = h.join().map_err(|_| "an opening thread panicked".to_string())??;
        all.streams.extend(o.streams);
        all.hist.add(&o.hist).expect("same bounds");
    }
    Ok(all)
}

/// Helper process: open the share, say `ready`, hold until stdin closes.
fn hold(a: &IdleArgs, client_type: ClientType) -> Result<(), String> {
    let opened = open(a, client_type, a.connections)?;
    let h = &opened.hist;
    println!(
        "ready {} {} {} {} {}",
        opened.streams.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())? > 0 {}
    drop(opened);
    Ok(())
}

/// Starts one helper process holding `n` connections.
fn spawn_helper(a: &IdleArgs, n: usize) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["idle", "--hold", "--server", &a.server, "--client-type", &a.client_type]).args([
        "--connections",
        &n.to_string(),
        "--threads",
        &a.threads.to_string(),
        "--sessions",
        &a.sessions.to_string(),
    ]);
    if let Some(c) = &a.credential {
        cmd.args(["--credential", c]);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| format!("cannot start a helper: {e}"))
}

/// Waits for a helper's `ready` line: (connections, p50, p99, p99.9, max).
fn helper_ready(child: &mut Child) -> Result<[u64; 5], String> {
    let out = child.stdout.take().ok_or("helper without stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    match (line.starts_with("ready "), v.as_slice()) {
        (true, &[n, p50, p99, p999, max]) => Ok([n, p50, p99, p999, max]),
        _ => Err(format!("a helper process failed (it said '{}')", line.trim())),
    }
}

pub fn idle(a: IdleArgs) -> Result<(), String> {
    let client_type =
        ClientType::from_name(&a.client_type).ok_or_else(|| format!("unknown client type '{}'", a.client_type))?;
    if a.hold {
        return hold(&a, client_type);
    }
    let pid = a.server_pid.ok_or("--server-pid is required: the scenario reads the server's VmRSS")?;
    let processes = a.processes.max(1);
    let mut probe =
        Client::connect_as(a.server.as_str(), ClientType::Operator, "bench-operator", a.credential.as_deref())
            .map_err(|e| format!("cannot register at {}: {e}", a.server))?;
    probe.ping().map_err(|e| format!("ping failed: {e}"))?;
    let rss_before = rss_kib(pid)?;
    let start = Instant::now();
    // Helpers take equal shares; this process opens the rest.
    let helper_share = a.connections / processes;
    let mut helpers = Vec::new();
    for _ in 1..processes {
        helpers.push(spawn_helper(&a, helper_share)?);
    }
    let mine = a.connections - helper_share * (processes - 1);
    let opened = open(&a, client_type, mine)?;
    let mut opened_total = opened.streams.len() as u64;
    let mut worst = [
        opened.hist.value_at_quantile(0.5),
        opened.hist.value_at_quantile(0.99),
        opened.hist.value_at_quantile(0.999),
        opened.hist.max(),
    ];
    for h in &mut helpers {
        let [n, p50, p99, p999, max] = helper_ready(h)?;
        opened_total += n;
        // Percentiles of several processes do not merge: report the worst.
        for (w, v) in worst.iter_mut().zip([p50, p99, p999, max]) {
            *w = (*w).max(v);
        }
    }
    let open_s = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(a.settle));
    let rss_open = rss_kib(pid)?;
    let per_conn = (rss_open as f64 - rss_before as f64) * 1024.0 / opened_total as f64;
    // The clients: the connections, or the sessions they carry.
    let clients = if a.sessions > 0 { opened_total * a.sessions as u64 } else { opened_total };
    let per_client = (rss_open as f64 - rss_before as f64) * 1024.0 / clients as f64;
    let alive = probe.ping().is_ok();
    drop(opened);
    for mut h in helpers {
        drop(h.stdin.take());
        let _ = h.wait();
    }
    std::thread::sleep(Duration::from_secs(a.settle));
    let rss_closed = rss_kib(pid)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let what = if a.sessions > 0 {
        format!("{clients} {} sessions on {opened_total} connections", a.client_type)
    } else {
        format!("{opened_total} {} connections", a.client_type)
    };
    println!(
        "idle: {what} opened in {open_s:.1} s over {processes} process(es); server VmRSS {rss_before} KiB before, {rss_open} KiB with them open = {per_conn:.0} bytes per connection, {per_client:.0} per client; {rss_closed} KiB after they closed; registration p50 {} us, p99 {} us; server {}",
        worst[0],
        worst[1],
        if alive { "still answers" } else { "DOES NOT ANSWER" }
    );
    let out = json!({
        "scenario": "idle",
        "target": a.server,
        "duration_s": open_s,
        "clients": clients,
        "connections": opened_total,
        "sessions_per_connection": a.sessions,
        "client_type": a.client_type,
        "processes": processes,
        "threads": a.threads,
        "ops_per_sec": clients as f64 / open_s,
        "p50_us": worst[0],
        "p99_us": worst[1],
        "p999_us": worst[2],
        "max_us": worst[3],
        "server_rss_before_kib": rss_before,
        "server_rss_open_kib": rss_open,
        "server_rss_closed_kib": rss_closed,
        "server_bytes_per_connection": per_conn,
        "server_bytes_per_client": per_client,
        "errors": u64::from(!alive),
        "lost": null,
        "cores": cores,
    });
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{out}\n")).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if !alive {
        return Err("the server stopped answering with the connections open".into());
    }
    Ok(())
}

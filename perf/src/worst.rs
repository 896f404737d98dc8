//! `ixn-perf worst`: how long the worst requests a client may send hold a
//! shard, in the shard state machine alone.
//!
//! One shard with a backlog of `--backlog` queued interactions (a few
//! properties each). Then each of the heaviest requests the protocol allows,
//! within the server's bounds, is fed to it, and every step of the state
//! machine (one `Shard::handle` call: the request, its storage completion,
//! each message the shard sends itself, each slice of a scan) is timed. A
//! step is the unit that holds the shard: nothing else runs on it during
//! one. The figure per request is its longest step (and the sum of its
//! steps, and their count).
//!
//! Requests: a submit with `max-properties-per-interaction` keys
//! (default 1000) whose values fill the properties' byte bound; a change
//! that sets that many keys and deletes that many; the same submit at a
//! raised bound of 40,000 keys (the size a client could send before the
//! bound existed); a pull of 1000 from a view of the backlog; a find and a
//! snapshot over the whole backlog (sliced scans); a configuration reload
//! that adds a view on the backlog's queue (its index is built in the one
//! step that applies the reload), and one that adds an agent only.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ixn_shard::catalog::Catalog;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, ClientType, Request, Submit};
use ixn_shard::{KvList, Value};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct WorstArgs {
    /// Queued interactions on the shard.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Times each request is made; the longest step over all is reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Write the result as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const T0: i64 = 1_800_000_000_000_000;

struct Bench {
    s: Shard,
    now_us: i64,
    next_ref: u32,
}

/// What one request cost: its steps and their times.
#[derive(Default)]
struct Cost {
    steps: usize,
    longest: Duration,
    /// Every step's time.
    all: Vec<Duration>,
    /// What the longest step handled.
    longest_input: String,
    total: Duration,
}

impl Cost {
    fn add(&mut self, d: Duration) {
        self.all.push(d);
        self.steps += 1;
        self.longest = self.longest.max(d);
        self.total += d;
    }
}

impl Bench {
    fn new(max_keys: usize, max_bytes: usize) -> Bench {
        let params =
            ShardParams { max_property_keys: max_keys, max_properties_bytes: max_bytes, ..ShardParams::new(1, 0, 1) };
        Bench { s: Shard::new(params, Arc::new(Catalog::embedded_default())), now_us: T0, next_ref: 1 }
    }

    /// Runs `request` and everything it causes on this shard (its writes
    /// committed at once), timing each step. Returns the answer and the cost.
    fn run(&mut self, client_type: ClientType, request: Request) -> (Option<ixn_shard::proto::Frame>, Cost) {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin: Origin { shard: 0, conn: 1, session: 0 },
            ref_id,
            client_type,
            client_name: "perf".into(),
            agent: None,
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        self.run_input(Input::Request { caller, request }, ref_id)
    }

    /// Runs `input` and everything it causes on this shard, timing each
    /// step; returns the answer to `ref_id`, if any, and the cost.
    fn run_input(&mut self, input: Input, ref_id: u32) -> (Option<ixn_shard::proto::Frame>, Cost) {
        let mut inputs = VecDeque::from([input]);
        let mut cost = Cost::default();
        let mut answer = None;
        let mut out = Vec::new();
        while let Some(input) = inputs.pop_front() {
            self.now_us += 1;
            let what = match &input {
                Input::Peer { msg, .. } => format!("{msg:?}").chars().take(40).collect::<String>(),
                Input::Request { request, .. } => request.name().to_string(),
                Input::StorageDone { .. } => "storage completion".into(),
                Input::Reconfigure { .. } => "reload".into(),
                _ => "other".into(),
            };
            let t = Instant::now();
            self.s.handle_at(self.now_us, input, &mut out);
            let d = t.elapsed();
            if d > cost.longest {
                cost.longest_input = what;
            }
            cost.add(d);
            for o in out.drain(..) {
                match o {
                    Output::Store { token, .. } => inputs.push_back(Input::StorageDone { token, ok: true }),
                    Output::Peer { msg, .. } => inputs.push_back(Input::Peer { from: 0, msg }),
                    Output::Reply { frame, .. } if frame.ref_id == ref_id => answer = Some(frame),
                    _ => {}
                }
            }
        }
        (answer, cost)
    }

    /// A reload's catalog built from `tenant`, laid over the running one
    /// and applied as the server does: first with the added views hidden
    /// while their indexes are built (slice by slice), then in full. Every
    /// step timed.
    fn reconfigure(&mut self, tenant: ixn_shard::catalog::Tenant) -> Cost {
        let next = Catalog::new(vec![tenant], true).expect("a valid catalog");
        let (catalog, _) = self.s.catalog().evolve(&next).expect("a reloadable change");
        let mut cost = Cost::default();
        if catalog.adds_views(self.s.catalog()) {
            let staged = self.s.catalog().staged(&catalog);
            let (_, c) = self.run_input(Input::Reconfigure { catalog: Arc::new(staged) }, 0);
            cost = c;
            assert_eq!(self.s.building_views(), 0, "the shard built them");
        }
        let (_, c) = self.run_input(Input::Reconfigure { catalog: Arc::new(catalog) }, 0);
        for d in c.all {
            if d > cost.longest {
                cost.longest_input = "reload".into();
            }
            cost.add(d);
        }
        cost
    }

    fn submit(&mut self, properties: KvList, priority: i64) -> (String, Cost) {
        let r = Request::Submit(Box::new(Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: "inbound".into(),
            priority,
            properties,
            id: None,
            received_at_ms: None,
        }));
        let (a, cost) = self.run(ClientType::MediaServer, r);
        let a = a.expect("an answer");
        if let Some(e) = error_of(&a) {
            panic!("submit refused: {}", e.text);
        }
        (a.get_str(attr::INTERACTION_ID).expect("an id").to_string(), cost)
    }
}

/// `n` keys whose values together take about `bytes` bytes.
fn big_properties(n: usize, bytes: usize, prefix: &str) -> KvList {
    let value_len = (bytes / n.max(1)).saturating_sub(16).max(1);
    KvList::from_entries((0..n).map(|i| (format!("{prefix}{i:06}"), Value::Str("x".repeat(value_len)))).collect())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn run(a: WorstArgs) -> Result<(), String> {
    let max_keys = ixn_shard::machine::DEFAULT_MAX_PROPERTY_KEYS;
    let default_bytes = ShardParams::new(1, 0, 1).max_properties_bytes;
    let mut b = Bench::new(max_keys, default_bytes);
    let budget = default_bytes * 9 / 10;
    println!("worst requests: one shard, backlog of {} queued interactions", a.backlog);
    let t = Instant::now();
    for i in 0..a.backlog {
        b.submit(KvList::from_entries(vec![("lang".into(), Value::Str("en".into()))]), (i % 10) as i64);
    }
    println!("  backlog built in {:.1} s", t.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    let mut report = |name: &str, costs: Vec<Cost>| {
        let longest = costs.iter().map(|c| c.longest).max().unwrap_or_default();
        let total = costs.iter().map(|c| c.total).max().unwrap_or_default();
        let steps = costs.iter().map(|c| c.steps).max().unwrap_or_default();
        let input = costs.iter().max_by_key(|c| c.longest).map(|c| c.longest_input.clone()).unwrap_or_default();
        let mut all: Vec<Duration> = costs.iter().flat_map(|c| c.all.iter().copied()).collect();
        all.sort_unstable();
        let p99 = all.get((all.len() * 99 / 100).min(all.len().saturating_sub(1))).copied().unwrap_or_default();
        println!(
            "  {name:<62} longest step {:>9.1} us   p99 step {:>8.1} us   all steps {:>10.1} us   steps {steps}",
            us(longest),
            us(p99),
            us(total)
        );
        println!("      longest step handled: {input}");
        rows.push(json!({"request": name, "longest_step_us": us(longest), "p99_step_us": us(p99), "longest_step_input": input, "total_us": us(total), "steps": steps}));
    };

    let mut costs = Vec::new();
    let mut ids = Vec::new();
    for r in 0..a.repeat {
        let (id, c) = b.submit(big_properties(max_keys, budget, &format!("k{r}-")), 0);
        ids.push(id);
        costs.push(c);
    }
    report(&format!("submit, {max_keys} keys, {} KiB of properties", budget / 1024), costs);

    let mut costs = Vec::new();
    for id in &ids {
        // Replace half the keys and delete the other half: the change names
        // every key once, and the request holds the bound in each list.
        let props = b.s.get(id).expect("live").properties().clone();
        let keys: Vec<String> = props.iter().map(|(k, _)| k.to_string()).collect();
        let changed =
            KvList::from_entries(keys.iter().step_by(2).map(|k| (k.clone(), Value::Str("y".repeat(200)))).collect());
        let deleted: Vec<String> = keys.iter().skip(1).step_by(2).cloned().collect();
        let (ans, c) = b.run(ClientType::MediaServer, Request::ChangeProperties { id: id.clone(), changed, deleted });
        assert!(ans.as_ref().and_then(error_of).is_none(), "change refused");
        costs.push(c);
    }
    report(&format!("change, {} keys set and {} deleted", max_keys / 2, max_keys / 2), costs);

    // The report's request needed max-frame-size raised to 2 MiB as well.
    let mut raised = Bench::new(40_000, 1 << 20);
    let mut costs = Vec::new();
    for r in 0..a.repeat {
        // 40,000 keys of small values: 0.8 MB or so, as the report that
        // found the quadratic check sent.
        costs.push(raised.submit(big_properties(40_000, 800_000, &format!("k{r}-")), 0).1);
    }
    report("submit, 40,000 keys (bound raised to 40,000; 2 MiB frames), ~800 KB", costs);

    let mut costs = Vec::new();
    for _ in 0..a.repeat {
        let r = Request::Pull { tenant: "default".into(), view: "inbound-by-priority".into(), count: 1000 };
        costs.push(b.run(ClientType::RoutingEngine, r).1);
    }
    report("pull of 1000 from the backlog's view", costs);

    let mut costs = Vec::new();
    for _ in 0..a.repeat {
        let r =
            Request::FindInteractions { tenant: None, condition: "priority = 9 AND lang = 'en'".into(), limit: 100 };
        costs.push(b.run(ClientType::Operator, r).1);
    }
    report("find over the whole backlog (sliced)", costs);

    let mut costs = Vec::new();
    for _ in 0..a.repeat {
        let r = Request::TakeSnapshot { tenant: None, condition: "priority >= 0".into(), lock: false, limit: None };
        costs.push(b.run(ClientType::Operator, r).1);
    }
    report("snapshot of the whole backlog (cut, then sliced)", costs);

    // Reloads: the embedded default plus views (each repeat one more, each
    // over the whole backlog), then plus an agent only.
    let default_tenant = || Catalog::embedded_default().tenants[0].clone();
    let mut tenant = default_tenant();
    let mut costs = Vec::new();
    for r in 0..a.repeat {
        let name = format!("english-by-priority-{r}");
        tenant.add_view("inbound", &name, Some("lang = 'en'"), Some("priority DESC, lang")).expect("a valid view");
        costs.push(b.reconfigure(tenant.clone()));
    }
    report("reload adding a view on the backlog's queue (built in slices)", costs);
    let mut costs = Vec::new();
    for r in 0..a.repeat {
        tenant.add_agent(&format!("new-agent-{r}"), &[], &[("chat", 1)], &[]).expect("a valid agent");
        costs.push(b.reconfigure(tenant.clone()));
    }
    report("reload adding an agent", costs);

    // An operator may allow snapshots of everything: each shard then sends
    // its whole list, and the coordinator merges them.
    let mut costs = Vec::new();
    let all = u32::try_from(a.backlog).unwrap_or(u32::MAX);
    let saved =
        std::mem::replace(&mut b.s, Shard::new(ShardParams::new(1, 0, 1), Arc::new(Catalog::embedded_default())));
    b.s = saved.with_max_snapshot(all);
    for _ in 0..a.repeat.min(2) {
        let r = Request::TakeSnapshot { tenant: None, condition: "priority >= 0".into(), lock: false, limit: None };
        let (ans, c) = b.run(ClientType::Operator, r);
        if let Some(snapshot) = ans.and_then(|f| f.get_int(attr::SNAPSHOT_ID)) {
            b.run(ClientType::Operator, Request::ReleaseSnapshot { snapshot: snapshot as u64 });
        }
        costs.push(c);
    }
    report(&format!("snapshot of the whole backlog, max-interactions-per-snapshot {all}"), costs);

    if let Some(path) = &a.json {
        let out = json!({"scenario": "worst-request", "backlog": a.backlog, "repeat": a.repeat, "requests": rows});
        std::fs::write(path, format!("{out}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

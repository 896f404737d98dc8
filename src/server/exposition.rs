//! What the management listener says about a scrape: the Prometheus text
//! format, the dashboard's JSON, readiness, and the history samples.
//! Pure functions of a [`Scrape`], so they are tested without a server.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ixn_shard::catalog::Catalog;
use ixn_shard::proto::msg_type;
use ixn_storage::stats::WriterStats;
use serde_json::{json, Value};

use super::metrics::{ShardReport, LATENCY_BOUNDS_US};

/// Everything read for one answer.
pub struct Scrape {
    pub at_ms: i64,
    pub uptime: Duration,
    pub node_id: u8,
    /// By shard; `None`: the shard did not answer in time.
    pub reports: Vec<Option<ShardReport>>,
    pub writers: Vec<Arc<WriterStats>>,
    /// Writes queued for each writer.
    pub queued: Vec<usize>,
    /// The event log's outbox: events waiting, events shipped.
    pub outbox: Option<(u64, u64)>,
}

/// One second of the dashboard's history.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    /// Answers per second, node-wide and by shard.
    pub rate: f64,
    pub shard_rates: Vec<f64>,
    /// Latency of the answers in the second (upper bounds of their
    /// buckets), in milliseconds; `None` with no answer.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A series per shard: name, help, how to read it from a report.
type ShardSeries = (&'static str, &'static str, fn(&ShardReport) -> u64);
/// A series per writer, likewise.
type WriterSeries = (&'static str, &'static str, fn(&WriterStats) -> u64);

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn type_name(t: u16) -> &'static str {
    if t == 0 {
        "unknown"
    } else {
        msg_type::name(t)
    }
}

/// Each queue of the catalog walked tenant by tenant: (tenant, queue).
fn queue_names(catalog: &Catalog) -> Vec<(&str, &str)> {
    catalog.tenants.iter().flat_map(|t| t.queues.iter().map(move |q| (t.name.as_str(), q.name.as_str()))).collect()
}

/// Each view likewise: (tenant, view, its queue), `None` for a view a
/// reload removed or replaced (a changed view has a new index under the
/// same name: two series must not share one name).
fn view_names(catalog: &Catalog) -> Vec<Option<(&str, &str, &str)>> {
    catalog
        .tenants
        .iter()
        .flat_map(|t| {
            t.views.iter().map(move |v| {
                (!v.retired).then(|| (t.name.as_str(), v.name.as_str(), t.queues[v.queue as usize].name.as_str()))
            })
        })
        .collect()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a histogram's series from per-bucket counts (the last above
/// every bound), bounds in `unit`s of `scale` per second.
fn histogram(out: &mut String, name: &str, labels: &str, bounds: &[u64], counts: &[u64], sum: u64, scale: f64) {
    let mut cumulative = 0;
    for (i, b) in bounds.iter().enumerate() {
        cumulative += counts[i];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}", *b as f64 / scale);
    }
    cumulative += counts[bounds.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum as f64 / scale);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// The Prometheus text format (version 0.0.4).
pub fn prometheus(catalog: &Catalog, s: &Scrape) -> String {
    let mut o = String::with_capacity(16 << 10);
    let live = || s.reports.iter().flatten();
    header(&mut o, "ixn_uptime_seconds", "gauge", "Seconds since the server started.");
    let _ = writeln!(o, "ixn_uptime_seconds{{node=\"{}\"}} {}", s.node_id, s.uptime.as_secs_f64());
    header(&mut o, "ixn_shard_up", "gauge", "1 if the shard answered this scrape in time.");
    for (i, r) in s.reports.iter().enumerate() {
        let _ = writeln!(o, "ixn_shard_up{{shard=\"{i}\"}} {}", u8::from(r.is_some()));
    }

    header(&mut o, "ixn_scrape_shard_seconds", "gauge", "How long the shard took to make its part of this scrape.");
    for r in live() {
        let _ = writeln!(o, "ixn_scrape_shard_seconds{{shard=\"{}\"}} {}", r.shard, r.took_us as f64 / 1e6);
    }
    header(&mut o, "ixn_requests_total", "counter", "Requests answered, by shard and message type.");
    for r in live() {
        for c in &r.requests {
            let _ = writeln!(
                o,
                "ixn_requests_total{{shard=\"{}\",type=\"{}\"}} {}",
                r.shard,
                type_name(c.msg_type),
                c.count
            );
        }
    }
    header(
        &mut o,
        "ixn_request_duration_seconds",
        "histogram",
        "From a request's arrival to its answer queued for the socket, by shard and message type.",
    );
    for r in live() {
        for c in &r.requests {
            let labels = format!("shard=\"{}\",type=\"{}\"", r.shard, type_name(c.msg_type));
            histogram(&mut o, "ixn_request_duration_seconds", &labels, &LATENCY_BOUNDS_US, &c.buckets, c.sum_us, 1e6);
        }
    }
    header(&mut o, "ixn_errors_total", "counter", "EventError answers sent, by shard and error code.");
    for r in live() {
        for (code, n) in &r.errors {
            let _ = writeln!(o, "ixn_errors_total{{shard=\"{}\",code=\"{code}\"}} {n}", r.shard);
        }
    }

    let gauges: [ShardSeries; 6] = [
        ("ixn_connections", "Client connections open.", |r| r.connections),
        ("ixn_sessions", "Client sessions open (a connection's own included).", |r| r.sessions),
        ("ixn_interactions", "Live interactions the shard owns.", |r| r.gauges.interactions),
        ("ixn_pending_writes", "Writes sent to the database writers and not yet answered.", |r| {
            r.gauges.pending_writes
        }),
        ("ixn_unreleased_events", "Reporting events waiting for their writes.", |r| r.gauges.unreleased_events),
        ("ixn_locks", "Interactions offered, handled or pulled (locked).", |r| {
            r.gauges.queues.iter().map(|q| q.locked).sum()
        }),
    ];
    for (name, help, get) in gauges {
        header(&mut o, name, "gauge", help);
        for r in live() {
            let _ = writeln!(o, "{name}{{shard=\"{}\"}} {}", r.shard, get(r));
        }
    }
    let counters: [ShardSeries; 3] = [
        ("ixn_connections_accepted_total", "Client connections accepted.", |r| r.accepted),
        ("ixn_connections_refused_total", "Client connections refused at max-connections.", |r| r.refused),
        ("ixn_connections_closed_total", "Client connections closed.", |r| r.closed),
    ];
    for (name, help, get) in counters {
        header(&mut o, name, "counter", help);
        for r in live() {
            let _ = writeln!(o, "{name}{{shard=\"{}\"}} {}", r.shard, get(r));
        }
    }
    header(&mut o, "ixn_shard_queue_messages", "gauge", "Messages waiting in a shard's queue to another shard.");
    for r in live() {
        for (to, n) in &r.to_peers {
            let _ = writeln!(o, "ixn_shard_queue_messages{{shard=\"{}\",to=\"{to}\"}} {n}", r.shard);
        }
    }

    let queues = queue_names(catalog);
    header(&mut o, "ixn_queue_interactions", "gauge", "Interactions in a queue, waiting or locked, by shard.");
    for r in live() {
        for (k, q) in r.gauges.queues.iter().enumerate() {
            let (t, name) = queues[k];
            let l = format!("shard=\"{}\",tenant=\"{}\",queue=\"{}\"", r.shard, label(t), label(name));
            let _ = writeln!(o, "ixn_queue_interactions{{{l},state=\"waiting\"}} {}", q.waiting);
            let _ = writeln!(o, "ixn_queue_interactions{{{l},state=\"locked\"}} {}", q.locked);
        }
    }
    header(
        &mut o,
        "ixn_queue_oldest_waiting_seconds",
        "gauge",
        "Age of the longest-waiting interaction of a queue (0 when none waits).",
    );
    for (k, (t, name)) in queues.iter().enumerate() {
        let age = oldest_age_ms(s, k).unwrap_or(0);
        let _ = writeln!(
            o,
            "ixn_queue_oldest_waiting_seconds{{tenant=\"{}\",queue=\"{}\"}} {}",
            label(t),
            label(name),
            age as f64 / 1000.0
        );
    }
    let views = view_names(catalog);
    header(&mut o, "ixn_view_interactions", "gauge", "Waiting interactions a view holds, by shard.");
    for r in live() {
        for (k, n) in r.gauges.views.iter().enumerate() {
            let Some((t, v, q)) = views[k] else { continue };
            let _ = writeln!(
                o,
                "ixn_view_interactions{{shard=\"{}\",tenant=\"{}\",view=\"{}\",queue=\"{}\"}} {n}",
                r.shard,
                label(t),
                label(v),
                label(q)
            );
        }
    }
    header(&mut o, "ixn_agents", "gauge", "Agents homed on a shard, by tenant and state.");
    for r in live() {
        for (t, a) in r.gauges.agents.iter().enumerate() {
            let tenant = label(&catalog.tenants[t].name);
            for (state, n) in [
                ("logged_in", a.logged_in),
                ("ready", a.ready),
                ("not_ready", a.not_ready),
                ("busy", a.busy),
                ("disconnected", a.disconnected),
            ] {
                let _ = writeln!(o, "ixn_agents{{shard=\"{}\",tenant=\"{tenant}\",state=\"{state}\"}} {n}", r.shard);
            }
        }
    }

    writers(&mut o, s);
    if let Some((waiting, shipped)) = s.outbox {
        header(&mut o, "ixn_event_log_outbox_events", "gauge", "Events in the event log's outbox, not yet shipped.");
        let _ = writeln!(o, "ixn_event_log_outbox_events {waiting}");
        header(
            &mut o,
            "ixn_event_log_shipped_total",
            "counter",
            "Events stored in the event log (shipped from the outbox, or stored with their change).",
        );
        let _ = writeln!(o, "ixn_event_log_shipped_total {shipped}");
    }
    o
}

fn writers(o: &mut String, s: &Scrape) {
    let counters: [WriterSeries; 3] = [
        ("ixn_writer_batches_total", "Batches a database writer committed.", |w| w.batches.load(Ordering::Relaxed)),
        ("ixn_writer_writes_total", "Writes a database writer committed.", |w| w.writes.load(Ordering::Relaxed)),
        (
            "ixn_writer_failed_attempts_total",
            "Attempts of a batch that failed (lost, unknown outcome, refused).",
            |w| w.failed_attempts.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        header(o, name, "counter", help);
        for (i, w) in s.writers.iter().enumerate() {
            let _ = writeln!(o, "{name}{{writer=\"{i}\"}} {}", get(w));
        }
    }
    header(o, "ixn_writer_failing", "gauge", "1 while a writer's batch fails and is retried.");
    for (i, w) in s.writers.iter().enumerate() {
        let _ = writeln!(o, "ixn_writer_failing{{writer=\"{i}\"}} {}", u8::from(w.failing.load(Ordering::Relaxed)));
    }
    header(o, "ixn_writer_queued_writes", "gauge", "Writes queued for a writer, not yet in a batch.");
    for (i, n) in s.queued.iter().enumerate() {
        let _ = writeln!(o, "ixn_writer_queued_writes{{writer=\"{i}\"}} {n}");
    }
    header(
        o,
        "ixn_writer_commit_duration_seconds",
        "histogram",
        "From a batch's first statement to its COMMIT's reply.",
    );
    for (i, w) in s.writers.iter().enumerate() {
        let (counts, sum) = w.commit_us.read();
        let labels = format!("writer=\"{i}\"");
        histogram(o, "ixn_writer_commit_duration_seconds", &labels, w.commit_us.bounds(), &counts, sum, 1e6);
    }
    header(o, "ixn_writer_batch_writes", "histogram", "Writes per committed batch.");
    for (i, w) in s.writers.iter().enumerate() {
        let (counts, sum) = w.batch_size.read();
        let labels = format!("writer=\"{i}\"");
        histogram(o, "ixn_writer_batch_writes", &labels, w.batch_size.bounds(), &counts, sum, 1.0);
    }
}

/// Age of the longest-waiting interaction of the k-th queue over the
/// shards that answered.
fn oldest_age_ms(s: &Scrape, k: usize) -> Option<i64> {
    s.reports
        .iter()
        .flatten()
        .filter_map(|r| r.gauges.queues.get(k).and_then(|q| q.oldest_waiting_at))
        .min()
        .map(|at| (s.at_ms - at).max(0))
}

/// Why the node is not ready; empty when it is.
pub fn not_ready(s: &Scrape) -> Vec<String> {
    let mut why = Vec::new();
    for (i, r) in s.reports.iter().enumerate() {
        if r.is_none() {
            why.push(format!("shard {i} did not answer within 1 s"));
        }
    }
    for (i, w) in s.writers.iter().enumerate() {
        if w.failing.load(Ordering::Relaxed) {
            why.push(format!("database writer {i} is failing to commit (the database is unreachable or refusing)"));
        }
    }
    why
}

/// The second between two scrapes.
pub fn sample(prev: &Scrape, now: &Scrape) -> Sample {
    let secs = ((now.at_ms - prev.at_ms) as f64 / 1000.0).max(0.001);
    let totals = |s: &Scrape| -> Vec<(u64, Vec<u64>)> {
        s.reports
            .iter()
            .map(|r| {
                let mut buckets = vec![0u64; LATENCY_BOUNDS_US.len() + 1];
                let mut n = 0;
                for c in r.iter().flat_map(|r| &r.requests) {
                    n += c.count;
                    for (b, v) in buckets.iter_mut().zip(c.buckets) {
                        *b += v;
                    }
                }
                (n, buckets)
            })
            .collect()
    };
    let (a, b) = (totals(prev), totals(now));
    let mut merged = vec![0u64; LATENCY_BOUNDS_US.len() + 1];
    let mut shard_rates = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        shard_rates.push(y.0.saturating_sub(x.0) as f64 / secs);
        for (m, (bx, by)) in merged.iter_mut().zip(x.1.iter().zip(&y.1)) {
            *m += by.saturating_sub(*bx);
        }
    }
    Sample {
        at_ms: now.at_ms,
        rate: shard_rates.iter().sum(),
        shard_rates,
        p50_ms: quantile_ms(&merged, 0.50),
        p99_ms: quantile_ms(&merged, 0.99),
    }
}

/// The upper bound of the bucket holding quantile `q` (the last bucket
/// reads as twice the last bound).
fn quantile_ms(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            let bound = LATENCY_BOUNDS_US.get(i).copied().unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] * 2);
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

/// The dashboard's JSON.
pub fn state_json(catalog: &Catalog, s: &Scrape, history: &[Sample]) -> String {
    let live = || s.reports.iter().flatten();
    // A queue a reload removed is shown while it still holds interactions.
    let removed: Vec<bool> = catalog.tenants.iter().flat_map(|t| t.queues.iter().map(|q| q.retired)).collect();
    let queues: Vec<Value> = queue_names(catalog)
        .iter()
        .enumerate()
        .filter_map(|(k, (t, q))| {
            let (waiting, locked) = live()
                .fold((0, 0), |(w, l), r| r.gauges.queues.get(k).map_or((w, l), |g| (w + g.waiting, l + g.locked)));
            (!removed[k] || waiting + locked > 0).then(|| {
                json!({"tenant": t, "queue": q, "waiting": waiting, "locked": locked,
                       "oldest_age_ms": oldest_age_ms(s, k), "removed": removed[k]})
            })
        })
        .collect();
    let views: Vec<Value> = view_names(catalog)
        .iter()
        .enumerate()
        .filter_map(|(k, names)| names.map(|n| (k, n)))
        .map(|(k, (t, v, q))| {
            let depth: u64 = live().filter_map(|r| r.gauges.views.get(k)).sum();
            json!({"tenant": t, "view": v, "queue": q, "depth": depth})
        })
        .collect();
    let agents: Vec<Value> = catalog
        .tenants
        .iter()
        .enumerate()
        .map(|(t, tenant)| {
            let mut sum = [0u64; 5];
            for a in live().filter_map(|r| r.gauges.agents.get(t)) {
                for (x, y) in sum.iter_mut().zip([a.logged_in, a.ready, a.not_ready, a.busy, a.disconnected]) {
                    *x += y;
                }
            }
            json!({"tenant": tenant.name, "logged_in": sum[0], "ready": sum[1], "not_ready": sum[2],
                   "busy": sum[3], "disconnected": sum[4]})
        })
        .collect();
    let shards: Vec<Value> = s
        .reports
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) => json!({"shard": i, "up": true, "interactions": r.gauges.interactions,
                "connections": r.connections, "sessions": r.sessions,
                "requests": r.requests.iter().map(|c| c.count).sum::<u64>(),
                "pending_writes": r.gauges.pending_writes}),
            None => json!({"shard": i, "up": false}),
        })
        .collect();
    let writers: Vec<Value> = s
        .writers
        .iter()
        .zip(&s.queued)
        .enumerate()
        .map(|(i, (w, q))| {
            json!({"writer": i, "batches": w.batches.load(Ordering::Relaxed), "writes": w.writes.load(Ordering::Relaxed),
                   "failing": w.failing.load(Ordering::Relaxed), "queued": q})
        })
        .collect();
    let history: Vec<Value> = history
        .iter()
        .map(|h| json!({"at_ms": h.at_ms, "rate": h.rate, "shard_rates": h.shard_rates, "p50_ms": h.p50_ms, "p99_ms": h.p99_ms}))
        .collect();
    json!({
        "node": s.node_id, "at_ms": s.at_ms, "uptime_s": s.uptime.as_secs(),
        "ready": not_ready(s).is_empty(),
        "shards": shards, "queues": queues, "views": views, "agents": agents, "writers": writers,
        "outbox": s.outbox.map(|(w, sh)| json!({"waiting": w, "shipped": sh})),
        "history": history,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::metrics::RequestCounts;
    use ixn_shard::gauges::{Gauges, QueueGauge};

    fn scrape(at_ms: i64, count: u64, bucket: usize) -> Scrape {
        let mut buckets = [0u64; LATENCY_BOUNDS_US.len() + 1];
        buckets[bucket] = count;
        let report = ShardReport {
            shard: 0,
            requests: vec![RequestCounts { msg_type: msg_type::REQUEST_SUBMIT, count, buckets, sum_us: count * 100 }],
            gauges: Gauges {
                queues: vec![QueueGauge { waiting: 2, locked: 1, oldest_waiting_at: Some(at_ms - 1500) }],
                ..Gauges::default()
            },
            ..ShardReport::default()
        };
        Scrape {
            at_ms,
            uptime: Duration::from_secs(3),
            node_id: 1,
            reports: vec![Some(report), None],
            writers: vec![Arc::new(WriterStats::default())],
            queued: vec![0],
            outbox: None,
        }
    }

    fn catalog() -> Catalog {
        let mut t = ixn_shard::catalog::Tenant::new("acme \"one\"");
        t.queues.push(ixn_shard::catalog::Queue {
            name: "in".into(),
            process: 0,
            next: None,
            views: Vec::new(),
            strategy: None,
            retired: false,
        });
        Catalog::new(vec![t], true).unwrap()
    }

    #[test]
    fn prometheus_text_has_cumulative_buckets_escaped_labels_and_down_shards() {
        let text = prometheus(&catalog(), &scrape(10_000, 5, 2));
        assert!(text.contains("ixn_shard_up{shard=\"1\"} 0"), "{text}");
        assert!(text.contains("ixn_requests_total{shard=\"0\",type=\"RequestSubmit\"} 5"));
        assert!(
            text.contains("ixn_request_duration_seconds_bucket{shard=\"0\",type=\"RequestSubmit\",le=\"0.0001\"} 0")
        );
        assert!(
            text.contains("ixn_request_duration_seconds_bucket{shard=\"0\",type=\"RequestSubmit\",le=\"0.00025\"} 5")
        );
        assert!(text.contains("ixn_request_duration_seconds_bucket{shard=\"0\",type=\"RequestSubmit\",le=\"+Inf\"} 5"));
        assert!(text.contains("ixn_request_duration_seconds_count{shard=\"0\",type=\"RequestSubmit\"} 5"));
        assert!(text.contains(
            "ixn_queue_interactions{shard=\"0\",tenant=\"acme \\\"one\\\"\",queue=\"in\",state=\"waiting\"} 2"
        ));
        assert!(text.contains("ixn_queue_oldest_waiting_seconds{tenant=\"acme \\\"one\\\"\",queue=\"in\"} 1.5"));
        assert!(text.contains("ixn_locks{shard=\"0\"} 1"));
    }

    #[test]
    fn a_silent_shard_or_a_failing_writer_makes_the_node_not_ready() {
        let s = scrape(1000, 1, 0);
        assert_eq!(not_ready(&s), vec!["shard 1 did not answer within 1 s".to_string()]);
        let mut s = scrape(1000, 1, 0);
        s.reports.pop();
        assert!(not_ready(&s).is_empty());
        s.writers[0].failing.store(true, Ordering::Relaxed);
        assert_eq!(not_ready(&s).len(), 1);
    }

    #[test]
    fn a_sample_is_the_rate_and_quantiles_of_the_second_between_scrapes() {
        let (a, b) = (scrape(1000, 100, 2), scrape(3000, 300, 2));
        let s = sample(&a, &b);
        assert_eq!(s.rate, 100.0);
        assert_eq!(s.p50_ms, Some(0.25));
        assert_eq!(s.p99_ms, Some(0.25));
        let quiet = sample(&b, &b);
        assert_eq!((quiet.rate, quiet.p99_ms), (0.0, None));
    }

    #[test]
    fn the_state_json_adds_up_the_shards() {
        let v: Value = serde_json::from_str(&state_json(&catalog(), &scrape(5000, 1, 0), &[])).unwrap();
        assert_eq!(v["queues"][0]["waiting"], 2);
        assert_eq!(v["queues"][0]["oldest_age_ms"], 1500);
        assert_eq!(v["shards"][1]["up"], false);
        assert_eq!(v["ready"], false);
    }
}

//! What a run looks like over time: progress on stderr while it runs, a
//! per-second timeline of throughput and latency in the JSON, and an HTML
//! report with both drawn, written next to the JSON.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Runs shorter than this print no progress.
const QUIET_UP_TO: Duration = Duration::from_secs(3);

/// Samples a counter once a second while the load runs; prints a progress
/// line per second on stderr on runs longer than a few seconds.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl Progress {
    /// `what`: the counted thing, as in "12,000 acked"; `read` reads the
    /// count so far.
    pub fn start(what: &'static str, planned: Duration, read: impl Fn() -> u64 + Send + 'static) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut per_second = Vec::new();
            let mut last = read();
            let mut next = start + Duration::from_secs(1);
            while !s.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                let n = read();
                per_second.push(n - last.min(n));
                last = n;
                let secs = per_second.len() as u64;
                if planned > QUIET_UP_TO {
                    eprintln!(
                        "ixn-bench: {secs}/{} s: {} {what} ({}/s in the last second)",
                        planned.as_secs(),
                        thousands(n),
                        thousands(*per_second.last().unwrap())
                    );
                }
                next += Duration::from_secs(1);
            }
            per_second
        });
        Progress { stop, thread: Some(thread) }
    }

    /// Stops sampling; the count of each whole second.
    pub fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// 12345678 as "12,345,678".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Latencies by the second of the run they were measured in (one per
/// thread; merged at the end).
pub struct Timeline {
    start: Instant,
    seconds: Vec<Histogram<u64>>,
}

impl Timeline {
    pub fn new(start: Instant) -> Timeline {
        Timeline { start, seconds: Vec::new() }
    }

    pub fn record(&mut self, at: Instant, latency: Duration) {
        let s = at.saturating_duration_since(self.start).as_secs() as usize;
        while self.seconds.len() <= s {
            // Two significant digits: a few KiB a second per thread.
            self.seconds.push(Histogram::new_with_bounds(1, 600_000_000, 2).expect("histogram"));
        }
        let us = (latency.as_micros() as u64).clamp(1, 600_000_000);
        self.seconds[s].record(us).expect("within bounds");
    }

    pub fn merge(&mut self, other: &Timeline) {
        while self.seconds.len() < other.seconds.len() {
            self.seconds.push(Histogram::new_with_bounds(1, 600_000_000, 2).expect("histogram"));
        }
        for (a, b) in self.seconds.iter_mut().zip(&other.seconds) {
            a.add(b).expect("same bounds");
        }
    }

    /// One entry per second: `ops` from `counts` (the progress sampler's),
    /// latency quantiles from the samples measured in that second.
    pub fn to_json(&self, counts: &[u64]) -> Vec<Value> {
        let n = counts.len().max(self.seconds.len());
        (0..n)
            .map(|s| {
                let h = self.seconds.get(s).filter(|h| !h.is_empty());
                json!({
                    "t_s": s + 1,
                    "ops": counts.get(s),
                    "samples": h.map_or(0, |h| h.len()),
                    "p50_us": h.map(|h| h.value_at_quantile(0.5)),
                    "p99_us": h.map(|h| h.value_at_quantile(0.99)),
                })
            })
            .collect()
    }
}

/// `results.json` -> `results.html`; another name gets `.html` added.
pub fn html_path(json_path: &str) -> String {
    match json_path.strip_suffix(".json") {
        Some(stem) => format!("{stem}.html"),
        None => format!("{json_path}.html"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG line chart of `series` (label, colour, one value per second).
fn svg_chart(title: &str, unit: &str, series: &[(&str, &str, Vec<Option<f64>>)]) -> String {
    let (w, h, left, bottom) = (640.0, 200.0, 60.0, 24.0);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let max = series.iter().flat_map(|s| s.2.iter().flatten()).fold(0.0f64, |m, v| m.max(*v)).max(1e-9);
    let x = |i: usize| left + if n <= 1 { 0.0 } else { i as f64 * (w - left - 10.0) / (n - 1) as f64 };
    let y = |v: f64| (h - bottom) - v / max * (h - bottom - 10.0);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg width=\"{w}\" height=\"{h}\" role=\"img\">\
         <line x1=\"{left}\" y1=\"{b}\" x2=\"{w}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"14\" font-size=\"11\">{} {}</text><text x=\"4\" y=\"{b}\" font-size=\"11\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\">{n} s</text>",
        escape(title),
        fmt_num(max),
        escape(unit),
        w - 40.0,
        h - 6.0,
        b = h - bottom
    );
    for (label, colour, values) in series {
        let points: Vec<String> =
            values.iter().enumerate().filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v)))).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            escape(label)
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (label, colour, _) in series {
        let _ = write!(svg, "<span style=\"color:{colour}\">&#9632; {}</span> ", escape(label));
    }
    svg.push_str("</div></figure>");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        thousands(v.round() as u64)
    } else {
        format!("{v:.2}")
    }
}

/// The HTML report of one run: its result object as a table, and its
/// timeline as two charts (throughput; latency p50 and p99).
pub fn html(title: &str, result: &Value, ops_label: &str, latency_label: &str) -> String {
    let timeline = result["timeline"].as_array().cloned().unwrap_or_default();
    let ops: Vec<Option<f64>> = timeline.iter().map(|t| t["ops"].as_f64()).collect();
    let p50: Vec<Option<f64>> = timeline.iter().map(|t| t["p50_us"].as_f64().map(|v| v / 1000.0)).collect();
    let p99: Vec<Option<f64>> = timeline.iter().map(|t| t["p99_us"].as_f64().map(|v| v / 1000.0)).collect();
    let mut rows = String::new();
    if let Some(o) = result.as_object() {
        for (k, v) in o.iter().filter(|(k, _)| k.as_str() != "timeline") {
            let _ = write!(rows, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v.to_string()));
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
         th,td{{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}}figure{{margin:1em 0}}\
         figcaption{{font-weight:600}}.legend{{font-size:12px}}</style></head><body>\
         <h1>{t}</h1>{ops_chart}{lat_chart}<h2>Result</h2><table>{rows}</table></body></html>\n",
        t = escape(title),
        ops_chart = svg_chart(ops_label, "per second", &[(ops_label, "#36c", ops)]),
        lat_chart = svg_chart(latency_label, "ms", &[("p50", "#4a7", p50), ("p99", "#c63", p99)]),
    )
}

/// Writes the result object to `path` and its HTML report beside it.
pub fn write(path: &str, title: &str, result: &Value, ops_label: &str, latency_label: &str) -> Result<(), String> {
    std::fs::write(path, format!("{result}\n")).map_err(|e| format!("cannot write {path}: {e}"))?;
    let html_path = html_path(path);
    std::fs::write(&html_path, html(title, result, ops_label, latency_label))
        .map_err(|e| format!("cannot write {html_path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn the_timeline_puts_each_sample_in_its_second() {
        let start = Instant::now();
        let mut a = Timeline::new(start);
        a.record(start + Duration::from_millis(100), Duration::from_micros(500));
        a.record(start + Duration::from_millis(2100), Duration::from_micros(9000));
        let mut b = Timeline::new(start);
        b.record(start + Duration::from_millis(150), Duration::from_micros(700));
        a.merge(&b);
        let j = a.to_json(&[2, 0, 1, 5]);
        assert_eq!(j.len(), 4);
        assert_eq!((j[0]["ops"].as_u64(), j[0]["samples"].as_u64()), (Some(2), Some(2)));
        assert_eq!(j[1]["p50_us"], Value::Null);
        assert!((8900..=9100).contains(&j[2]["p99_us"].as_u64().unwrap()));
        assert_eq!(j[3]["samples"], 0);
    }

    #[test]
    fn the_report_draws_the_timeline_and_lists_the_result() {
        let result = json!({"scenario": "submit", "ops_per_sec": 1234.5, "timeline": [
            {"t_s": 1, "ops": 100, "p50_us": 800, "p99_us": 2000},
            {"t_s": 2, "ops": 300, "p50_us": 900, "p99_us": 4000}]});
        let page = html("ixn-bench submit", &result, "acked submissions", "ack latency");
        assert!(page.contains("<th>ops_per_sec</th><td>1234.5</td>"), "{page}");
        assert!(!page.contains("<th>timeline</th>"));
        assert_eq!(page.matches("<polyline").count(), 3);
        assert!(page.contains("300 per second"), "the throughput axis is scaled to the peak: {page}");
        assert_eq!(html_path("/tmp/r.json"), "/tmp/r.html");
        assert_eq!(html_path("/tmp/r"), "/tmp/r.html");
    }
}

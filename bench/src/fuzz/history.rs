//! The last frames sent and received, kept so that a failure can be read
//! and replayed: written to a file when the run fails.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::msg_type;
use ixn_shard::Value;

/// Records kept (sent frames, answers, notes).
const KEEP: usize = 6000;
/// Bytes of a sent frame written out in hex.
const HEX_BYTES: usize = 512;

pub struct Record {
    pub at: Duration,
    pub conn: u64,
    pub text: String,
    pub bytes: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct History {
    records: VecDeque<Record>,
}

impl History {
    fn push(&mut self, r: Record) {
        if self.records.len() == KEEP {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    /// A frame the fuzzer sent: what it meant (`frame`), how it was changed
    /// (`mutation`), and the bytes that went out.
    pub fn sent(&mut self, at: Duration, conn: u64, frame: &Frame, mutation: Option<&str>, bytes: &[u8]) {
        let mut text = format!("-> {}", describe(frame));
        if let Some(m) = mutation {
            let _ = write!(text, "  [MUTATED: {m}]");
        }
        let keep = bytes.len().min(HEX_BYTES);
        self.push(Record { at, conn, text, bytes: Some(bytes[..keep].to_vec()) });
    }

    pub fn received(&mut self, at: Duration, conn: u64, frame: &Frame) {
        self.push(Record { at, conn, text: format!("<- {}", describe(frame)), bytes: None });
    }

    pub fn note(&mut self, at: Duration, conn: u64, text: String) {
        self.push(Record { at, conn, text: format!("## {text}"), bytes: None });
    }

    /// Writes the records, oldest first; those of `focus` (the connection
    /// that failed) again at the end.
    pub fn write(&self, path: &Path, header: &str, focus: Option<u64>) -> std::io::Result<()> {
        let mut out = String::with_capacity(1 << 20);
        out.push_str(header);
        out.push_str("\n\n# Every connection, oldest first (time since start, connection serial)\n\n");
        for r in &self.records {
            line(&mut out, r);
        }
        if let Some(c) = focus {
            let _ = writeln!(out, "\n# Connection {c} alone\n");
            for r in self.records.iter().filter(|r| r.conn == c) {
                line(&mut out, r);
            }
        }
        std::fs::write(path, out)
    }
}

fn line(out: &mut String, r: &Record) {
    let _ = writeln!(out, "{:>9.3}s c{:<5} {}", r.at.as_secs_f64(), r.conn, r.text);
    if let Some(b) = &r.bytes {
        let _ = writeln!(out, "{:17}{}", "", hex(b));
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `RequestSubmit ref=12 17="default" 21="inbound" ...`, values cut short.
pub fn describe(f: &Frame) -> String {
    let mut s = format!("{} ({}) ref={}", msg_type::name(f.msg_type), f.msg_type, f.ref_id);
    for a in &f.attrs {
        let _ = write!(s, " {}={}", a.id, value(&a.value, 0));
        if s.len() > 600 {
            s.push_str(" ...");
            break;
        }
    }
    s
}

fn value(v: &Value, depth: usize) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Str(t) if t.len() > 40 => format!("{:?}...({} bytes)", &t[..t.floor_char_boundary_compat(40)], t.len()),
        Value::Str(t) => format!("{t:?}"),
        Value::Bin(b) => format!("bin({} bytes)", b.len()),
        Value::List(l) if depth > 2 => format!("{{{} entries}}", l.len()),
        Value::List(l) => {
            let items: Vec<String> = l.iter().take(8).map(|(k, v)| format!("{k:?}:{}", value(v, depth + 1))).collect();
            let more = if l.len() > 8 { ", ..." } else { "" };
            format!("{{{}{more}}}", items.join(", "))
        }
    }
}

/// `str::floor_char_boundary` is not stable on the minimum Rust version.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, i: usize) -> usize {
        (0..=i.min(self.len())).rev().find(|&k| self.is_char_boundary(k)).unwrap_or(0)
    }
}

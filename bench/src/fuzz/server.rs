//! The server under test: an `ixn-server` process the fuzzer starts on its
//! own configuration, with its log (stderr) in a file the fuzzer watches.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServerProcess {
    child: Child,
    pub addr: String,
    pub log_path: PathBuf,
    /// Bytes of the log already scanned by [`ServerProcess::scan_log`].
    scanned: u64,
    /// A log line cut at the end of the last scan.
    partial: String,
}

/// What a log scan found.
#[derive(Default)]
pub struct LogFindings {
    /// The first line that tells of a panic, if any.
    pub panic: Option<String>,
    /// Peer ports the server disconnected for a reason the fuzzer accepts
    /// on a connection it did not corrupt: its output buffer ran over
    /// (message 1024), the shard's connection limit was reached (1027), its
    /// writes made no progress for `write-timeout` (1029), or it sent
    /// nothing within its heartbeat timeout (1030).
    pub excused_ports: Vec<u16>,
}

impl ServerProcess {
    /// Starts `bin --config config`, waits for the ready line on stdout.
    pub fn start(bin: &Path, config: &Path, log_filter: &str) -> Result<ServerProcess, String> {
        let dir = config.parent().expect("the configuration lies in a directory");
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .env("IXN_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stdout to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ixn-server ready: listening on ") {
                    let addr = rest.split(';').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        // Waits for the ready line, or for the process to exit (a refused
        // configuration exits at once, with the reason in the log).
        let since = Instant::now();
        let outcome = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break Ok(addr),
                Err(_) if since.elapsed() >= START_TIMEOUT => {
                    break Err(format!("ixn-server did not start within {START_TIMEOUT:?}"))
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        break Err(format!("ixn-server exited before it was ready ({status})"));
                    }
                }
            }
        };
        match outcome {
            Ok(addr) => Ok(ServerProcess { child, addr, log_path, scanned: 0, partial: String::new() }),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(format!("{why}; log:\n{log}"))
            }
        }
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for it: {e}")),
        }
    }

    /// Reads what the log gained since the last scan.
    pub fn scan_log(&mut self) -> LogFindings {
        let mut found = LogFindings::default();
        let Ok(mut f) = std::fs::File::open(&self.log_path) else { return found };
        if f.seek(SeekFrom::Start(self.scanned)).is_err() {
            return found;
        }
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_err() {
            return found;
        }
        self.scanned += bytes.len() as u64;
        let mut text = std::mem::take(&mut self.partial);
        text.push_str(&String::from_utf8_lossy(&bytes));
        let complete = match text.rfind('\n') {
            Some(i) => {
                self.partial = text[i + 1..].to_string();
                &text[..i]
            }
            None => {
                self.partial = text;
                return found;
            }
        };
        for line in complete.lines() {
            if found.panic.is_none() && tells_of_panic(line) {
                found.panic = Some(line.to_string());
            }
            if ["msg_id=1024", "msg_id=1027", "msg_id=1029", "msg_id=1030"].iter().any(|m| line.contains(m)) {
                if let Some(port) = peer_port(line) {
                    found.excused_ports.push(port);
                }
            }
        }
        found
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then waits up to `timeout` for the exit; its status, or an
    /// error when it did not stop (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // waited for (so the pid is still ours).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!("ixn-server did not stop within {timeout:?} of SIGTERM (killed)"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Whether a log line tells of a panic: Rust's panic message (`thread '...'
/// panicked at`), or a line of a panic hook.
fn tells_of_panic(line: &str) -> bool {
    line.contains("panicked at") || line.to_ascii_lowercase().contains("panic")
}

/// The port of `peer=Some(127.0.0.1:PORT)` in a log line.
fn peer_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("peer=")? + 5..];
    let addr = rest.split([' ', ')']).next()?.trim_start_matches("Some(");
    addr.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ports_are_read_from_log_lines() {
        let line = "2026-01-01T00:00:00Z  WARN ixn-shard-0-1 client disconnected: it does not read its answers msg_id=1024 conn=4 peer=Some(127.0.0.1:40876) unsent_bytes=300000 limit=262144";
        assert_eq!(peer_port(line), Some(40876));
        assert_eq!(peer_port("no peer here"), None);
    }

    #[test]
    fn panics_are_recognised() {
        assert!(tells_of_panic("thread 'ixn-shard-0-1' panicked at shard/src/view.rs:124:9:"));
        assert!(!tells_of_panic("INFO listening msg_id=1002"));
    }
}

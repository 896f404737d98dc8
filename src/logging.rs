//! Log set-up: tracing to stderr, level from `IXN_LOG` (or `RUST_LOG`),
//! default `info,odbc_api=error`. Operator messages carry a stable `msg_id` field.
//!
//! One event is one line: the message and every field are written with
//! their line breaks escaped (`\n`, `\r`, ...), so a database error text
//! that spans lines, or a panic message, cannot split a record and a line
//! filter (grep, the journal) always sees whole events.

use std::fmt;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, SubscriberBuilder};

/// odbc-api logs every driver diagnostic as a warning, including a harmless
/// "Driver does not support the requested version" at each connection;
/// storage reports real database problems itself with message ids.
pub const DEFAULT_FILTER: &str = "info,odbc_api=error";

pub fn init() {
    use std::io::IsTerminal;
    let filter =
        std::env::var("IXN_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let _ = format()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The record format (time, level, thread, message, fields; one line per
/// event), without the filter and the destination.
fn format() -> SubscriberBuilder<OneLineFields> {
    tracing_subscriber::fmt().fmt_fields(OneLineFields::default()).with_target(false).with_thread_names(true)
}

/// tracing's default field format (`message key=value ...`), with every
/// line break inside the message or a field value escaped.
#[derive(Default)]
pub struct OneLineFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for OneLineFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut escaped = EscapeLineBreaks { out: &mut writer };
        self.inner.format_fields(Writer::new(&mut escaped), fields)
    }
}

/// Passes text through, replacing each line break by a visible escape.
struct EscapeLineBreaks<'a, W: fmt::Write> {
    out: &'a mut W,
}

/// The escape written for a character that would end or break a line.
fn line_break_escape(c: char) -> Option<&'static str> {
    Some(match c {
        '\n' => "\\n",
        '\r' => "\\r",
        '\u{0b}' => "\\u{b}",
        '\u{0c}' => "\\u{c}",
        '\u{85}' => "\\u{85}",
        '\u{2028}' => "\\u{2028}",
        '\u{2029}' => "\\u{2029}",
        _ => return None,
    })
}

impl<W: fmt::Write> fmt::Write for EscapeLineBreaks<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (i, c) in s.char_indices() {
            if let Some(escape) = line_break_escape(c) {
                self.out.write_str(&s[plain_from..i])?;
                self.out.write_str(escape)?;
                plain_from = i + c.len_utf8();
            }
        }
        self.out.write_str(&s[plain_from..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct MultiLineError;

    impl fmt::Display for MultiLineError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("08001: connection refused\r\nIs the server running on host \"db\"?")
        }
    }

    impl std::error::Error for MultiLineError {}

    /// The production format (as `init` builds it) into a buffer.
    fn capture(emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = format().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn every_record_is_one_line_whatever_its_message_and_fields_hold() {
        let odbc = "[unixODBC]could not connect\nIs the server running?";
        let log = capture(|| {
            tracing::error!(
                msg_id = 27147,
                error = %odbc,
                quoted = odbc,
                debug = ?odbc,
                source = &MultiLineError as &(dyn std::error::Error + 'static),
                "could not connect to the database: {odbc}\u{2028}after 4 attempts"
            );
            tracing::warn!(msg_id = 27145, "gave up a batch\n\nLast error: {}", MultiLineError);
        });
        let lines: Vec<&str> = log.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2, "two events, two lines:\n{log}");
        assert!(!log.contains('\r') && !log.contains('\u{2028}'), "{log:?}");
        let first = lines[0];
        assert!(first.contains("could not connect to the database: [unixODBC]could not connect\\nIs the server running?\\u{2028}after 4 attempts"), "{first}");
        assert!(first.contains("error=[unixODBC]could not connect\\nIs the server running?"), "{first}");
        assert!(first.contains("source=08001: connection refused\\r\\nIs the server running on host"), "{first}");
        assert!(first.contains("msg_id=27147"), "{first}");
        assert!(lines[1].contains("gave up a batch\\n\\nLast error: 08001"), "{}", lines[1]);
    }

    #[test]
    fn text_without_line_breaks_is_unchanged() {
        let log = capture(|| tracing::info!(msg_id = 1002, addr = "127.0.0.1:7120", shards = 2, "listening"));
        assert!(log.ends_with("listening msg_id=1002 addr=\"127.0.0.1:7120\" shards=2\n"), "{log}");
    }
}

//! Log set-up: tracing to stderr, level from `IXN_LOG` (or `RUST_LOG`),
//! default `info,odbc_api=error`. Operator messages carry a stable `msg_id` field.

/// odbc-api logs every driver diagnostic as a warning, including a harmless
/// "Driver does not support the requested version" at each connection;
/// storage reports real database problems itself with message ids.
pub const DEFAULT_FILTER: &str = "info,odbc_api=error";

pub fn init() {
    use std::io::IsTerminal;
    let filter =
        std::env::var("IXN_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true)
        .try_init();
}

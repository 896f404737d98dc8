//! Log set-up: tracing to stderr, level from `IXN_LOG` (or `RUST_LOG`),
//! default `info`. Operator messages carry a stable `msg_id` field.

pub fn init() {
    use std::io::IsTerminal;
    let filter = std::env::var("IXN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true)
        .try_init();
}

//! A panic anywhere ends the process (invariant 8 of the brief).
//!
//! A panic or failed assert on any thread, a shard's executor, a database
//! writer or the main thread, means the in-memory state can no longer be
//! trusted: a shard that died would leave its listener accepting into the
//! backlog and its requests unanswered, a writer that died would leave its
//! writes uncommitted forever. So the hook logs one line (message 1090,
//! naming the thread, the panic message and where it was raised) and ends
//! the process at once with exit status 70, without unwinding or running
//! destructors. A supervisor restarts it, and the start loads everything
//! acknowledged from the database.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::msgid;

/// Exit status after a panic (EX_SOFTWARE, "internal software error").
pub const PANIC_EXIT_STATUS: i32 = 70;

/// How long a second panicking thread waits for the first one to finish
/// its log line and end the process.
const SECOND_PANIC_WAIT: Duration = Duration::from_secs(5);

static PANICKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread is inside the hook (a panic while logging the panic).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Replaces the default panic hook (several lines on stderr, then
/// unwinding of that one thread only). Call once, after logging is set up.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if IN_HOOK.with(|h| h.replace(true)) {
            // Logging itself panicked: no second attempt.
            end_process();
        }
        if PANICKED.swap(true, Ordering::SeqCst) {
            // Another thread is logging its panic and ending the process;
            // one line is enough. Do not let this thread go on meanwhile.
            std::thread::sleep(SECOND_PANIC_WAIT);
            end_process();
        }
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let message = panic_message(info.payload());
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        // Captured only when RUST_BACKTRACE or RUST_LIB_BACKTRACE asks
        // for it; the log format keeps it on the same line.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace =
            (backtrace.status() == std::backtrace::BacktraceStatus::Captured).then(|| backtrace.to_string());
        tracing::error!(
            msg_id = msgid::PANIC,
            thread,
            panic = %message,
            location = location.as_deref().unwrap_or("unknown"),
            backtrace = backtrace.as_deref(),
            "panic: ending the process"
        );
        end_process();
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic value that is not a string)"
    }
}

/// `_exit`: no unwinding, no atexit handlers, no destructors. Everything
/// acknowledged is already committed; nothing else is worth saving.
fn end_process() -> ! {
    // SAFETY: _exit ends the process; it touches no Rust state.
    unsafe { libc::_exit(PANIC_EXIT_STATUS) }
}

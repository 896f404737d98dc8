//! Fault injection, a test facility of debug builds only: makes a shard's
//! executor thread, a database writer thread or the main thread panic, so
//! that tests can check what a real bug's panic would do (see
//! `fatal`). Release builds compile it to nothing; clients cannot reach it
//! in any build, since it is driven by the server's own environment:
//!
//! - `IXN_TEST_PANIC`: `shard-N` (the executor of shard N), `writer` (the
//!   first database writer thread that hands completions to a shard) or
//!   `main` (the main thread, once the server is ready).
//! - `IXN_TEST_PANIC_FILE` (optional): the panic waits until this file
//!   exists (checked every 10 ms; a writer checks when it completes a
//!   batch), so a test can first set up connections, then pull the trigger.
//!
//! The panic message has two lines, so a test also sees that the log keeps
//! one event on one line.

#[cfg(debug_assertions)]
mod enabled {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::Duration;

    #[derive(Debug, PartialEq, Eq)]
    enum Site {
        Shard(u16),
        Writer,
        Main,
    }

    struct Plan {
        site: Site,
        trigger: Option<PathBuf>,
    }

    fn plan() -> Option<&'static Plan> {
        static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
        PLAN.get_or_init(|| {
            let spec = std::env::var("IXN_TEST_PANIC").ok()?;
            let site = match spec.as_str() {
                "writer" => Site::Writer,
                "main" => Site::Main,
                s => Site::Shard(s.strip_prefix("shard-")?.parse().ok()?),
            };
            let trigger = std::env::var_os("IXN_TEST_PANIC_FILE").map(PathBuf::from);
            Some(Plan { site, trigger })
        })
        .as_ref()
    }

    fn triggered(plan: &Plan) -> bool {
        match &plan.trigger {
            Some(file) => file.exists(),
            None => true,
        }
    }

    fn injected_panic(site: &str) -> ! {
        panic!("injected panic in {site} (IXN_TEST_PANIC)\nsecond line of the panic message");
    }

    /// On shard `shard`'s executor: a task that panics when triggered.
    pub fn spawn_on_shard(shard: u16) {
        let Some(plan) = plan().filter(|p| p.site == Site::Shard(shard)) else { return };
        glommio::spawn_local(async move {
            while !triggered(plan) {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            injected_panic(&format!("shard {shard}"));
        })
        .detach();
    }

    /// On a writer thread, each time it hands completions to a shard.
    pub fn writer_point() {
        if let Some(plan) = plan().filter(|p| p.site == Site::Writer) {
            if triggered(plan) {
                injected_panic("a database writer");
            }
        }
    }

    /// On the main thread once the server is ready: blocks until the
    /// trigger, then panics. Returns at once when main is not the target.
    pub fn main_point() {
        if let Some(plan) = plan().filter(|p| p.site == Site::Main) {
            while !triggered(plan) {
                std::thread::sleep(Duration::from_millis(10));
            }
            injected_panic("the main thread");
        }
    }
}

#[cfg(debug_assertions)]
pub use enabled::{main_point, spawn_on_shard, writer_point};

#[cfg(not(debug_assertions))]
pub fn spawn_on_shard(_shard: u16) {}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn writer_point() {}

#[cfg(not(debug_assertions))]
pub fn main_point() {}

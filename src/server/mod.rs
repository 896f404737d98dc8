//! `ixn-server`: start-up, the executors, and shutdown.
//!
//! Start: resolve cores, open storage (validate or create the schema), load
//! every live interaction, start the writer threads, bind one SO_REUSEPORT
//! listener per shard, then start one pinned glommio executor per core.
//! Stop (SIGTERM or SIGINT): each shard stops taking requests, waits for its
//! writes to commit and its answers to go out, then ends; the writers drain
//! and close last. A panic on any thread ends the process at once (`fatal`).

pub mod auth;
pub mod conn;
pub mod executor;
pub mod exposition;
pub mod fatal;
pub mod faults;
pub mod management;
pub mod metrics;
pub mod msgid;
pub mod notify;
pub mod reload;
pub mod tls;
pub mod watchdog;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use ixn_shard::id::owner_of;
use ixn_shard::interaction::InteractionRecord;
use ixn_shard::versioned::Versioned;
use ixn_storage::{CompletionSink, InsertStrategy, Storage, StorageConfig};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use executor::{shard_main, ShardContext};

/// Glommio refuses to start an executor with less locked memory than this.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 << 10;

/// How long a start waits for the listening address to be released, by a
/// previous server that was just killed (its sockets close only when the
/// kernel has torn down its io_uring instances, a few ms to a few hundred
/// ms after the process died) or by one still stopping.
pub const LISTEN_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How long a start waits for every shard to be accepting connections.
const SHARDS_START_WAIT: Duration = Duration::from_secs(60);

/// Runs the server until SIGTERM or SIGINT. Errors are start-up errors,
/// worded for an operator.
pub fn run(config: Config) -> Result<(), String> {
    let cores = config.server.cores.resolve()?;
    let shards = cores.len() as u16;
    check_memlock(config.server.io_memory as u64 * shards as u64)?;
    let (connection_string, embedded) = config.connection_string();
    let _data_lock = if embedded {
        std::fs::create_dir_all(&config.server.data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", config.server.data_dir.display()))?;
        Some(lock_data_dir(&config.server.data_dir)?)
    } else {
        None
    };
    wait_for_address(config.server.listen)?;
    tracing::info!(msg_id = msgid::SERVER_STARTING, config = %config.source, shards, ?cores, "ixn-server starting");

    let mut storage = Storage::open(StorageConfig {
        connection_string: connection_string.clone(),
        writers: *config.settings.number_of_database_connections.get_ref(),
        batch_max: *config.settings.database_batch_size.get_ref(),
        create_schema: embedded,
        insert_strategy: config.settings.insert_strategy.as_ref().map(|s| match s.get_ref().as_str() {
            "multirow" => InsertStrategy::MultiRow,
            "json" => InsertStrategy::Json,
            _ => InsertStrategy::Array,
        }),
        commit_delay: Duration::from_secs_f64(config.settings.database_commit_delay_ms / 1000.0),
    })
    .map_err(|e| e.to_string())?;
    let records = storage.load_live().map_err(|e| e.to_string())?;
    let per_shard = split_by_shard(&config, records, shards)?;
    let loaded: usize = per_shard.iter().map(Vec::len).sum();
    tracing::info!(msg_id = msgid::INTERACTIONS_LOADED, interactions = loaded, "live interactions loaded");

    // Names this run in reporting cursors and event log keys: a cursor of
    // another run names events that were not kept across the restart.
    let generation = executor::now_ms().max(1) as u64;
    // The catalog in force: a reload replaces it (reload.rs).
    let catalog_now = Arc::new(Versioned::new(Arc::new(config.catalog.clone())));
    let event_log = match &config.logger {
        Some(l) => Some(
            storage
                .enable_event_log(l.storage_config(embedded), catalog_now.clone(), generation)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let inboxes: Vec<_> = (0..shards).map(|_| notify::inbox()).collect();
    let metrics: Vec<Arc<metrics::MetricsInbox>> = (0..shards).map(|_| Arc::default()).collect();
    let auth_inboxes: Vec<Arc<auth::AuthInbox>> = (0..shards).map(|_| Arc::default()).collect();
    let verifier = auth::Verifier::start(auth_inboxes.clone())?;
    let sinks: Vec<Arc<dyn CompletionSink>> = inboxes.iter().map(|i| i.clone() as Arc<dyn CompletionSink>).collect();
    // Subscribers resuming across a restart read the event log back.
    let log_reader = match &config.logger {
        Some(l) => Some(
            ixn_storage::LogReader::start(connection_string.clone(), l.connection_string.clone(), sinks.clone())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let writers = storage.start(sinks).map_err(|e| e.to_string())?;
    let shipper = match event_log {
        Some(log) => Some(log.start().map_err(|e| e.to_string())?),
        None => None,
    };

    let tls_config = tls::from_section(&config.server)?;
    let reload_inboxes: Vec<Arc<reload::ReloadInbox>> = (0..shards).map(|_| Arc::default()).collect();
    let reloader =
        Arc::new(reload::Reloader::new(&config, catalog_now.clone(), tls_config.clone(), reload_inboxes.clone()));
    let management_listener = config.server.management_addr().map(management::bind).transpose()?;
    let tls_listeners = match config.server.tls_listen {
        Some(at) => {
            wait_for_address(at)?;
            let (fds, bound) = bind_listeners(at, shards as usize, config.server.listen_backlog)?;
            Some((fds, bound))
        }
        None => None,
    };
    let tls_addr = tls_listeners.as_ref().map(|(_, a)| *a);
    let mut tls_fds: Vec<Option<OwnedFd>> = match tls_listeners {
        Some((fds, _)) => fds.into_iter().map(Some).collect(),
        None => (0..shards).map(|_| None).collect(),
    };
    let (listeners, addr) = bind_listeners(config.server.listen, shards as usize, config.server.listen_backlog)?;
    let stop = Arc::new(AtomicBool::new(false));
    reload::on_sighup(reloader.clone())?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while draining ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone()).map_err(|e| e.to_string())?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }

    let config = Arc::new(config);
    let catalog = catalog_now.get();
    let mesh = (shards > 1).then(|| MeshBuilder::full(shards as usize, 4096));
    let drained = Arc::new(AtomicUsize::new(0));
    let mesh_ids = Arc::new((0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect::<Vec<_>>());
    let started = Arc::new(AtomicUsize::new(0));
    let watchdog = watchdog::Watchdog::start(shards as usize)?;
    let mut handles = Vec::new();
    for (((shard, core), listener), records) in cores.iter().enumerate().zip(listeners).zip(per_shard) {
        let ctx = ShardContext {
            shard: shard as u16,
            shards,
            config: config.clone(),
            catalog: catalog.clone(),
            listener,
            tls_listener: tls_fds[shard].take().zip(tls_config.clone()),
            mesh: mesh.clone(),
            writer: writers.handle(),
            inbox: inboxes[shard].clone(),
            metrics: metrics[shard].clone(),
            auth: auth_inboxes[shard].clone(),
            reloads: reload_inboxes[shard].clone(),
            board: reloader.board.clone(),
            built: reloader.built.clone(),
            verifier: verifier.clone(),
            records,
            stop: stop.clone(),
            drained: drained.clone(),
            mesh_ids: mesh_ids.clone(),
            started: started.clone(),
            generation,
            outbox: shipper.as_ref().map(|s| s.outbox()),
            log_reader: log_reader.clone(),
        };
        let watchdog = watchdog.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(*core))
            .name(&format!("ixn-shard-{shard}"))
            .io_memory(config.server.io_memory)
            .spawn(move || async move {
                // First, before anything that waits on another thread.
                watchdog.spawn_heartbeat(shard);
                faults::spawn_on_shard(shard as u16);
                shard_main(ctx).await
            })
            .map_err(|e| format!("cannot start the executor for shard {shard} on core {core}: {e}"))?;
        handles.push(handle);
    }
    drop(mesh);
    // A shard that fails to start panics, which ends the process (fatal).
    wait_for_shards(&started, shards as usize)?;
    // The records loaded at start were allocated on this thread and freed
    // by the shards (which copy what they keep). This thread allocates
    // little from now on, so mimalloc would keep those pages: give them
    // back now (about 1 KB per loaded interaction otherwise).
    // SAFETY: mi_collect only walks this thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) };

    let management = match management_listener {
        Some(listener) => Some(management::start(
            listener,
            management::Sources {
                catalog: catalog_now.clone(),
                shards: metrics,
                writers: writers.handle(),
                outbox: shipper.as_ref().map(|s| s.outbox()),
                node_id: config.server.node_id,
                started: Instant::now(),
                reloader: reloader.clone(),
            },
        )?),
        None => None,
    };
    if let Some(at) = management {
        println!("ixn-server management: http://{at}/ (dashboard; /metrics, /health, /ready)");
    }
    if let Some(at) = tls_addr {
        let mutual = if config.server.tls_client_ca.is_some() { ", client certificates required" } else { "" };
        println!("ixn-server tls: listening on {at}{mutual}");
    }
    let data = if embedded {
        format!("SQLite database {}", config.sqlite_path().display())
    } else {
        "database from connection-string".to_string()
    };
    tracing::info!(msg_id = msgid::LISTENING, %addr, shards, "listening");
    println!("ixn-server ready: listening on {addr}; {shards} shard(s) on cores {cores:?}; data: {data}; {loaded} live interaction(s) loaded");
    let clear: Vec<&str> = config
        .clients
        .iter()
        .filter(|c| !c.password.is_empty() && !c.password.starts_with("$argon2"))
        .map(|c| c.name.as_str())
        .collect();
    if !clear.is_empty() {
        tracing::warn!(
            msg_id = msgid::CLEAR_PASSWORDS,
            clients = ?clear,
            "client passwords kept in clear text in the configuration: store `ixnctl hash-password` output instead"
        );
    }
    if config.clients.is_empty() {
        tracing::warn!(
            msg_id = msgid::PROTECTED_MODE,
            "no [[client]] configured: only loopback clients may register (protected mode)"
        );
        println!("ixn-server: no clients configured, so only loopback connections may register (protected mode)");
    }
    faults::main_point();

    let mut failed = None;
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            failed = Some(format!("shard {i} failed: {e}"));
        }
    }
    tracing::info!(msg_id = msgid::SHARDS_STOPPED, "shards stopped; closing storage writers");
    // Bounded: during a database outage the writers would otherwise retry
    // until it returns (their unresolved writes stay unanswered).
    let limit = std::time::Duration::from_secs(config.server.shutdown_timeout);
    let stopping = std::time::Instant::now();
    writers.shutdown_within(limit);
    if let Some(s) = shipper {
        // What is not shipped now stays in the outbox for the next start.
        s.shutdown_within(limit.saturating_sub(stopping.elapsed()));
    }
    tracing::info!(msg_id = msgid::SERVER_STOPPED, "ixn-server stopped");
    failed.map_or(Ok(()), Err)
}

/// Waits until every shard counts itself started (accepting connections).
/// Not in time: the start fails rather than print a ready line while a
/// shard does not accept (its connections would wait in the backlog).
fn wait_for_shards(started: &AtomicUsize, shards: usize) -> Result<(), String> {
    let deadline = Instant::now() + SHARDS_START_WAIT;
    loop {
        let n = started.load(Ordering::SeqCst);
        if n >= shards {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {n} of {shards} shards started within {} s; see the log for the shards that logged 1010 (shard started)",
                SHARDS_START_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Groups stored interactions by owning shard, refusing to start if one
/// names a tenant, media type or queue the configuration lacks.
fn split_by_shard(
    config: &Config,
    records: Vec<InteractionRecord>,
    shards: u16,
) -> Result<Vec<Vec<InteractionRecord>>, String> {
    let mut per_shard: Vec<Vec<InteractionRecord>> = (0..shards).map(|_| Vec::new()).collect();
    let mut bad = Vec::new();
    for r in records {
        if let Err(e) = r.resolve(&config.catalog) {
            bad.push(format!("{}: {e}", r.id));
            continue;
        }
        per_shard[owner_of(&r.id, shards) as usize].push(r);
    }
    if !bad.is_empty() {
        return Err(format!(
            "{} stored interaction(s) refer to objects the configuration does not have (first: {}); \
             restore those objects in the configuration so nothing is lost",
            bad.len(),
            bad[0]
        ));
    }
    Ok(per_shard)
}

/// One listening socket per shard on the same address (SO_REUSEPORT lets
/// the kernel spread connections). Port 0 picks a free port for all.
fn bind_listeners(addr: SocketAddr, n: usize, backlog: i32) -> Result<(Vec<OwnedFd>, SocketAddr), String> {
    let mut bound = addr;
    let mut fds = Vec::with_capacity(n);
    for _ in 0..n {
        let s =
            Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
        s.set_reuse_address(true).map_err(|e| e.to_string())?;
        s.set_reuse_port(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        s.bind(&bound.into()).map_err(|e| format!("cannot listen on {bound}: {e}"))?;
        s.listen(backlog).map_err(|e| format!("cannot listen on {bound}: {e}"))?;
        bound = s.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(bound);
        // SAFETY: into_raw_fd hands over ownership of a valid socket.
        fds.push(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) });
    }
    Ok((fds, bound))
}

/// io_uring registers `io-memory` per executor as locked memory.
fn check_memlock(needed: u64) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < GLOMMIO_MIN_MEMLOCK {
        return Err(format!(
            "RLIMIT_MEMLOCK is {} KiB; io_uring needs at least 512 KiB: raise it (ulimit -l, LimitMEMLOCK= in systemd); see tuning.md",
            lim.rlim_cur / 1024
        ));
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < needed {
        tracing::warn!(
            msg_id = msgid::MEMLOCK_LOW,
            memlock_kib = lim.rlim_cur / 1024,
            needed_kib = needed / 1024,
            "RLIMIT_MEMLOCK is below io-memory x shards: I/O buffers will come from the plain allocator; see tuning.md"
        );
    }
    Ok(())
}

/// One server per data directory: an exclusive lock on `ixn.lock`, held
/// for the life of the process (the returned file).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("ixn.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another ixn-server uses the data directory {} (it holds {})",
            dir.display(),
            path.display()
        ));
    }
    Ok(f)
}

/// SO_REUSEPORT would let a second server share the port with a running
/// one, or let the listeners of one that was just killed (still open while
/// the kernel tears down its io_uring instances) take part of the new
/// connections and drop them. So a plain bind (without SO_REUSEPORT) first
/// tells whether something still listens there; if so the start waits for
/// it to go, up to LISTEN_RELEASE_WAIT, as a supervisor restarts at once.
fn wait_for_address(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let mut logged = false;
    loop {
        let error = match try_plain_bind(addr)? {
            None => return Ok(()),
            Some(e) => e,
        };
        if started.elapsed() >= LISTEN_RELEASE_WAIT {
            return Err(format!(
                "cannot listen on {addr}: {error} for {} s (is another ixn-server running?)",
                LISTEN_RELEASE_WAIT.as_secs()
            ));
        }
        if !logged {
            tracing::info!(
                msg_id = msgid::ADDRESS_BUSY,
                %addr,
                wait_s = LISTEN_RELEASE_WAIT.as_secs(),
                "listening address in use; waiting for it to be released (a previous server still closing?)"
            );
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Binds and closes a socket on `addr` without SO_REUSEPORT: `Some(error)`
/// when the address is in use, `None` when it is free.
fn try_plain_bind(addr: SocketAddr) -> Result<Option<std::io::Error>, String> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    match s.bind(&addr.into()) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(Some(e)),
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

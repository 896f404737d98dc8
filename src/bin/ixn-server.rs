//! `ixn-server [--config FILE] [--listen ADDR] [--data-dir DIR] [--cores LIST] [--management-listen ADDR|off]`
//!
//! With no `--config`, runs on the embedded default configuration (README,
//! "Quick start") and prints where its data and port are.

use std::path::PathBuf;

use clap::Parser;
use ixn::config::{Config, CoreList, ManagementListen};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "ixn-server", version, about = "ixn Interaction Server")]
struct Args {
    /// Configuration file (TOML). Without it: the embedded default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, overrides [server] listen (default 0.0.0.0:7120).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory for the embedded SQLite database, overrides [server] data-dir (default ./ixn-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cores to run one shard on each: "all" or a list such as "0-3,6"; overrides [server] cores.
    #[arg(long)]
    cores: Option<String>,
    /// Management HTTP listener (metrics, health, readiness, dashboard): an address or "off";
    /// overrides [server] management-listen (default 127.0.0.1 on the client port + 1000).
    #[arg(long)]
    management_listen: Option<String>,
}

fn main() {
    ixn::logging::init();
    ixn::server::fatal::install_panic_hook();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("ixn-server: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    if let Some(l) = &args.listen {
        config.server.listen =
            l.parse().map_err(|_| format!("--listen: '{l}' is not an address such as 127.0.0.1:7120"))?;
    }
    if let Some(d) = args.data_dir {
        config.server.data_dir = d;
    }
    if let Some(c) = &args.cores {
        config.server.cores = CoreList::parse(c).map_err(|e| format!("--cores: {e}"))?;
    }
    if let Some(m) = &args.management_listen {
        config.server.management_listen =
            ManagementListen::parse(m).map_err(|e| format!("--management-listen: {e}"))?;
    }
    ixn::server::run(config)
}

//! `sluiced`: the sluice switch. See the `sluiced` library.
//!
//! ```text
//! sluiced --config /etc/sluice/sluiced.toml
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The sluice switch: AF_XDP ports, pinned poll-mode workers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration (TOML): daemon, node, tunnel, ports, routes, neighbours.
    #[arg(long, default_value = "/etc/sluice/sluiced.toml")]
    config: PathBuf,
    /// Take the ports of the sluiced running on this configuration's API
    /// socket over, without losing a packet (an upgrade): it hands its
    /// sockets, programs and tables over its handover socket and exits.
    /// Fails, leaving it running, if it cannot.
    #[arg(long)]
    take_over: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match sluice_dataplane::replay::load_config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            sluiced::logging::init_fallback();
            tracing::error!(error = %e, "configuration refused");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sluiced::logging::init(&cfg.daemon.log_level, cfg.daemon.log_format) {
        // A bad filter: say so with the defaults, and start nothing.
        sluiced::logging::init_fallback();
        tracing::error!(error = %e, "logging refused");
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            tracing::error!(signal = sig, error = %e, "cannot handle signal");
            return ExitCode::FAILURE;
        }
    }
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        tracing::error!(signal = "SIGHUP", error = %e, "cannot handle signal");
        return ExitCode::FAILURE;
    }
    let started = if args.take_over {
        let path = sluiced::handover::socket_path(&cfg.daemon.api_socket);
        match sluiced::handover::Incoming::connect(&path) {
            Ok(incoming) => {
                tracing::info!(from = incoming.from_pid, "taking over");
                sluiced::Daemon::take_over(&cfg, Some(args.config.clone()), stop.clone(), incoming)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot take over; the running sluiced is unchanged");
                return ExitCode::FAILURE;
            }
        }
    } else {
        sluiced::Daemon::start_with_file(&cfg, Some(args.config.clone()), stop.clone())
    };
    let daemon = match started {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed, nothing left set up");
            return ExitCode::FAILURE;
        }
    };
    for p in &daemon.report {
        match &p.device {
            Some(d) => tracing::info!(
                port = %p.name,
                mode = %p.mode,
                driver = %d.driver,
                queues = d.queues,
                rss = d.rss,
                isolated = d.isolated,
                steering = %d.steering.join(","),
                rx_offload_capa = %format!("{:#x}", d.rx_offload_capa),
                tx_offload_capa = %format!("{:#x}", d.tx_offload_capa),
                "port"
            ),
            None => tracing::info!(port = %p.name, xdp = %p.xdp, mode = %p.mode, "port"),
        }
    }
    if let Some(n) = &daemon.numa {
        tracing::info!(numa = %n, "placement");
    }
    tracing::info!(
        memory = if daemon.hugepages {
            "hugepages"
        } else {
            "ordinary pages"
        },
        "running"
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            match daemon.reload() {
                Ok(r) => {
                    tracing::info!(config = %args.config.display(), changes = %r, "reloaded")
                }
                Err(e) => tracing::warn!(
                    config = %args.config.display(),
                    error = %e,
                    "reload refused, nothing changed"
                ),
            }
        }
    }
    daemon.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match sluice_dataplane::replay::load_config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluiced: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("sluiced: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        eprintln!("sluiced: cannot handle SIGHUP: {e}");
        return ExitCode::FAILURE;
    }
    let daemon =
        match sluiced::Daemon::start_with_file(&cfg, Some(args.config.clone()), stop.clone()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("sluiced: {e}");
                return ExitCode::FAILURE;
            }
        };
    for p in &daemon.report {
        println!("sluiced: port {} xdp={} mode={}", p.name, p.xdp, p.mode);
    }
    if let Some(n) = &daemon.numa {
        println!("sluiced: {n}");
    }
    println!(
        "sluiced: running, umem on {}",
        if daemon.hugepages {
            "hugepages"
        } else {
            "ordinary pages"
        }
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            match daemon.reload() {
                Ok(r) => println!("sluiced: reloaded {}: {r}", args.config.display()),
                Err(e) => eprintln!("sluiced: reload refused, nothing changed: {e}"),
            }
        }
    }
    daemon.shutdown();
    println!("sluiced: stopped");
    ExitCode::SUCCESS
}

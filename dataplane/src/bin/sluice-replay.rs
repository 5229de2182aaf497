//! `sluice-replay`: replays pcap captures through a node's pipeline offline.
//!
//! ```text
//! sluice-replay --config node.toml --input eth0=uplink.pcap --input pod-a=a.pcap --out-dir out/
//! ```
//! writes `out/<port>.pcap` for every port and prints the counters as JSON.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Replay pcap captures through a sluice node's pipeline, offline.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Node configuration (TOML): node settings, ports, routes, neighbours.
    #[arg(long)]
    config: PathBuf,
    /// PORT=FILE.pcap: frames received on PORT (repeatable).
    #[arg(long = "input", value_name = "PORT=FILE")]
    inputs: Vec<String>,
    /// Directory for the per-port output captures.
    #[arg(long)]
    out_dir: PathBuf,
    /// Packets per burst (32 to 256).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(32..=256))]
    burst: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> Result<String, sluice_dataplane::replay::ReplayError> {
        let cfg = sluice_dataplane::replay::load_config(&args.config)?;
        let inputs = sluice_dataplane::replay::load_inputs(&args.inputs)?;
        let report =
            sluice_dataplane::replay::replay(&cfg, &inputs, &args.out_dir, args.burst as usize)?;
        Ok(serde_json::to_string_pretty(&report).expect("the report serializes"))
    };
    match run() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-replay: {e}");
            ExitCode::from(2)
        }
    }
}

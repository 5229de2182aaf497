//! `sluice-lab`: multi-node labs in network namespaces.
//!
//! ```text
//! sluice-lab up [--name lab] [--nodes 2] [--mode vxlan|ipip|host-gw]
//! sluice-lab status [--name lab]
//! sluice-lab down [--name lab]
//! ```

use clap::{Parser, Subcommand};
use sluice_perf::lab::{self, LabSpec, Mode};
use std::process::ExitCode;

/// Multi-node sluice labs in network namespaces.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a lab: an underlay bridge, N nodes each running sluiced, two pods per node.
    Up {
        /// Lab name: the prefix of every namespace it creates (1 to 8 letters or digits).
        #[arg(long, default_value = "lab")]
        name: String,
        /// Nodes, 2 to 8.
        #[arg(long, default_value_t = 2)]
        nodes: u8,
        /// vxlan, ipip or host-gw.
        #[arg(long, default_value = "vxlan")]
        mode: Mode,
        /// Nodes (1-based, repeatable) to set up as kernel flannel instead of sluiced.
        #[arg(long = "kernel-node")]
        kernel_nodes: Vec<u8>,
    },
    /// Show a lab's nodes and pods.
    Status {
        /// Lab name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Remove everything a lab created (also after a failed or interrupted run).
    Down {
        /// Lab name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Cmd::Up {
            name,
            nodes,
            mode,
            kernel_nodes,
        } => lab::up(
            &LabSpec {
                name,
                nodes,
                mode,
                sluiced: true,
                kernel_nodes,
            },
            &mut |s| eprintln!("sluice-lab: {s}"),
        )
        .map(|st| {
            for n in &st.nodes {
                let pods: Vec<String> =
                    n.pods.iter().map(|(ns, ip)| format!("{ns} {ip}")).collect();
                println!(
                    "node {} ({}): {} subnet {}, pods: {}",
                    n.index,
                    n.ns,
                    n.ip,
                    n.subnet,
                    pods.join(", ")
                );
            }
            println!(
                "try: ip netns exec {} ping {}",
                st.nodes[0].pods[0].0, st.nodes[1].pods[1].1
            );
        }),
        Cmd::Status { name } => match lab::load(&name) {
            Some(st) => {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
                Ok(())
            }
            None => Err(lab::LabError::Other(format!("no lab named `{name}`"))),
        },
        Cmd::Down { name } => lab::down(&name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

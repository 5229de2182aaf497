//! `sluice-lab`: multi-node labs in network namespaces.
//!
//! ```text
//! sluice-lab up [--name lab] [--nodes 2] [--mode vxlan|ipip|host-gw]
//! sluice-lab status [--name lab]
//! sluice-lab down [--name lab]
//! sluice-lab dpdk-bench [--seconds 10] [--out sluice-lab-report]
//! sluice-lab capacity [--seconds 5] [--windows 3] [--cases encap,decap,host-gw] [--out DIR]
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
        /// Workers per sluiced (pinned to cores 0..N), and queues per veth.
        #[arg(long, default_value_t = 1)]
        workers: u8,
        /// The store the nodes' agents share: embedded (a directory) or etcd
        /// (a real etcd started on loopback).
        #[arg(long, default_value = "embedded")]
        store: sluice_perf::cluster::StoreKind,
        /// flannel's DirectRouting in the network config (vxlan, ipip).
        #[arg(long)]
        direct_routing: bool,
        /// sluiced's rx mode: poll, adaptive or interrupt.
        #[arg(long, default_value = "adaptive")]
        rx_mode: String,
        /// Confine forwarding to this core: each sluiced's one worker pinned
        /// to it, kernel nodes' receive steered to it with RPS.
        #[arg(long)]
        forwarding_core: Option<usize>,
    },
    /// Show a lab's nodes and pods.
    Status {
        /// Lab name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// The same traffic through sluice and through the kernel path flannel
    /// uses, one after the other: a table, bench.json and report.md with charts.
    Bench {
        /// Lab name used for both labs.
        #[arg(long, default_value = "bench")]
        name: String,
        /// vxlan or host-gw (the kernel side is set up as flannel's backend).
        #[arg(long, default_value = "vxlan")]
        mode: Mode,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Rounds of the three measurements; figures are their median and spread.
        #[arg(long, default_value_t = 3)]
        windows: u32,
        /// sluiced's rx mode: poll, adaptive or interrupt.
        #[arg(long, default_value = "adaptive")]
        rx_mode: String,
        /// Where bench.json, report.md and the charts go.
        #[arg(long, default_value = "sluice-lab-report")]
        out: std::path::PathBuf,
    },
    /// How fast a node's agent learns a large BGP feed from GoBGP and
    /// programs it into sluiced, against BIRD learning the same feed.
    BgpBench {
        /// Lab name.
        #[arg(long, default_value = "bgpb")]
        name: String,
        /// Prefixes in the feed.
        #[arg(long, default_value_t = 100_000)]
        prefixes: usize,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// sluiced's memory at its limits: routes, neighbours and pod ports added
    /// through the API in a two-node lab, RSS after each; then one more of
    /// each past the limit.
    Limits {
        /// Lab name.
        #[arg(long, default_value = "limits")]
        name: String,
        /// Routes to add (the default is `daemon.limits.routes`'s).
        #[arg(long, default_value_t = 1 << 20)]
        routes: usize,
        /// Neighbours to hold (the default is `daemon.limits.neighbours`'s).
        #[arg(long, default_value_t = 1 << 16)]
        neighbours: usize,
        /// Pod ports to add, on veths in node 1 (stops at the first refused).
        #[arg(long, default_value_t = 150)]
        pods: usize,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// How fast a node's agent programs sluiced: N leases from agent start,
    /// and single lease changes, in a two-node lab.
    AgentBench {
        /// Lab name.
        #[arg(long, default_value = "agentb")]
        name: String,
        /// Leases to write besides the lab's own.
        #[arg(long, default_value_t = 5000)]
        leases: usize,
        /// Single changes to time.
        #[arg(long, default_value_t = 50)]
        changes: usize,
        /// etcd or embedded.
        #[arg(long, default_value = "etcd")]
        store: sluice_perf::cluster::StoreKind,
    },
    /// CNI ADD/DEL latency of the sluice plugin against flannel's chain
    /// (Debian's bridge with host-local) on one lab node, in the same run.
    CniBench {
        /// Lab name.
        #[arg(long, default_value = "cnib")]
        name: String,
        /// Pods per chain.
        #[arg(long, default_value_t = 200)]
        pods: usize,
        /// Pods attached at once (at most 100: one worker's frames).
        #[arg(long, default_value_t = 50)]
        wave: usize,
    },
    /// The measuring half of cni-bench, run inside the node's namespace.
    #[command(hide = true)]
    CniBenchRun {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        pods: usize,
        #[arg(long)]
        wave: usize,
        #[arg(long)]
        plugin_dir: std::path::PathBuf,
        #[arg(long)]
        cache_dir: std::path::PathBuf,
        /// label=conflist path, repeated.
        #[arg(long)]
        chain: Vec<String>,
    },
    /// One forwarding core on DPDK vdevs (net_pcap replaying 64-byte frames
    /// in, net_null out): testpmd io, OVS-DPDK and sluice on VXLAN encap,
    /// VXLAN decap and host-gw; a table, dpdk-bench.json, .svg and .md.
    DpdkBench {
        /// Seconds per measurement window.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Seconds of warm-up before each window.
        #[arg(long, default_value_t = 3)]
        warmup: u32,
        /// Distinct flows (5-tuples) in each input capture.
        #[arg(long, default_value_t = 256)]
        flows: usize,
        /// Where the report goes (captures and logs under work/).
        #[arg(long, default_value = "sluice-lab-report")]
        out: std::path::PathBuf,
        /// Cases (repeatable): encap, decap, host-gw. Default: all.
        #[arg(long = "case")]
        cases: Vec<sluice_perf::dpdk_bench::Case>,
        /// Skip OVS-DPDK.
        #[arg(long)]
        no_ovs: bool,
        /// Skip sluice.
        #[arg(long)]
        no_sluice: bool,
        /// The sluiced binary (default: next to sluice-lab, then PATH).
        #[arg(long)]
        sluiced: Option<std::path::PathBuf>,
    },
    /// Per-core forwarding capacity of one node, 64-byte frames: sluice on
    /// AF_XDP (one worker on core 1) against the kernel path flannel uses
    /// (softirq steered to core 1), a testpmd generator on core 0; pps
    /// leaving the node and CPU time per packet; capacity.json and .md.
    Capacity {
        /// Seconds per measurement window.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Windows per measurement (median and spread are over these).
        #[arg(long, default_value_t = 3)]
        windows: u32,
        /// Seconds of warm-up before the first window.
        #[arg(long, default_value_t = 2)]
        warmup: u32,
        /// Distinct flows (5-tuples) in each input capture.
        #[arg(long, default_value_t = 256)]
        flows: usize,
        /// Cases, comma-separated: encap, decap, host-gw. Default: all.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<sluice_perf::dpdk_bench::Case>,
        /// Contenders, comma-separated: generator, kernel, sluice,
        /// sluice-softirq-napi. Default: all.
        #[arg(long, value_delimiter = ',')]
        contenders: Vec<sluice_perf::capacity::Contender>,
        /// Where the report goes (captures and logs under work/).
        #[arg(long, default_value = "sluice-lab-report")]
        out: std::path::PathBuf,
        /// The sluiced binary (default: next to sluice-lab, then PATH).
        #[arg(long)]
        sluiced: Option<std::path::PathBuf>,
        /// Seconds of `perf record -e cpu-clock -C 1` after each forwarding
        /// run's windows (0: none); top symbols into the JSON.
        #[arg(long, default_value_t = 0)]
        profile: u32,
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
            workers,
            store,
            direct_routing,
            rx_mode,
            forwarding_core,
        } => lab::up(
            &LabSpec {
                name,
                nodes,
                mode,
                sluiced: true,
                kernel_nodes,
                rx_mode: Some(rx_mode),
                workers,
                store,
                direct_routing,
                network: None,
                forwarding_core,
                bgp: None,
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
        Cmd::Bench {
            name,
            mode,
            seconds,
            windows,
            rx_mode,
            out,
        } => sluice_perf::bench::run(&name, mode, seconds, windows, &rx_mode, &mut |s| {
            eprintln!("sluice-lab: {s}")
        })
        .and_then(|r| {
            print!("{}", sluice_perf::bench::table(&r));
            sluice_perf::bench::write(&r, &out)
                .map_err(|e| lab::LabError::Other(format!("{}: {e}", out.display())))?;
            println!(
                "wrote {}/bench.json and {}/report.md",
                out.display(),
                out.display()
            );
            Ok(())
        }),
        Cmd::DpdkBench {
            seconds,
            warmup,
            flows,
            out,
            cases,
            no_ovs,
            no_sluice,
            sluiced,
        } => {
            use sluice_perf::dpdk_bench::{self as db, Case, Contender};
            let opts = db::Options {
                seconds,
                warmup,
                flows: flows.max(1),
                out: out.clone(),
                cases: if cases.is_empty() {
                    Case::ALL.to_vec()
                } else {
                    cases
                },
                contenders: Contender::ALL
                    .into_iter()
                    .filter(|c| !(no_ovs && *c == Contender::OvsDpdk))
                    .filter(|c| !(no_sluice && *c == Contender::Sluice))
                    .collect(),
                sluiced,
            };
            db::run(&opts, &mut |s| eprintln!("sluice-lab: {s}")).and_then(|r| {
                print!("{}", db::table(&r));
                db::write(&r, &out)
                    .map_err(|e| lab::LabError::Other(format!("{}: {e}", out.display())))?;
                println!(
                    "wrote {0}/dpdk-bench.json, {0}/dpdk-bench.svg and {0}/dpdk-bench.md",
                    out.display()
                );
                Ok(())
            })
        }
        Cmd::Capacity {
            seconds,
            windows,
            warmup,
            flows,
            cases,
            contenders,
            out,
            sluiced,
            profile,
        } => {
            use sluice_perf::capacity as cap;
            let opts = cap::Options {
                seconds: seconds.max(1),
                windows: windows.max(1),
                warmup,
                flows: flows.max(1),
                out: out.clone(),
                cases: if cases.is_empty() {
                    sluice_perf::dpdk_bench::Case::ALL.to_vec()
                } else {
                    cases
                },
                contenders: if contenders.is_empty() {
                    cap::Contender::ALL.to_vec()
                } else {
                    contenders
                },
                sluiced,
                profile,
            };
            cap::run(&opts, &mut |s| eprintln!("sluice-lab: {s}")).and_then(|r| {
                print!("{}", cap::table(&r));
                cap::write(&r, &out)
                    .map_err(|e| lab::LabError::Other(format!("{}: {e}", out.display())))?;
                println!("wrote {0}/capacity.json and {0}/capacity.md", out.display());
                Ok(())
            })
        }
        Cmd::CniBench { name, pods, wave } => {
            sluice_perf::cni_bench::run(&name, pods, wave, &mut |s| eprintln!("sluice-lab: {s}"))
                .map(|r| print!("{}", sluice_perf::cni_bench::table(&r)))
        }
        Cmd::CniBenchRun {
            prefix,
            pods,
            wave,
            plugin_dir,
            cache_dir,
            chain,
        } => {
            let chains: Vec<(String, std::path::PathBuf)> = chain
                .iter()
                .filter_map(|c| c.split_once('=').map(|(l, p)| (l.to_string(), p.into())))
                .collect();
            sluice_perf::cni_bench::measure(&prefix, pods, wave, plugin_dir, cache_dir, &chains)
                .map(|r| print!("{}", serde_json::to_string(&r).unwrap_or_default()))
        }
        Cmd::BgpBench {
            name,
            prefixes,
            json,
        } => sluice_perf::bgp_bench::run(&name, prefixes, &mut |s| eprintln!("sluice-lab: {s}"))
            .and_then(|r| {
                print!("{}", sluice_perf::bgp_bench::table(&r));
                match json {
                    Some(p) => {
                        std::fs::write(&p, serde_json::to_string_pretty(&r).unwrap_or_default())
                            .map_err(|e| {
                                sluice_perf::lab::LabError::Other(format!("{}: {e}", p.display()))
                            })
                    }
                    None => Ok(()),
                }
            }),
        Cmd::Limits {
            name,
            routes,
            neighbours,
            pods,
            json,
        } => sluice_perf::limits_bench::run(&name, routes, neighbours, pods, &mut |s| {
            eprintln!("sluice-lab: {s}")
        })
        .and_then(|r| {
            if let Some(path) = &json {
                std::fs::write(path, serde_json::to_string_pretty(&r).unwrap_or_default())
                    .map_err(|e| sluice_perf::lab::LabError::Other(e.to_string()))?;
            }
            print!("{}", sluice_perf::limits_bench::table(&r));
            Ok(())
        }),
        Cmd::AgentBench {
            name,
            leases,
            changes,
            store,
        } => sluice_perf::agent_bench::run(&name, leases, changes, store, &mut |s| {
            eprintln!("sluice-lab: {s}")
        })
        .map(|r| print!("{}", sluice_perf::agent_bench::table(&r))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

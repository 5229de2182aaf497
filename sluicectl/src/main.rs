//! `sluicectl`: the operator's command line for a running `sluiced`.
//!
//! ```text
//! sluicectl ports | routes | neighbours | stats | node      [--json]
//! sluicectl route add 10.5.2.0/24 vxlan 192.168.50.2 02:00:00:00:bb:02
//! sluicectl route add 10.5.3.0/24 ipip 192.168.50.3
//! sluicectl route del 10.5.3.0/24
//! sluicectl neighbour add 192.168.50.2 02:00:00:00:aa:02
//! ```

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use sluiced::api;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show and change a running sluiced: ports, routes, neighbours, counters.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The daemon's API socket.
    #[arg(long, default_value = "/run/sluice/sluiced.sock", global = true)]
    socket: PathBuf,
    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Ports with their ids.
    Ports,
    /// Routes (configured, then pods' /32s).
    Routes,
    /// Underlay neighbours.
    Neighbours,
    /// Counters: ports, drops by reason, events.
    Stats,
    /// Node and tunnel settings.
    Node,
    /// Cached flows, per worker.
    Flows,
    /// Add or remove routes.
    Route {
        #[command(subcommand)]
        action: RouteCmd,
    },
    /// Attach or detach pod ports.
    Port {
        #[command(subcommand)]
        action: PortCmd,
    },
    /// Add or remove underlay neighbours.
    Neighbour {
        #[command(subcommand)]
        action: NeighbourCmd,
    },
    /// What the switch would do now with a frame received on PORT.
    Trace {
        /// Ingress port name.
        port: String,
        /// The frame as hex (spaces and colons allowed).
        frame: String,
    },
}

#[derive(Subcommand, Debug)]
enum RouteCmd {
    /// PREFIX VIA [NODE] [VTEP_MAC]: via is vxlan, ipip, host-gw, host or blackhole.
    Add {
        /// Destination prefix.
        prefix: String,
        /// vxlan, ipip, host-gw, host or blackhole.
        via: String,
        /// Remote node's underlay address (vxlan, ipip, host-gw).
        node: Option<String>,
        /// Remote VTEP MAC (vxlan).
        vtep_mac: Option<String>,
    },
    /// Remove routes by prefix.
    Del {
        /// Prefixes.
        prefixes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// NAME IP MAC: attach the host end NAME of a pod's veth.
    Add {
        /// Interface (the host end of the pod's veth).
        name: String,
        /// The pod's IPv4 address.
        ip: String,
        /// The pod's MAC.
        mac: String,
        /// The pod interface's MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: u16,
    },
    /// Detach pod ports by name.
    Del {
        /// Interfaces.
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum NeighbourCmd {
    /// IP MAC.
    Add {
        /// Address.
        ip: String,
        /// MAC.
        mac: String,
    },
    /// Remove by address.
    Del {
        /// Addresses.
        ips: Vec<String>,
    },
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn human(cmd: &Cmd, r: &Value) -> String {
    match cmd {
        Cmd::Ports => {
            let mut rows = vec![vec![
                "ID".into(),
                "NAME".into(),
                "KIND".into(),
                "MAC".into(),
                "ADDRESS".into(),
                "MTU".into(),
            ]];
            for p in r["ports"].as_array().into_iter().flatten() {
                let addr = if p["ip"].is_null() {
                    s(&p["address"])
                } else {
                    s(&p["ip"])
                };
                rows.push(vec![
                    s(&p["id"]),
                    s(&p["name"]),
                    s(&p["kind"]),
                    s(&p["mac"]),
                    addr,
                    s(&p["mtu"]),
                ]);
            }
            table(&rows)
        }
        Cmd::Routes => {
            let mut rows = vec![vec![
                "PREFIX".into(),
                "VIA".into(),
                "NODE".into(),
                "VTEP MAC".into(),
                "PORT".into(),
            ]];
            for p in r["routes"].as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&p["prefix"]),
                    s(&p["via"]),
                    s(&p["node"]),
                    s(&p["vtep_mac"]),
                    s(&p["port"]),
                ]);
            }
            table(&rows)
        }
        Cmd::Neighbours => {
            let mut rows = vec![vec!["IP".into(), "MAC".into()]];
            for p in r["neighbours"].as_array().into_iter().flatten() {
                rows.push(vec![s(&p["ip"]), s(&p["mac"])]);
            }
            table(&rows)
        }
        Cmd::Stats => {
            let mut rows = vec![vec![
                "PORT".into(),
                "RX PKTS".into(),
                "RX BYTES".into(),
                "TX PKTS".into(),
                "TX BYTES".into(),
                "RX DROPPED".into(),
            ]];
            for (name, p) in r["ports"].as_object().into_iter().flatten() {
                rows.push(vec![
                    name.clone(),
                    s(&p["rx_packets"]),
                    s(&p["rx_bytes"]),
                    s(&p["tx_packets"]),
                    s(&p["tx_bytes"]),
                    s(&p["rx_dropped"]),
                ]);
            }
            let mut out = table(&rows);
            let nonzero = |k: &str| -> Vec<Vec<String>> {
                r[k].as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .map(|(k, v)| vec![k.clone(), s(v)])
                    .collect()
            };
            let drops = nonzero("drops");
            out += "\n\nDROP REASON            COUNT\n";
            out += &if drops.is_empty() {
                "(none)".to_string()
            } else {
                table(&drops)
            };
            let events = nonzero("events");
            out += "\n\nEVENT                  COUNT\n";
            out += &if events.is_empty() {
                "(none)".to_string()
            } else {
                table(&events)
            };
            out
        }
        Cmd::Flows => {
            let mut rows = vec![vec![
                "WORKER".into(),
                "IN".into(),
                "PROTO".into(),
                "SOURCE".into(),
                "DESTINATION".into(),
                "ACTION".into(),
            ]];
            for f in r["flows"].as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&f["worker"]),
                    s(&f["in_port"]),
                    s(&f["protocol"]),
                    format!("{}:{}", s(&f["src"]), s(&f["src_port"])),
                    format!("{}:{}", s(&f["dst"]), s(&f["dst_port"])),
                    s(&f["action"]),
                ]);
            }
            table(&rows)
        }
        Cmd::Trace { .. } => {
            let mut out = format!(
                "in    {}: {}\n",
                s(&r["input"]["port"]),
                s(&r["input"]["summary"])
            );
            if !r["route"].is_null() {
                let rt = &r["route"];
                out += &format!(
                    "route {} via {}{}\n",
                    s(&rt["prefix"]),
                    s(&rt["via"]),
                    if rt["node"].is_null() {
                        String::new()
                    } else {
                        format!(" {}", s(&rt["node"]))
                    }
                );
            }
            for (k, v) in r["events"].as_object().into_iter().flatten() {
                out += &format!("event {k} x{}\n", s(v));
            }
            for o in r["outputs"].as_array().into_iter().flatten() {
                out += &format!("out   {}: {}\n", s(&o["port"]), s(&o["summary"]));
            }
            if !r["drop"].is_null() {
                out += &format!("drop  {}\n", s(&r["drop"]));
            }
            out.trim_end().to_string()
        }
        _ => serde_json::to_string_pretty(r).unwrap_or_default(),
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    let (op, args) = match &a.cmd {
        Cmd::Ports => ("ports.list", Value::Null),
        Cmd::Routes => ("routes.list", Value::Null),
        Cmd::Neighbours => ("neighbours.list", Value::Null),
        Cmd::Stats => ("stats", Value::Null),
        Cmd::Node => ("node.get", Value::Null),
        Cmd::Flows => ("flows", Value::Null),
        Cmd::Route {
            action:
                RouteCmd::Add {
                    prefix,
                    via,
                    node,
                    vtep_mac,
                },
        } => {
            let mut r = json!({ "prefix": prefix, "via": via });
            if let Some(n) = node {
                r["node"] = json!(n);
            }
            if let Some(m) = vtep_mac {
                r["vtep_mac"] = json!(m);
            }
            ("routes.add", json!({ "routes": [r] }))
        }
        Cmd::Route {
            action: RouteCmd::Del { prefixes },
        } => ("routes.remove", json!({ "prefixes": prefixes })),
        Cmd::Neighbour {
            action: NeighbourCmd::Add { ip, mac },
        } => (
            "neighbours.set",
            json!({ "neighbours": [{ "ip": ip, "mac": mac }] }),
        ),
        Cmd::Neighbour {
            action: NeighbourCmd::Del { ips },
        } => ("neighbours.remove", json!({ "ips": ips })),
        Cmd::Trace { port, frame } => ("trace", json!({ "port": port, "frame": frame })),
        Cmd::Port {
            action: PortCmd::Add { name, ip, mac, mtu },
        } => (
            "ports.add",
            json!({ "ports": [{ "name": name, "kind": "pod", "ip": ip, "mac": mac, "mtu": mtu }] }),
        ),
        Cmd::Port {
            action: PortCmd::Del { names },
        } => ("ports.remove", json!({ "names": names })),
    };
    let resp = match api::call(&a.socket, op, args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "sluicectl: cannot reach sluiced at {}: {e}",
                a.socket.display()
            );
            return ExitCode::from(2);
        }
    };
    if !resp.ok {
        let e = resp.error.unwrap_or(api::ApiError {
            field: None,
            message: "unknown error".into(),
        });
        eprintln!("sluicectl: {e}");
        return ExitCode::FAILURE;
    }
    let result = resp.result.unwrap_or(Value::Null);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        match &a.cmd {
            Cmd::Route { .. } | Cmd::Neighbour { .. } | Cmd::Port { .. } => {
                println!("ok (tables generation {})", s(&result["generation"]))
            }
            cmd => println!("{}", human(cmd, &result)),
        }
    }
    ExitCode::SUCCESS
}

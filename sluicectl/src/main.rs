//! `sluicectl`: the operator's command line for a running `sluiced`.
//!
//! ```text
//! sluicectl ports | routes | neighbours | stats | node      [--json]
//! sluicectl route add 10.5.2.0/24 vxlan 192.168.50.2 02:00:00:00:bb:02
//! sluicectl route add 10.5.3.0/24 ipip 192.168.50.3
//! sluicectl route del 10.5.3.0/24
//! sluicectl neighbour add 192.168.50.2 02:00:00:00:aa:02
//! sluicectl capture pod-a -f 'icmp or arp' -c 100 -w pod-a.pcapng
//! ```

use clap::{Parser, Subcommand};
use sluice_api::{
    Client, ClientError, FlowList, Ipv4Net, MacAddr, NeighbourConfig, NeighbourList, NodeInfo,
    PortConfig, PortList, Request, RouteConfig, RouteList, Stats, Trace, Via,
};
mod pcapng;

use std::fmt::Display;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show and change a running sluiced: ports, routes, neighbours, counters.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The daemon's API socket.
    #[arg(long, default_value = sluice_api::DEFAULT_SOCKET, global = true)]
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
    /// Hand this node's ports over to a new sluiced without losing a packet
    /// (AF_XDP): starts BINARY (the running binary's path by default) with
    /// --take-over and waits until it answers on the API socket.
    Upgrade {
        /// The new sluiced binary.
        #[arg(long)]
        binary: Option<String>,
        /// How long to wait for the new sluiced, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Copy what PORT receives and sends to a pcapng file (Wireshark,
    /// tshark), until COUNT frames, Ctrl-C or SIGTERM.
    Capture {
        /// The port's name.
        port: String,
        /// Which frames: host A.B.C.D, net A.B.C.D/LEN, port N (each with
        /// src or dst), ip, icmp, tcp, udp, arp, vxlan; and, or, not, ( ).
        #[arg(short = 'f', long)]
        filter: Option<String>,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// rx (received on the port), tx (sent out of it) or both.
        #[arg(long, default_value = "both")]
        direction: sluice_api::CaptureDirection,
        /// Bytes kept of each frame.
        #[arg(short = 's', long)]
        snaplen: Option<u32>,
        /// The pcapng file; `-` is standard output (not a terminal).
        #[arg(short = 'w', long = "write", default_value = "-")]
        file: String,
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

fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn ports_table(r: &PortList) -> String {
    let mut rows = vec![["ID", "NAME", "KIND", "MAC", "ADDRESS", "MTU"]
        .map(String::from)
        .to_vec()];
    for p in &r.ports {
        let addr = match (p.ip, p.address) {
            (Some(ip), _) => ip.to_string(),
            (None, a) => opt(&a),
        };
        rows.push(vec![
            p.id.to_string(),
            p.name.clone(),
            p.kind.to_string(),
            p.mac.to_string(),
            addr,
            p.mtu.to_string(),
        ]);
    }
    table(&rows)
}

fn routes_table(r: &RouteList) -> String {
    let mut rows = vec![["PREFIX", "VIA", "NODE", "VTEP MAC", "PORT"]
        .map(String::from)
        .to_vec()];
    for rt in &r.routes {
        rows.push(vec![
            rt.prefix.to_string(),
            rt.via.to_string(),
            opt(&rt.node),
            opt(&rt.vtep_mac),
            opt(&rt.port),
        ]);
    }
    table(&rows)
}

fn neighbours_table(r: &NeighbourList) -> String {
    let mut rows = vec![["IP", "MAC", "SOURCE"].map(String::from).to_vec()];
    for n in &r.neighbours {
        let source = serde_json::to_value(n.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        rows.push(vec![n.ip.to_string(), n.mac.to_string(), source]);
    }
    table(&rows)
}

fn counts_table(title: &str, counts: Vec<(&String, u64)>) -> String {
    let mut out = format!("\n\n{title:<22} COUNT\n");
    if counts.is_empty() {
        out += "(none)";
    } else {
        let rows: Vec<Vec<String>> = counts
            .into_iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        out += &table(&rows);
    }
    out
}

fn stats_table(r: &Stats) -> String {
    let mut rows = vec![[
        "PORT",
        "RX PKTS",
        "RX BYTES",
        "TX PKTS",
        "TX BYTES",
        "RX DROPPED",
        "TX DROPPED",
        "KERNEL RX DROPPED",
        "RX RING FULL",
        "FILL RING EMPTY",
        "INVALID DESCS",
        "FRAMES HELD",
    ]
    .map(String::from)
    .to_vec()];
    for (name, p) in &r.ports {
        let xsk = |f: fn(&sluice_api::XskCounters) -> u64| p.xsk.as_ref().map(f);
        rows.push(vec![
            name.clone(),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            p.rx_dropped.to_string(),
            p.tx_dropped.to_string(),
            opt(&xsk(|x| x.rx_dropped)),
            opt(&xsk(|x| x.rx_ring_full)),
            opt(&xsk(|x| x.rx_fill_ring_empty_descs)),
            opt(&xsk(|x| x.rx_invalid_descs + x.tx_invalid_descs)),
            opt(&p.frames_held),
        ]);
    }
    let mut rows_after = String::new();
    if !r.workers.is_empty() {
        let mut w = vec![["WORKER", "FREE FRAMES", "TOTAL", "RETIRED"]
            .map(String::from)
            .to_vec()];
        for f in &r.workers {
            w.push(vec![
                f.worker.to_string(),
                f.free.to_string(),
                f.total.to_string(),
                f.retired.to_string(),
            ]);
        }
        rows_after = format!("\n\n{}", table(&w));
    }
    fn nonzero(m: &std::collections::BTreeMap<String, u64>) -> Vec<(&String, u64)> {
        m.iter()
            .filter(|(_, &v)| v != 0)
            .map(|(k, &v)| (k, v))
            .collect()
    }
    let mut out = table(&rows);
    out += &rows_after;
    out += &counts_table("DROP REASON", nonzero(&r.drops));
    out += &counts_table("EVENT", nonzero(&r.events));
    out
}

fn flows_table(r: &FlowList) -> String {
    let mut rows = vec![["WORKER", "IN", "PROTO", "SOURCE", "DESTINATION", "ACTION"]
        .map(String::from)
        .to_vec()];
    for f in &r.flows {
        rows.push(vec![
            f.worker.to_string(),
            f.in_port.clone(),
            f.protocol.to_string(),
            format!("{}:{}", f.src, f.src_port),
            format!("{}:{}", f.dst, f.dst_port),
            f.action.clone(),
        ]);
    }
    table(&rows)
}

fn trace_text(r: &Trace) -> String {
    let mut out = format!("in    {}: {}\n", r.input.port, r.input.summary);
    if let Some(rt) = &r.route {
        let node = rt.node.map(|n| format!(" {n}")).unwrap_or_default();
        out += &format!("route {} via {}{node}\n", rt.prefix, rt.via);
    }
    for (k, v) in &r.events {
        out += &format!("event {k} x{v}\n");
    }
    for o in &r.outputs {
        out += &format!("out   {}: {}\n", o.port, o.summary);
    }
    if let Some(d) = &r.drop {
        out += &format!("drop  {d}\n");
    }
    out.trim_end().to_string()
}

fn node_text(r: &NodeInfo) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// A command-line value, parsed with an error that names the argument.
fn arg<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String>
where
    T::Err: Display,
{
    v.parse().map_err(|e| format!("{name} `{v}`: {e}"))
}

/// The request a command sends, its arguments checked here first.
fn request(cmd: &Cmd) -> Result<Request, String> {
    use sluice_api::{
        NeighboursRemoveArgs, NeighboursSetArgs, PortsAddArgs, PortsRemoveArgs, RoutesArgs,
        RoutesRemoveArgs, TraceArgs,
    };
    Ok(match cmd {
        Cmd::Ports => Request::PortsList,
        Cmd::Routes => Request::RoutesList,
        Cmd::Neighbours => Request::NeighboursList,
        Cmd::Stats => Request::Stats,
        Cmd::Node => Request::NodeGet,
        Cmd::Flows => Request::Flows,
        Cmd::Route {
            action:
                RouteCmd::Add {
                    prefix,
                    via,
                    node,
                    vtep_mac,
                },
        } => {
            let mut r =
                RouteConfig::new(arg::<Ipv4Net>("prefix", prefix)?, arg::<Via>("via", via)?);
            r.node = node
                .as_deref()
                .map(|n| arg::<Ipv4Addr>("node", n))
                .transpose()?;
            r.vtep_mac = vtep_mac
                .as_deref()
                .map(|m| arg::<MacAddr>("vtep_mac", m))
                .transpose()?;
            Request::RoutesAdd(RoutesArgs { routes: vec![r] })
        }
        Cmd::Route {
            action: RouteCmd::Del { prefixes },
        } => Request::RoutesRemove(RoutesRemoveArgs {
            prefixes: prefixes
                .iter()
                .map(|p| arg("prefix", p))
                .collect::<Result<_, _>>()?,
        }),
        Cmd::Neighbour {
            action: NeighbourCmd::Add { ip, mac },
        } => Request::NeighboursSet(NeighboursSetArgs {
            neighbours: vec![NeighbourConfig::new(arg("ip", ip)?, arg("mac", mac)?)],
        }),
        Cmd::Neighbour {
            action: NeighbourCmd::Del { ips },
        } => Request::NeighboursRemove(NeighboursRemoveArgs {
            ips: ips.iter().map(|i| arg("ip", i)).collect::<Result<_, _>>()?,
        }),
        Cmd::Trace { port, frame } => {
            let bytes = sluice_api::request::parse_hex(frame)
                .ok_or_else(|| format!("frame `{frame}`: not hex bytes"))?;
            Request::Trace(TraceArgs::new(port.clone(), &bytes))
        }
        Cmd::Port {
            action: PortCmd::Add { name, ip, mac, mtu },
        } => Request::PortsAdd(PortsAddArgs {
            ports: vec![PortConfig::pod(
                name.clone(),
                arg("mac", mac)?,
                arg("ip", ip)?,
                *mtu,
            )],
        }),
        Cmd::Port {
            action: PortCmd::Del { names },
        } => Request::PortsRemove(PortsRemoveArgs {
            names: names.clone(),
        }),
        Cmd::Capture { .. } => return Err("capture is not a single request".into()),
        Cmd::Upgrade { binary, .. } => Request::Upgrade(sluice_api::UpgradeArgs {
            binary: binary.clone(),
        }),
    })
}

/// Sends the command's request and renders the typed result for people.
fn human(client: &Client, cmd: &Cmd, req: &Request) -> Result<String, ClientError> {
    Ok(match cmd {
        Cmd::Ports => ports_table(&client.typed(req)?),
        Cmd::Routes => routes_table(&client.typed(req)?),
        Cmd::Neighbours => neighbours_table(&client.typed(req)?),
        Cmd::Stats => stats_table(&client.typed(req)?),
        Cmd::Flows => flows_table(&client.typed(req)?),
        Cmd::Trace { .. } => trace_text(&client.typed(req)?),
        Cmd::Node => node_text(&client.typed(req)?),
        Cmd::Capture { .. } | Cmd::Upgrade { .. } => String::new(),
        Cmd::Route { .. } | Cmd::Neighbour { .. } | Cmd::Port { .. } => {
            let g: sluice_api::Generation = client.typed(req)?;
            format!("ok (tables generation {})", g.generation)
        }
    })
}

/// How often `capture` asks for frames.
const CAPTURE_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// Most frames one read asks for.
const CAPTURE_READ_MAX: usize = 256;

/// `sluicectl capture`: starts a capture, writes what `capture.read`
/// returns as pcapng (flushed after each read, so a reader of the file or
/// pipe sees packets as they come), and stops the capture when the count is
/// reached, on SIGINT or SIGTERM, or when the output cannot be written.
fn capture(client: &Client, cmd: &Cmd) -> ExitCode {
    let Cmd::Capture {
        port,
        filter,
        count,
        direction,
        snaplen,
        file,
    } = cmd
    else {
        return ExitCode::FAILURE;
    };
    use std::io::{IsTerminal, Write};
    let out: Box<dyn Write> = if file == "-" {
        if std::io::stdout().is_terminal() {
            eprintln!("sluicectl: not writing pcapng to a terminal; use -w FILE or a pipe");
            return ExitCode::from(2);
        }
        Box::new(std::io::stdout().lock())
    } else {
        match std::fs::File::create(file) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("sluicectl: {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("sluicectl: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let args = sluice_api::CaptureStartArgs {
        filter: filter.clone(),
        count: *count,
        direction: Some(*direction),
        snaplen: *snaplen,
        ..sluice_api::CaptureStartArgs::new(port.clone())
    };
    let started = match client.capture_start(args) {
        Ok(s) => s,
        Err(e) => return report(client, e),
    };
    let app = format!("sluicectl {}", env!("CARGO_PKG_VERSION"));
    let mut w = match pcapng::Writer::new(
        std::io::BufWriter::new(out),
        &app,
        &started.port,
        started.snaplen,
    ) {
        Ok(w) => w,
        Err(e) => {
            let _ = client.capture_stop(started.id);
            eprintln!("sluicectl: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut dropped = 0;
    let mut failed: Option<String> = None;
    let mut last = false;
    loop {
        last |= stop.load(std::sync::atomic::Ordering::Relaxed);
        let r = match client.capture_read(started.id, Some(CAPTURE_READ_MAX)) {
            Ok(r) => r,
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        };
        dropped = r.dropped;
        let written = r.frames.iter().try_for_each(|f| {
            let dir = match f.direction {
                sluice_api::CaptureDirection::Tx => pcapng::Dir::Outbound,
                _ => pcapng::Dir::Inbound,
            };
            let data = f.bytes().unwrap_or_default();
            w.packet(f.ts_ns, dir, f.orig_len, &data)
        });
        if let Err(e) = written.and_then(|()| w.flush()) {
            failed = Some(format!("{file}: {e}"));
            break;
        }
        // More may be waiting than one read returns: read again at once.
        if r.done || (last && r.frames.is_empty()) {
            break;
        }
        if r.frames.len() < CAPTURE_READ_MAX {
            let deadline = std::time::Instant::now() + CAPTURE_POLL;
            while std::time::Instant::now() < deadline
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    if let Ok(s) = client.capture_stop(started.id) {
        dropped = s.dropped;
    }
    let _ = w.flush();
    let to = if file == "-" { "standard output" } else { file };
    eprintln!(
        "sluicectl: {} packets written to {to}, {dropped} dropped",
        w.packets
    );
    match failed {
        Some(e) => {
            eprintln!("sluicectl: capture ended early: {e}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

/// Prints a client error as `main` does.
fn report(client: &Client, e: ClientError) -> ExitCode {
    match e {
        ClientError::Api(e) => {
            eprintln!("sluicectl: {e}");
            ExitCode::FAILURE
        }
        e => {
            eprintln!(
                "sluicectl: cannot reach sluiced at {}: {e}",
                client.path().display()
            );
            ExitCode::from(2)
        }
    }
}

/// The pid in a `node.get` epoch (`<pid hex>-<start hex>.<reloads>`).
fn epoch_pid(epoch: &str) -> Option<u32> {
    u32::from_str_radix(epoch.split('-').next()?, 16).ok()
}

/// `sluicectl upgrade`: asks sluiced to start the new binary, then waits
/// until the API is answered by the new process.
fn upgrade(client: &Client, binary: Option<String>, timeout: u64) -> ExitCode {
    let t0 = std::time::Instant::now();
    let started = match client.upgrade(binary) {
        Ok(u) => u,
        Err(ClientError::Api(e)) => {
            eprintln!("sluicectl: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!(
                "sluicectl: cannot reach sluiced at {}: {e}",
                client.path().display()
            );
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "sluicectl: pid {} started {} as pid {}",
        started.from_pid, started.binary, started.pid
    );
    let deadline = t0 + std::time::Duration::from_secs(timeout);
    while std::time::Instant::now() < deadline {
        if let Ok(n) = client.node() {
            if epoch_pid(&n.epoch) == Some(started.pid) {
                println!(
                    "upgraded: pid {} took over from pid {} in {} ms",
                    started.pid,
                    started.from_pid,
                    t0.elapsed().as_millis()
                );
                return ExitCode::SUCCESS;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!(
        "sluicectl: pid {} has not taken over within {timeout} s; see both processes' logs",
        started.pid
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let a = Args::parse();
    if matches!(a.cmd, Cmd::Capture { .. }) {
        return capture(&Client::new(&a.socket), &a.cmd);
    }
    if let Cmd::Upgrade { binary, timeout } = &a.cmd {
        return upgrade(&Client::new(&a.socket), binary.clone(), *timeout);
    }
    let req = match request(&a.cmd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluicectl: {e}");
            return ExitCode::from(2);
        }
    };
    let client = Client::new(&a.socket);
    let out = if a.json {
        client
            .call(&req)
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        human(&client, &a.cmd, &req)
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(ClientError::Api(e)) => {
            eprintln!("sluicectl: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "sluicectl: cannot reach sluiced at {}: {e}",
                a.socket.display()
            );
            ExitCode::from(2)
        }
    }
}

//! `sluice-agent`'s command line: run the agent (the default), or read and
//! write the network config and list leases in whichever store the settings
//! name (the embedded store has no `etcdctl`).

use crate::agent::{Agent, Backoff};
use crate::lease::{config_key, parse_subnet_key, subnets_prefix, LeaseAttrs};
use crate::network::NetworkConfig;
use crate::settings::{Flags, Settings, StoreChoice};
use crate::status::Status;
use crate::store::etcd::EtcdStore;
use crate::store::local::LocalStore;
use crate::store::{AnyStore, Store, StoreError};
use clap::{Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{error, info, warn};

/// sluice-agent: leases this node's pod subnet (flannel's etcd layout, or an
/// embedded store), learns the other nodes' and programs sluiced.
#[derive(Debug, Parser)]
#[command(name = "sluice-agent", version)]
pub struct Cli {
    /// The agent's TOML settings file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// etcd endpoints, comma-separated (flannel's flag); none: the embedded store.
    #[arg(long, global = true)]
    etcd_endpoints: Option<String>,
    /// The store prefix (default /coreos.com/network).
    #[arg(long, global = true)]
    etcd_prefix: Option<String>,
    /// CA certificate for etcd's TLS.
    #[arg(long, global = true)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, global = true)]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, global = true)]
    etcd_keyfile: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, global = true)]
    etcd_username: Option<String>,
    /// etcd password.
    #[arg(long, global = true)]
    etcd_password: Option<String>,
    /// The embedded store's directory (default /var/lib/sluice/store).
    #[arg(long, global = true)]
    store_dir: Option<PathBuf>,
    /// sluiced's API socket (default /run/sluice/sluiced.sock).
    #[arg(long)]
    sluiced_socket: Option<PathBuf>,
    /// The subnet file (default /run/flannel/subnet.env).
    #[arg(long)]
    subnet_file: Option<PathBuf>,
    /// This node's underlay address (default: sluiced's uplink address).
    #[arg(long)]
    public_ip: Option<Ipv4Addr>,
    /// Sets FLANNEL_IPMASQ=true in the subnet file.
    #[arg(long)]
    ip_masq: bool,
    /// Where to serve /metrics, /healthz and /readyz ("" disables; default 127.0.0.1:9473).
    #[arg(long)]
    healthz_address: Option<String>,
    /// Minutes before the lease expires to renew it (default 60).
    #[arg(long)]
    subnet_lease_renew_margin: Option<u64>,
    /// The lease's TTL in seconds (default 86400; short values for labs and tests).
    #[arg(long, hide = true)]
    lease_ttl: Option<u64>,
    /// How often sluiced's epoch is checked, in milliseconds (default 1000).
    #[arg(long, hide = true)]
    sluiced_poll_ms: Option<u64>,
    /// Seconds between checks of the lease watch against a list, which
    /// repair changes the watch lost (default 10; 0: off).
    #[arg(long)]
    lease_check_interval: Option<u64>,
    /// A tracing filter (SLUICE_LOG or RUST_LOG win).
    #[arg(long)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// The network config in the store.
    Network {
        #[command(subcommand)]
        op: NetworkOp,
    },
    /// Every lease in the store.
    Leases,
    /// The running agent's BGP speaker (asked over its healthz address).
    Bgp {
        #[command(subcommand)]
        op: BgpOp,
    },
}

#[derive(Debug, Subcommand)]
enum BgpOp {
    /// Sessions: state, prefixes received, best and stale, End-of-RIB.
    Peers {
        /// Print the agent's JSON as it is.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkOp {
    /// Validates flannel's JSON and writes it (`@FILE` reads a file).
    Set {
        /// The JSON, or @FILE.
        json: String,
    },
    /// Prints the network config.
    Get,
}

impl Cli {
    fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            etcd_endpoints: self.etcd_endpoints.clone(),
            etcd_prefix: self.etcd_prefix.clone(),
            etcd_cafile: self.etcd_cafile.clone(),
            etcd_certfile: self.etcd_certfile.clone(),
            etcd_keyfile: self.etcd_keyfile.clone(),
            etcd_username: self.etcd_username.clone(),
            etcd_password: self.etcd_password.clone(),
            store_dir: self.store_dir.clone(),
            sluiced_socket: self.sluiced_socket.clone(),
            subnet_file: self.subnet_file.clone(),
            public_ip: self.public_ip,
            ip_masq: self.ip_masq,
            healthz_address: self.healthz_address.clone(),
            renew_margin: self.subnet_lease_renew_margin,
            lease_ttl: self.lease_ttl,
            sluiced_poll_ms: self.sluiced_poll_ms,
            lease_check_interval: self.lease_check_interval,
            log_level: self.log_level.clone(),
        }
    }
}

fn init_logging(level: &str) {
    let filter = std::env::var("SLUICE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("sluice-agent: log filter `{filter}`: {e}; using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command line; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli.flags()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(settings).await,
            Command::Network { op } => {
                let prefix = settings.agent.prefix.clone();
                with_store(&settings, |s| async move { network(s, &prefix, op).await }).await
            }
            Command::Bgp {
                op: BgpOp::Peers { json },
            } => match settings.healthz {
                Some(addr) => match bgp_peers(addr, json) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("sluice-agent: {e}");
                        ExitCode::FAILURE
                    }
                },
                None => {
                    eprintln!("sluice-agent: the healthz address is off (\"\"): nowhere to ask");
                    ExitCode::FAILURE
                }
            },
            Command::Leases => {
                let prefix = settings.agent.prefix.clone();
                with_store(&settings, |s| async move { leases(s, &prefix).await }).await
            }
        }
    })
}

/// Opens the chosen store once (no retries: for the one-shot commands).
async fn with_store<F, Fut>(settings: &Settings, f: F) -> ExitCode
where
    F: FnOnce(AnyStore) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let store = match open(&settings.store).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match f(store).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open(choice: &StoreChoice) -> Result<AnyStore, StoreError> {
    Ok(match choice {
        StoreChoice::Etcd(c) => AnyStore::Etcd(Box::new(EtcdStore::connect(c).await?)),
        StoreChoice::Local(d) => AnyStore::Local(LocalStore::open(d)?),
    })
}

async fn network(store: AnyStore, prefix: &str, op: NetworkOp) -> Result<(), String> {
    let key = config_key(prefix);
    match op {
        NetworkOp::Set { json } => {
            let text = match json.strip_prefix('@') {
                Some(path) => std::fs::read(path).map_err(|e| format!("{path}: {e}"))?,
                None => json.into_bytes(),
            };
            let cfg = NetworkConfig::parse(&text).map_err(|e| e.to_string())?;
            store
                .put(&key, &text, None)
                .await
                .map_err(|e| format!("writing {key}: {e}"))?;
            println!(
                "{key}: {} {}, /{} subnets {}..{}",
                cfg.network, cfg.backend.kind, cfg.subnet_len, cfg.subnet_min, cfg.subnet_max
            );
            Ok(())
        }
        NetworkOp::Get => {
            let kv = store
                .get(&key)
                .await
                .map_err(|e| format!("reading {key}: {e}"))?
                .ok_or_else(|| format!("no network config at {key}"))?;
            println!("{}", String::from_utf8_lossy(&kv.value));
            Ok(())
        }
    }
}

/// GETs `path` from the agent at `addr`: the status code and body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let t = std::time::Duration::from_secs(5);
    let mut c = std::net::TcpStream::connect_timeout(&addr, t).map_err(|e| {
        format!("asking the agent at {addr}: {e} (is it running, with this --healthz-address?)")
    })?;
    let _ = c.set_read_timeout(Some(t));
    write!(
        c,
        "GET {path} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("asking the agent at {addr}: {e}"))?;
    let mut text = String::new();
    c.read_to_string(&mut text)
        .map_err(|e| format!("reading the agent's answer: {e}"))?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("the agent at {addr} did not answer HTTP"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

fn bgp_peers(addr: std::net::SocketAddr, json: bool) -> Result<(), String> {
    let (code, body) = http_get(addr, "/bgp")?;
    if code != 200 {
        return Err(body.trim().to_string());
    }
    if json {
        print!("{body}");
        return Ok(());
    }
    let b: crate::bgp::speaker::BgpStatus =
        serde_json::from_str(&body).map_err(|e| format!("the agent's /bgp: {e}"))?;
    println!(
        "AS {} router id {} listening {} announcing {} ; {} best routes{}",
        b.asn,
        b.router_id.map(|r| r.to_string()).unwrap_or("-".into()),
        b.listen.as_deref().unwrap_or("nowhere"),
        if b.announced.is_empty() {
            "nothing".to_string()
        } else {
            b.announced.join(", ")
        },
        b.best_routes,
        if b.converged {
            ""
        } else {
            " (converging after the start)"
        }
    );
    println!(
        "{:<15} {:>10} {:<4} {:<11} {:>8} {:>8} {:>8} {:>6} {:<3} LAST ERROR",
        "PEER", "AS", "KIND", "STATE", "UPTIME", "RECEIVED", "BEST", "STALE", "EOR"
    );
    for p in &b.peers {
        println!(
            "{:<15} {:>10} {:<4} {:<11} {:>8} {:>8} {:>8} {:>6} {:<3} {}",
            p.address,
            p.asn,
            p.kind,
            p.state,
            p.uptime_seconds
                .map(|s| format!("{s}s"))
                .unwrap_or("-".into()),
            p.prefixes_received,
            p.prefixes_best,
            p.prefixes_stale,
            if p.end_of_rib { "yes" } else { "no" },
            p.last_error
        );
    }
    Ok(())
}

async fn leases(store: AnyStore, prefix: &str) -> Result<(), String> {
    let prefix = subnets_prefix(prefix);
    let (kvs, rev) = store
        .list(&prefix)
        .await
        .map_err(|e| format!("listing {prefix}: {e}"))?;
    println!(
        "{:<18} {:<15} {:<8} {:<17} {:>9}",
        "SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "TTL LEFT"
    );
    for kv in kvs {
        let subnet = parse_subnet_key(&kv.key)
            .map(|s| s.to_string())
            .unwrap_or(kv.key.clone());
        let ttl = match (kv.leased, kv.ttl_left) {
            (false, _) => "reserved".to_string(),
            (true, Some(t)) => format!("{}s", t.as_secs()),
            (true, None) => "leased".to_string(),
        };
        match LeaseAttrs::parse(&kv.value) {
            Ok(a) => {
                let vtep = a
                    .vxlan()
                    .map(|d| d.vtep_mac.to_string())
                    .unwrap_or("-".into());
                println!(
                    "{subnet:<18} {:<15} {:<8} {vtep:<17} {ttl:>9}",
                    a.public_ip, a.backend_type
                );
            }
            Err(e) => println!("{subnet:<18} invalid: {e}"),
        }
    }
    println!("(revision {rev})");
    Ok(())
}

async fn run(settings: Settings) -> ExitCode {
    let status = Arc::new(Status::default());
    if let Some(addr) = settings.healthz {
        match crate::status::start(addr, status.clone()).await {
            Ok(bound) => info!(%bound, "serving /metrics, /healthz, /readyz"),
            Err(e) => {
                error!("binding {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        info!("stopping; routes and the lease stay in place");
        let _ = stop_tx.send(true);
    });
    let store = match &settings.store {
        StoreChoice::Local(dir) => match LocalStore::open(dir) {
            Ok(store) => {
                info!(dir = %dir.display(), "embedded store");
                AnyStore::Local(store)
            }
            Err(e) => {
                error!("embedded store {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
        StoreChoice::Etcd(cfg) => {
            // etcd may be down when the agent starts: keep trying.
            let mut backoff = Backoff::new(settings.agent.backoff_max);
            let store = loop {
                match EtcdStore::connect(cfg).await {
                    Ok(s) => break s,
                    Err(e) => {
                        warn!(endpoints = ?cfg.endpoints, "connecting to etcd: {e}; retrying");
                        status.metrics.store_errors.inc();
                        status.update(|s| {
                            s.store_up = false;
                            s.problem = format!("connecting to etcd: {e}");
                        });
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.wait()) => {}
                            _ = stop.changed() => return ExitCode::SUCCESS,
                        }
                    }
                }
            };
            info!(endpoints = ?cfg.endpoints, "etcd");
            AnyStore::Etcd(Box::new(store))
        }
    };
    Agent::new(store, settings.agent.clone(), status)
        .run(stop)
        .await;
    ExitCode::SUCCESS
}

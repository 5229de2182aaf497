//! Offline replay: what would this node do with this traffic?
//!
//! Captures (one per ingress port) are merged by timestamp and fed through
//! one pipeline worker in bursts, in memory, exactly as a port backend would
//! feed it. What each port would send is written to `<out_dir>/<port>.pcap`
//! (every port gets a file, empty or not) and the counters are returned for
//! printing as JSON. Consecutive packets of the same ingress port form a
//! burst (up to the burst size); an output packet carries the timestamp of
//! the last input of its burst.

use crate::buffer::{Burst, HeapPool, DEFAULT_HEADROOM, MIN_BURST};
use crate::config::NodeConfig;
use crate::counters::{StatsSnapshot, WorkerCounters};
use crate::pcap::{self, PcapWriter, Record};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::port::{poll_port, MemoryPort};
use crate::tables::{PortId, Tables, TablesError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest frame the replay buffers hold (jumbo).
pub const MAX_FRAME: usize = 9216;

/// Replay failures: bad inputs are named.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The configuration could not be read.
    #[error("{path}: {source}")]
    ReadConfig {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("{path}: {source}")]
    Config {
        /// File.
        path: PathBuf,
        /// Why.
        source: crate::config::ConfigError,
    },
    /// The tables could not be built.
    #[error(transparent)]
    Tables(#[from] TablesError),
    /// An input names a port the configuration does not have.
    #[error("input `{0}`: no port of that name in the configuration (ports: {1})")]
    UnknownPort(String, String),
    /// An input is not PORT=FILE.
    #[error("input `{0}`: expected PORT=FILE.pcap")]
    BadInput(String),
    /// A capture could not be read.
    #[error("{path}: {source}")]
    Pcap {
        /// File.
        path: PathBuf,
        /// Why.
        source: pcap::PcapError,
    },
    /// An output could not be written.
    #[error("{path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Counters after the replay.
    pub stats: StatsSnapshot,
    /// Packets written per output port.
    pub written: BTreeMap<String, u64>,
    /// Input frames larger than `MAX_FRAME`, skipped.
    pub skipped_oversize: u64,
}

/// Reads a node configuration file.
pub fn load_config(path: &Path) -> Result<NodeConfig, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::ReadConfig {
        path: path.into(),
        source,
    })?;
    NodeConfig::from_toml_str(&text).map_err(|source| ReplayError::Config {
        path: path.into(),
        source,
    })
}

/// Parses `PORT=FILE` arguments and reads the captures.
pub fn load_inputs(args: &[String]) -> Result<Vec<(String, Vec<Record>)>, ReplayError> {
    args.iter()
        .map(|a| {
            let (port, file) = a
                .split_once('=')
                .filter(|(p, f)| !p.is_empty() && !f.is_empty())
                .ok_or_else(|| ReplayError::BadInput(a.clone()))?;
            let path = PathBuf::from(file);
            let recs =
                pcap::read_file(&path).map_err(|source| ReplayError::Pcap { path, source })?;
            Ok((port.to_string(), recs))
        })
        .collect()
}

/// Frames a port would send, by port name, and the counters: the result
/// of [`replay_in_memory`].
#[derive(Debug, Clone)]
pub struct MemoryReplay {
    /// Output frames per port name (every port present).
    pub outputs: BTreeMap<String, Vec<Vec<u8>>>,
    /// Counters after the run.
    pub stats: StatsSnapshot,
}

/// Feeds `inputs` through one worker on memory ports, in bursts of
/// consecutive frames of one port; `sink` gets each frame sent (port,
/// timestamp, bytes). Returns the counters and the oversize count.
fn run(
    tables: &Tables,
    inputs: &[(PortId, Record)],
    burst_size: usize,
    mut sink: impl FnMut(PortId, u64, &[u8]),
) -> (StatsSnapshot, u64) {
    let counters = Arc::new(WorkerCounters::new());
    let mut pipeline = Pipeline::new(PipelineConfig::default(), counters.clone());
    let burst_size = burst_size.max(MIN_BURST);
    let mut pool = HeapPool::new(
        burst_size * 4 + crate::pipeline::MAX_FRAGMENTS * 2,
        DEFAULT_HEADROOM + MAX_FRAME,
    );
    let mut burst = Burst::new(burst_size);
    let mut ports: Vec<MemoryPort> = tables.ports.iter().map(|_| MemoryPort::new()).collect();
    let mut skipped = 0;
    let mut i = 0;
    while i < inputs.len() {
        let port = inputs[i].0;
        let mut last_ts = inputs[i].1.ts_ns;
        let mut queued = 0;
        while i < inputs.len() && inputs[i].0 == port && queued < burst.capacity() {
            let rec = &inputs[i].1;
            i += 1;
            if rec.data.len() > MAX_FRAME {
                skipped += 1;
                continue;
            }
            last_ts = rec.ts_ns;
            ports[port as usize].inject(rec.clone());
            queued += 1;
        }
        for p in ports.iter_mut() {
            p.set_now(last_ts);
        }
        poll_port(
            &mut pipeline,
            tables,
            &mut ports,
            port,
            &mut burst,
            &mut pool,
            last_ts,
        );
        for (id, p) in ports.iter_mut().enumerate() {
            for rec in p.sent.drain(..) {
                sink(id as PortId, rec.ts_ns, &rec.data);
            }
        }
    }
    let stats = StatsSnapshot::collect(
        [&*counters],
        tables
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (i as PortId, p.name.clone())),
    );
    (stats, skipped)
}

fn merge(
    tables: &Tables,
    inputs: &[(String, Vec<Record>)],
) -> Result<Vec<(PortId, Record)>, ReplayError> {
    let mut events: Vec<(u64, usize, usize, PortId)> = Vec::new();
    for (i, (port, recs)) in inputs.iter().enumerate() {
        let id = tables.port_by_name(port).ok_or_else(|| {
            let names: Vec<&str> = tables.ports.iter().map(|p| p.name.as_str()).collect();
            ReplayError::UnknownPort(port.clone(), names.join(", "))
        })?;
        events.extend(recs.iter().enumerate().map(|(j, r)| (r.ts_ns, i, j, id)));
    }
    events.sort_unstable();
    Ok(events
        .into_iter()
        .map(|(_, i, j, id)| (id, inputs[i].1[j].clone()))
        .collect())
}

/// Replays `inputs` (port name, frames) through `cfg`'s node, writing
/// outputs into `out_dir`.
pub fn replay(
    cfg: &NodeConfig,
    inputs: &[(String, Vec<Record>)],
    out_dir: &Path,
    burst_size: usize,
) -> Result<ReplayReport, ReplayError> {
    let tables = Tables::from_config(cfg)?;
    let merged = merge(&tables, inputs)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReplayError::Write {
        path: out_dir.into(),
        source,
    })?;
    let mut writers = Vec::new();
    for p in &tables.ports {
        let path = out_dir.join(format!("{}.pcap", p.name));
        let w = File::create(&path)
            .and_then(|f| PcapWriter::new(BufWriter::new(f)))
            .map_err(|source| ReplayError::Write {
                path: path.clone(),
                source,
            })?;
        writers.push((path, w));
    }
    let mut written: BTreeMap<String, u64> =
        tables.ports.iter().map(|p| (p.name.clone(), 0)).collect();
    let mut write_err = None;
    let (stats, skipped) = run(&tables, &merged, burst_size, |port, ts, data| {
        let (path, w) = &mut writers[port as usize];
        if let Err(e) = w.write(ts, data) {
            write_err.get_or_insert((path.clone(), e));
        }
        *written
            .get_mut(&tables.ports[port as usize].name)
            .expect("every port") += 1;
    });
    if let Some((path, source)) = write_err {
        return Err(ReplayError::Write { path, source });
    }
    for (path, w) in writers {
        w.into_inner()
            .map_err(|source| ReplayError::Write { path, source })?;
    }
    Ok(ReplayReport {
        stats,
        written,
        skipped_oversize: skipped,
    })
}

/// Runs frames through a node in memory: `inputs` are (port name, frame),
/// in order, timestamps one microsecond apart.
pub fn replay_in_memory(
    cfg: &NodeConfig,
    inputs: &[(&str, Vec<u8>)],
) -> Result<MemoryReplay, ReplayError> {
    replay_tables_in_memory(&Tables::from_config(cfg)?, inputs)
}

/// [`replay_in_memory`] through tables already built, so that many small
/// replays share one build (building tables is the expensive part).
pub fn replay_tables_in_memory(
    tables: &Tables,
    inputs: &[(&str, Vec<u8>)],
) -> Result<MemoryReplay, ReplayError> {
    let mut merged = Vec::with_capacity(inputs.len());
    for (k, (port, data)) in inputs.iter().enumerate() {
        let id = tables
            .port_by_name(port)
            .ok_or_else(|| ReplayError::UnknownPort(port.to_string(), String::new()))?;
        merged.push((
            id,
            Record {
                ts_ns: 1_000_000_000 + k as u64 * 1000,
                data: data.clone(),
            },
        ));
    }
    let mut outputs: BTreeMap<String, Vec<Vec<u8>>> = tables
        .ports
        .iter()
        .map(|p| (p.name.clone(), Vec::new()))
        .collect();
    let (stats, _) = run(tables, &merged, MIN_BURST, |port, _, data| {
        outputs
            .get_mut(&tables.ports[port as usize].name)
            .expect("every port")
            .push(data.to_vec());
    });
    Ok(MemoryReplay { outputs, stats })
}

//! The Prometheus endpoint: `GET /metrics` in the Prometheus text format
//! (0.0.4), rendered by `prometheus-client` from a collector that reads the
//! workers' counters, the published tables and the kernel's AF_XDP socket
//! counters at scrape time. docs/metrics.md lists every family.
//!
//! Per port and queue (worker `w` serves queue `w` of every port):
//! `sluice_port_{rx,tx}_{packets,bytes}_total`, `sluice_port_{rx,tx}_dropped_total`.
//! Per AF_XDP port (summed over queues), the kernel's socket counters:
//! Frame accounting: `sluice_pool_free_frames{worker}` and
//! `sluice_port_frames_held{port,queue}` (gauges).
//! `sluice_xsk_{rx_dropped,rx_invalid_descs,tx_invalid_descs,rx_ring_full,
//! rx_fill_ring_empty_descs,tx_ring_empty_descs}_total`.
//! Per DPDK port (DPDK backend only): `sluice_dpdk_{rx_segmented,
//! rx_linearized,imissed,ierrors,oerrors,rx_nombuf}_total`.
//! Per reason: `sluice_drops_total{reason}`. Events: `sluice_<event>_total`
//! (for example `sluice_vxlan_encap_total`). Flow cache:
//! `sluice_flow_cache_hit_ratio`. Per worker: `sluice_worker_cycles_per_packet`
//! and the histogram `sluice_worker_burst_size`. Tables: `sluice_routes`,
//! `sluice_ports`. Packet capture: `sluice_capture_packets_total`,
//! `sluice_capture_dropped_total`, `sluice_capture_active`. Start-up: `sluice_pod_records_total{outcome}` (every
//! outcome listed, zero or not). Upgrades: `sluice_handovers_abandoned_total`,
//! `sluice_taken_over`.
//!
//! Serving invariants (one slow or stuck client never holds up another
//! scrape, the daemon, or its shutdown):
//! - each connection is served by its own task, off the accept loop;
//! - the request head is read into at most [`MAX_REQUEST_HEAD`] bytes (beyond
//!   that: `431` and close), so a client streaming bytes without a blank
//!   line costs bounded memory;
//! - reading the head and writing the answer each have a deadline
//!   ([`IO_DEADLINE`]); a client past it is dropped;
//! - at most [`MAX_CONNECTIONS`] connections are served at once; one more is
//!   answered `503` without waiting (a non-blocking write) and closed;
//! - the accept loop checks `stop` every [`STOP_POLL`]; when it returns the
//!   control runtime drops every connection task still running.

use crate::counters::{DropReason, WorkerCounters, BURST_BUCKETS, EVENT_FIELDS};
use crate::registry::PortRegistry;
use crate::tables::TablesHandle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most bytes of a request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Deadline for reading a request head, and for writing an answer.
pub const IO_DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once; more are answered `503`.
pub const MAX_CONNECTIONS: usize = 16;
/// How often the accept loop looks at the `stop` flag.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// What `/metrics` reads at scrape time.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    /// The published tables (ports, routes).
    pub tables: Arc<TablesHandle>,
    /// Each worker's counters.
    pub workers: Vec<Arc<WorkerCounters>>,
    /// The kernel's per-socket counters, as workers last read them.
    pub ports: Arc<PortRegistry>,
    /// Attachment records read at start, by outcome.
    pub pod_records: Arc<crate::pod_records::PodRecordCounts>,
}

/// A counter family's name (without `_total`, which the encoder adds) and
/// help, with how to read it from one worker's port counters.
type PortField = (
    &'static str,
    &'static str,
    fn(&crate::counters::PortCounters) -> u64,
);

const PORT_FIELDS: [PortField; 6] = [
    (
        "sluice_port_rx_packets",
        "Frames received on a port queue.",
        |p| p.rx_packets.get(),
    ),
    (
        "sluice_port_rx_bytes",
        "Bytes received on a port queue.",
        |p| p.rx_bytes.get(),
    ),
    (
        "sluice_port_tx_packets",
        "Frames sent on a port queue.",
        |p| p.tx_packets.get(),
    ),
    ("sluice_port_tx_bytes", "Bytes sent on a port queue.", |p| {
        p.tx_bytes.get()
    }),
    (
        "sluice_port_rx_dropped",
        "Frames received on a port queue and dropped.",
        |p| p.rx_dropped.get(),
    ),
    (
        "sluice_port_tx_dropped",
        "Frames to send on a port queue that its backend did not take.",
        |p| p.tx_dropped.get(),
    ),
];

type XskField = (
    &'static str,
    &'static str,
    fn(&sluice_ports::afxdp::XskStats) -> u64,
);

const XSK_FIELDS: [XskField; 6] = [
    (
        "sluice_xsk_rx_dropped",
        "Frames the kernel dropped on a port's AF_XDP sockets for reasons other than invalid descriptors.",
        |s| s.rx_dropped,
    ),
    (
        "sluice_xsk_rx_invalid_descs",
        "Frames the kernel dropped on a port's AF_XDP sockets because of invalid descriptors.",
        |s| s.rx_invalid_descs,
    ),
    (
        "sluice_xsk_tx_invalid_descs",
        "Invalid TX descriptors on a port's AF_XDP sockets.",
        |s| s.tx_invalid_descs,
    ),
    (
        "sluice_xsk_rx_ring_full",
        "Frames the kernel dropped on a port's AF_XDP sockets because the RX ring was full.",
        |s| s.rx_ring_full,
    ),
    (
        "sluice_xsk_rx_fill_ring_empty_descs",
        "Times a frame arrived on a port's AF_XDP sockets with the fill ring empty.",
        |s| s.rx_fill_ring_empty_descs,
    ),
    (
        "sluice_xsk_tx_ring_empty_descs",
        "Times the kernel found the TX ring of a port's AF_XDP sockets empty.",
        |s| s.tx_ring_empty_descs,
    ),
];

type DpdkField = (
    &'static str,
    &'static str,
    fn(&sluice_ports::dpdk::DpdkStats) -> u64,
);

const DPDK_FIELDS: [DpdkField; 6] = [
    (
        "sluice_dpdk_rx_segmented",
        "Chained mbufs a DPDK port received that could not be made single-segment: dropped.",
        |s| s.rx_segmented,
    ),
    (
        "sluice_dpdk_rx_linearized",
        "Chained mbufs a DPDK port received, copied into one segment.",
        |s| s.rx_linearized,
    ),
    (
        "sluice_dpdk_imissed",
        "Packets a DPDK device dropped because its RX queues were full.",
        |s| s.imissed,
    ),
    (
        "sluice_dpdk_ierrors",
        "Erroneous packets a DPDK device received (and dropped).",
        |s| s.ierrors,
    ),
    (
        "sluice_dpdk_oerrors",
        "Packets a DPDK device failed to send.",
        |s| s.oerrors,
    ),
    (
        "sluice_dpdk_rx_nombuf",
        "Times a DPDK device found no mbuf to receive into.",
        |s| s.rx_nombuf,
    ),
];

fn counter(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    v: u64,
) -> Result<(), std::fmt::Error> {
    encoder.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

impl Collector for MetricsSource {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tables = self.tables.load();
        let workers = &self.workers;
        for (name, help, get) in PORT_FIELDS {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (id, port) in tables.ports.iter().enumerate() {
                for (w, c) in workers.iter().enumerate() {
                    let labels = [("port", port.name.clone()), ("queue", w.to_string())];
                    counter(&mut family.encode_family(&labels)?, get(c.port(id as u16)))?;
                }
            }
        }
        let xsk = self.ports.port_stats();
        for (name, help, get) in XSK_FIELDS {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (id, stats) in &xsk {
                let Some(port) = tables.ports.get(usize::from(*id)) else {
                    continue;
                };
                let labels = [("port", port.name.clone())];
                counter(&mut family.encode_family(&labels)?, get(stats))?;
            }
        }
        let dpdk = self.ports.dpdk_stats();
        if !dpdk.is_empty() {
            for (name, help, get) in DPDK_FIELDS {
                let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (id, stats) in &dpdk {
                    let Some(port) = tables.ports.get(usize::from(*id)) else {
                        continue;
                    };
                    let labels = [("port", port.name.clone())];
                    counter(&mut family.encode_family(&labels)?, get(stats))?;
                }
            }
        }
        let frames = self.ports.frames();
        {
            let mut family = enc.encode_descriptor(
                "sluice_pool_free_frames",
                "Buffers (UMEM frames) free in a worker's pool.",
                None,
                MetricType::Gauge,
            )?;
            for (w, f) in frames.iter().enumerate() {
                family
                    .encode_family(&[("worker", w.to_string())])?
                    .encode_gauge(&(f.pool.free as i64))?;
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_port_frames_held",
                "Buffers (UMEM frames) a port's socket holds on a worker: fill and RX rings, TX ring, in flight.",
                None,
                MetricType::Gauge,
            )?;
            for (w, f) in frames.iter().enumerate() {
                for (id, held) in &f.ports {
                    let Some(port) = tables.ports.get(usize::from(*id)) else {
                        continue;
                    };
                    let labels = [("port", port.name.clone()), ("queue", w.to_string())];
                    family
                        .encode_family(&labels)?
                        .encode_gauge(&i64::from(*held))?;
                }
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_drops",
                "Packets dropped, by reason (see docs/metrics.md).",
                None,
                MetricType::Counter,
            )?;
            for &r in DropReason::ALL {
                let v: u64 = workers.iter().map(|c| c.drop_counter(r).get()).sum();
                counter(&mut family.encode_family(&[("reason", r.name())])?, v)?;
            }
        }
        for (event, get) in EVENT_FIELDS {
            let name = format!("sluice_{event}");
            let help = format!("Events: {event} (see docs/metrics.md).");
            let v: u64 = workers.iter().map(|c| get(&c.events).get()).sum();
            counter(
                &mut enc.encode_descriptor(&name, &help, None, MetricType::Counter)?,
                v,
            )?;
        }
        let hits: u64 = workers.iter().map(|c| c.events.flow_cache_hits.get()).sum();
        let misses: u64 = workers
            .iter()
            .map(|c| c.events.flow_cache_misses.get())
            .sum();
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        enc.encode_descriptor(
            "sluice_flow_cache_hit_ratio",
            "Flow-cache hits over lookups since start.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&ratio)?;
        {
            let mut family = enc.encode_descriptor(
                "sluice_worker_cycles_per_packet",
                "TSC cycles per packet over non-empty bursts since start.",
                None,
                MetricType::Gauge,
            )?;
            for (w, c) in workers.iter().enumerate() {
                let p = c.load.busy_packets.get();
                let cpp = if p == 0 {
                    0.0
                } else {
                    c.load.busy_cycles.get() as f64 / p as f64
                };
                family
                    .encode_family(&[("worker", w.to_string())])?
                    .encode_gauge(&cpp)?;
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "sluice_worker_burst_size",
                "Packets per received burst.",
                None,
                MetricType::Histogram,
            )?;
            for (w, c) in workers.iter().enumerate() {
                let buckets: Vec<(f64, u64)> = BURST_BUCKETS
                    .iter()
                    .zip(c.load.burst_sizes.iter())
                    .map(|(b, n)| (*b as f64, n.get()))
                    .collect();
                let count = buckets.iter().map(|(_, n)| n).sum();
                family
                    .encode_family(&[("worker", w.to_string())])?
                    .encode_histogram::<NoLabelSet>(
                        c.load.busy_packets.get() as f64,
                        count,
                        &buckets,
                        None,
                    )?;
            }
        }
        enc.encode_descriptor(
            "sluice_routes",
            "Prefixes in the route table.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(tables.lpm.len() as u64))?;
        enc.encode_descriptor("sluice_ports", "Ports configured.", None, MetricType::Gauge)?
            .encode_gauge(&(tables.ports.len() as u64))?;
        let captures = &self.ports.captures;
        counter(
            &mut enc.encode_descriptor(
                "sluice_capture_packets",
                "Frames packet captures returned to their readers (capture.read).",
                None,
                MetricType::Counter,
            )?,
            captures.packets_total(),
        )?;
        counter(
            &mut enc.encode_descriptor(
                "sluice_capture_dropped",
                "Frames a packet capture matched but lost (a worker's capture ring full or being read).",
                None,
                MetricType::Counter,
            )?,
            captures.dropped_total(),
        )?;
        enc.encode_descriptor(
            "sluice_capture_active",
            "Whether a packet capture is running (1) or not (0).",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&i64::from(captures.active()))?;
        counter(
            &mut enc.encode_descriptor(
                "sluice_handovers_abandoned",
                "Upgrades a new sluiced began that did not happen: this process carried on (see docs/upgrade.md).",
                None,
                MetricType::Counter,
            )?,
            self.ports.handovers_abandoned.load(Ordering::Relaxed),
        )?;
        enc.encode_descriptor(
            "sluice_taken_over",
            "Whether this process started by taking another sluiced's ports over (1) or not (0).",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&i64::from(self.ports.took_over.load(Ordering::Relaxed)))?;
        {
            let mut family = enc.encode_descriptor(
                "sluice_pod_records",
                "CNI attachment records read at start, by outcome (see docs/metrics.md).",
                None,
                MetricType::Counter,
            )?;
            for o in crate::pod_records::Outcome::ALL {
                counter(
                    &mut family.encode_family(&[("outcome", o.name())])?,
                    self.pod_records.get(o),
                )?;
            }
        }
        Ok(())
    }
}

/// The registry `/metrics` renders: one collector over `source`.
pub fn registry(source: MetricsSource) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(source));
    r
}

/// Renders every metric in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a collector, and then the families before it are still served.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "metrics rendering failed");
    }
    out
}

/// Binds the metrics listener (so a bad address fails start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("request head over {MAX_REQUEST_HEAD} bytes")]
    TooLarge,
    #[error("connection closed before the request head ended")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads a request head (up to and including the blank line) into at most
/// [`MAX_REQUEST_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(HeadError::Truncated);
        }
        let from = len.saturating_sub(3);
        len += n;
        let seen = &buf[from..len];
        if let Some(end) = head_end(seen) {
            buf.truncate(from + end);
            return Ok(buf);
        }
    }
}

/// Where the head ends in `b` (after `\r\n\r\n` or `\n\n`), if it does.
fn head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many metrics connections";

/// Answers one connection: reads the head, renders, writes, closes.
async fn answer(mut stream: TcpStream, registry: &Registry) {
    let answer = match tokio::time::timeout(IO_DEADLINE, read_head(&mut stream)).await {
        Err(_) => {
            tracing::debug!("metrics client too slow to send its request; dropped");
            return;
        }
        Ok(Err(HeadError::TooLarge)) => response(
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n",
        ),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "metrics request not read");
            return;
        }
        Ok(Ok(head)) => {
            let line = head
                .split(|b| *b == b'\n')
                .next()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .unwrap_or_default();
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next(), parts.next());
            match (method, path) {
                (Some("GET"), Some("/metrics" | "/")) => response(
                    "200 OK",
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    &render(registry),
                ),
                (Some(_), Some(_)) => response(
                    "404 Not Found",
                    "text/plain",
                    "only GET /metrics is served here\n",
                ),
                _ => response("400 Bad Request", "text/plain", "bad request line\n"),
            }
        }
    };
    let write = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(IO_DEADLINE, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(error = %e, "metrics answer not delivered");
    }
}

/// Serves `/metrics` on `listener` until `stop` is set. Must run inside a
/// tokio runtime with I/O and time enabled.
pub async fn serve(listener: std::net::TcpListener, registry: Registry, stop: Arc<AtomicBool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable; /metrics is not served");
            return;
        }
    };
    let registry = Arc::new(registry);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        // Reap finished connection tasks so the set stays small.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::time::sleep(STOP_POLL) => continue,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, or an aborted connection: back off a little.
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let registry = registry.clone();
                connections.spawn(async move {
                    answer(stream, &registry).await;
                    drop(slot);
                });
            }
            Err(_) => {
                // Never wait on a client here: whatever fits in the socket
                // buffer is sent, then the connection is closed.
                let _ = stream.try_write(BUSY);
            }
        }
    }
    // Dropping the set aborts the connections still being served.
    connections.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::craft;
    use crate::tables::Tables;
    use sluice_ports::afxdp::XskStats;
    use sluice_ports::PortStats;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn source() -> (MetricsSource, Arc<WorkerCounters>) {
        let t = Tables::from_config(&NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap())
            .unwrap();
        let w = Arc::new(WorkerCounters::new());
        let ports = Arc::new(PortRegistry::new(
            1,
            sluice_ports::afxdp::UmemConfig::default(),
        ));
        (
            MetricsSource {
                tables: Arc::new(TablesHandle::new(t)),
                workers: vec![w.clone()],
                ports,
                pod_records: Default::default(),
            },
            w,
        )
    }

    #[test]
    fn renders_every_family_with_labels() {
        let (src, w) = source();
        w.port(2).rx_packets.add(5);
        w.count_drop(2, DropReason::SpoofedSourceIp, 2);
        w.events.flow_cache_hits.add(3);
        w.events.flow_cache_misses.add(1);
        w.load.record(32, 3200);
        *src.ports.port_stats[0].lock().unwrap() = vec![(
            2,
            PortStats {
                xsk: Some(XskStats {
                    rx_dropped: 7,
                    rx_ring_full: 4,
                    ..Default::default()
                }),
                dpdk: None,
            },
        )];
        src.pod_records
            .add(crate::pod_records::Outcome::MissingInterface, 2);
        let text = render(&registry(src));
        for expected in [
            "sluice_pod_records_total{outcome=\"missing_interface\"} 2",
            "sluice_pod_records_total{outcome=\"attached\"} 0",
            "sluice_port_rx_packets_total{port=\"pod-a\",queue=\"0\"} 5",
            "# TYPE sluice_port_rx_packets_total counter",
            "sluice_drops_total{reason=\"spoofed_source_ip\"} 2",
            "sluice_flow_cache_hit_ratio 0.75",
            "sluice_worker_cycles_per_packet{worker=\"0\"} 100.0",
            "sluice_worker_burst_size_bucket{worker=\"0\",le=\"16\"} 0",
            "sluice_worker_burst_size_bucket{worker=\"0\",le=\"32\"} 1",
            "sluice_worker_burst_size_bucket{worker=\"0\",le=\"+Inf\"} 1",
            "sluice_worker_burst_size_count{worker=\"0\"} 1",
            "# TYPE sluice_worker_burst_size histogram",
            "sluice_vxlan_encap_total 0",
            "sluice_xsk_rx_dropped_total{port=\"pod-a\"} 7",
            "sluice_xsk_rx_ring_full_total{port=\"pod-a\"} 4",
            "sluice_xsk_tx_ring_empty_descs_total{port=\"pod-a\"} 0",
            "sluice_routes 10",
            "# TYPE sluice_ports gauge",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "{expected} in:\n{text}"
            );
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("sluice_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn docs_list_every_metric_family() {
        let (src, _) = source();
        *src.ports.port_stats[0].lock().unwrap() = vec![(
            0,
            PortStats {
                xsk: Some(XskStats::default()),
                dpdk: None,
            },
        )];
        let text = render(&registry(src));
        let doc = include_str!("../../docs/metrics.md");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line.split_whitespace().nth(2).unwrap();
            // Events are listed by name in their own table.
            if EVENT_FIELDS
                .iter()
                .any(|(e, _)| family == format!("sluice_{e}_total"))
            {
                continue;
            }
            assert!(
                doc.contains(&format!("`{family}`")),
                "docs/metrics.md lacks {family}"
            );
        }
    }

    /// A server on loopback on its own runtime thread; stops on drop.
    struct Server {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        fn start() -> Server {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let (src, _) = source();
            let s = stop.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let thread = std::thread::spawn(move || {
                rt.block_on(serve(listener, registry(src), s));
            });
            Server {
                addr,
                stop,
                thread: Some(thread),
            }
        }

        fn scrape(&self) -> (Duration, String) {
            let t = Instant::now();
            let mut c = std::net::TcpStream::connect(self.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            (t.elapsed(), out)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    #[test]
    fn a_scrape_is_answered() {
        let s = Server::start();
        let (_, out) = s.scrape();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("sluice_routes 10"), "{out}");
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /other HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    }

    #[test]
    fn a_client_streaming_without_a_newline_is_cut_off() {
        let s = Server::start();
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let chunk = [b'a'; 1024];
        let mut sent = 0;
        // The server stops reading after MAX_REQUEST_HEAD bytes and closes:
        // writes then fail (reset) or the answer arrives.
        while sent < 64 * MAX_REQUEST_HEAD {
            match c.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(
            sent < 64 * MAX_REQUEST_HEAD || out.starts_with("HTTP/1.1 431"),
            "sent {sent} bytes, answer {out:?}"
        );
        // The server goes on serving.
        let (_, out) = s.scrape();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }

    #[test]
    fn an_oversized_head_is_refused_with_431() {
        let s = Server::start();
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = b"GET /metrics HTTP/1.0\r\nX-Filler: ".to_vec();
        head.resize(MAX_REQUEST_HEAD + 10, b'x');
        c.write_all(&head).unwrap();
        let mut out = vec![0u8; 64];
        let n = c.read(&mut out).unwrap();
        assert!(
            out[..n].starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&out[..n])
        );
    }

    #[test]
    fn a_stuck_client_does_not_delay_another_scrape() {
        let s = Server::start();
        // Connected, sends half a request line and nothing more.
        let mut stuck = std::net::TcpStream::connect(s.addr).unwrap();
        stuck.write_all(b"GET /met").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (took, out) = s.scrape();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(
            took < IO_DEADLINE / 2,
            "a scrape took {took:?} behind a stuck client"
        );
        // The stuck client is dropped at the deadline.
        stuck.set_read_timeout(Some(IO_DEADLINE * 3)).unwrap();
        let mut rest = Vec::new();
        let t = Instant::now();
        let _ = stuck.read_to_end(&mut rest);
        assert!(
            t.elapsed() < IO_DEADLINE * 2,
            "closed after {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_without_blocking_the_others() {
        let s = Server::start();
        let open: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // The 17th is answered 503 at once.
        let t = Instant::now();
        let mut extra = std::net::TcpStream::connect(s.addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        extra.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = extra.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(t.elapsed() < IO_DEADLINE / 2, "{:?}", t.elapsed());
        // The sixteen already open are still served.
        for mut c in open {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        }
        // Their slots are free again.
        std::thread::sleep(Duration::from_millis(100));
        let (_, out) = s.scrape();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }

    #[test]
    fn shutdown_does_not_wait_for_a_client() {
        let s = Server::start();
        let _stuck = std::net::TcpStream::connect(s.addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(s);
        assert!(t.elapsed() < IO_DEADLINE, "{:?}", t.elapsed());
    }
}

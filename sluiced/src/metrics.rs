//! The Prometheus endpoint: `GET /metrics` in the text exposition format,
//! served on loopback by default, one short-lived connection at a time (a
//! scrape every few seconds is the load it is built for).
//!
//! Per port and queue (worker `w` serves queue `w` of every port):
//! `sluice_port_{rx,tx}_{packets,bytes}_total`, `sluice_port_{rx,tx}_dropped_total`.
//! Per reason: `sluice_drops_total{reason}`. Events: `sluice_<event>_total`
//! (for example `sluice_vxlan_encap_total`). Flow cache:
//! `sluice_flow_cache_hit_ratio`. Per worker: `sluice_worker_cycles_per_packet`
//! and the histogram `sluice_worker_burst_size`. Tables: `sluice_routes`,
//! `sluice_ports`.

use crate::counters::{DropReason, WorkerCounters, BURST_BUCKETS, EVENT_FIELDS};
use crate::tables::{Tables, TablesHandle};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric.
pub fn render(tables: &Tables, workers: &[Arc<WorkerCounters>]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    type PortField = (
        &'static str,
        &'static str,
        fn(&crate::counters::PortCounters) -> u64,
    );
    let port_fields: [PortField; 6] = [
        (
            "sluice_port_rx_packets_total",
            "Frames received on a port queue.",
            |p| p.rx_packets.get(),
        ),
        (
            "sluice_port_rx_bytes_total",
            "Bytes received on a port queue.",
            |p| p.rx_bytes.get(),
        ),
        (
            "sluice_port_tx_packets_total",
            "Frames sent on a port queue.",
            |p| p.tx_packets.get(),
        ),
        (
            "sluice_port_tx_bytes_total",
            "Bytes sent on a port queue.",
            |p| p.tx_bytes.get(),
        ),
        (
            "sluice_port_rx_dropped_total",
            "Frames received on a port queue and dropped.",
            |p| p.rx_dropped.get(),
        ),
        (
            "sluice_port_tx_dropped_total",
            "Frames to send on a port queue that its backend did not take.",
            |p| p.tx_dropped.get(),
        ),
    ];
    for (name, help, get) in port_fields {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (id, port) in tables.ports.iter().enumerate() {
            for (w, c) in workers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{port=\"{}\",queue=\"{w}\"}} {}",
                    escape(&port.name),
                    get(c.port(id as u16))
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP sluice_drops_total Packets dropped, by reason (see docs/metrics.md).\n# TYPE sluice_drops_total counter");
    for &r in DropReason::ALL {
        let v: u64 = workers.iter().map(|c| c.drop_counter(r).get()).sum();
        let _ = writeln!(out, "sluice_drops_total{{reason=\"{}\"}} {v}", r.name());
    }
    for (event, get) in EVENT_FIELDS {
        let name = format!("sluice_{event}_total");
        let v: u64 = workers.iter().map(|c| get(&c.events).get()).sum();
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
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
    let _ = writeln!(out, "# HELP sluice_flow_cache_hit_ratio Flow-cache hits over lookups since start.\n# TYPE sluice_flow_cache_hit_ratio gauge\nsluice_flow_cache_hit_ratio {ratio}");
    let _ = writeln!(out, "# HELP sluice_worker_cycles_per_packet TSC cycles per packet over non-empty bursts since start.\n# TYPE sluice_worker_cycles_per_packet gauge");
    for (w, c) in workers.iter().enumerate() {
        let p = c.load.busy_packets.get();
        let cpp = if p == 0 {
            0.0
        } else {
            c.load.busy_cycles.get() as f64 / p as f64
        };
        let _ = writeln!(
            out,
            "sluice_worker_cycles_per_packet{{worker=\"{w}\"}} {cpp:.1}"
        );
    }
    let _ = writeln!(out, "# HELP sluice_worker_burst_size Packets per received burst.\n# TYPE sluice_worker_burst_size histogram");
    for (w, c) in workers.iter().enumerate() {
        let mut cum = 0;
        for (i, b) in BURST_BUCKETS.iter().enumerate() {
            cum += c.load.burst_sizes[i].get();
            let _ = writeln!(
                out,
                "sluice_worker_burst_size_bucket{{worker=\"{w}\",le=\"{b}\"}} {cum}"
            );
        }
        let _ = writeln!(
            out,
            "sluice_worker_burst_size_bucket{{worker=\"{w}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            out,
            "sluice_worker_burst_size_sum{{worker=\"{w}\"}} {}",
            c.load.busy_packets.get()
        );
        let _ = writeln!(
            out,
            "sluice_worker_burst_size_count{{worker=\"{w}\"}} {cum}"
        );
    }
    let _ = writeln!(out, "# HELP sluice_routes Prefixes in the route table.\n# TYPE sluice_routes gauge\nsluice_routes {}", tables.lpm.len());
    let _ = writeln!(
        out,
        "# HELP sluice_ports Ports configured.\n# TYPE sluice_ports gauge\nsluice_ports {}",
        tables.ports.len()
    );
    out
}

/// Serves `/metrics` on `addr` until `stop` is set.
pub fn serve(
    listener: TcpListener,
    tables: Arc<TablesHandle>,
    workers: Vec<Arc<WorkerCounters>>,
    stop: Arc<AtomicBool>,
) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, &tables, &workers);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn answer(
    stream: TcpStream,
    tables: &TablesHandle,
    workers: &[Arc<WorkerCounters>],
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if !request.starts_with("GET ") || (path != "/metrics" && path != "/") {
        let body = "only GET /metrics is served here\n";
        return write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }
    let body = render(&tables.load(), workers);
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// Binds the metrics listener (so a bad address fails start-up).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::craft;

    #[test]
    fn renders_every_family_with_labels() {
        let t = Tables::from_config(&NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap())
            .unwrap();
        let w = Arc::new(WorkerCounters::new());
        w.port(2).rx_packets.add(5);
        w.count_drop(2, DropReason::SpoofedSourceIp, 2);
        w.events.flow_cache_hits.add(3);
        w.events.flow_cache_misses.add(1);
        w.load.record(32, 3200);
        let text = render(&t, &[w]);
        assert!(
            text.contains("sluice_port_rx_packets_total{port=\"pod-a\",queue=\"0\"} 5"),
            "{text}"
        );
        assert!(text.contains("sluice_drops_total{reason=\"spoofed_source_ip\"} 2"));
        assert!(text.contains("sluice_flow_cache_hit_ratio 0.75"));
        assert!(text.contains("sluice_worker_cycles_per_packet{worker=\"0\"} 100.0"));
        assert!(text.contains("sluice_worker_burst_size_bucket{worker=\"0\",le=\"16\"} 0"));
        assert!(text.contains("sluice_worker_burst_size_bucket{worker=\"0\",le=\"32\"} 1"));
        assert!(text.contains("sluice_vxlan_encap_total 0"));
        assert!(
            text.contains("sluice_routes 10"),
            "{}",
            text.lines()
                .find(|l| l.starts_with("sluice_routes"))
                .unwrap_or("")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("sluice_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}

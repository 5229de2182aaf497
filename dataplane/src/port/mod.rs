//! Ports: where bursts come from and go to, and the worker step that joins
//! ports to the pipeline.
//!
//! A [`Port`] moves buffers of its pool's type: `rx_burst` fills a burst
//! with received frames, `tx_burst` takes frames off the front of a TX list.
//! AF_XDP and DPDK ports implement it over UMEM frames and mbufs without
//! copying; [`MemoryPort`] implements it over byte vectors for tests and the
//! replay tool, copying at its edges only.
//!
//! [`poll_port`] is one turn of a worker on one port: receive a burst, run
//! the pipeline, and flush every TX list to its port. What a port does not
//! take is dropped as `tx_failed`, counted against the output port's
//! `tx_dropped` (never a port's `rx_dropped`), and its buffer returned, so
//! nothing is ever silently lost.
//!
//! [`poll_port_tapped`] is the same turn with a [`Tap`]: a capture in force
//! sees the captured port's frames as received (before the pipeline) and as
//! handed to the port for sending (after rewrite). A turn that touches
//! other ports pays one compare per burst and per TX list.

use crate::buffer::{BufPool, Burst, PacketBuf};
use crate::capture::{Capture, Direction};
use crate::pcap::Record;
use crate::pipeline::Pipeline;
use crate::tables::{PortId, Tables};
use std::collections::VecDeque;

/// A source and sink of frames in `P`'s buffers.
pub trait Port<P: BufPool> {
    /// Receives into `burst` up to its free capacity; returns how many.
    fn rx_burst(&mut self, pool: &mut P, burst: &mut Burst<P::Buf>) -> usize;
    /// Sends frames from the front of `bufs`, removing those it sent (and
    /// taking ownership of their buffers); returns how many.
    fn tx_burst(&mut self, pool: &mut P, bufs: &mut Vec<P::Buf>) -> usize;
}

/// A closed slot (a port not opened yet, or removed): receives nothing and
/// takes nothing, so what is routed to it is counted as a TX failure.
impl<P: BufPool, T: Port<P>> Port<P> for Option<T> {
    #[inline]
    fn rx_burst(&mut self, pool: &mut P, burst: &mut Burst<P::Buf>) -> usize {
        self.as_mut().map_or(0, |p| p.rx_burst(pool, burst))
    }
    #[inline]
    fn tx_burst(&mut self, pool: &mut P, bufs: &mut Vec<P::Buf>) -> usize {
        self.as_mut().map_or(0, |p| p.tx_burst(pool, bufs))
    }
}

/// A port backed by memory: frames queued for receive, frames sent kept.
#[derive(Debug, Default)]
pub struct MemoryPort {
    rx: VecDeque<Record>,
    /// Frames sent, with the timestamp of the turn that sent them.
    pub sent: Vec<Record>,
    /// Most frames one `tx_burst` accepts (a full TX ring); unbounded if `None`.
    pub tx_limit: Option<usize>,
    now_ns: u64,
}

impl MemoryPort {
    /// An empty port.
    pub fn new() -> Self {
        Self::default()
    }
    /// Queues a frame to be received.
    pub fn inject(&mut self, rec: Record) {
        self.rx.push_back(rec);
    }
    /// Frames waiting to be received.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }
    /// Timestamp of the next received frame, if any.
    pub fn next_ts(&self) -> Option<u64> {
        self.rx.front().map(|r| r.ts_ns)
    }
    /// Sets the timestamp given to frames sent from now on.
    pub fn set_now(&mut self, ts_ns: u64) {
        self.now_ns = ts_ns;
    }
}

impl<P: BufPool> Port<P> for MemoryPort {
    fn rx_burst(&mut self, pool: &mut P, burst: &mut Burst<P::Buf>) -> usize {
        let mut n = 0;
        while !burst.is_full() {
            let Some(rec) = self.rx.front() else { break };
            let Some(mut buf) = pool.alloc() else { break };
            if !buf.append(rec.data.len()) {
                // Larger than a buffer: the NIC would not have delivered it.
                pool.free(buf);
                self.rx.pop_front();
                continue;
            }
            buf.data_mut().copy_from_slice(&rec.data);
            self.rx.pop_front();
            if let Err(b) = burst.push(buf) {
                pool.free(b);
                break;
            }
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut P, bufs: &mut Vec<P::Buf>) -> usize {
        let n = self.tx_limit.map_or(bufs.len(), |l| l.min(bufs.len()));
        for b in bufs.drain(..n) {
            self.sent.push(Record {
                ts_ns: self.now_ns,
                data: b.data().to_vec(),
            });
            pool.free(b);
        }
        n
    }
}

/// A capture in force, as one worker sees it.
#[derive(Debug, Clone, Copy)]
pub struct Tap<'a> {
    /// The capture.
    pub capture: &'a Capture,
    /// The worker's index (its ring).
    pub worker: usize,
}

/// One worker turn on `in_port`: receive a burst, process it, flush every
/// TX list to `ports` (indexed by port id). Returns the packets received.
pub fn poll_port<P, X>(
    pipeline: &mut Pipeline<P::Buf>,
    tables: &Tables,
    ports: &mut [X],
    in_port: PortId,
    burst: &mut Burst<P::Buf>,
    pool: &mut P,
    now_ns: u64,
) -> usize
where
    P: BufPool,
    X: Port<P>,
{
    poll_port_tapped(pipeline, tables, ports, in_port, burst, pool, now_ns, None)
}

/// [`poll_port`] with an optional capture tap.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn poll_port_tapped<P, X>(
    pipeline: &mut Pipeline<P::Buf>,
    tables: &Tables,
    ports: &mut [X],
    in_port: PortId,
    burst: &mut Burst<P::Buf>,
    pool: &mut P,
    now_ns: u64,
    tap: Option<Tap<'_>>,
) -> usize
where
    P: BufPool,
    X: Port<P>,
{
    let Some(port) = ports.get_mut(in_port as usize) else {
        return 0;
    };
    let n = port.rx_burst(pool, burst);
    if n == 0 {
        return 0;
    }
    if let Some(t) = tap {
        if t.capture.wants(in_port, Direction::Rx) {
            t.capture.take(
                t.worker,
                Direction::Rx,
                crate::capture::wall_ns(),
                burst.as_slice().iter().map(PacketBuf::data),
            );
        }
    }
    pipeline.process(tables, in_port, burst, pool, now_ns);
    flush_tapped(pipeline, ports, pool, tap);
    n
}

/// Hands every TX list to its port; counts what was sent and drops the rest
/// as `tx_failed`, on the output port's `tx_dropped`.
pub fn flush<P, X>(pipeline: &mut Pipeline<P::Buf>, ports: &mut [X], pool: &mut P)
where
    P: BufPool,
    X: Port<P>,
{
    flush_tapped(pipeline, ports, pool, None)
}

/// [`flush`] with an optional capture tap, which sees the captured port's
/// TX list as it is handed to the port.
#[inline]
pub fn flush_tapped<P, X>(
    pipeline: &mut Pipeline<P::Buf>,
    ports: &mut [X],
    pool: &mut P,
    tap: Option<Tap<'_>>,
) where
    P: BufPool,
    X: Port<P>,
{
    let (tx, counters) = pipeline.tx_and_counters();
    tx.flush(|out, list| {
        if let Some(t) = tap {
            if t.capture.wants(out, Direction::Tx) {
                t.capture.take(
                    t.worker,
                    Direction::Tx,
                    crate::capture::wall_ns(),
                    list.iter().map(PacketBuf::data),
                );
            }
        }
        let total: u64 = list.iter().map(|b| b.len() as u64).sum();
        let sent = match ports.get_mut(out as usize) {
            Some(p) => p.tx_burst(pool, list),
            None => 0,
        };
        let unsent: u64 = list.iter().map(|b| b.len() as u64).sum();
        counters.count_tx(out, sent as u64, total - unsent);
        counters.count_tx_failed(out, list.len() as u64);
        for b in list.drain(..) {
            pool.free(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{HeapPool, DEFAULT_HEADROOM};
    use crate::config::NodeConfig;
    use crate::counters::{DropReason, WorkerCounters};
    use crate::craft;
    use crate::pipeline::PipelineConfig;
    use std::sync::Arc;

    #[test]
    fn memory_ports_carry_frames_and_a_full_ring_counts_tx_failed() {
        let tables =
            Tables::from_config(&NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap())
                .unwrap();
        let counters = Arc::new(WorkerCounters::new());
        let mut pipeline = Pipeline::new(PipelineConfig::default(), counters.clone());
        let mut pool = HeapPool::new(64, DEFAULT_HEADROOM + 2048);
        let mut ports: Vec<MemoryPort> = (0..4).map(|_| MemoryPort::new()).collect();
        ports[3].tx_limit = Some(2);
        for i in 0..5 {
            ports[2].inject(Record {
                ts_ns: i,
                data: craft::pod_a_udp(craft::POD_B_IP, 1000 + i as u16, 2, 10),
            });
        }
        // Too big for a buffer: never received.
        ports[2].inject(Record {
            ts_ns: 9,
            data: vec![0; 4096],
        });
        let mut burst = Burst::new(32);
        assert_eq!(
            poll_port(
                &mut pipeline,
                &tables,
                &mut ports,
                2,
                &mut burst,
                &mut pool,
                0
            ),
            5
        );
        assert_eq!(ports[2].pending(), 0);
        assert_eq!(ports[3].sent.len(), 2);
        assert_eq!(counters.drop_counter(DropReason::TxFailed).get(), 3);
        assert_eq!(counters.port(3).tx_dropped.get(), 3);
        assert_eq!(counters.port(3).rx_dropped.get(), 0);
        assert_eq!(counters.port(3).tx_packets.get(), 2);
        assert_eq!(
            counters.port(3).tx_bytes.get(),
            2 * ports[3].sent[0].data.len() as u64
        );
        assert_eq!(pool.available(), 64, "every buffer back in the pool");
        assert_eq!(
            poll_port(
                &mut pipeline,
                &tables,
                &mut ports,
                2,
                &mut burst,
                &mut pool,
                0
            ),
            0,
            "nothing left to receive"
        );
    }

    /// A tap sees the captured port's frames as received and as sent, and
    /// nothing of other ports.
    #[test]
    fn a_tap_takes_the_captured_ports_frames_both_ways() {
        use crate::capture::{CaptureSpec, Filter};
        let tables =
            Tables::from_config(&NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap())
                .unwrap();
        let counters = Arc::new(WorkerCounters::new());
        let mut pipeline = Pipeline::new(PipelineConfig::default(), counters);
        let mut pool = HeapPool::new(64, DEFAULT_HEADROOM + 2048);
        let mut ports: Vec<MemoryPort> = (0..4).map(|_| MemoryPort::new()).collect();
        let cap = Capture::new(
            CaptureSpec {
                port: 3,
                direction: Direction::Both,
                filter: Filter::parse("udp").unwrap(),
                snaplen: 262_144,
                count: 0,
            },
            1,
            16,
        );
        let tap = Some(Tap {
            capture: &cap,
            worker: 0,
        });
        let a_to_b = craft::pod_a_udp(craft::POD_B_IP, 1000, 2, 10);
        ports[2].inject(Record {
            ts_ns: 0,
            data: a_to_b.clone(),
        });
        let mut burst = Burst::new(32);
        poll_port_tapped(
            &mut pipeline,
            &tables,
            &mut ports,
            2,
            &mut burst,
            &mut pool,
            0,
            tap,
        );
        let got = cap.drain(10);
        assert_eq!(got.len(), 1, "pod-a's frame, as sent to pod-b");
        assert_eq!(got[0].direction, Direction::Tx);
        assert_eq!(got[0].data, ports[3].sent[0].data, "after rewrite");
        assert_ne!(got[0].data, a_to_b);
        // pod-b sends: taken as received, unchanged.
        let b_to_a = ports[3].sent[0].data.clone();
        ports[3].inject(Record {
            ts_ns: 0,
            data: b_to_a.clone(),
        });
        poll_port_tapped(
            &mut pipeline,
            &tables,
            &mut ports,
            3,
            &mut burst,
            &mut pool,
            0,
            tap,
        );
        let got = cap.drain(10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].direction, Direction::Rx);
        assert_eq!(got[0].data, b_to_a);
        assert_eq!(cap.dropped(), 0);
    }
}

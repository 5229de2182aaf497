//! One worker's queue pair of a DPDK device: `rx_burst` and `tx_burst`
//! straight onto DPDK's burst calls, one call per burst.

use super::mbuf::{Mbuf, MbufPool};
use super::sys;
use sluice_dataplane::buffer::{Burst, MAX_BURST};
use sluice_dataplane::port::Port;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Counters of one queue pair, and (queue 0 only, so sums over workers
/// stay right) the device's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DpdkStats {
    /// Chained mbufs that could not be made single-segment: dropped.
    pub rx_segmented: u64,
    /// Chained mbufs made single-segment by copying.
    pub rx_linearized: u64,
    /// Packets the device dropped for want of RX descriptors (`imissed`).
    pub imissed: u64,
    /// Erroneous packets the device received (`ierrors`).
    pub ierrors: u64,
    /// Packets the device failed to send (`oerrors`).
    pub oerrors: u64,
    /// RX mbuf allocation failures (`rx_nombuf`).
    pub rx_nombuf: u64,
}

/// Queue `queue` of device `port`, for one worker.
#[derive(Debug)]
pub struct DpdkPort {
    port: u16,
    queue: u16,
    rx_segmented: u64,
    rx_linearized: u64,
}

impl DpdkPort {
    /// The worker's queue pair of a started device.
    pub fn new(port: u16, queue: u16) -> Self {
        DpdkPort {
            port,
            queue,
            rx_segmented: 0,
            rx_linearized: 0,
        }
    }

    /// The device's port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// This queue's counters, with the device's on queue 0.
    pub fn stats(&self) -> DpdkStats {
        let mut s = DpdkStats {
            rx_segmented: self.rx_segmented,
            rx_linearized: self.rx_linearized,
            ..DpdkStats::default()
        };
        if self.queue == 0 {
            // SAFETY: zero is a valid rte_eth_stats; the call fills it.
            let mut e: sys::rte_eth_stats = unsafe { std::mem::zeroed() };
            // SAFETY: a started port and a valid out pointer; reading
            // counters is safe alongside the burst calls.
            if unsafe { sys::rte_eth_stats_get(self.port, &mut e) } == 0 {
                s.imissed = e.imissed;
                s.ierrors = e.ierrors;
                s.oerrors = e.oerrors;
                s.rx_nombuf = e.rx_nombuf;
            }
        }
        s
    }
}

impl Port<MbufPool> for DpdkPort {
    #[inline]
    fn rx_burst(&mut self, _pool: &mut MbufPool, burst: &mut Burst<Mbuf>) -> usize {
        let room = (burst.capacity() - burst.len()).min(MAX_BURST);
        if room == 0 {
            return 0;
        }
        // Not zeroed: a poll of an idle port must cost no 2 KiB memset.
        let mut pkts = [const { MaybeUninit::<*mut sys::rte_mbuf>::uninit() }; MAX_BURST];
        // SAFETY: this worker alone uses this queue of a started port, and
        // `pkts` has room for `room` pointers.
        let n = unsafe {
            sys::sluice_dpdk_rx_burst(self.port, self.queue, pkts.as_mut_ptr().cast(), room as u16)
        };
        let mut got = 0;
        for slot in &pkts[..usize::from(n)] {
            // SAFETY: DPDK wrote the first `n` entries.
            let m = unsafe { slot.assume_init() };
            let Some(nn) = NonNull::new(m) else { continue };
            // SAFETY: DPDK handed us this mbuf.
            if unsafe { nn.as_ref().nb_segs } > 1 {
                // SAFETY: an mbuf chain we own; linearize copies the chain
                // into its first segment when it fits, and leaves it whole
                // otherwise.
                if unsafe { sys::sluice_dpdk_linearize(m) } == 0 {
                    self.rx_linearized += 1;
                } else {
                    self.rx_segmented += 1;
                    // SAFETY: we own the chain; it goes back to its pool.
                    unsafe { sys::sluice_dpdk_free(m) };
                    continue;
                }
            }
            // SAFETY: a single-segment mbuf we own.
            let buf = unsafe { Mbuf::from_raw(nn) };
            match burst.push(buf) {
                Ok(()) => got += 1,
                // SAFETY: not taken by the full burst: back to its pool.
                Err(b) => unsafe { sys::sluice_dpdk_free(b.into_raw()) },
            }
        }
        got
    }

    #[inline]
    fn tx_burst(&mut self, _pool: &mut MbufPool, bufs: &mut Vec<Mbuf>) -> usize {
        if bufs.is_empty() {
            return 0;
        }
        let n = bufs.len().min(u16::MAX as usize) as u16;
        // SAFETY: `Mbuf` is a transparent `NonNull<rte_mbuf>`, so the vector's
        // first `n` elements are `n` valid mbuf pointers we own; this worker
        // alone uses this TX queue. DPDK takes ownership of the first `sent`.
        let sent = unsafe {
            sys::sluice_dpdk_tx_burst(self.port, self.queue, bufs.as_mut_ptr().cast(), n)
        } as usize;
        // The sent mbufs belong to the device now: forget them (an `Mbuf`
        // has no destructor).
        bufs.drain(..sent);
        sent
    }
}

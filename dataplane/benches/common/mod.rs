//! Shared by the benchmarks: the burst size, a deterministic PRNG and the
//! note on what "cycles" means here.

// Each bench binary uses only part of this module.
#![allow(dead_code)]

/// Packets per burst in every benchmark (the pipeline's `MIN_BURST`).
pub const BURST: usize = 32;

/// xorshift64*: tiny, deterministic, good enough to scatter prefixes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The TSC frequency in MHz, taken from the first "cpu MHz" line of
/// /proc/cpuinfo (on a `constant_tsc` CPU that is the TSC rate).
pub fn tsc_mhz() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// Prints, once per bench binary, how to read the figures.
pub fn print_note(what: &str) {
    let mhz = tsc_mhz().map_or_else(|| "unknown".to_string(), |m| format!("{m:.0}"));
    eprintln!(
        "note: {what}: one criterion iteration handles {BURST} packets/addresses; divide by {BURST} for a per-packet figure.\n\
         note: cycles are not measured: perf counters are unavailable in this VM and _rdtsc needs `unsafe`.\n\
         note: scripts/bench.sh derives cycles = ns x TSC frequency ({mhz} MHz from /proc/cpuinfo, constant_tsc),\n\
         note: i.e. TSC reference cycles, not core clock cycles (the core may run faster or slower than the TSC)."
    );
}

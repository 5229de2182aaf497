//! Shared by the benchmarks: the burst size and the
//! note on what "cycles" means here.

// Each bench binary uses only part of this module.
#![allow(dead_code)]

/// Packets per burst in every benchmark (the pipeline's `MIN_BURST`).
pub const BURST: usize = 32;

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

//! Captures: the control side of `capture.start`, `capture.read` and
//! `capture.stop`, and what the workers read to take part.
//!
//! One capture runs at a time (a second `capture.start` is refused, naming
//! the one running). Invariants:
//!
//! - The workers see the capture through [`Captures::generation`] (one
//!   relaxed load per worker turn) and, when it moved, [`Captures::published`]
//!   (a `try_lock`, never waiting; a worker that misses it tries again next
//!   turn). A worker holds an `Arc` of the capture; the control side keeps
//!   the last one it withdrew, so a worker never frees a capture's rings.
//! - The rings are allocated here, at `capture.start`, never by a worker.
//! - A capture is withdrawn from the workers when its count is reached (the
//!   remaining frames stay readable), on `capture.stop`, or when nobody read
//!   it for [`IDLE_TIMEOUT`] (a killed `sluicectl`): a watchdog thread per
//!   capture checks every [`WATCH_EVERY`] and ends with the capture.
//! - `capture.read` returns at most `count` frames over all reads, in time
//!   order within a read.

use crate::tables::PortId;
use sluice_dataplane::capture::{Capture, CaptureSpec, CapturedFrame, DEFAULT_SLOTS};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A capture nobody read for this long stops on its own.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the watchdog looks.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);
/// Frames one `capture.read` returns unless asked for fewer.
pub const DEFAULT_READ_MAX: usize = 256;

#[derive(Debug)]
struct Session {
    id: u64,
    port: String,
    cap: Arc<Capture>,
    count: u64,
    delivered: u64,
    dropped_seen: u64,
    last_read: Instant,
    withdrawn: bool,
    /// Its port was removed: the capture is over.
    port_gone: bool,
}

/// What a read returns.
#[derive(Debug)]
pub struct ReadOut {
    /// The port's name.
    pub port: String,
    /// The frames.
    pub frames: Vec<CapturedFrame>,
    /// Frames returned over all reads.
    pub captured: u64,
    /// The count is reached.
    pub done: bool,
    /// Matching frames lost so far.
    pub dropped: u64,
}

/// The capture in force, if any, and the totals for `/metrics`.
#[derive(Debug, Default)]
pub struct Captures {
    generation: AtomicU32,
    published: Mutex<Option<Arc<Capture>>>,
    /// The last capture withdrawn: freed here, not by a worker.
    retired: Mutex<Option<Arc<Capture>>>,
    session: Mutex<Option<Session>>,
    next_id: AtomicU64,
    packets_total: AtomicU64,
    dropped_total: AtomicU64,
}

impl Captures {
    /// Moves whenever the capture the workers should use changes.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The capture in force: `None` if the lock is busy (try next turn),
    /// `Some(None)` if there is none.
    #[inline]
    pub fn published(&self) -> Option<Option<Arc<Capture>>> {
        self.published.try_lock().ok().map(|c| c.clone())
    }

    fn publish(&self, cap: Option<Arc<Capture>>) {
        let old = std::mem::replace(
            &mut *self.published.lock().unwrap_or_else(|p| p.into_inner()),
            cap,
        );
        self.generation.fetch_add(1, Ordering::Release);
        if old.is_some() {
            *self.retired.lock().unwrap_or_else(|p| p.into_inner()) = old;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a capture of `spec` on the port named `port` with a ring per
    /// worker; its id, or why not (one is running).
    pub fn start(
        self: &Arc<Self>,
        port: &str,
        spec: CaptureSpec,
        workers: usize,
    ) -> Result<u64, String> {
        let mut s = self.lock();
        if let Some(cur) = s.as_ref() {
            return Err(format!(
                "capture {} of port `{}` is running; one capture at a time (stop it with capture.stop, or it stops {} s after its last read)",
                cur.id,
                cur.port,
                IDLE_TIMEOUT.as_secs()
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let count = spec.count;
        let cap = Arc::new(Capture::new(spec, workers, DEFAULT_SLOTS));
        *s = Some(Session {
            id,
            port: port.to_string(),
            cap: cap.clone(),
            count,
            delivered: 0,
            dropped_seen: 0,
            last_read: Instant::now(),
            withdrawn: false,
            port_gone: false,
        });
        drop(s);
        self.publish(Some(cap));
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name(format!("capture-{id}"))
            .spawn(move || watch(weak, id));
        Ok(id)
    }

    /// Up to `max` frames of capture `id`.
    pub fn read(&self, id: u64, max: usize) -> Result<ReadOut, String> {
        let mut g = self.lock();
        let s = session(&mut g, id)?;
        s.last_read = Instant::now();
        let room = if s.count == 0 {
            max
        } else {
            max.min(s.count.saturating_sub(s.delivered) as usize)
        };
        let frames = s.cap.drain(room);
        s.delivered += frames.len() as u64;
        self.packets_total
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        self.account_drops(s);
        // After its port went, done once a read leaves frames behind no more.
        let done = (s.port_gone && frames.len() < room) || (s.count != 0 && s.delivered >= s.count);
        let withdraw = done && !s.withdrawn;
        if withdraw {
            s.withdrawn = true;
        }
        let out = ReadOut {
            port: s.port.clone(),
            frames,
            captured: s.delivered,
            done,
            dropped: s.dropped_seen,
        };
        drop(g);
        if withdraw {
            self.publish(None);
        }
        Ok(out)
    }

    /// Ends capture `id`: (frames returned, frames dropped).
    pub fn stop(&self, id: u64) -> Result<(u64, u64), String> {
        let mut g = self.lock();
        let s = session(&mut g, id)?;
        self.account_drops(s);
        let out = (s.delivered, s.dropped_seen);
        let withdrawn = s.withdrawn;
        *g = None;
        drop(g);
        if !withdrawn {
            self.publish(None);
        }
        Ok(out)
    }

    /// The port named `name` was removed: a capture of it stops taking
    /// frames (its id may be reused by the next pod), and is done once what
    /// it took has been read.
    pub fn port_removed(&self, name: &str) {
        let mut g = self.lock();
        let Some(s) = g.as_mut().filter(|s| s.port == name) else {
            return;
        };
        s.port_gone = true;
        let withdraw = !s.withdrawn;
        s.withdrawn = true;
        drop(g);
        if withdraw {
            self.publish(None);
        }
    }

    /// Stops capture `id` if nobody read it for `idle`; whether it is over
    /// (stopped now or before).
    pub fn expire(&self, id: u64, idle: Duration) -> bool {
        let stale = match self.lock().as_ref() {
            Some(s) if s.id == id => s.last_read.elapsed() >= idle,
            _ => return true,
        };
        if stale {
            let _ = self.stop(id);
            tracing::info!(capture = id, "capture stopped: not read for {idle:?}");
        }
        stale
    }

    fn account_drops(&self, s: &mut Session) {
        let d = s.cap.dropped();
        self.dropped_total
            .fetch_add(d.saturating_sub(s.dropped_seen), Ordering::Relaxed);
        s.dropped_seen = d.max(s.dropped_seen);
    }

    /// Frames returned by `capture.read`, over all captures.
    pub fn packets_total(&self) -> u64 {
        self.packets_total.load(Ordering::Relaxed)
    }

    /// Matching frames lost, over all captures (as of their last read).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Whether a capture is running.
    pub fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// The port id the workers capture, if any (for tests).
    pub fn captured_port(&self) -> Option<PortId> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.port())
    }
}

fn session(g: &mut Option<Session>, id: u64) -> Result<&mut Session, String> {
    match g.as_mut() {
        Some(s) if s.id == id => Ok(s),
        _ => Err(format!(
            "no capture {id}: never started, stopped, or not read for {} s",
            IDLE_TIMEOUT.as_secs()
        )),
    }
}

/// Stops capture `id` once nobody reads it; ends with it (or the daemon).
fn watch(captures: Weak<Captures>, id: u64) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let Some(c) = captures.upgrade() else { return };
        if c.expire(id, IDLE_TIMEOUT) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::capture::{Direction, Filter};

    fn spec(count: u64) -> CaptureSpec {
        CaptureSpec {
            port: 2,
            direction: Direction::Both,
            filter: Filter::default(),
            snaplen: 64,
            count,
        }
    }

    #[test]
    fn a_capture_whose_port_is_removed_is_withdrawn_and_done_once_read() {
        let c = Arc::new(Captures::default());
        let id = c.start("pod-a", spec(0), 1).unwrap();
        let cap = c.published().unwrap().unwrap();
        cap.take(0, Direction::Rx, 1, [&[1u8, 2, 3][..]].into_iter());
        c.port_removed("pod-b");
        assert_eq!(c.captured_port(), Some(2), "another port's removal");
        c.port_removed("pod-a");
        assert_eq!(c.captured_port(), None, "withdrawn from the workers");
        let r = c.read(id, 10).unwrap();
        assert_eq!(r.frames.len(), 1, "what it took is still read");
        assert!(r.done);
        c.stop(id).unwrap();
    }

    #[test]
    fn one_capture_at_a_time_published_to_workers_and_withdrawn_at_its_count() {
        let c = Arc::new(Captures::default());
        let g0 = c.generation();
        let id = c.start("pod-a", spec(2), 1).unwrap();
        assert_ne!(c.generation(), g0);
        let cap = c.published().unwrap().unwrap();
        assert_eq!(c.captured_port(), Some(2));
        let err = c.start("pod-b", spec(0), 1).unwrap_err();
        assert!(
            err.starts_with(&format!("capture {id} of port `pod-a` is running")),
            "{err}"
        );
        for ts in 0..3 {
            cap.take(0, Direction::Rx, ts, [&[1u8, 2, 3][..]].into_iter());
        }
        let r = c.read(id, 1).unwrap();
        assert_eq!((r.frames.len(), r.captured, r.done), (1, 1, false));
        let g = c.generation();
        let r = c.read(id, 100).unwrap();
        assert_eq!((r.frames.len(), r.captured, r.done), (1, 2, true));
        assert_ne!(c.generation(), g, "withdrawn from the workers");
        assert_eq!(c.published().unwrap().map(|_| ()), None);
        assert_eq!(
            c.read(id, 100).unwrap().frames.len(),
            0,
            "never more than count"
        );
        assert_eq!(c.stop(id).unwrap(), (2, 0));
        assert!(c
            .read(id, 1)
            .unwrap_err()
            .starts_with(&format!("no capture {id}")));
        assert_eq!(c.packets_total(), 2);
        assert!(!c.active());
        assert!(
            c.start("pod-b", spec(0), 1).is_ok(),
            "a new one after a stop"
        );
    }

    #[test]
    fn an_unread_capture_expires() {
        let c = Arc::new(Captures::default());
        let id = c.start("pod-a", spec(0), 1).unwrap();
        assert!(!c.expire(id, Duration::from_secs(60)));
        assert!(c.active());
        assert!(c.expire(id, Duration::ZERO));
        assert!(!c.active());
        assert_eq!(c.published().unwrap().map(|_| ()), None);
        assert!(c.expire(id, Duration::ZERO), "over already");
    }
}

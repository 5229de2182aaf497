//! The host port: a TAP device into the node's own kernel.
//!
//! Through it the kernel reaches local pods (and, through the switch, remote
//! ones) and pods reach the node and, by the kernel's routing and
//! masquerade, the outside. It is the slow path: one `read` or `write` per
//! frame, which is fine for node traffic and keeps the fast paths (pod veths
//! and the uplink on AF_XDP) free of syscalls.
//!
//! The device is multi-queue: each worker opens its own queue, so every
//! worker can send to the host without sharing anything. It exists while
//! `sluiced` holds it open and disappears with its addresses and routes when
//! the last queue closes, so a crash leaves nothing behind.
//!
//! An empty read still costs a syscall, and a busy worker polls every port
//! every turn: after a read finds nothing, the next [`IDLE_SKIP`] polls of
//! the queue return at once without one ([`RxBackoff`]). Node traffic waits
//! at most that many turns (microseconds); a sleeping worker is woken by the
//! descriptor as before.
#![allow(unsafe_code)]

use sluice_dataplane::buffer::{BufPool, Burst, PacketBuf};
use sluice_dataplane::port::Port;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// Largest frame read from the TAP.
const MAX_FRAME: usize = 9216 + 18;
/// Polls of an idle queue skipped after an empty read.
pub const IDLE_SKIP: u32 = 16;

/// When to read an idle queue: after an empty read, skip the next
/// [`IDLE_SKIP`] polls; a read that finds frames reads again next turn.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxBackoff {
    skip: u32,
}

impl RxBackoff {
    /// Whether this poll should read (and counts a skipped one down).
    pub fn should_read(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// Records what a read found.
    pub fn read(&mut self, frames: usize) {
        self.skip = if frames == 0 { IDLE_SKIP } else { 0 };
    }
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// One queue of the host TAP.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    name: String,
    backoff: RxBackoff,
}

impl TapPort {
    /// Opens (creating if needed) queue of the multi-queue TAP `name`.
    pub fn open(name: &str) -> std::io::Result<TapPort> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{name}` is not an interface name"),
            ));
        }
        let path = CString::new("/dev/net/tun").expect("no NUL");
        // SAFETY: opening a device node by a valid C string.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an `ifreq`-sized struct, which
        // `IfReq` is (16-byte name, flags, padding to 40 bytes).
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TapPort {
            fd,
            name: name.to_string(),
            backoff: RxBackoff::default(),
        })
    }

    /// A queue an earlier process opened and handed over at an upgrade:
    /// the device, its addresses and routes, and the frames queued on it
    /// live on with the descriptor.
    pub fn inherit(name: &str, fd: OwnedFd) -> TapPort {
        TapPort {
            fd,
            name: name.to_string(),
            backoff: RxBackoff::default(),
        }
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor (readable when the kernel sent a frame).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

impl<P: BufPool> Port<P> for TapPort {
    fn rx_burst(&mut self, pool: &mut P, burst: &mut Burst<P::Buf>) -> usize {
        if !self.backoff.should_read() {
            return 0;
        }
        let mut n = 0;
        while !burst.is_full() {
            let Some(mut buf) = pool.alloc() else { break };
            let room = buf.tailroom().min(MAX_FRAME);
            if !buf.append(room) {
                pool.free(buf);
                break;
            }
            let data = buf.data_mut();
            // SAFETY: reads at most `data.len()` bytes into the buffer's own
            // writable window.
            let got =
                unsafe { libc::read(self.fd.as_raw_fd(), data.as_mut_ptr().cast(), data.len()) };
            if got <= 0 {
                pool.free(buf);
                break;
            }
            buf.truncate(got as usize);
            if let Err(b) = burst.push(buf) {
                pool.free(b);
                break;
            }
            n += 1;
        }
        self.backoff.read(n);
        n
    }

    fn tx_burst(&mut self, pool: &mut P, bufs: &mut Vec<P::Buf>) -> usize {
        let mut sent = 0;
        for b in bufs.iter() {
            let data = b.data();
            // SAFETY: writes `data.len()` bytes from the buffer's readable window.
            let rc = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if rc < 0 {
                break;
            }
            sent += 1;
        }
        for b in bufs.drain(..sent) {
            pool.free(b);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::{RxBackoff, IDLE_SKIP};

    #[test]
    fn an_idle_queue_is_read_once_every_idle_skip_plus_one_polls() {
        let mut b = RxBackoff::default();
        assert!(b.should_read(), "a new queue is read at once");
        b.read(0);
        let reads = (0..IDLE_SKIP * 4 + 4)
            .filter(|_| {
                let r = b.should_read();
                if r {
                    b.read(0);
                }
                r
            })
            .count();
        assert_eq!(reads, 4);
    }

    #[test]
    fn a_queue_with_frames_is_read_every_poll() {
        let mut b = RxBackoff::default();
        b.read(0);
        for _ in 0..IDLE_SKIP {
            assert!(!b.should_read());
        }
        assert!(b.should_read());
        b.read(3);
        assert!(b.should_read(), "frames found: read again next turn");
        b.read(1);
        assert!(b.should_read());
    }
}

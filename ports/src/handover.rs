//! The channel an upgrade runs over: a Unix `SOCK_SEQPACKET` socket, whose
//! messages keep their boundaries and carry descriptors (`SCM_RIGHTS`).
//!
//! A message is at most [`MAX_MESSAGE`] bytes with at most [`MAX_FDS`]
//! descriptors; larger payloads and longer descriptor lists are sent in
//! several (the protocol on top, in `sluiced`, says how many follow).
//! Received descriptors are close-on-exec and owned by the receiver.
//! Only root (or the socket file's owner) can connect: the file is 0600.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// The largest message.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The most descriptors in one message (the kernel's limit is 253).
pub const MAX_FDS: usize = 200;

/// One end of a handover connection, or the listening socket.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned from here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Channel {
    /// Listens on `path` (replacing a stale file), mode 0600.
    pub fn listen(path: &Path) -> io::Result<Channel> {
        use std::os::unix::fs::PermissionsExt;
        let fd = seqpacket()?;
        let (addr, len) = sockaddr(path)?;
        let _ = std::fs::remove_file(path);
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: listen(2) on our socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 4) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Channel { fd })
    }

    /// Waits up to `timeout` for a connection; `None` when none came.
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<Channel>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: accept4(2) on our listening socket; no address wanted.
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Some(Channel { fd }))
    }

    /// Connects to the listener at `path`.
    pub fn connect(path: &Path) -> io::Result<Channel> {
        let fd = seqpacket()?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        if unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Channel { fd })
    }

    /// Gives up on a `recv` after `timeout` (`None`: waits for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let tv = match timeout {
            Some(t) => libc::timeval {
                tv_sec: t.as_secs() as libc::time_t,
                tv_usec: t.subsec_micros() as libc::suseconds_t,
            },
            None => libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        };
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: setsockopt reads one timeval from the stack.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Sends one message of `data` (at most [`MAX_MESSAGE`] bytes) with
    /// copies of `fds` (at most [`MAX_FDS`]); the descriptors stay ours.
    pub fn send(&self, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
        assert!(data.len() <= MAX_MESSAGE && fds.len() <= MAX_FDS && !data.is_empty());
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let fd_bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: an all-zero msghdr is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space;
            // SAFETY: the control buffer is `space` bytes, room for one
            // header and `fds.len()` descriptors; CMSG_FIRSTHDR/CMSG_DATA
            // point inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(c),
                    fd_bytes as usize,
                );
            }
        }
        // SAFETY: `msg` points at live buffers for the call's duration.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "a handover message was cut short",
            ));
        }
        Ok(())
    }

    /// Receives one message into `buf` (room for [`MAX_MESSAGE`] bytes):
    /// its length (0 at the end of the connection) and the descriptors it
    /// carried, now ours.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space =
            unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: an all-zero msghdr is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: `msg` points at live buffers for the call's duration.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fds = Vec::new();
        // SAFETY: walking the control messages the kernel wrote into `cbuf`
        // (bounded by msg_controllen); each SCM_RIGHTS payload is an array
        // of descriptors now installed in this process, owned from here.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let count = bytes / std::mem::size_of::<RawFd>();
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a handover message carried more descriptors than allowed",
            ));
        }
        Ok((n as usize, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_bounds_and_carry_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let l = Channel::listen(&path).unwrap();
        let c = Channel::connect(&path).unwrap();
        let s = l
            .accept(Duration::from_secs(1))
            .unwrap()
            .expect("a connection");
        let file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut &file, b"handed over").unwrap();
        let fds: Vec<RawFd> = (0..MAX_FDS).map(|_| file.as_raw_fd()).collect();
        c.send(b"first", &fds).unwrap();
        c.send(&vec![7u8; MAX_MESSAGE], &[]).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, got) = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        assert_eq!(got.len(), MAX_FDS);
        let mut f = std::fs::File::from(got.into_iter().next().unwrap());
        let mut text = String::new();
        std::io::Seek::rewind(&mut f).unwrap();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!(text, "handed over", "the descriptor is the same file");
        let (n, got) = s.recv(&mut buf).unwrap();
        assert_eq!((n, got.len()), (MAX_MESSAGE, 0));
        drop(c);
        assert_eq!(s.recv(&mut buf).unwrap().0, 0, "the end of the connection");
        assert!(l.accept(Duration::from_millis(10)).unwrap().is_none());
    }
}

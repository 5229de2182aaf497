//! sluice's XDP program on an interface: attach (replacing a stale copy
//! left by a crash), the socket map workers register their sockets in, and
//! detach on drop. On an uplink it steers only sluice's traffic to the
//! sockets ([`Steering::Filter`]); on a pod veth everything.
#![allow(unsafe_code)]

use super::*;

/// What the XDP program on an interface redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// Every frame (a pod's veth).
    RedirectAll,
    /// Only sluice's traffic on a shared uplink.
    Filter {
        /// This node's underlay address.
        node_ip: Ipv4Addr,
        /// The cluster pod network.
        pod_net: Ipv4Addr,
        /// Its prefix length.
        pod_len: u8,
        /// The VXLAN UDP port.
        vxlan_port: u16,
    },
}

/// How the program got attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttachMode {
    /// In the driver.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// sluice's XDP program attached to one interface; detached on drop.
#[derive(Debug)]
pub struct XdpProgram {
    pub(super) ifname: String,
    pub(super) ifindex: i32,
    pub(super) loaded: Loaded,
    pub(super) mode: AttachMode,
    pub(super) xsks_map_fd: i32,
}

/// Where a program's handles come from.
#[derive(Debug)]
pub(super) enum Loaded {
    /// Loaded and attached by this process through libxdp.
    Here {
        prog: NonNull<sys::xdp_program>,
        obj: NonNull<sys::bpf_object>,
    },
    /// Attached by an earlier process, which handed over its maps at an
    /// upgrade: the program stays attached and is found by name to detach.
    HandedOver {
        xsks_map: std::os::fd::OwnedFd,
        config_map: std::os::fd::OwnedFd,
    },
}

/// A program as an upgrade hands it over: its maps' descriptors (still
/// the sender's) and how it is attached.
#[derive(Debug, Clone, Copy)]
pub struct ProgramHandover {
    /// The socket map.
    pub xsks_map: std::os::fd::RawFd,
    /// The steering map.
    pub config_map: std::os::fd::RawFd,
    /// How it is attached.
    pub mode: AttachMode,
}

// SAFETY: the handles point to libxdp/libbpf heap objects that are not tied
// to the thread that made them; the control side moves a program between
// threads but only ever uses it from one at a time (behind a mutex).
unsafe impl Send for XdpProgram {}

/// A handle on an attached program's socket map (valid while the program is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskMap(pub(super) i32);

impl XskMap {
    /// No map (a socket only taken over to be closed).
    pub(crate) const NONE: XskMap = XskMap(-1);
}

/// The program's name as the kernel reports it.
pub const PROGRAM_NAME: &str = "sluice_xdp";

fn prog_name(p: *const sys::xdp_program) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a live program handle from libxdp; the name it returns
    // is a NUL-terminated string owned by the handle.
    let name = unsafe { sys::xdp_program__name(p) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, alive as long as `p`.
    Some(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Detaches a sluice XDP program left on `ifname` (by a crash). Returns
/// whether one was found. Other programs are left alone.
pub fn detach_stale(ifname: &str) -> Result<bool, XdpError> {
    let idx = ifindex(ifname)? as i32;
    // SAFETY: plain FFI call with a valid ifindex; the result is a handle or
    // an error-encoded pointer, checked with libxdp_get_error below.
    let mp = unsafe { sys::xdp_multiprog__get_from_ifindex(idx) };
    // SAFETY: libxdp_get_error accepts any pointer libxdp returned.
    if mp.is_null() || unsafe { sys::libxdp_get_error(mp as *const _) } != 0 {
        return Ok(false);
    }
    let mut found = false;
    // SAFETY: `mp` is a valid multiprog handle until closed below.
    let legacy = unsafe { sys::xdp_multiprog__is_legacy(mp) };
    if legacy {
        // SAFETY: as above.
        let main = unsafe { sys::xdp_multiprog__main_prog(mp) };
        if prog_name(main).as_deref() == Some(PROGRAM_NAME) {
            // SAFETY: as above; detaches the legacy program from the interface.
            let rc = unsafe { sys::xdp_multiprog__detach(mp) };
            found = rc == 0;
        }
    } else {
        // SAFETY: iterating the dispatcher's component programs; a null
        // previous program starts the walk.
        let mut p = unsafe { sys::xdp_multiprog__next_prog(std::ptr::null(), mp) };
        while !p.is_null() {
            // SAFETY: `p` is a component of `mp`, valid while `mp` is.
            let next = unsafe { sys::xdp_multiprog__next_prog(p, mp) };
            if prog_name(p).as_deref() == Some(PROGRAM_NAME) {
                // SAFETY: detaching a program attached to `idx` in the mode the dispatcher uses.
                let rc = unsafe {
                    sys::xdp_program__detach(p, idx, sys::xdp_multiprog__attach_mode(mp), 0)
                };
                found |= rc == 0;
            }
            p = next;
        }
    }
    // SAFETY: closes the handle obtained above; not used afterwards.
    unsafe { sys::xdp_multiprog__close(mp) };
    Ok(found)
}

impl XdpProgram {
    /// Loads and attaches the program to `ifname` (native mode, else generic),
    /// replacing a stale copy of itself, and sets its steering.
    pub fn attach(ifname: &str, steering: Steering) -> Result<Self, XdpError> {
        let idx = ifindex(ifname)? as i32;
        detach_stale(ifname)?;
        let bytes = sluice_bindings::XDP_PROGRAM;
        // SAFETY: the buffer is a static ELF object, valid for the call;
        // null opts are allowed. The result is checked for errors.
        let obj = unsafe {
            sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len(), std::ptr::null())
        };
        // SAFETY: libxdp_get_error accepts any pointer libbpf/libxdp returned.
        let err = unsafe { sys::libxdp_get_error(obj as *const _) };
        let obj = NonNull::new(obj)
            .filter(|_| err == 0)
            .ok_or_else(|| errno_err("open the XDP object", ifname, err as i32))?;
        // SAFETY: `obj` is a valid object; the section name is NUL-terminated.
        let prog = unsafe {
            sys::xdp_program__from_bpf_obj(obj.as_ptr(), sluice_bindings::XDP_SECTION.as_ptr())
        };
        // SAFETY: as above.
        let err = unsafe { sys::libxdp_get_error(prog as *const _) };
        let Some(prog) = NonNull::new(prog).filter(|_| err == 0) else {
            // SAFETY: closing the object we opened; nothing else refers to it.
            unsafe { sys::bpf_object__close(obj.as_ptr()) };
            return Err(errno_err("load the XDP program", ifname, err as i32));
        };
        let mut mode = AttachMode::Native;
        // SAFETY: valid program and ifindex.
        let mut rc = unsafe {
            sys::xdp_program__attach(prog.as_ptr(), idx, sys::xdp_attach_mode_XDP_MODE_NATIVE, 0)
        };
        if rc != 0 {
            mode = AttachMode::Generic;
            // SAFETY: as above.
            rc = unsafe {
                sys::xdp_program__attach(prog.as_ptr(), idx, sys::xdp_attach_mode_XDP_MODE_SKB, 0)
            };
        }
        let mut me = XdpProgram {
            ifname: ifname.to_string(),
            ifindex: idx,
            loaded: Loaded::Here { prog, obj },
            mode,
            xsks_map_fd: -1,
        };
        if rc != 0 {
            me.mode = AttachMode::Generic;
            let e = errno_err("attach the XDP program", ifname, rc);
            me.close_only();
            std::mem::forget(me);
            return Err(e);
        }
        me.xsks_map_fd = me.map_fd(c"xsks_map")?;
        me.set_steering(steering)?;
        Ok(me)
    }

    /// Sets what the program redirects, atomically for the next frame: the
    /// config map's single entry is replaced in one update.
    pub fn set_steering(&self, steering: Steering) -> Result<(), XdpError> {
        let cfg_fd = self.map_fd(c"config_map")?;
        let mut cfg = sys::sluice_xdp_config::default();
        match steering {
            Steering::RedirectAll => cfg.mode = sys::SLUICE_XDP_REDIRECT_ALL,
            Steering::Filter {
                node_ip,
                pod_net,
                pod_len,
                vxlan_port,
            } => {
                let mask = if pod_len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(pod_len))
                };
                cfg.mode = sys::SLUICE_XDP_FILTER;
                cfg.node_ip = u32::from(node_ip).to_be();
                cfg.pod_net = (u32::from(pod_net) & mask).to_be();
                cfg.pod_mask = mask.to_be();
                cfg.vxlan_port = vxlan_port.to_be();
            }
        }
        let key: u32 = 0;
        // SAFETY: key and value point to properly sized values for the
        // array map (u32 key, sluice_xdp_config value).
        let rc = unsafe {
            sys::bpf_map_update_elem(
                cfg_fd,
                (&key as *const u32).cast(),
                (&cfg as *const sys::sluice_xdp_config).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(errno_err(
                "configure the XDP program",
                &self.ifname,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        Ok(())
    }

    /// What an upgrade hands the next process for this program.
    pub fn handover(&self) -> Result<ProgramHandover, XdpError> {
        Ok(ProgramHandover {
            xsks_map: self.xsks_map_fd,
            config_map: self.map_fd(c"config_map")?,
            mode: self.mode,
        })
    }

    /// The program an earlier process attached to `ifname` and handed over
    /// at an upgrade, with its maps: it stays attached, so frames keep
    /// going to the sockets in its map throughout.
    pub fn inherit(
        ifname: &str,
        xsks_map: std::os::fd::OwnedFd,
        config_map: std::os::fd::OwnedFd,
        mode: AttachMode,
    ) -> Result<Self, XdpError> {
        use std::os::fd::AsRawFd;
        let idx = ifindex(ifname)? as i32;
        Ok(XdpProgram {
            ifname: ifname.to_string(),
            ifindex: idx,
            xsks_map_fd: xsks_map.as_raw_fd(),
            loaded: Loaded::HandedOver {
                xsks_map,
                config_map,
            },
            mode,
        })
    }

    fn map_fd(&self, name: &CStr) -> Result<i32, XdpError> {
        let obj = match &self.loaded {
            Loaded::Here { obj, .. } => *obj,
            Loaded::HandedOver {
                xsks_map,
                config_map,
            } => {
                use std::os::fd::AsRawFd;
                return match name.to_bytes() {
                    b"xsks_map" => Ok(xsks_map.as_raw_fd()),
                    b"config_map" => Ok(config_map.as_raw_fd()),
                    _ => Err(errno_err(
                        "find a map of the XDP program",
                        &self.ifname,
                        libc::ENOENT,
                    )),
                };
            }
        };
        // SAFETY: valid object; NUL-terminated name.
        let map = unsafe { sys::bpf_object__find_map_by_name(obj.as_ptr(), name.as_ptr()) };
        if map.is_null() {
            return Err(errno_err(
                "find a map of the XDP program",
                &self.ifname,
                libc::ENOENT,
            ));
        }
        // SAFETY: `map` belongs to the loaded object.
        let fd = unsafe { sys::bpf_map__fd(map) };
        if fd < 0 {
            return Err(errno_err("get a map of the XDP program", &self.ifname, fd));
        }
        Ok(fd)
    }

    /// The program's socket map, for [`XskPort::open`].
    pub fn xsk_map(&self) -> XskMap {
        XskMap(self.xsks_map_fd)
    }

    /// How it was attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    fn close_only(&mut self) {
        if let Loaded::Here { prog, obj } = &self.loaded {
            // SAFETY: the program and object were opened by `attach` and are
            // not used after this; closing the program leaves the external
            // object.
            unsafe {
                sys::xdp_program__close(prog.as_ptr());
                sys::bpf_object__close(obj.as_ptr());
            }
        }
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        let mode = match self.mode {
            AttachMode::Native => sys::xdp_attach_mode_XDP_MODE_NATIVE,
            AttachMode::Generic => sys::xdp_attach_mode_XDP_MODE_SKB,
        };
        match &self.loaded {
            Loaded::Here { prog, .. } => {
                // SAFETY: detaching the program this value attached, then
                // closing it.
                unsafe { sys::xdp_program__detach(prog.as_ptr(), self.ifindex, mode, 0) };
                self.close_only();
            }
            Loaded::HandedOver { .. } => {
                // Attached by the process that handed it over: found by name.
                let _ = detach_stale(&self.ifname);
            }
        }
    }
}

//! Fuzz target `bgp`: the BGP decoder and one session fed hostile bytes.
//!
//! Byte 0 chooses: bit 0, establish the session first with a valid OPEN
//! and KEEPALIVE (so UPDATE, ROUTE-REFRESH and the Established checks are
//! reached); bit 1, the peer advertised graceful restart. The rest is the
//! TCP stream from the peer, cut into messages by `message::frame` exactly
//! as the speaker's reader cuts it.
//!
//! Checks: nothing panics; `decode` gives the same answer twice; every
//! NOTIFICATION the session sends is followed by closing that connection;
//! the Adj-RIB-In never holds a prefix that no UPDATE announced; once the
//! connection is closed the session is back in Active.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_bgp::message::{self, GracefulRestart, LocalOpen};
use sluice_bgp::session::{Action, Session, SessionConfig, State};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn open(gr: bool) -> Vec<u8> {
    message::encode_open(&LocalOpen {
        asn: 64512,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 168, 77, 3),
        graceful_restart: gr.then_some(GracefulRestart {
            restarting: false,
            time: 60,
            ipv4_forwarding: Some(true),
        }),
    })
}

fn check(actions: &[Action], announced: &mut Vec<sluice_api::Ipv4Net>) -> bool {
    let mut closed = false;
    let mut notified = false;
    for a in actions {
        match a {
            Action::Send(_, b) => {
                if b.len() > 18 && b[18] == 3 {
                    notified = true;
                }
            }
            Action::Close(_) => closed = true,
            Action::Changed(p) => announced.extend(p.iter().copied()),
            _ => {}
        }
    }
    assert!(!notified || closed, "a NOTIFICATION without closing: {actions:?}");
    closed
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let a = message::decode(stream, true);
    assert_eq!(a, message::decode(stream, true));
    let _ = message::decode(stream, false);

    let t = Instant::now();
    let mut s = Session::new(
        SessionConfig {
            peer: Ipv4Addr::new(192, 168, 77, 3),
            peer_asn: 64512,
            passive: true,
            local_asn: 64512,
            router_id: Ipv4Addr::new(192, 168, 77, 1),
            next_hop: Ipv4Addr::new(192, 168, 77, 1),
            hold_time: 90,
            connect_retry: Duration::from_secs(1),
            restart_time: Some(120),
        },
        0,
    );
    s.set_announced(&["10.77.1.0/24".parse().unwrap()]);
    s.start(t);
    s.connected(1, false, t);
    let mut seen = Vec::new();
    if mode & 1 == 1 {
        s.received(1, &open(mode & 2 == 2), t);
        s.received(1, &message::encode_keepalive(), t);
        assert_eq!(s.state(), State::Established);
    }
    let mut buf = stream;
    let mut closed = false;
    while !closed {
        match message::frame(buf) {
            Ok(Some(len)) if buf.len() >= len => {
                let acts = s.received(1, &buf[..len], t);
                closed = check(&acts, &mut seen);
                buf = &buf[len..];
            }
            Ok(_) => break,
            Err(n) => {
                let acts = s.header_error(1, n, t);
                closed = check(&acts, &mut seen);
            }
        }
    }
    for p in s.adj_in().keys() {
        assert!(seen.contains(p), "{p} in the Adj-RIB-In but never reported");
    }
    if closed {
        assert_eq!(s.state(), State::Active);
    }
    let _ = s.on_timer(t + Duration::from_secs(400));
});

//! The BGP speaker over real TCP on loopback: two speakers exchange routes,
//! and a peer that sends malformed messages, or falls silent, gets the
//! RFC's NOTIFICATION while another session stays Established.
//!
//! Loopback addresses 127.0.0.x stand for nodes: every speaker and test
//! peer binds its own, so the speaker knows each peer by its source.

use sluice_api::Ipv4Net;
use sluice_control::bgp::message::{self, decode, GracefulRestart, LocalOpen, Message, Notify};
use sluice_control::bgp::speaker::{self, Command, RibEvent};
use sluice_control::bgp::{BgpConfig, PeerConfig};
use sluice_control::status::Status;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::Receiver;

fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(ip: Ipv4Addr, port: u16, peers: Vec<PeerConfig>, hold: u16) -> BgpConfig {
    BgpConfig {
        asn: 64512,
        router_id: None,
        listen: Some((ip, port)),
        hold_time: hold,
        connect_retry: Duration::from_secs(1),
        restart_time: Some(120),
        deferral: Duration::from_secs(30),
        peers,
        pools: vec![],
    }
}

fn peer(ip: Ipv4Addr, port: u16, passive: bool) -> PeerConfig {
    PeerConfig {
        address: ip,
        asn: 64512,
        port,
        passive,
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// Waits for a `Changed` event naming `prefix`; returns its next hop.
async fn learned(rx: &mut Receiver<RibEvent>, prefix: Ipv4Net) -> Option<Ipv4Addr> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no change for {prefix} within 10 s"))
            .expect("speaker gone");
        if let RibEvent::Changed(list) = ev {
            if let Some((_, best)) = list.iter().find(|(p, _)| *p == prefix) {
                return best.map(|b| b.next_hop);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_exchange_routes_and_withdraw_them() {
    let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
    let a_status = Arc::new(Status::default());
    let (a, mut a_rx) = speaker::start(
        config(a_ip, a_port, vec![peer(b_ip, b_port, false)], 9),
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(192, 168, 77, 1),
        a_status.clone(),
    )
    .await
    .unwrap();
    // B is passive, as Calico makes the node with the greater address.
    let (b, mut b_rx) = speaker::start(
        config(b_ip, b_port, vec![peer(a_ip, a_port, true)], 9),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(192, 168, 77, 2),
        Arc::new(Status::default()),
    )
    .await
    .unwrap();
    a.send(Command::Announce(vec![net("10.77.1.0/24")]));
    b.send(Command::Announce(vec![
        net("10.77.2.0/24"),
        net("10.77.3.0/24"),
    ]));
    assert_eq!(
        learned(&mut a_rx, net("10.77.2.0/24")).await,
        Some(Ipv4Addr::new(192, 168, 77, 2))
    );
    assert_eq!(
        learned(&mut b_rx, net("10.77.1.0/24")).await,
        Some(Ipv4Addr::new(192, 168, 77, 1))
    );
    // B stops announcing one block: A loses the route.
    b.send(Command::Announce(vec![net("10.77.2.0/24")]));
    assert_eq!(learned(&mut a_rx, net("10.77.3.0/24")).await, None);
    let st = a_status.bgp().unwrap();
    assert_eq!(st.peers[0].state, "Established");
    assert_eq!(st.peers[0].prefixes_received, 1);
    assert!(st.peers[0].end_of_rib);
    assert_eq!(st.best_routes, 1);
    // Both sides' End-of-RIB in: converged well before the deferral time.
    assert!(st.converged, "{st:?}");
    let metrics = {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &a_status.metrics.registry()).unwrap();
        s
    };
    assert!(
        metrics.contains("sluice_agent_bgp_session_state{peer=\"127.0.0.2\"} 6"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_agent_bgp_prefixes_received{peer=\"127.0.0.2\"} 1"));
}

/// A hand-driven peer: our own OPEN and UPDATE bytes, NOTIFICATIONs read
/// back.
struct RawPeer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    async fn connect(from: Ipv4Addr, to: SocketAddr) -> RawPeer {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from((from, 0))).unwrap();
            match sock.connect(to).await {
                Ok(s) => return RawPeer { s, buf: vec![] },
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("connecting to the speaker: {e}"),
            }
        }
    }

    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// The next message, or `None` once the speaker closed the connection.
    async fn next(&mut self, within: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(len)) = message::frame(&self.buf) {
                if self.buf.len() >= len {
                    let m: Vec<u8> = self.buf.drain(..len).collect();
                    return Some(decode(&m, true).unwrap());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .expect("the speaker said nothing in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until a NOTIFICATION; then the connection must close.
    async fn notification(&mut self, within: Duration) -> Notify {
        loop {
            match self.next(within).await {
                Some(Message::Notification(n)) => {
                    assert_eq!(
                        self.next(Duration::from_secs(5)).await,
                        None,
                        "closed after it"
                    );
                    return n;
                }
                Some(_) => continue,
                None => panic!("closed without a NOTIFICATION"),
            }
        }
    }

    /// OPEN, KEEPALIVE: Established (the speaker's routes then follow).
    async fn establish(from: Ipv4Addr, to: SocketAddr, hold: u16) -> RawPeer {
        let mut p = RawPeer::connect(from, to).await;
        p.send(&open(64512, hold, from)).await;
        let Some(Message::Open(_)) = p.next(Duration::from_secs(5)).await else {
            panic!("no OPEN from the speaker")
        };
        p.send(&message::encode_keepalive()).await;
        assert_eq!(
            p.next(Duration::from_secs(5)).await,
            Some(Message::Keepalive)
        );
        p
    }
}

fn open(asn: u32, hold: u16, id: Ipv4Addr) -> Vec<u8> {
    message::encode_open(&LocalOpen {
        asn,
        hold_time: hold,
        router_id: id,
        graceful_restart: Some(GracefulRestart {
            restarting: false,
            time: 120,
            ipv4_forwarding: Some(true),
        }),
    })
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A message from hex with its length field filled in.
fn msg(body: &str) -> Vec<u8> {
    let mut v = hex(&format!("ffffffffffffffffffffffffffffffff 0000 {body}"));
    let len = v.len() as u16;
    v[16..18].copy_from_slice(&len.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_silence_get_the_rfc_notification_and_spare_other_sessions() {
    let me = Ipv4Addr::new(127, 0, 0, 1);
    let port = free_port(me);
    let (bad, good) = (Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4));
    let status = Arc::new(Status::default());
    let (handle, _rx) = speaker::start(
        config(
            me,
            port,
            vec![peer(bad, 179, true), peer(good, 179, true)],
            90,
        ),
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(192, 168, 77, 1),
        status.clone(),
    )
    .await
    .unwrap();
    handle.send(Command::Announce(vec![net("10.77.1.0/24")]));
    let to = SocketAddr::from((me, port));
    let mut good_peer = RawPeer::establish(good, to, 90).await;

    // OPENs: version 3, a foreign AS, hold time 2, our own identifier.
    let cases: Vec<(Vec<u8>, (u8, u8))> = vec![
        (msg("01 03 fc00 005a 7f000003 00"), (2, 1)),
        (open(65001, 90, bad), (2, 2)),
        (msg("01 04 fc00 0002 7f000003 00"), (2, 6)),
        (open(64512, 90, Ipv4Addr::new(10, 0, 0, 1)), (2, 3)),
        // A header whose length is below the minimum: message header error.
        (
            msg("04").into_iter().take(16).chain([0, 18, 4]).collect(),
            (1, 2),
        ),
        // Not a BGP marker at all.
        (vec![0u8; 19], (1, 1)),
    ];
    for (bytes, want) in cases {
        let mut p = RawPeer::connect(bad, to).await;
        p.send(&bytes).await;
        let n = p.notification(Duration::from_secs(5)).await;
        assert_eq!((n.code, n.subcode), want, "{n}");
    }

    // UPDATEs in an Established session: a bad ORIGIN, ORIGIN flagged
    // optional, NEXT_HOP missing, attributes running past the message.
    let updates: Vec<(Vec<u8>, (u8, u8))> = vec![
        (msg("02 0000 0004 40010107 180a4d09"), (3, 6)),
        (msg("02 0000 0004 c0010100 180a4d09"), (3, 4)),
        (msg("02 0000 0007 40010100 400200 180a4d09"), (3, 3)),
        (msg("02 0000 0030 40010100 180a4d09"), (3, 1)),
    ];
    for (bytes, want) in updates {
        let mut p = RawPeer::establish(bad, to, 90).await;
        p.send(&bytes).await;
        let n = p.notification(Duration::from_secs(5)).await;
        assert_eq!((n.code, n.subcode), want, "{n}");
    }

    // A peer that goes silent: hold time 3, nothing more sent.
    let started = Instant::now();
    let mut p = RawPeer::establish(bad, to, 3).await;
    let n = p.notification(Duration::from_secs(10)).await;
    assert_eq!((n.code, n.subcode), (4, 0), "{n}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");

    // The other session never noticed: still Established, and it still
    // gets keepalives and our route.
    let st = status.bgp().unwrap();
    let g = st.peers.iter().find(|p| p.address == good).unwrap();
    assert_eq!(g.state, "Established", "{g:?}");
    assert_eq!(g.flaps, 0);
    let b = st.peers.iter().find(|p| p.address == bad).unwrap();
    assert_eq!(b.received.get("malformed"), Some(&8), "{b:?}");
    let mut got_route = false;
    while let Some(m) = good_peer.next(Duration::from_secs(1)).await {
        if let Message::Update(u) = m {
            got_route |= u.announced == vec![net("10.77.1.0/24")];
            if u.end_of_rib {
                break;
            }
        }
    }
    assert!(got_route);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &status.metrics.registry()).unwrap();
    for line in [
        "sluice_agent_bgp_notifications_sent_total{peer=\"127.0.0.3\",kind=\"3/6\"} 1",
        "sluice_agent_bgp_notifications_sent_total{peer=\"127.0.0.3\",kind=\"4/0\"} 1",
        "sluice_agent_bgp_session_state{peer=\"127.0.0.4\"} 6",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

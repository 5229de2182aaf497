//! Writes the seed corpus of the `bgp` target into `corpus/bgp/`: byte 0 is
//! the mode (see the target), then messages as BIRD and GoBGP send them.
//!   cargo run --manifest-path control/fuzz/Cargo.toml --example make_seeds

use sluice_bgp::message::{self, Encoder, GracefulRestart, LocalOpen, Notify};
use std::net::Ipv4Addr;

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/bgp");
    std::fs::create_dir_all(&dir)?;
    let enc = Encoder {
        local_asn: 64512,
        ibgp: true,
        asn4: true,
        next_hop: Ipv4Addr::new(192, 168, 77, 3),
    };
    let p = |s: &str| s.parse().unwrap();
    let open = message::encode_open(&LocalOpen {
        asn: 64512,
        hold_time: 240,
        router_id: Ipv4Addr::new(192, 168, 77, 3),
        graceful_restart: Some(GracefulRestart { restarting: true, time: 120, ipv4_forwarding: Some(true) }),
    });
    let announce = enc.announce(&[p("10.77.3.0/24"), p("10.77.4.0/24")]).remove(0);
    let withdraw = enc.withdraw(&[p("10.77.3.0/24")]).remove(0);
    let seeds: Vec<(&str, u8, Vec<Vec<u8>>)> = vec![
        ("open", 0, vec![open.clone(), message::encode_keepalive()]),
        ("update", 1, vec![announce.clone(), message::encode_end_of_rib()]),
        ("update_gr", 3, vec![announce.clone(), withdraw.clone(), message::encode_end_of_rib()]),
        ("refresh", 1, vec![message::encode_route_refresh(), message::encode_keepalive()]),
        ("notification", 1, vec![message::encode_notification(&Notify::new(6, 2, []))]),
        ("ebgp", 1, Encoder { ibgp: false, ..enc }.announce(&[p("10.77.5.0/24")])),
    ];
    for (name, mode, msgs) in seeds {
        let mut v = vec![mode];
        for m in msgs {
            v.extend(m);
        }
        std::fs::write(dir.join(name), v)?;
    }
    Ok(())
}

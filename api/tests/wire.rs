//! The wire format, byte for byte: every request as today's daemon accepts
//! it and every result as today's daemon writes it. docs/api.md shows these
//! same lines (checked below).

use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_api::*;
use std::net::Ipv4Addr;

/// One exchange: the request, its line, a response line.
struct Case {
    request: Request,
    line: &'static str,
    response: &'static str,
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

const STATS: &str = r#"{"version":1,"ok":true,"result":{"drops":{"arp_ignored":0,"arp_malformed":0,"arp_not_for_us":0,"blackhole":0,"eth_truncated":0,"frag_needed":0,"hairpin":0,"host_gw_source_mismatch":0,"inner_ipv4_malformed":0,"ipv4_bad_checksum":0,"ipv4_bad_header_len":0,"ipv4_bad_total_len":0,"ipv4_bad_version":0,"ipv4_martian":0,"ipv4_truncated":0,"l4_truncated":0,"neighbour_unresolved":0,"no_buffer":0,"no_route":3,"not_for_us":0,"port_down":0,"spoofed_source_ip":0,"spoofed_source_mac":1,"too_many_fragments":0,"ttl_exceeded":0,"tunnel_fragment":0,"tx_failed":0,"tx_list_full":0,"unknown_tunnel_source":0,"unsupported_ethertype":0,"vlan_tagged":0,"vxlan_bad_flags":0,"vxlan_inner_mac_mismatch":0,"vxlan_inner_not_ipv4":0,"vxlan_truncated":0,"vxlan_unknown_vni":0},"events":{"arp_replies":2,"delivered":895,"flow_cache_hits":1790,"flow_cache_misses":12,"fragmented":0,"fragments_created":0,"host_gw":0,"icmp_frag_needed":0,"icmp_rate_limited":0,"icmp_suppressed":0,"icmp_time_exceeded":0,"icmp_undeliverable":0,"ipip_decap":0,"ipip_encap":0,"to_host":0,"vxlan_decap":895,"vxlan_encap":901},"port_totals":{"rx_bytes":2545084,"rx_dropped":3,"rx_packets":1801,"tx_bytes":2544186,"tx_dropped":0,"tx_packets":1798},"ports":{"eth0":{"rx_bytes":1290480,"rx_dropped":2,"rx_packets":897,"tx_bytes":1298346,"tx_dropped":0,"tx_packets":903},"pod-a":{"rx_bytes":1254604,"rx_dropped":1,"rx_packets":904,"tx_bytes":1245840,"tx_dropped":0,"tx_packets":895}}}}"#;

const TRACE_FRAME: &str =
    "02000000000102000000010208004500002000014000401123ba0a0501020a05020703e81451000c00005a5a5a5a";

fn cases() -> Vec<Case> {
    vec![
        Case {
            request: Request::PortsList,
            line: r#"{"version":1,"op":"ports.list","args":null}"#,
            response: r#"{"version":1,"ok":true,"result":{"ports":[{"address":"192.168.50.1/24","id":0,"ip":null,"kind":"uplink","mac":"02:00:00:00:aa:01","mtu":1500,"name":"eth0"},{"address":null,"id":1,"ip":null,"kind":"host","mac":"02:00:00:00:ee:01","mtu":1500,"name":"host"},{"address":null,"id":2,"ip":"10.5.1.2","kind":"pod","mac":"02:00:00:00:01:02","mtu":1450,"name":"pod-a"}]}}"#,
        },
        Case {
            request: Request::PortsAdd(PortsAddArgs {
                ports: vec![PortConfig::pod(
                    "veth3f2a",
                    mac("0a:58:0a:05:01:09"),
                    Ipv4Addr::new(10, 5, 1, 9),
                    1450,
                )],
            }),
            line: r#"{"version":1,"op":"ports.add","args":{"ports":[{"address":null,"gateway":null,"ip":"10.5.1.9","kind":"pod","mac":"0a:58:0a:05:01:09","mtu":1450,"name":"veth3f2a","rx_mode":null}]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"added":1,"generation":12}}"#,
        },
        Case {
            request: Request::PortsRemove(PortsRemoveArgs {
                names: vec!["veth3f2a".into()],
            }),
            line: r#"{"version":1,"op":"ports.remove","args":{"names":["veth3f2a"]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":13,"removed":1}}"#,
        },
        Case {
            request: Request::RoutesList,
            line: r#"{"version":1,"op":"routes.list","args":null}"#,
            response: r#"{"version":1,"ok":true,"result":{"routes":[{"node":"192.168.50.2","prefix":"10.5.2.0/24","via":"vxlan","vtep_mac":"02:00:00:00:bb:02"},{"node":"192.168.50.3","prefix":"10.5.3.0/24","via":"ipip"},{"prefix":"10.5.9.0/24","via":"blackhole"},{"prefix":"0.0.0.0/0","via":"host"},{"port":"pod-a","prefix":"10.5.1.2/32","via":"pod"}]}}"#,
        },
        Case {
            request: Request::RoutesAdd(RoutesArgs {
                routes: vec![RouteConfig::vxlan(
                    net("10.5.2.0/24"),
                    Ipv4Addr::new(192, 168, 50, 2),
                    mac("02:00:00:00:bb:02"),
                )],
            }),
            line: r#"{"version":1,"op":"routes.add","args":{"routes":[{"node":"192.168.50.2","prefix":"10.5.2.0/24","via":"vxlan","vtep_mac":"02:00:00:00:bb:02"}]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":7,"routes":1}}"#,
        },
        Case {
            request: Request::RoutesReplace(RoutesArgs {
                routes: vec![
                    RouteConfig::to_node(
                        net("10.5.2.0/24"),
                        Via::Ipip,
                        Ipv4Addr::new(192, 168, 50, 2),
                    ),
                    RouteConfig::to_node(
                        net("10.5.3.0/24"),
                        Via::HostGw,
                        Ipv4Addr::new(192, 168, 50, 3),
                    ),
                    RouteConfig::new(net("10.5.9.0/24"), Via::Blackhole),
                ],
            }),
            line: r#"{"version":1,"op":"routes.replace","args":{"routes":[{"node":"192.168.50.2","prefix":"10.5.2.0/24","via":"ipip"},{"node":"192.168.50.3","prefix":"10.5.3.0/24","via":"host-gw"},{"prefix":"10.5.9.0/24","via":"blackhole"}]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":8,"routes":3}}"#,
        },
        Case {
            request: Request::RoutesRemove(RoutesRemoveArgs {
                prefixes: vec![net("10.5.3.0/24"), net("10.5.8.0/24")],
            }),
            line: r#"{"version":1,"op":"routes.remove","args":{"prefixes":["10.5.3.0/24","10.5.8.0/24"]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":9,"removed":1}}"#,
        },
        Case {
            request: Request::NeighboursList,
            line: r#"{"version":1,"op":"neighbours.list","args":null}"#,
            response: r#"{"version":1,"ok":true,"result":{"neighbours":[{"ip":"192.168.50.2","mac":"02:00:00:00:aa:02","source":"static"},{"ip":"192.168.50.254","mac":"02:00:00:00:aa:fe","source":"kernel"}]}}"#,
        },
        Case {
            request: Request::NeighboursSet(NeighboursSetArgs {
                neighbours: vec![NeighbourConfig::new(
                    Ipv4Addr::new(192, 168, 50, 6),
                    mac("02:00:00:00:aa:06"),
                )],
            }),
            line: r#"{"version":1,"op":"neighbours.set","args":{"neighbours":[{"ip":"192.168.50.6","mac":"02:00:00:00:aa:06"}]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":10}}"#,
        },
        Case {
            request: Request::NeighboursRemove(NeighboursRemoveArgs {
                ips: vec![Ipv4Addr::new(192, 168, 50, 6)],
            }),
            line: r#"{"version":1,"op":"neighbours.remove","args":{"ips":["192.168.50.6"]}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":11,"removed":1}}"#,
        },
        Case {
            request: Request::NodeGet,
            line: r#"{"version":1,"op":"node.get","args":null}"#,
            response: r#"{"version":1,"ok":true,"result":{"epoch":"1f3a-187c0e5d2a4b1c00.0","generation":12,"node":{"gateway_ip":null,"pod_network":"10.5.0.0/16","pod_subnet":"10.5.1.0/24","router_mac":"02:00:00:00:00:01"},"tunnel":{"vni":1,"vtep_mac":"02:00:00:00:bb:01","vxlan_port":8472},"workers":2}}"#,
        },
        Case {
            request: Request::NodeSet(NodeSetArgs {
                node: None,
                tunnel: Some(TunnelSettings {
                    vni: 42,
                    vxlan_port: 4789,
                    vtep_mac: None,
                }),
            }),
            line: r#"{"version":1,"op":"node.set","args":{"tunnel":{"vni":42,"vtep_mac":null,"vxlan_port":4789}}}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":14}}"#,
        },
        Case {
            request: Request::Stats,
            line: r#"{"version":1,"op":"stats","args":null}"#,
            response: STATS,
        },
        Case {
            request: Request::Flows,
            line: r#"{"version":1,"op":"flows","args":null}"#,
            response: r#"{"version":1,"ok":true,"result":{"flows":[{"action":"vxlan 192.168.50.2","dst":"10.5.2.7","dst_port":5201,"in_port":"pod-a","protocol":17,"src":"10.5.1.2","src_port":1000,"worker":0},{"action":"deliver pod-a","dst":"10.5.1.2","dst_port":1000,"in_port":"eth0","protocol":17,"src":"10.5.2.7","src_port":5201,"worker":1}],"generation":7}}"#,
        },
        Case {
            request: Request::Trace(TraceArgs {
                port: "pod-a".into(),
                frame: TRACE_FRAME.into(),
            }),
            line: r#"{"version":1,"op":"trace","args":{"frame":"02000000000102000000010208004500002000014000401123ba0a0501020a05020703e81451000c00005a5a5a5a","port":"pod-a"}}"#,
            response: r#"{"version":1,"ok":true,"result":{"drop":null,"events":{"flow_cache_misses":1,"vxlan_encap":1},"input":{"port":"pod-a","summary":"02:00:00:00:01:02 > 02:00:00:00:00:01 10.5.1.2 > 10.5.2.7 ttl 64 udp 1000 > 5201"},"outputs":[{"frame":"02000000aa0202000000aa010800450000520000400040115547c0a83201c0a83202d0f32118003e0000080000000000010002000000bb0202000000bb01080045000020000140003f1124ba0a0501020a05020703e81451000c00005a5a5a5a","port":"eth0","summary":"02:00:00:00:aa:01 > 02:00:00:00:aa:02 192.168.50.1 > 192.168.50.2 ttl 64 udp 53491 > 8472 vxlan vni 1 [02:00:00:00:bb:01 > 02:00:00:00:bb:02 10.5.1.2 > 10.5.2.7 ttl 63 udp 1000 > 5201]"}],"route":{"node":"192.168.50.2","prefix":"10.5.2.0/24","via":"vxlan","vtep_mac":"02:00:00:00:bb:02"}}}"#,
        },
        Case {
            request: Request::Reload,
            line: r#"{"version":1,"op":"reload","args":null}"#,
            response: r#"{"version":1,"ok":true,"result":{"generation":15,"neighbours":5,"routes":7}}"#,
        },
        Case {
            request: Request::CaptureStart(CaptureStartArgs {
                filter: Some("icmp and host 10.5.1.3".into()),
                count: Some(10),
                ..CaptureStartArgs::new("pod-a")
            }),
            line: r#"{"version":1,"op":"capture.start","args":{"count":10,"filter":"icmp and host 10.5.1.3","port":"pod-a"}}"#,
            response: r#"{"version":1,"ok":true,"result":{"id":1,"port":"pod-a","snaplen":10240}}"#,
        },
        Case {
            request: Request::CaptureRead(CaptureReadArgs { id: 1, max: None }),
            line: r#"{"version":1,"op":"capture.read","args":{"id":1}}"#,
            response: r#"{"version":1,"ok":true,"result":{"captured":1,"done":false,"dropped":0,"frames":[{"data":"020000000001020000000102080045000020000140004001","direction":"rx","orig_len":98,"port":"pod-a","ts_ns":1795927337123456789}]}}"#,
        },
        Case {
            request: Request::CaptureStop(CaptureStopArgs { id: 1 }),
            line: r#"{"version":1,"op":"capture.stop","args":{"id":1}}"#,
            response: r#"{"version":1,"ok":true,"result":{"captured":10,"dropped":0}}"#,
        },
        Case {
            request: Request::Upgrade(UpgradeArgs {
                binary: Some("/usr/local/bin/sluiced".into()),
            }),
            line: r#"{"version":1,"op":"upgrade","args":{"binary":"/usr/local/bin/sluiced"}}"#,
            response: r#"{"version":1,"ok":true,"result":{"binary":"/usr/local/bin/sluiced","from_pid":4101,"pid":4187}}"#,
        },
    ]
}

/// Parses `value` as `T` and writes it back as a response line.
fn again<T: DeserializeOwned + Serialize>(r: Response) -> String {
    let typed: T = r.into_result().expect("the result reads as its type");
    Response::success(&typed).to_line()
}

/// Reads a response line with the result type of `op` and writes it back.
pub fn typed_round_trip(op: &str, line: &str) -> String {
    let r = Response::from_line(line).expect("a response line");
    if !r.ok {
        let e = r.error.clone().expect("an error");
        return Response::failure(e).to_line();
    }
    match op {
        "ports.list" => again::<PortList>(r),
        "ports.add" => again::<PortsAdded>(r),
        "ports.remove" | "routes.remove" | "neighbours.remove" => again::<Removed>(r),
        "routes.list" => again::<RouteList>(r),
        "routes.add" | "routes.replace" => again::<RoutesChanged>(r),
        "neighbours.list" => again::<NeighbourList>(r),
        "neighbours.set" | "node.set" => again::<Generation>(r),
        "node.get" => again::<NodeInfo>(r),
        "stats" => again::<Stats>(r),
        "flows" => again::<FlowList>(r),
        "trace" => again::<Trace>(r),
        "reload" => again::<Reloaded>(r),
        "capture.start" => again::<CaptureStarted>(r),
        "capture.read" => again::<CaptureFrames>(r),
        "capture.stop" => again::<CaptureStopped>(r),
        "upgrade" => again::<Upgrading>(r),
        other => panic!("no result type for {other}"),
    }
}

#[test]
fn every_op_has_a_case() {
    let ops: Vec<&str> = cases().iter().map(|c| c.request.op()).collect();
    assert_eq!(ops, Request::OPS);
}

#[test]
fn requests_write_and_read_todays_lines() {
    for c in cases() {
        assert_eq!(c.request.to_line(), c.line, "{}", c.request.op());
        assert_eq!(serde_json::to_string(&c.request).unwrap(), c.line);
        assert_eq!(serde_json::from_str::<Request>(c.line).unwrap(), c.request);
        assert_eq!(Request::from_line(c.line).unwrap(), c.request, "{}", c.line);
        assert_eq!(
            Request::from_line(&format!("{}\r\n", c.line)).unwrap(),
            c.request
        );
    }
}

#[test]
fn results_read_todays_lines_and_write_them_back() {
    for c in cases() {
        assert_eq!(
            typed_round_trip(c.request.op(), c.response),
            c.response,
            "{}",
            c.request.op()
        );
        // And the envelope alone, untyped.
        assert_eq!(
            Response::from_line(c.response).unwrap().to_line(),
            c.response
        );
    }
}

/// What clients send today, in other key orders or with defaults left out,
/// reads the same.
#[test]
fn todays_clients_lines_read() {
    // sluicectl port add (json! objects, no address/gateway/rx_mode).
    let r = Request::from_line(r#"{"version":1,"op":"ports.add","args":{"ports":[{"ip":"10.5.1.9","kind":"pod","mac":"0a:58:0a:05:01:09","mtu":1450,"name":"veth3f2a"}]}}"#).unwrap();
    assert_eq!(r, cases()[1].request);
    // The daemon's own doc example, struct order.
    let r = Request::from_line(r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.2.0/24","via":"vxlan","node":"192.168.50.2","vtep_mac":"02:00:00:00:bb:02"}]}}"#).unwrap();
    assert_eq!(r, cases()[4].request);
    // node.set without the defaulted vtep_mac; args left out; args ignored
    // by operations without arguments.
    let r = Request::from_line(
        r#"{"version":1,"op":"node.set","args":{"tunnel":{"vni":42,"vxlan_port":4789}}}"#,
    )
    .unwrap();
    assert_eq!(r, cases()[11].request);
    assert_eq!(
        Request::from_line(r#"{"version":1,"op":"reload"}"#).unwrap(),
        Request::Reload
    );
    assert_eq!(
        Request::from_line(r#"{"version":1,"op":"stats","args":{"x":1}}"#).unwrap(),
        Request::Stats
    );
    // Trace with spaced or coloned hex.
    let Request::Trace(t) = Request::from_line(
        r#"{"version":1,"op":"trace","args":{"port":"pod-a","frame":"02:00 00"}}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(t.frame_bytes().unwrap(), vec![2, 0, 0]);
}

fn field_of(line: &str) -> (Option<String>, String) {
    let e = Request::from_line(line).expect_err(line);
    (e.field, e.message)
}

#[test]
fn errors_name_the_field() {
    let (f, m) = field_of("{not json");
    assert_eq!(f, None);
    assert_eq!(m, "not a request: key must be a string at line 1 column 2");
    let (f, m) = field_of(r#"{"op":"stats"}"#);
    assert_eq!(f.as_deref(), Some("version"));
    assert!(
        m.starts_with("not a request: missing field `version`"),
        "{m}"
    );
    let (f, _) = field_of(r#"{"version":1,"op":"stats","argz":{}}"#);
    assert_eq!(f.as_deref(), Some("argz"));
    let (f, m) = field_of(r#"{"version":2,"op":"stats"}"#);
    assert_eq!(f.as_deref(), Some("version"));
    assert_eq!(m, "version 2 is not spoken here; this sluiced speaks 1");
    let (f, m) = field_of(r#"{"version":1,"op":"routes.explode"}"#);
    assert_eq!(f.as_deref(), Some("op"));
    assert_eq!(m, "unknown operation `routes.explode`; see docs/api.md");
    let (f, m) = field_of(r#"{"version":1,"op":"routes.add","args":{"routez":[]}}"#);
    assert_eq!(f.as_deref(), Some("args.routez"));
    assert_eq!(m, "unknown field `routez`, expected `routes`");
    let (f, m) = field_of(r#"{"version":1,"op":"routes.add"}"#);
    assert_eq!(f.as_deref(), Some("args.routes"));
    assert_eq!(m, "missing field `routes`");
    let (f, _) = field_of(r#"{"version":1,"op":"routes.add","args":[]}"#);
    assert_eq!(f.as_deref(), Some("args"));
    let (f, _) = field_of(r#"{"version":1,"op":"routes.add","args":{"routes":5}}"#);
    assert_eq!(f.as_deref(), Some("args.routes"));
    // Inside a list: the entry, and the entry's field.
    let (f, m) = field_of(
        r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.7.1/24","via":"host"}]}}"#,
    );
    assert_eq!(f.as_deref(), Some("args.routes[0].prefix"));
    assert!(m.contains("host bits"), "{m}");
    let (f, m) = field_of(
        r#"{"version":1,"op":"routes.replace","args":{"routes":[{"prefix":"10.5.7.0/24","via":"host"},{"prefix":"10.5.8.0/24","via":"wormhole"}]}}"#,
    );
    assert_eq!(f.as_deref(), Some("args.routes[1].via"));
    assert!(m.starts_with("unknown variant `wormhole`"), "{m}");
    let (f, _) = field_of(
        r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.7.0/24","via":"host","colour":"red"}]}}"#,
    );
    assert_eq!(f.as_deref(), Some("args.routes[0].colour"));
    let (f, _) =
        field_of(r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.7.0/24"}]}}"#);
    assert_eq!(f.as_deref(), Some("args.routes[0].via"));
    let (f, _) = field_of(
        r#"{"version":1,"op":"routes.remove","args":{"prefixes":["10.5.7.0/24","10.5.7.0"]}}"#,
    );
    assert_eq!(f.as_deref(), Some("args.prefixes[1]"));
    let (f, _) = field_of(
        r#"{"version":1,"op":"neighbours.set","args":{"neighbours":[{"ip":"192.168.50.9","mac":"02:00"}]}}"#,
    );
    assert_eq!(f.as_deref(), Some("args.neighbours[0].mac"));
    let (f, _) = field_of(r#"{"version":1,"op":"neighbours.remove","args":{"ips":["x"]}}"#);
    assert_eq!(f.as_deref(), Some("args.ips[0]"));
    let (f, _) = field_of(
        r#"{"version":1,"op":"ports.add","args":{"ports":[{"name":"v","kind":"pod","mac":"02:00:00:00:01:09","ip":"10.5.1.9","mtu":70000}]}}"#,
    );
    assert_eq!(f.as_deref(), Some("args.ports[0].mtu"));
    let (f, _) = field_of(r#"{"version":1,"op":"ports.remove","args":{"names":[1]}}"#);
    assert_eq!(f.as_deref(), Some("args.names[0]"));
    let (f, _) =
        field_of(r#"{"version":1,"op":"node.set","args":{"node":{"pod_network":"10.5.0.0/16"}}}"#);
    assert_eq!(f.as_deref(), Some("args.node.pod_subnet"));
    let (f, _) = field_of(r#"{"version":1,"op":"node.set","args":{"tunnel":{"vni":-1}}}"#);
    assert_eq!(f.as_deref(), Some("args.tunnel.vni"));
    let (f, _) = field_of(r#"{"version":1,"op":"trace","args":{"port":"pod-a"}}"#);
    assert_eq!(f.as_deref(), Some("args.frame"));
    let (f, _) = field_of(r#"{"version":1,"op":"trace","args":{"port":1,"frame":"00"}}"#);
    assert_eq!(f.as_deref(), Some("args.port"));
}

#[test]
fn refusals_and_their_lines() {
    let line = r#"{"version":1,"ok":false,"error":{"field":"routes[1].vtep_mac","message":"via vxlan needs the remote VTEP MAC"}}"#;
    let r = Response::from_line(line).unwrap();
    assert_eq!(
        r.clone().into_result::<RoutesChanged>(),
        Err(ResultError::Api(ApiError::at(
            "routes[1].vtep_mac",
            "via vxlan needs the remote VTEP MAC"
        )))
    );
    assert_eq!(Response::failure(r.error.unwrap()).to_line(), line);
    let general = r#"{"version":1,"ok":false,"error":{"message":"this sluiced was started without a configuration file"}}"#;
    assert_eq!(Response::from_line(general).unwrap().to_line(), general);
    let odd = Response::from_line(r#"{"version":1,"ok":false}"#).unwrap();
    assert!(matches!(
        odd.into_result::<Value>(),
        Err(ResultError::Malformed(_))
    ));
    let wrong =
        Response::from_line(r#"{"version":1,"ok":true,"result":{"generation":"x"}}"#).unwrap();
    assert!(matches!(
        wrong.into_result::<Generation>(),
        Err(ResultError::Malformed(_))
    ));
}

use serde_json::Value;

#[test]
fn respond_parses_dispatches_and_wraps() {
    let r = respond(cases()[4].line, |req| match req {
        Request::RoutesAdd(a) => Ok(Reply::from(RoutesChanged {
            routes: a.routes.len(),
            generation: 7,
        })),
        _ => Err(ApiError::general("unexpected")),
    });
    assert_eq!(r.to_line(), cases()[4].response);
    let r = respond(
        r#"{"version":1,"op":"routes.add","args":{"routez":[]}}"#,
        |_| -> Result<Reply, ApiError> { panic!("not dispatched") },
    );
    assert_eq!(
        r.to_line(),
        r#"{"version":1,"ok":false,"error":{"field":"args.routez","message":"unknown field `routez`, expected `routes`"}}"#
    );
    // Results written from typed values have today's sorted keys.
    let stats: Stats = Response::from_line(STATS).unwrap().into_result().unwrap();
    assert_eq!(
        Response::success(&Reply::Stats(stats.clone())).to_line(),
        STATS
    );
    assert_eq!(stats.drop_count("no_route"), 3);
    assert_eq!(stats.total_drops(), 4);
    assert_eq!(stats.event_count("vxlan_encap"), 901);
    assert_eq!(stats.nonzero_drops().count(), 2);
    assert_eq!(stats.nonzero_events().count(), 6);
    assert_eq!(stats.ports["eth0"].rx_dropped, 2);
}

#[test]
fn trace_outputs_decode() {
    let t: Trace = Response::from_line(cases()[14].response)
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(t.route.unwrap().via, Via::Vxlan);
    let out = t.outputs[0].frame_bytes().unwrap();
    assert_eq!(out.len(), 96);
    let input = sluice_api::request::parse_hex(TRACE_FRAME).unwrap();
    // The pod's UDP datagram, unchanged inside the VXLAN packet.
    assert_eq!(out[out.len() - 12..], input[input.len() - 12..]);
}

/// docs/api.md: every operation has a section with an example exchange,
/// every example line is canonical and reads as its operation's types, and
/// every fixture above appears in it.
#[test]
fn the_reference_is_true() {
    let doc = include_str!("../../docs/api.md");
    let mut op: Option<String> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    for l in doc.lines() {
        if let Some(h) = l.strip_prefix("### `").and_then(|h| h.strip_suffix('`')) {
            op = Some(h.to_string());
            seen.push(h.to_string());
            continue;
        }
        if let Some(req) = l.strip_prefix("→ ") {
            let parsed = Request::from_line(req);
            if let Ok(r) = &parsed {
                assert_eq!(r.to_line(), req, "a canonical request line");
                if let Some(o) = &op {
                    assert_eq!(r.op(), o, "{req} under {o}");
                }
                pending = Some(r.op().to_string());
            } else {
                pending = None;
            }
        } else if let Some(resp) = l.strip_prefix("← ") {
            let o = pending.clone().or(op.clone()).unwrap_or_default();
            if o.is_empty() {
                let r = Response::from_line(resp).expect(resp);
                assert_eq!(r.to_line(), resp);
            } else {
                assert_eq!(typed_round_trip(&o, resp), resp, "a canonical {o} response");
            }
        }
    }
    assert_eq!(seen, Request::OPS, "one section per operation, in order");
    for c in cases() {
        assert!(
            doc.contains(&format!("→ {}", c.line)),
            "docs/api.md lacks {}",
            c.line
        );
        assert!(
            doc.contains(&format!("← {}", c.response)),
            "docs/api.md lacks {}",
            c.response
        );
    }
}

//! The client against a socket in a temporary directory that answers
//! canned lines.

use sluice_api::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A private directory for one test's socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "sluice-api-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves one connection: reads a line, checks it is `expect`, writes
/// `answer` (nothing if `None`, and then holds the connection for `hold`).
fn serve_once(
    dir: &TempDir,
    expect: &'static str,
    answer: Option<&'static str>,
    hold: Duration,
) -> (Client, JoinHandle<()>) {
    let path = dir.0.join("sluiced.sock");
    let l = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut out = s.try_clone().unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line, format!("{expect}\n"));
        match answer {
            Some(a) => out.write_all(a.as_bytes()).unwrap(),
            None => std::thread::sleep(hold),
        }
    });
    (Client::new(path), server)
}

const ROUTES: &str = r#"{"version":1,"ok":true,"result":{"routes":[{"node":"192.168.50.2","prefix":"10.5.2.0/24","via":"vxlan","vtep_mac":"02:00:00:00:bb:02"},{"port":"pod-a","prefix":"10.5.1.2/32","via":"pod"}]}}
"#;

#[test]
fn a_typed_call() {
    let dir = TempDir::new();
    let (c, server) = serve_once(
        &dir,
        r#"{"version":1,"op":"routes.list","args":null}"#,
        Some(ROUTES),
        Duration::ZERO,
    );
    let r = c.routes().unwrap();
    server.join().unwrap();
    assert_eq!(r.routes.len(), 2);
    assert_eq!(r.routes[0].via, Via::Vxlan);
    assert_eq!(r.routes[1].port.as_deref(), Some("pod-a"));
}

#[test]
fn a_json_call() {
    let dir = TempDir::new();
    let (c, server) = serve_once(
        &dir,
        r#"{"version":1,"op":"routes.list","args":null}"#,
        Some(ROUTES),
        Duration::ZERO,
    );
    let v = c.call(&Request::RoutesList).unwrap();
    server.join().unwrap();
    assert_eq!(v["routes"][1]["prefix"], "10.5.1.2/32");
}

#[test]
fn typed_methods_send_typed_args() {
    let dir = TempDir::new();
    let (c, server) = serve_once(
        &dir,
        r#"{"version":1,"op":"ports.add","args":{"ports":[{"address":null,"gateway":null,"ip":"10.5.1.9","kind":"pod","mac":"0a:58:0a:05:01:09","mtu":1450,"name":"veth3f2a","rx_mode":null}]}}"#,
        Some("{\"version\":1,\"ok\":true,\"result\":{\"added\":1,\"generation\":12}}\n"),
        Duration::ZERO,
    );
    let r = c
        .add_ports([PortConfig::pod(
            "veth3f2a",
            "0a:58:0a:05:01:09".parse().unwrap(),
            "10.5.1.9".parse().unwrap(),
            1450,
        )])
        .unwrap();
    server.join().unwrap();
    assert_eq!(
        r,
        PortsAdded {
            added: 1,
            generation: 12
        }
    );
}

#[test]
fn a_refusal_is_the_daemons_error() {
    let dir = TempDir::new();
    let (c, server) = serve_once(
        &dir,
        r#"{"version":1,"op":"routes.add","args":{"routes":[{"node":"192.168.50.8","prefix":"10.5.8.0/24","via":"vxlan"}]}}"#,
        Some("{\"version\":1,\"ok\":false,\"error\":{\"field\":\"routes[0].vtep_mac\",\"message\":\"via vxlan needs the remote VTEP MAC\"}}\n"),
        Duration::ZERO,
    );
    let mut r = RouteConfig::new("10.5.8.0/24".parse().unwrap(), Via::Vxlan);
    r.node = Some("192.168.50.8".parse().unwrap());
    let e = c.add_routes(vec![r]).unwrap_err();
    server.join().unwrap();
    assert_eq!(
        e.api_error(),
        Some(&ApiError::at(
            "routes[0].vtep_mac",
            "via vxlan needs the remote VTEP MAC"
        ))
    );
    assert_eq!(
        e.to_string(),
        "routes[0].vtep_mac: via vxlan needs the remote VTEP MAC"
    );
}

fn protocol_error(answer: &'static str) -> String {
    let dir = TempDir::new();
    let (c, server) = serve_once(
        &dir,
        r#"{"version":1,"op":"stats","args":null}"#,
        Some(answer),
        Duration::ZERO,
    );
    let e = c.stats().unwrap_err();
    server.join().unwrap();
    assert!(matches!(e, ClientError::Protocol { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn bad_answers_are_protocol_errors() {
    let m = protocol_error("hello\n");
    assert!(m.contains("bad response"), "{m}");
    let m = protocol_error("{\"version\":2,\"ok\":true,\"result\":{}}\n");
    assert!(m.contains("version 2"), "{m}");
    let m = protocol_error("{\"version\":1,\"ok\":true,\"result\":{\"drops\":7}}\n");
    assert!(m.contains("stats: unexpected result"), "{m}");
    let m = protocol_error("{\"version\":1,\"ok\":false}\n");
    assert!(m.contains("without an error"), "{m}");
    let m = protocol_error("");
    assert!(m.contains("without answering"), "{m}");
}

#[test]
fn no_daemon_is_an_io_error() {
    let dir = TempDir::new();
    let c = Client::new(dir.0.join("nobody.sock"));
    let e = c.node().unwrap_err();
    match &e {
        ClientError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("nobody.sock"), "{e}");
}

#[test]
fn a_silent_daemon_times_out() {
    let dir = TempDir::new();
    let (c, server) = serve_once(
        &dir,
        r#"{"version":1,"op":"reload","args":null}"#,
        None,
        Duration::from_millis(500),
    );
    let c = c.with_timeout(Duration::from_millis(50));
    let e = c.reload().unwrap_err();
    server.join().unwrap();
    match e {
        ClientError::Io { source, .. } => assert!(matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_default_socket() {
    assert_eq!(
        Client::default().path(),
        std::path::Path::new("/run/sluice/sluiced.sock")
    );
    assert_eq!(DEFAULT_SOCKET, "/run/sluice/sluiced.sock");
    assert_eq!(VERSION, 1);
}

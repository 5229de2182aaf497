//! The control API's socket server: one JSON request per line on a 0600
//! Unix socket, answered by [`crate::api::respond`].
//!
//! No client can starve another or the daemon:
//! - at most [`ServerLimits::connections`] connections at once; one more is
//!   told so in an error response and closed;
//! - a request line is bounded ([`ServerLimits::request_bytes`]): the bytes
//!   are counted as they arrive, before anything is parsed, and a longer
//!   line gets an error response naming the limit, and the connection is
//!   closed (memory per connection never exceeds the limit);
//! - a request must arrive whole within [`ServerLimits::request_deadline`]
//!   of its first byte; pauses inside it are fine (bytes received are kept
//!   across read timeouts), a line that never ends is cut off;
//! - a response must be taken within the same deadline (write timeout);
//! - an idle connection is kept until the client closes it or the daemon
//!   stops: it costs a thread parked in `read`, counted in the limit.
//!
//! The accept loop never blocks on a client: each connection has its own
//! thread, and shutdown waits for none of them.

use crate::api::{respond, Control, Response, VERSION};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once.
    pub connections: usize,
    /// Longest request line, newline excluded.
    pub request_bytes: usize,
    /// Time from a request's first byte to its newline, and for a response
    /// to be taken.
    pub request_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            connections: 32,
            request_bytes: 16 << 20,
            request_deadline: Duration::from_secs(10),
        }
    }
}

/// How often a connection thread wakes to check the deadline and `stop`.
const TICK: Duration = Duration::from_millis(100);

/// Binds the API socket: creates its directory, refuses if another daemon
/// answers on it, replaces a stale one, and sets mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another sluiced answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves the API until `stop`; removes the socket file on the way out.
pub fn serve(
    listener: UnixListener,
    path: PathBuf,
    control: Arc<Mutex<Control>>,
    stop: Arc<AtomicBool>,
    limits: ServerLimits,
) {
    // The accept blocks, so a client is served the moment it connects (a
    // polling accept cost every request up to one poll interval). Shutdown
    // wakes it with a connection of its own.
    let _ = listener.set_nonblocking(false);
    let waker = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::Builder::new()
            .name("sluice-api-stop".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK.min(Duration::from_millis(50)));
                }
                let _ = UnixStream::connect(&path);
            })
    };
    if waker.is_err() {
        // No thread to wake it: poll instead.
        let _ = listener.set_nonblocking(true);
    }
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok(_) if stop.load(Ordering::Relaxed) => break,
            Ok((mut stream, _)) => {
                if open.load(Ordering::Acquire) >= limits.connections {
                    let _ = stream.set_write_timeout(Some(TICK));
                    let msg = format!(
                        "too many connections: sluiced serves {} at once; try again",
                        limits.connections
                    );
                    let _ = write_response(&mut stream, &error_response(&msg));
                    continue;
                }
                open.fetch_add(1, Ordering::AcqRel);
                let (control, stop, open2) = (control.clone(), stop.clone(), open.clone());
                let spawned = std::thread::Builder::new()
                    .name("sluice-api-conn".into())
                    .spawn(move || {
                        connection(stream, &control, &stop, limits);
                        open2.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
            // Out of descriptors or the like: back off a little.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = std::fs::remove_file(&path);
    if let Ok(w) = waker {
        let _ = w.join();
    }
}

fn error_response(message: &str) -> Response {
    Response {
        version: VERSION,
        ok: false,
        result: None,
        error: Some(crate::api::ApiError {
            field: None,
            message: message.into(),
        }),
    }
}

fn write_response(out: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(resp).expect("responses serialize");
    text.push('\n');
    out.write_all(text.as_bytes())
}

/// Serves one connection: reads lines within the limits, answers each.
fn connection(
    mut stream: UnixStream,
    control: &Mutex<Control>,
    stop: &AtomicBool,
    limits: ServerLimits,
) {
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = stream.set_write_timeout(Some(limits.request_deadline));
    let mut pending: Vec<u8> = Vec::new();
    let mut started: Option<Instant> = None;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        // Answer every whole line already received.
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            started = (!pending.is_empty()).then(Instant::now);
            let resp = match std::str::from_utf8(&line[..nl]) {
                Ok(text) => respond(control, text.trim_end()),
                Err(_) => error_response("not a request: the line is not UTF-8"),
            };
            if write_response(&mut stream, &resp).is_err() {
                return;
            }
        }
        if pending.len() > limits.request_bytes {
            let msg = format!(
                "request longer than {} bytes without a newline; the connection is closed",
                limits.request_bytes
            );
            let _ = write_response(&mut stream, &error_response(&msg));
            return;
        }
        if started.is_some_and(|t| t.elapsed() > limits.request_deadline) {
            let msg = format!(
                "request not completed within {:?} of its first byte; the connection is closed",
                limits.request_deadline
            );
            let _ = write_response(&mut stream, &error_response(&msg));
            return;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Never read past the limit (plus one byte to detect it).
        let room = (limits.request_bytes + 1 - pending.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return,
            Ok(n) => {
                if pending.is_empty() {
                    started = Some(Instant::now());
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::counters::WorkerCounters;
    use crate::craft;
    use crate::tables::{Tables, TablesHandle};
    use std::io::{BufRead, BufReader};

    struct Server {
        path: PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn control() -> Arc<Mutex<Control>> {
        let cfg = NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap();
        let handle = Arc::new(TablesHandle::new(Tables::from_config(&cfg).unwrap()));
        Arc::new(Mutex::new(Control::new(
            cfg,
            handle,
            vec![Arc::new(WorkerCounters::new())],
        )))
    }

    fn server(limits: ServerLimits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let control = control();
        let listener = bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (path.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(listener, p, control, s, limits));
        Server {
            path,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn read_response(s: &UnixStream) -> Response {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn connect(path: &Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    const STATS: &[u8] = b"{\"version\":1,\"op\":\"stats\"}\n";

    #[test]
    fn a_request_with_a_pause_inside_it_is_answered() {
        let srv = server(ServerLimits::default());
        let mut s = connect(&srv.path);
        s.write_all(&STATS[..10]).unwrap();
        // Longer than a read timeout: the first half must be kept.
        std::thread::sleep(Duration::from_millis(700));
        s.write_all(&STATS[10..]).unwrap();
        let r = read_response(&s);
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn a_line_past_the_limit_is_refused_and_the_connection_closed() {
        let limits = ServerLimits {
            request_bytes: 4096,
            ..Default::default()
        };
        let srv = server(limits);
        let mut s = connect(&srv.path);
        // Stream bytes without a newline: the server must stop reading at
        // the limit, answer and close, not buffer what follows.
        let junk = vec![b'x'; 1024];
        let mut sent = 0;
        while sent < 1 << 20 {
            if s.write_all(&junk).is_err() {
                break;
            }
            sent += junk.len();
        }
        let r = read_response(&s);
        assert!(!r.ok);
        let msg = r.error.unwrap().message;
        assert!(msg.contains("longer than 4096 bytes"), "{msg}");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "closed after the error");
        assert!(
            sent < 1 << 20,
            "the server stopped taking bytes ({sent} sent)"
        );
    }

    #[test]
    fn a_request_that_never_ends_is_cut_at_its_deadline() {
        let limits = ServerLimits {
            request_deadline: Duration::from_millis(300),
            ..Default::default()
        };
        let srv = server(limits);
        let mut s = connect(&srv.path);
        let t0 = Instant::now();
        s.write_all(b"{\"version\":1,").unwrap();
        let r = read_response(&s);
        assert!(
            r.error.unwrap().message.contains("not completed within"),
            "cut off"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Another client is served meanwhile and after.
        let mut other = connect(&srv.path);
        other.write_all(STATS).unwrap();
        assert!(read_response(&other).ok);
    }

    #[test]
    fn connections_past_the_limit_are_told_so_and_the_others_keep_working() {
        let limits = ServerLimits {
            connections: 4,
            ..Default::default()
        };
        let srv = server(limits);
        let mut held: Vec<UnixStream> = Vec::new();
        for _ in 0..4 {
            let mut s = connect(&srv.path);
            // A round trip makes sure the server counted it.
            s.write_all(STATS).unwrap();
            assert!(read_response(&s).ok);
            held.push(s);
        }
        let extra = connect(&srv.path);
        let r = read_response(&extra);
        assert!(
            r.error.unwrap().message.contains("too many connections"),
            "refused with a reason"
        );
        for s in &mut held {
            s.write_all(STATS).unwrap();
            assert!(read_response(s).ok, "held connections still served");
        }
        drop(held);
        // Slots come back once clients leave.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = connect(&srv.path);
            s.write_all(STATS).unwrap();
            if read_response(&s).ok {
                break;
            }
            assert!(Instant::now() < deadline, "slots freed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn the_socket_is_private_and_a_second_daemon_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/sluiced.sock");
        let l = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        drop(l);
        bind(&path).expect("a stale socket file is replaced");
    }

    #[test]
    fn a_client_round_trip_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let c = control();
        let server = {
            let (path, c, stop) = (path.clone(), c.clone(), stop.clone());
            std::thread::spawn(move || serve(l, path, c, stop, ServerLimits::default()))
        };
        let client = sluice_api::Client::new(&path);
        let routes = client.routes().unwrap().routes.len();
        assert_eq!(routes, 7 + 2, "seven configured routes and two pods' /32s");
        let stats = client.stats().unwrap();
        assert_eq!(stats.drops.get("spoofed_source_ip"), Some(&0));
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        assert!(!path.exists(), "the socket is removed on shutdown");
    }
}

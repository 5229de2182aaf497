//! A throwaway single-member etcd for tests.
//!
//! [`Etcd::start`] runs Debian's `etcd` (package `etcd-server`, installed by
//! `scripts/test.sh`) on 127.0.0.1 with free ports and a data directory in a
//! temporary directory, and waits until it reports healthy. [`Etcd::stop`]
//! and [`Etcd::restart`] take it down and bring it back on the same data and
//! ports (outage tests). The process is killed by its PID when the guard is
//! dropped, also when a test fails; its log is printed if the test panics.
//!
//! A missing `etcd` binary fails the test with a message saying what to
//! install: the tests never skip silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_control::store::etcd::EtcdConfig;

/// How long etcd may take to become healthy.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A running (or stopped) etcd owned by one test.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    binary: PathBuf,
    dir: tempfile::TempDir,
    name: String,
    client_port: u16,
    peer_port: u16,
}

/// The etcd binary: `/usr/bin/etcd`, else `etcd` on `PATH`; panics with
/// what to install when there is none.
pub fn etcd_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.is_file() {
        return debian;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("etcd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "etcd not found (/usr/bin/etcd or on PATH): these tests need a real etcd; \
         install Debian's etcd-server (`apt-get install etcd-server`; scripts/test.sh does)"
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Etcd {
    /// Starts a fresh etcd and waits until it is healthy.
    pub fn start() -> Etcd {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let binary = etcd_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!(
            "sluice-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        let mut etcd = Etcd {
            child: None,
            binary,
            dir,
            name,
            client_port,
            peer_port,
        };
        etcd.spawn();
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A store configuration for this etcd (short timeouts for tests).
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            ..EtcdConfig::default()
        }
    }

    /// Kills etcd (SIGKILL, by PID) and reaps it; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes etcd (SIGSTOP by PID): connections stay open but nothing
    /// answers, like a hung or partitioned server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws etcd after [`Etcd::pause`] (SIGCONT by PID).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("etcd is running");
        let status = Command::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {}: {status}", child.id());
    }

    /// Starts etcd again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // etcd 3.4 refuses to run on architectures other than amd64 (and
        // arm64 in later releases) unless told to.
        if std::env::consts::ARCH != "x86_64" {
            cmd.env(
                "ETCD_UNSUPPORTED_ARCH",
                std::env::consts::ARCH.replace("aarch64", "arm64"),
            );
        }
        let child = cmd.spawn().expect("spawn etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    /// Polls `GET /health` on the client port until etcd says it is healthy.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd exited ({status}) during start:\n{}", self.log());
                }
            }
            if self.healthy() {
                return;
            }
            if Instant::now() > deadline {
                panic!("etcd not healthy after {START_LIMIT:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- etcd log ({}) ---\n{}", self.name, self.log());
        }
    }
}

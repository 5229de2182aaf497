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
    metrics_port: u16,
    tls: bool,
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

impl Etcd {
    /// Starts a fresh etcd and waits until it is healthy.
    pub fn start() -> Etcd {
        Etcd::start_with(false)
    }

    /// Starts a fresh etcd that speaks TLS and requires client
    /// certificates (CA and certificates made with `openssl`).
    pub fn start_tls() -> Etcd {
        Etcd::start_with(true)
    }

    fn start_with(tls: bool) -> Etcd {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let binary = etcd_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!(
            "sluice-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // Held together so that the three ports differ.
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
        let (client_port, peer_port, metrics_port) = (port(0), port(1), port(2));
        drop(listeners);
        let mut etcd = Etcd {
            child: None,
            binary,
            dir,
            name,
            client_port,
            peer_port,
            metrics_port,
            tls,
        };
        if tls {
            etcd.make_certificates();
        }
        etcd.spawn();
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A store configuration for this etcd (short timeouts for tests; the
    /// CA and a client certificate when it speaks TLS).
    pub fn config(&self) -> EtcdConfig {
        let tls = |f: &str| self.tls.then(|| self.tls_dir().join(f));
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            ca_file: tls("ca.pem"),
            cert_file: tls("client.pem"),
            key_file: tls("client.key"),
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            ..EtcdConfig::default()
        }
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    fn make_certificates(&self) {
        let dir = self.tls_dir();
        std::fs::create_dir_all(&dir).expect("tls dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=sluice test CA"];
        ca.extend(key);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&ca);
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let ext_file = dir.join(format!("{who}.ext"));
            std::fs::write(&ext_file, ext).expect("ext file");
            let (keyf, csr, pem) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
            );
            let subj = format!("/CN={who}");
            let mut req = vec!["req", "-subj", &subj];
            req.extend(key);
            req.extend(["-keyout", &keyf, "-out", &csr]);
            openssl(&req);
            let ext_path = ext_file.to_string_lossy().into_owned();
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext_path,
            ]);
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
    ///
    /// Returns once every thread of etcd is stopped: `kill` only queues the
    /// signal, and a request sent before the threads stop may be answered.
    pub fn pause(&self) {
        self.signal("-STOP");
        let pid = self.child.as_ref().expect("etcd is running").id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "etcd (PID {pid}) did not stop within 5 s of SIGSTOP"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
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
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", self.metrics_port))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        if self.tls {
            let dir = self.tls_dir();
            cmd.arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(dir.join("ca.pem"))
                .arg("--client-cert-auth");
        }
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

    /// Polls `GET /health` on the (plain HTTP) metrics port until etcd says it is healthy.
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
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
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

/// Whether every thread of `pid` is in state `T` (stopped) in
/// `/proc/<pid>/task/*/stat`.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name's closing parenthesis.
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(|state| state == "T")
            })
            .unwrap_or(false)
    })
}

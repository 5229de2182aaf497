//! `dpdk-testpmd` as a vhost-user pod ([`Testpmd::pod`]: `net_virtio_user`
//! in server mode, as `docs/vhost-user.md` tells a pod to open its
//! socket) and as a stand-in switch ([`Testpmd::vhost_client`]:
//! `net_vhost` in client mode, what sluiced's DPDK backend opens), driven
//! through testpmd's interactive prompt on a pipe: forwarding mode, port
//! counters, quit. Stopped by PID when dropped.
//!
//! Memory: `--no-huge -m 128`. DPDK 22.11 backs `--no-huge` memory with a
//! memfd (`/memfd:nohuge` in the process's maps), which `net_virtio_user`
//! hands to the vhost side over the socket, so no hugepages are needed.
//! (`--in-memory` cannot be combined with `--no-huge`: EAL refuses it as
//! `--legacy-mem`.) Every instance has its own `--file-prefix`.
//!
//! A server-mode pod blocks in EAL start-up until a client connects; its
//! prompt appears only then ([`Testpmd::wait_ready`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// testpmd's prompt.
const PROMPT: &str = "testpmd> ";

/// The binary (Debian's `dpdk` package).
pub const TESTPMD: &str = "/usr/bin/dpdk-testpmd";

/// EAL memory flags that work without hugepages for both sides.
pub const NO_HUGE_EAL: [&str; 3] = ["--no-huge", "-m", "128"];

/// testpmd's own flags: few mbufs (the default pool does not fit in 128 MB).
const APP_FLAGS: [&str; 2] = ["-i", "--total-num-mbufs=4096"];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Counters of one port, from `show port stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// RX-packets.
    pub rx: u64,
    /// TX-packets.
    pub tx: u64,
}

/// One running testpmd.
pub struct Testpmd {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    /// Its `--file-prefix`.
    pub prefix: String,
    /// The vhost-user socket.
    pub socket: PathBuf,
}

impl Testpmd {
    /// A vhost-user pod: the server of `socket` (it creates it), with
    /// `mac` and `queues` queue pairs, forwarding in `forward` (`icmpecho`
    /// answers ARP and ping; `rxonly`, `txonly`, `macswap`, `io`) from the
    /// start. `lcores` as EAL's `-l` (a main and a forwarding core).
    pub fn pod(socket: &Path, mac: &str, queues: u16, forward: &str, lcores: &str) -> Testpmd {
        let vdev = format!(
            "net_virtio_user0,path={},server=1,queues={queues},mac={mac}",
            socket.display()
        );
        Self::spawn(None, socket, &[vdev], queues, forward, lcores, "pod")
    }

    /// A vhost-user pod as the `sluice` CNI plugin attached it: reads the
    /// contract file `<dir>/<ifname>.json` (`sluice_cni::vhost::Contract`)
    /// and serves `<dir>/<socket>` with its MAC and queue count.
    pub fn pod_from_contract(dir: &Path, ifname: &str, forward: &str, lcores: &str) -> Testpmd {
        let file = dir.join(format!("{ifname}.json"));
        let c: sluice_cni::vhost::Contract = serde_json::from_slice(
            &std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let queues = u16::try_from(c.queues).expect("queues");
        Self::pod(&dir.join(&c.socket), &c.mac, queues, forward, lcores)
    }

    /// The switch's side: `net_vhost` as the client of `socket`, with
    /// `queues` queue pairs; with `tap`, also a `net_tap` of that name (in
    /// `netns`, if given) as port 1, so `io` forwarding joins the pod to
    /// the kernel of that namespace.
    pub fn vhost_client(
        netns: Option<&str>,
        socket: &Path,
        queues: u16,
        tap: Option<&str>,
        forward: &str,
        lcores: &str,
    ) -> Testpmd {
        let mut vdevs = vec![format!(
            "net_vhost0,iface={},client=1,queues={queues}",
            socket.display()
        )];
        if let Some(t) = tap {
            vdevs.push(format!("net_tap0,iface={t}"));
        }
        Self::spawn(netns, socket, &vdevs, queues, forward, lcores, "sw")
    }

    fn spawn(
        netns: Option<&str>,
        socket: &Path,
        vdevs: &[String],
        queues: u16,
        forward: &str,
        lcores: &str,
        tag: &str,
    ) -> Testpmd {
        let prefix = format!(
            "sluice-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // Unbuffered stdout (`stdbuf`), or a command's output would come
        // after the prompt that follows it. `ip netns exec` and `stdbuf`
        // exec testpmd: the child's PID is testpmd's.
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.arg("stdbuf");
                c
            }
            None => Command::new("stdbuf"),
        };
        cmd.args(["-o0", "-e0", TESTPMD]);
        cmd.args(["-l", lcores, "--no-pci", "--file-prefix", &prefix])
            .args(NO_HUGE_EAL);
        for v in vdevs {
            cmd.args(["--vdev", v]);
        }
        cmd.arg("--")
            .args(APP_FLAGS)
            .arg(format!("--rxq={queues}"))
            .arg(format!("--txq={queues}"))
            .arg(format!("--forward-mode={forward}"))
            .arg("--auto-start");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{TESTPMD}: {e} (Debian's `dpdk` package)"));
        let out = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        Testpmd {
            child,
            stdin,
            out,
            prefix,
            socket: socket.to_path_buf(),
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn prompts(&self) -> usize {
        self.out.lock().unwrap().matches(PROMPT).count()
    }

    /// Waits up to `secs` for its first prompt (a pod: once a client has
    /// connected); panics with its output if it exits or times out.
    pub fn wait_ready(&mut self, secs: u64) {
        self.wait_prompts(1, secs, "start");
    }

    fn wait_prompts(&mut self, n: usize, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.prompts() < n {
            let running = self.running();
            if !running || Instant::now() > deadline {
                panic!(
                    "testpmd {} ({what}): {}; its output:\n{}",
                    self.prefix,
                    if running { "timed out" } else { "exited" },
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one interactive command; what it printed.
    pub fn cmd(&mut self, line: &str) -> String {
        let before = self.prompts();
        let start = self.out.lock().unwrap().len();
        writeln!(self.stdin, "{line}").expect("testpmd's stdin");
        self.stdin.flush().unwrap();
        self.wait_prompts(before + 1, 20, line);
        let out = self.out.lock().unwrap();
        out[start..].to_string()
    }

    /// Port `port`'s packet counters.
    pub fn stats(&mut self, port: u16) -> PortStats {
        let text = self.cmd(&format!("show port stats {port}"));
        parse_stats(&text).unwrap_or_else(|| panic!("no port stats in:\n{text}"))
    }

    /// Switches forwarding to `mode` (`stop`, `set fwd`, `start`).
    pub fn forward(&mut self, mode: &str) {
        self.cmd("stop");
        let out = self.cmd(&format!("set fwd {mode}"));
        assert!(
            !out.contains("Invalid") && !out.contains("Bad arguments"),
            "set fwd {mode}: {out}"
        );
        self.cmd("start");
    }

    /// Quits (the prompt's `quit`, then SIGKILL by PID after 5 s).
    pub fn stop(mut self) -> String {
        self.quit();
        self.log()
    }

    fn quit(&mut self) {
        if self.running() {
            let _ = writeln!(self.stdin, "quit");
            let _ = self.stdin.flush();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.running() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // EAL's runtime directory of this instance's own prefix.
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.quit();
    }
}

/// RX-packets and TX-packets from `show port stats` output.
pub fn parse_stats(text: &str) -> Option<PortStats> {
    let field = |key: &str| -> Option<u64> {
        let at = text.rfind(key)? + key.len();
        text[at..].split_whitespace().next()?.parse().ok()
    };
    Some(PortStats {
        rx: field("RX-packets:")?,
        tx: field("TX-packets:")?,
    })
}

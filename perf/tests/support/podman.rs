//! A real container runtime for privileged tests: Debian's podman 4.3 with
//! its CNI backend, isolated per test, inside a node's network namespace.
//!
//! Each [`Podman`] has its own temporary directory holding:
//! - `containers.conf`: `[network] network_backend = "cni"`, the test's CNI
//!   config dir and plugin dirs; `[engine] cgroup_manager = "cgroupfs"`,
//!   `events_logger = "file"`, `tmp_dir` and `lock_type = "file"` (podman's
//!   default SHM locks are one segment per machine, which separate state
//!   directories would hand out twice); `[containers] default_ulimits`
//!   (below);
//! - `storage.conf`: the `vfs` driver, graph root and run root in the
//!   directory (nothing pulled: containers run from a `--rootfs`);
//! - one busybox root filesystem per container ([`busybox_rootfs`]).
//!
//! What podman 4.3 needs to run inside `ip netns exec <node>`:
//! - **One mount namespace for every command.** `ip netns exec` makes a new
//!   mount namespace each time (and remounts `/sys` for the namespace's
//!   devices). podman keeps a container's network namespace as a bind mount
//!   under `/run/netns/`; made in one `ip netns exec`, it is gone in the
//!   next (`unknown FS magic ... ef53` on `podman ps`), and `rm` cannot run
//!   CNI DEL. So [`Podman::new`] starts one holder process with
//!   `ip netns exec <node> sh -c '<mounts>; exec sleep'`, and every podman
//!   command enters the holder's mount and network namespaces with
//!   `nsenter --target <holder> --mount --net`. conmon and the containers
//!   live in that mount namespace too; the holder is killed (by its PID)
//!   after every container is removed.
//! - **cgroups mounted again.** The remounted `/sys` has an empty
//!   `/sys/fs/cgroup`, and crun refuses it (`invalid file system type on
//!   '/sys/fs/cgroup'`). The holder mounts the host's hierarchies again as
//!   read from `/proc/self/mountinfo` before it starts: on a cgroup v1 or
//!   hybrid host, a tmpfs and every v1 hierarchy (and the host's symlinks
//!   such as `cpu -> cpu,cpuacct`), but not the v2 `unified` one: crun
//!   refuses hybrid mode when v2 holds a controller (`cgroups in hybrid mode
//!   not supported, drop all controllers from cgroupv2`), which it does on
//!   this project's machine (hugetlb), even outside any namespace. On a
//!   cgroup v2 host, cgroup2 at `/sys/fs/cgroup`.
//! - **ulimits the caller can set.** As root, podman asks for
//!   `nofile=1048576`, which needs `CAP_SYS_RESOURCE` when the hard limit is
//!   lower (crun: `setrlimit RLIMIT_NOFILE: Operation not permitted`); it
//!   also lowers its own `nproc` to 32768 before starting crun.
//!   `default_ulimits` asks for the current hard `nofile` and
//!   `min(hard nproc, 32768)`. (`--ulimit host` does not help in 4.3.)
//! - **`--rootfs` is a flag, not an option**: the first positional argument
//!   is then the root filesystem, so `run --rootfs DIR --network NET cmd`
//!   runs the command `--network`. Options go first:
//!   `run -d --name N --network NET --rootfs DIR cmd...`.
//! - `--network NET` names a conflist in the CNI config dir by its `name`;
//!   podman runs the list's plugins in its own network namespace (the
//!   node's), with `CNI_NETNS` a namespace it made under `/run/netns`. libcni
//!   caches results in `/var/lib/cni/results` (not configurable in 4.3);
//!   `rm` removes them with CNI DEL.
//! - `rm -f -t 0`: busybox `sleep` as PID 1 ignores SIGTERM, and the default
//!   grace period is 10 s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The busybox binary the root filesystems are made from (Debian's
/// `busybox-static`: no shared libraries to copy).
pub const BUSYBOX: &str = "/bin/busybox";

/// Makes a minimal root filesystem at `dir`: `/bin/busybox` and a symlink
/// per applet (`sh`, `ping`, `nc`, `sleep`, `ip`, `ifconfig`, `cat`, ...),
/// and the directories podman mounts over.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs bin dir");
    for d in ["etc", "dev", "proc", "sys", "tmp", "run", "root"] {
        std::fs::create_dir_all(dir.join(d)).expect("rootfs dir");
    }
    let target = bin.join("busybox");
    if std::fs::hard_link(BUSYBOX, &target).is_err() {
        std::fs::copy(BUSYBOX, &target).unwrap_or_else(|e| {
            panic!("{BUSYBOX}: {e} (install busybox-static: scripts/setup.sh does)")
        });
    }
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("{BUSYBOX} --list: {e}"));
    assert!(out.status.success(), "{BUSYBOX} --list failed");
    let applets = String::from_utf8_lossy(&out.stdout);
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).expect("applet symlink");
        }
    }
    for needed in ["sh", "ping", "nc", "sleep", "ip", "ifconfig", "cat"] {
        assert!(
            bin.join(needed).exists(),
            "{BUSYBOX} has no `{needed}` applet"
        );
    }
    dir.to_path_buf()
}

/// The current hard limit of a resource, as `/proc/self/limits` names it.
fn hard_limit(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
    match fields.get(1) {
        Some(&"unlimited") => Some(u64::MAX),
        Some(v) => v.parse().ok(),
        None => None,
    }
}

/// Shell commands that mount this host's cgroup hierarchies again under a
/// fresh `/sys` (see the module docs).
fn cgroup_mounts() -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
    let mut v1 = Vec::new();
    let mut v2_root = false;
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = pre.split_whitespace().nth(4).unwrap_or("");
        let mut post = post.split_whitespace();
        let (fstype, _source, opts) = (
            post.next().unwrap_or(""),
            post.next(),
            post.next().unwrap_or("rw"),
        );
        if !mountpoint.starts_with("/sys/fs/cgroup") {
            continue;
        }
        match fstype {
            "cgroup" => v1.push((mountpoint.to_string(), opts.to_string())),
            "cgroup2" if mountpoint == "/sys/fs/cgroup" => v2_root = true,
            _ => {}
        }
    }
    let mut cmds = Vec::new();
    if !v1.is_empty() {
        cmds.push("mount -t tmpfs -o rw,mode=755 tmpfs /sys/fs/cgroup".to_string());
        for (mp, opts) in &v1 {
            cmds.push(format!(
                "mkdir -p '{mp}' && mount -t cgroup -o '{opts}' cgroup '{mp}'"
            ));
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                if let Ok(target) = std::fs::read_link(e.path()) {
                    cmds.push(format!(
                        "ln -sfn '{}' '/sys/fs/cgroup/{}'",
                        target.display(),
                        e.file_name().to_string_lossy()
                    ));
                }
            }
        }
    } else if v2_root {
        cmds.push("mount -t cgroup2 cgroup2 /sys/fs/cgroup".to_string());
    } else {
        panic!("no cgroup hierarchy is mounted under /sys/fs/cgroup: podman needs one");
    }
    cmds.join(" && ")
}

/// An isolated podman in a node's network namespace; removes every
/// container it started, its holder process and its directory when dropped.
#[derive(Debug)]
pub struct Podman {
    tag: String,
    node_ns: String,
    dir: tempfile::TempDir,
    cni_conf_dir: PathBuf,
    holder: Child,
    started: Vec<String>,
}

impl Podman {
    /// Sets up podman for a test: `tag` names its directory, `node_ns` is
    /// the (existing) network namespace the containers' CNI plugins run in,
    /// `cni_conf_dir` holds the conflists `--network` names, and
    /// `plugin_dirs` are searched for CNI plugins (`CNI_PATH`).
    pub fn new(tag: &str, node_ns: &str, cni_conf_dir: &Path, plugin_dirs: &[PathBuf]) -> Podman {
        assert!(
            Command::new("podman")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "podman is not installed: scripts/setup.sh installs podman, containernetworking-plugins and busybox-static"
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("sluice-podman-{tag}-"))
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["root", "runroot", "tmp", "rootfs"] {
            std::fs::create_dir_all(d.join(sub)).expect("podman dirs");
        }
        let nofile = hard_limit("Max open files").unwrap_or(1024).min(1 << 20);
        let nproc = hard_limit("Max processes").unwrap_or(4096).min(32768);
        let dirs: Vec<String> = plugin_dirs
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 network_config_dir = \"{conf}\"\n\
                 cni_plugin_dirs = [{dirs}]\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = \"{d}/events.log\"\n\
                 tmp_dir = \"{d}/tmp\"\n\
                 lock_type = \"file\"\n",
                conf = cni_conf_dir.display(),
                dirs = dirs.join(", "),
                d = d.display(),
            ),
        )
        .expect("containers.conf");
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n",
                d = d.display()
            ),
        )
        .expect("storage.conf");
        let script = format!("{} && echo ready && exec sleep 86400", cgroup_mounts());
        let mut holder = Command::new("ip")
            .args(["netns", "exec", node_ns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ip netns exec");
        let mut ready = String::new();
        {
            use std::io::BufRead;
            let out = holder.stdout.take().expect("holder stdout");
            let _ = std::io::BufReader::new(out).read_line(&mut ready);
        }
        if ready.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("podman holder in `{node_ns}` did not start (cgroup mounts: {script})");
        }
        Podman {
            tag: tag.to_string(),
            node_ns: node_ns.to_string(),
            dir,
            cni_conf_dir: cni_conf_dir.to_path_buf(),
            holder,
            started: Vec::new(),
        }
    }

    /// The directory holding this podman's configuration and state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A podman command with this instance's configuration, run in the
    /// holder's mount and network namespaces; add the subcommand.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.holder.id()))
            .args(["--mount", "--net", "--", "podman"])
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--cni-config-dir")
            .arg(&self.cni_conf_dir)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .stdin(Stdio::null());
        c
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("podman runs");
        assert!(
            out.status.success(),
            "podman {} ({}): {}{}",
            args.join(" "),
            self.tag,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman info`'s network backend (`cni` expected).
    pub fn network_backend(&self) -> String {
        self.run_ok(&["info", "--format", "{{.Host.NetworkBackend}}"])
    }

    /// Starts container `name` (busybox `sleep`, its own root filesystem)
    /// on network `net` (a conflist's `name`); returns its id.
    pub fn run(&mut self, name: &str, net: &str) -> String {
        self.run_with(name, net, &[], &["sleep", "86400"])
    }

    /// As [`Podman::run`], with more `podman run` options (`-p 8080:80`,
    /// `--mac-address ...`) and the container's command (a busybox applet
    /// and its arguments).
    pub fn run_with(&mut self, name: &str, net: &str, options: &[&str], cmd: &[&str]) -> String {
        let rootfs = busybox_rootfs(&self.dir.path().join("rootfs").join(name));
        let rootfs = rootfs.to_string_lossy().to_string();
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--rootfs", &rootfs]);
        args.extend_from_slice(cmd);
        let id = self.run_ok(&args);
        self.started.push(name.to_string());
        id
    }

    /// Runs `args` in container `name`; the output, whatever the status.
    pub fn exec(&self, name: &str, args: &[&str]) -> Output {
        self.command()
            .args(["exec", name])
            .args(args)
            .output()
            .expect("podman exec runs")
    }

    /// The container's IPv4 address on its (first) network.
    pub fn ip(&self, name: &str) -> String {
        self.run_ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ])
    }

    /// Removes container `name` at once (CNI DEL runs).
    pub fn rm(&mut self, name: &str) {
        self.run_ok(&["rm", "-f", "-t", "0", name]);
        self.started.retain(|n| n != name);
    }

    /// The network namespaces podman made that are still mounted in the
    /// holder's `/run/netns` (`netns-*`; the node's own are not listed).
    pub fn container_netns(&self) -> Vec<String> {
        let out = Command::new("nsenter")
            .arg(format!("--target={}", self.holder.id()))
            .args(["--mount", "--", "ls", "/run/netns"])
            .output()
            .expect("nsenter ls");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("netns-"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.started) {
            let out = self.command().args(["rm", "-f", "-t", "0", &name]).output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!(
                    "podman ({}, {}): rm {name} failed: {out:?}",
                    self.tag, self.node_ns
                );
            }
        }
        // The holder is ours: end it by its PID and reap it. Its mount
        // namespace goes with the last process in it.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // podman (cgroupfs) leaves its parent cgroups behind; remove them
        // when empty (rmdir fails on a cgroup another podman still uses).
        let roots = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for root in roots
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/sys/fs/cgroup")])
        {
            let _ = std::fs::remove_dir(root.join("libpod_parent/conmon"));
            let _ = std::fs::remove_dir(root.join("libpod_parent"));
        }
    }
}

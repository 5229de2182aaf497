//! Privileged tier: the Kubernetes DaemonSet's start-up on one node, as its
//! containers run it (`deploy/sluice-node.sh` with the ConfigMap's
//! `sluiced.toml`), in a node namespace this test makes: the bootstrap
//! leases a subnet through sluiced and sluice-agent and stops them; then
//! `sluice-node.sh sluiced` renders the node's configuration (uplink from
//! the default route, the leased subnet) and runs sluiced, the agent
//! becomes ready, `sluicectl upgrade` hands sluiced's ports over to a new
//! sluiced which the script then follows, and a new subnet in the subnet
//! file stops (the upgraded) sluiced with
//! exit status 75 so that the container starts again with it.
//!
//! ```text
//! cargo build -p sluiced -p sluice-control -p sluicectl --bins
//! cargo test -p sluice-perf --features privileged-tests --test deploy -- --test-threads=1
//! ```

mod support;

use sluice_perf::cluster::binary;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{eventually, require_root};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(cmd: &str) {
    let ok = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(ok.success(), "{cmd}");
}

/// The node namespace and its underlay peer; deleted when dropped, after
/// the processes this test started in them (by PID).
struct Node {
    ns: String,
    gw: String,
    children: Vec<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.ns, &self.gw] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The ConfigMap's `sluiced.toml` block, read from the manifest as text.
fn config_map_sluiced_toml() -> String {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/sluice.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "sluiced.toml: |");
    lines.next().expect("the ConfigMap has sluiced.toml");
    let mut out = String::new();
    for l in lines {
        if !l.is_empty() && !l.starts_with("    ") {
            break;
        }
        out += l.strip_prefix("    ").unwrap_or("");
        out.push('\n');
    }
    out
}

fn subnet_of(file: &Path) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET=").map(str::to_string))
}

#[test]
fn the_daemonsets_start_up_leases_renders_and_restarts_on_a_new_subnet() {
    require_root();
    let tag = format!("sdep{}", std::process::id() % 100_000);
    let mut node = Node {
        ns: tag.clone(),
        gw: format!("{tag}g"),
        children: Vec::new(),
    };
    let (ns, gw) = (node.ns.clone(), node.gw.clone());
    for n in [&ns, &gw] {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
        sh(&format!("ip netns add {n} && ip -n {n} link set lo up"));
    }
    sh(&format!(
        "ip -n {ns} link add eth0 type veth peer name up0 netns {gw} && \
         ip -n {ns} addr add 192.168.78.2/24 dev eth0 && ip -n {ns} link set eth0 up && \
         ip -n {gw} addr add 192.168.78.1/24 dev up0 && ip -n {gw} link set up0 up && \
         ip -n {ns} route add default via 192.168.78.1"
    ));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let socket = d.join("run/sluiced.sock");
    let subnet_file = d.join("flannel/subnet.env");
    std::fs::create_dir_all(d.join("run")).unwrap();
    std::fs::create_dir_all(d.join("flannel")).unwrap();
    // The ConfigMap's file, with this test's socket instead of the host's.
    let template = config_map_sluiced_toml().replace(
        "api_socket = \"/run/sluice/sluiced.sock\"",
        &format!("api_socket = \"{}\"", socket.display()),
    );
    assert!(template.contains(&socket.display().to_string()));
    std::fs::write(d.join("sluiced.toml"), &template).unwrap();
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "[agent]\nsluiced_socket = \"{}\"\nsubnet_file = \"{}\"\nhealthz_address = \"127.0.0.1:9473\"\n[store]\ndir = \"{}\"\n",
            socket.display(),
            subnet_file.display(),
            d.join("store").display()
        ),
    )
    .unwrap();
    let sluiced = binary("sluiced", "SLUICED");
    let agent = binary("sluice-agent", "SLUICE_AGENT");
    let sluicectl = binary("sluicectl", "SLUICECTL");
    let ok = Command::new(&agent)
        .arg("--store-dir")
        .arg(d.join("store"))
        .args([
            "network",
            "set",
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "network set");

    let node_sh = |mode: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, "sh"])
            .arg(repo().join("deploy/sluice-node.sh"))
            .arg(mode)
            .env("SLUICE_TEMPLATE", d.join("sluiced.toml"))
            .env("SLUICE_AGENT_CONFIG", d.join("agent.toml"))
            .env("SLUICE_SUBNET_FILE", &subnet_file)
            .env("SLUICE_RUN_DIR", d.join("run"))
            .env("SLUICE_BOOTSTRAP_TIMEOUT", "60")
            .env("SLUICED", &sluiced)
            .env("SLUICE_AGENT", &agent)
            .env("SLUICECTL", &sluicectl)
            .stdin(Stdio::null());
        c
    };

    // 1. The bootstrap: a lease, the subnet file, nothing left running.
    let out = node_sh("bootstrap").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "bootstrap failed:\n{log}");
    let leased = subnet_of(&subnet_file).expect("the bootstrap wrote the subnet file");
    assert!(leased.starts_with("10.244."), "{leased}");
    assert!(!socket.exists(), "the bootstrap's sluiced is gone:\n{log}");
    // Again: nothing to do.
    let again = node_sh("bootstrap").output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to bootstrap"));

    // 2. sluiced as the container runs it, and the agent.
    let supervisor = node_sh("sluiced")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    node.children.push(supervisor);
    let agent_child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&agent)
        .arg("--config")
        .arg(d.join("agent.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    node.children.push(agent_child);
    let ctl = |what: &str| {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&sluicectl)
            .arg("--socket")
            .arg(&socket)
            .args(["--json", what])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let leased_net = {
        let (ip, len) = leased.split_once('/').unwrap();
        let mut o: Vec<&str> = ip.split('.').collect();
        assert_eq!(len, "24");
        o[3] = "0";
        format!("{}/{len}", o.join("."))
    };
    eventually(20, "sluiced with the leased subnet", || {
        serde_json::from_str::<serde_json::Value>(&ctl("node"))
            .is_ok_and(|v| v["node"]["pod_subnet"] == leased_net.as_str())
    });
    let ports = ctl("ports");
    assert!(
        ports.contains("\"eth0\"") && ports.contains("\"uplink\""),
        "{ports}"
    );
    assert!(
        ports.contains("192.168.78.2/24"),
        "the uplink's address: {ports}"
    );
    assert!(ports.contains("\"sluice0\""), "the host port: {ports}");
    let routes = ctl("routes");
    assert!(
        routes.contains("0.0.0.0/0"),
        "the default route via host: {routes}"
    );
    eventually(20, "the agent's /readyz", || {
        Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sf", "-o", "/dev/null"])
            .arg("http://127.0.0.1:9473/readyz")
            .status()
            .is_ok_and(|s| s.success())
    });
    let rendered = std::fs::read_to_string(d.join("run/sluiced.toml")).unwrap();
    assert!(
        rendered.contains("gateway = \"192.168.78.1\""),
        "{rendered}"
    );

    // 3. An upgrade in the running container: the old sluiced hands its
    // ports over and exits; the supervisor follows the new one.
    let epoch_pid = |v: &serde_json::Value| {
        v["epoch"]
            .as_str()
            .and_then(|e| u32::from_str_radix(e.split('-').next()?, 16).ok())
    };
    let before: serde_json::Value = serde_json::from_str(&ctl("node")).unwrap();
    let old = epoch_pid(&before).expect("an epoch");
    let o = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&sluicectl)
        .arg("--socket")
        .arg(&socket)
        .args(["upgrade", "--binary"])
        .arg(&sluiced)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sluicectl upgrade: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after: serde_json::Value = serde_json::from_str(&ctl("node")).unwrap();
    let new = epoch_pid(&after).expect("an epoch");
    assert_ne!(new, old, "another process answers");
    assert_eq!(after["node"], before["node"]);
    // The supervisor notices the old one gone within its 5 s nap, and
    // stays (the container lives on with the new sluiced).
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        node.children
            .last_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "sluice-node.sh follows the new sluiced"
    );
    assert_eq!(
        epoch_pid(&serde_json::from_str(&ctl("node")).unwrap()),
        Some(new)
    );

    // 4. A new subnet (the agent stopped, so it does not rewrite it):
    // sluiced (the upgraded one) is stopped and the supervisor exits 75.
    let mut agent_child = node.children.pop().unwrap();
    let _ = agent_child.kill();
    let _ = agent_child.wait();
    let text = std::fs::read_to_string(&subnet_file).unwrap();
    let moved = text.replace(&leased, "10.244.250.1/24");
    assert_ne!(text, moved);
    std::fs::write(&subnet_file, moved).unwrap();
    let supervisor = node.children.last_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = supervisor.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sluice-node.sh did not stop on a new subnet"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(75), "{status:?}");
    assert!(!socket.exists(), "sluiced is gone");
    assert!(
        !sluice_perf::lab::pid_alive(new),
        "the upgraded sluiced is gone"
    );
}

//! CNI ADD and DEL latency (`sluice-lab cni-bench`): the `sluice` plugin
//! against the chain a flannel node runs, in the same run.
//!
//! 1. A two-node VXLAN lab (sluiced and agents); node 1 is measured.
//! 2. The measuring process re-runs itself inside node 1's namespace
//!    (`cni-bench-run`), so every plugin is exec'd directly, as a runtime on
//!    the node execs it: no `ip netns exec` inside the timed call.
//! 3. Three chains, called through [`sluice_cni::libcni`] exactly as a
//!    runtime calls them (conflist, result cache):
//!    - `sluice`: the plugin with its own IPAM (the default);
//!    - `sluice+host-local`: the plugin delegating to Debian's `host-local`
//!      (the upper half of the node's subnet, which the own allocator is
//!      told is taken);
//!    - `bridge+host-local`: what flannel's CNI plugin renders on a node
//!      (`bridge` on `cni0`, `isGateway`, `isDefaultGateway`,
//!      `hairpinMode`, `ipMasq` off as with flanneld's `--ip-masq`, MTU
//!      1450, `host-local` over a /24 with a route to the network), on its
//!      own subnet `10.78.0.0/24` in the same namespace.
//! 4. Pods come in waves of `wave`: for each pod a fresh namespace (not
//!    timed), then ADD on each chain in turn (interleaved, so drift on the
//!    shared machine hits all three alike); then DEL for each, in turn.
//!    One sluiced worker holds frames for 104 pods, so a wave is at most 100.
//!
//! Figures are wall-clock times of the whole chain call, from spawning the
//! plugin to reading its result. Nothing is asserted.

use crate::lab::{self, LabError, LabSpec, Mode};
use serde::{Deserialize, Serialize};
use sluice_cni::libcni::{Cni, ConfList, RuntimeConf};
use std::path::PathBuf;
use std::time::Instant;

type Result<T> = std::result::Result<T, LabError>;

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

/// One chain's figures, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainFigures {
    /// The chain.
    pub chain: String,
    /// ADD: median, 99th percentile, mean.
    pub add_ms: [f64; 3],
    /// DEL: median, 99th percentile, mean.
    pub del_ms: [f64; 3],
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CniBench {
    /// Pods per chain.
    pub pods: usize,
    /// Pods per wave.
    pub wave: usize,
    /// Per chain.
    pub chains: Vec<ChainFigures>,
}

fn stats(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    let pct = |p| crate::agent_bench::percentile(&v, p);
    [pct(0.5), pct(0.99), v.iter().sum::<f64>() / v.len() as f64]
}

/// Runs the benchmark: a lab, then the measuring process in node 1.
pub fn run(
    name: &str,
    pods: usize,
    wave: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<CniBench> {
    if pods == 0 || wave == 0 || wave > 100 {
        return Err(other("pods must be at least 1 and a wave 1 to 100"));
    }
    let spec = LabSpec::new(name, 2, Mode::Vxlan);
    let st = lab::up(&spec, progress)?;
    let out = (|| {
        let dir = crate::pods::data_dir(&st.nodes[0]).join("bench");
        std::fs::create_dir_all(&dir).map_err(other)?;
        let sluice: serde_json::Value =
            serde_json::from_str(&crate::pods::conflist(&st, 0)).map_err(other)?;
        let mut with_hl = sluice.clone();
        with_hl["plugins"][0]["ipam"] = serde_json::json!({"type": "host-local", "dataDir": dir.join("hl-sluice"),
            "ranges": [[{"subnet": "10.77.1.0/24", "rangeStart": "10.77.1.128"}]]});
        with_hl["name"] = serde_json::json!("sluice-hl");
        // flannel's CNI plugin renders this for the bridge (flannel.go).
        let bridge = serde_json::json!({
            "cniVersion": "1.0.0", "name": "cbr0",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "hairpinMode": true, "ipMasq": false, "mtu": 1450,
                "ipam": {"type": "host-local", "dataDir": dir.join("hl-bridge"),
                    "ranges": [[{"subnet": "10.78.0.0/24"}]], "routes": [{"dst": "10.77.0.0/16"}]}}]
        });
        // One node, two allocators: the own allocator's files hold the
        // upper half for host-local.
        let own = crate::pods::data_dir(&st.nodes[0]).join("ipam/sluice");
        std::fs::create_dir_all(&own).map_err(other)?;
        for h in 128..=254 {
            std::fs::write(
                own.join(format!("10.77.1.{h}")),
                "reserved-for-host-local\nbench\n",
            )
            .map_err(other)?;
        }
        let lists = [
            ("sluice", sluice),
            ("sluice+host-local", with_hl),
            ("bridge+host-local", bridge),
        ];
        let mut paths = Vec::new();
        for (label, l) in &lists {
            let p = dir.join(format!("{}.conflist", label.replace('+', "-")));
            std::fs::write(&p, l.to_string()).map_err(other)?;
            paths.push(p);
        }
        progress(&format!(
            "timing {pods} ADDs and DELs per chain in waves of {wave}, inside {}",
            st.nodes[0].ns
        ));
        let me = std::env::current_exe().map_err(other)?;
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &st.nodes[0].ns])
            .arg(me)
            .args([
                "cni-bench-run",
                "--prefix",
                &format!("{name}-b"),
                "--pods",
                &pods.to_string(),
                "--wave",
                &wave.to_string(),
            ])
            .arg("--plugin-dir")
            .arg(crate::pods::plugin_dir()?)
            .arg("--cache-dir")
            .arg(dir.join("cache"));
        for (p, (label, _)) in paths.iter().zip(&lists) {
            cmd.arg("--chain").arg(format!("{label}={}", p.display()));
        }
        let out = cmd.output().map_err(other)?;
        if !out.status.success() {
            return Err(other(format!(
                "cni-bench-run: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        serde_json::from_slice::<CniBench>(&out.stdout).map_err(other)
    })();
    lab::down(name)?;
    out
}

/// The measuring half, run inside the node's namespace: `chains` are
/// (label, conflist path).
pub fn measure(
    prefix: &str,
    pods: usize,
    wave: usize,
    plugin_dir: PathBuf,
    cache_dir: PathBuf,
    chains: &[(String, PathBuf)],
) -> Result<CniBench> {
    let cni = Cni::new(vec![plugin_dir, PathBuf::from("/usr/lib/cni")]).with_cache_dir(cache_dir);
    let lists: Vec<ConfList> = chains
        .iter()
        .map(|(_, p)| ConfList::load(p).map_err(other))
        .collect::<Result<_>>()?;
    let mut add: Vec<Vec<f64>> = vec![Vec::new(); chains.len()];
    let mut del: Vec<Vec<f64>> = vec![Vec::new(); chains.len()];
    let mut done = 0;
    while done < pods {
        let n = wave.min(pods - done);
        let mut made = Vec::new();
        for k in done..done + n {
            for c in 0..chains.len() {
                let ns = format!("{prefix}{k}c{c}");
                lab::run(&["ip", "netns", "add", &ns])?;
                let rt = RuntimeConf::new(
                    format!("bench-{k}-{c}"),
                    Some(PathBuf::from(format!("/run/netns/{ns}"))),
                    "eth0",
                );
                let t = Instant::now();
                let r = cni.add_network_list(&lists[c], &rt);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if let Err(e) = r {
                    let _ = lab::run(&["ip", "netns", "del", &ns]);
                    cleanup(&cni, &lists, &made);
                    return Err(other(format!("{} ADD: {e}", chains[c].0)));
                }
                add[c].push(ms);
                made.push((c, ns, rt));
            }
        }
        let mut failed = None;
        for (c, ns, rt) in &made {
            let t = Instant::now();
            let r = cni.del_network_list(&lists[*c], rt);
            del[*c].push(t.elapsed().as_secs_f64() * 1e3);
            if let Err(e) = r {
                failed.get_or_insert(format!("{} DEL: {e}", chains[*c].0));
            }
            let _ = lab::run(&["ip", "netns", "del", ns]);
        }
        if let Some(f) = failed {
            return Err(other(f));
        }
        done += n;
    }
    Ok(CniBench {
        pods,
        wave,
        chains: chains
            .iter()
            .enumerate()
            .map(|(c, (label, _))| ChainFigures {
                chain: label.clone(),
                add_ms: stats(std::mem::take(&mut add[c])),
                del_ms: stats(std::mem::take(&mut del[c])),
            })
            .collect(),
    })
}

fn cleanup(cni: &Cni, lists: &[ConfList], made: &[(usize, String, RuntimeConf)]) {
    for (c, ns, rt) in made {
        let _ = cni.del_network_list(&lists[*c], rt);
        let _ = lab::run(&["ip", "netns", "del", ns]);
    }
}

/// The report: a table, and the ratio of each chain to the last
/// (the flannel baseline).
pub fn table(b: &CniBench) -> String {
    let mut s = format!(
        "CNI ADD/DEL latency over {} pods per chain (waves of {}), milliseconds\n",
        b.pods, b.wave
    );
    s += &format!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "chain", "ADD p50", "ADD p99", "ADD mean", "DEL p50", "DEL p99", "DEL mean"
    );
    for c in &b.chains {
        s += &format!(
            "{:<20} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            c.chain, c.add_ms[0], c.add_ms[1], c.add_ms[2], c.del_ms[0], c.del_ms[1], c.del_ms[2]
        );
    }
    if let Some(base) = b.chains.last() {
        for c in &b.chains[..b.chains.len() - 1] {
            s += &format!(
                "{} / {}: ADD p50 {:.2}x, ADD p99 {:.2}x\n",
                c.chain,
                base.chain,
                c.add_ms[0] / base.add_ms[0],
                c.add_ms[1] / base.add_ms[1]
            );
        }
    }
    s
}

//! The tables sluiced was programmed with at runtime, kept in a file
//! (`daemon.state_file`) so that a restarted sluiced (a crash, SIGKILL, a
//! new version) forwards across nodes from its first packet, before its
//! agent has noticed the restart. Pods come back from the CNI plugin's
//! records ([`crate::pod_records`]); routes, static neighbours and the node
//! and tunnel settings the agent set come back from here.
//!
//! # Writing
//! A thread checks the tables' generation every [`WRITE_INTERVAL`]; when it
//! moved, it streams the configuration in force, under the control lock and
//! without copying it, to `<file>.tmp`, and renames that over the file, so
//! the file is always one whole snapshot. A snapshot whose hash is the last
//! one's is not renamed (learned neighbours are not kept: the kernel has
//! them). Writes are spaced ten times their own length apart, so at a
//! million routes (a write of about a second in the worst case) the writer
//! and its hold on the lock stay under a tenth of the time. The hot path
//! is never involved. A SIGKILL loses at most the changes since the last
//! write; the agent's full sync after the restart brings those.
//!
//! # Reading
//! At start, before the tables are built. The file is used only if it was
//! written from the same configuration file ([`SavedTables::base`] equals
//! the configuration being started): a file edited since is the operator's
//! new intent and wins whole. Then the saved node and tunnel settings,
//! routes and static neighbours replace the file's, and the result must
//! validate as any configuration does; if it does not, the saved tables
//! are ignored with a warning and the file's configuration is used.
//! Routes via a pod port wait until the recorded pods are attached again,
//! then are added (those whose pod did not come back are dropped, logged).

use crate::api::Control;
use crate::config::{NodeConfig, Via};
use crate::tables::TablesHandle;
use serde::{Deserialize, Serialize};
use sluice_api::{NeighbourConfig, NodeSettings, RouteConfig, TunnelSettings};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file's format; another is not read.
pub const FORMAT: u32 = 1;

/// How often the writer looks for changes.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedTables {
    /// [`FORMAT`].
    pub format: u32,
    /// The configuration (file) the running one started from or was last
    /// reloaded from.
    pub base: NodeConfig,
    /// Node settings in force.
    pub node: NodeSettings,
    /// Tunnel settings in force.
    pub tunnel: TunnelSettings,
    /// Routes in force, configured and added at runtime.
    pub routes: Vec<RouteConfig>,
    /// Static neighbours in force.
    pub neighbours: Vec<NeighbourConfig>,
}

/// What became of the saved tables at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Restored {
    /// Not kept (`state_file = ""`), or no file yet.
    #[default]
    Nothing,
    /// Used: this many routes and static neighbours.
    Used {
        /// Routes restored (pod routes included).
        routes: usize,
        /// Static neighbours restored.
        neighbours: usize,
    },
    /// Not used, and why.
    Ignored(String),
}

/// The configuration to start with: `cfg` with the saved tables merged in
/// when they apply, the routes via pod ports to add once pods are back,
/// and what happened.
pub fn restore(cfg: &NodeConfig) -> (NodeConfig, Vec<RouteConfig>, Restored) {
    let Some(path) = cfg.daemon.state_file_path() else {
        return (cfg.clone(), Vec::new(), Restored::Nothing);
    };
    let saved = match read(&path) {
        Ok(Some(s)) => s,
        Ok(None) => return (cfg.clone(), Vec::new(), Restored::Nothing),
        Err(why) => return (cfg.clone(), Vec::new(), ignored(&path, why)),
    };
    merge(cfg, saved, &path)
}

/// As [`restore`], from the tables a running sluiced handed over at an
/// upgrade ([`crate::handover`]) rather than from the file.
pub fn restore_handed_over(
    cfg: &NodeConfig,
    json: &[u8],
) -> (NodeConfig, Vec<RouteConfig>, Restored) {
    let from = Path::new("(handed over)");
    match serde_json::from_slice::<SavedTables>(json) {
        Ok(saved) => merge(cfg, saved, from),
        Err(e) => (
            cfg.clone(),
            Vec::new(),
            ignored(from, format!("not saved tables: {e}")),
        ),
    }
}

fn merge(
    cfg: &NodeConfig,
    saved: SavedTables,
    path: &Path,
) -> (NodeConfig, Vec<RouteConfig>, Restored) {
    if &saved.base != cfg {
        return (
            cfg.clone(),
            Vec::new(),
            ignored(
                path,
                "the configuration changed since they were saved; starting from it".into(),
            ),
        );
    }
    let (pod_routes, routes): (Vec<RouteConfig>, Vec<RouteConfig>) =
        saved.routes.into_iter().partition(|r| {
            r.via == Via::Pod
                && r.port
                    .as_ref()
                    .is_some_and(|p| !cfg.ports.iter().any(|c| &c.name == p))
        });
    let mut merged = cfg.clone();
    merged.node = saved.node;
    merged.tunnel = saved.tunnel;
    merged.routes = routes;
    merged.neighbours = saved.neighbours;
    if let Err(e) = merged.validate() {
        return (
            cfg.clone(),
            Vec::new(),
            ignored(
                path,
                format!("they do not validate: {}: {}", e.key, e.problem),
            ),
        );
    }
    let outcome = Restored::Used {
        routes: merged.routes.len() + pod_routes.len(),
        neighbours: merged.neighbours.len(),
    };
    tracing::info!(
        file = %path.display(),
        routes = merged.routes.len() + pod_routes.len(),
        neighbours = merged.neighbours.len(),
        "forwarding with the saved tables"
    );
    (merged, pod_routes, outcome)
}

fn ignored(path: &Path, why: String) -> Restored {
    tracing::warn!(file = %path.display(), reason = %why, "saved tables not used");
    Restored::Ignored(why)
}

/// The file's tables; `None` if there is no file.
pub fn read(path: &Path) -> Result<Option<SavedTables>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read them: {e}")),
    };
    let saved: SavedTables =
        serde_json::from_slice(&bytes).map_err(|e| format!("not saved tables: {e}"))?;
    if saved.format != FORMAT {
        return Err(format!(
            "format {} (this sluiced reads {FORMAT})",
            saved.format
        ));
    }
    Ok(Some(saved))
}

/// Writes `bytes` to `path` whole: a temporary file renamed over it.
#[cfg(test)]
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    tmp.into()
}

/// The tables in force, serialized straight from the control state as a
/// [`SavedTables`] (no copy of the routes, however many there are).
struct SavedTablesRef<'a> {
    base: &'a NodeConfig,
    node: &'a NodeSettings,
    tunnel: &'a TunnelSettings,
    routes: &'a crate::tables::RouteTable,
    neighbours: &'a [NeighbourConfig],
}

impl Serialize for SavedTablesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Routes<'a>(&'a crate::tables::RouteTable);
        impl Serialize for Routes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }
        struct Static<'a>(&'a [NeighbourConfig]);
        impl Serialize for Static<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().filter(|n| !n.learned))
            }
        }
        let mut st = s.serialize_struct("SavedTables", 6)?;
        st.serialize_field("format", &FORMAT)?;
        st.serialize_field("base", self.base)?;
        st.serialize_field("node", self.node)?;
        st.serialize_field("tunnel", self.tunnel)?;
        st.serialize_field("routes", &Routes(self.routes))?;
        st.serialize_field("neighbours", &Static(self.neighbours))?;
        st.end()
    }
}

/// A writer that hashes what passes through it (FNV-1a, 64 bits): two
/// snapshots with the same hash are taken as the same.
struct Hashing<W> {
    inner: W,
    hash: u64,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        for &b in &buf[..n] {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the tables in force to `<path>.tmp` under the control lock
/// (streamed, so a million routes cost no copy); returns its hash.
fn write_snapshot(path: &Path, control: &Mutex<Control>) -> std::io::Result<u64> {
    let file = std::fs::File::create(tmp_path(path))?;
    let mut out = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 16, file),
        hash: 0xcbf2_9ce4_8422_2325,
    };
    {
        let c = control.lock().unwrap_or_else(|p| p.into_inner());
        c.write_saved_tables(&mut out)?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(out.hash)
}

impl Control {
    /// Serializes the tables in force as [`SavedTables`] into `out`.
    pub fn write_saved_tables(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let (base, node, tunnel, routes, neighbours) = self.saved_parts();
        let snapshot = SavedTablesRef {
            base,
            node,
            tunnel,
            routes,
            neighbours,
        };
        serde_json::to_writer(out, &snapshot).map_err(std::io::Error::other)
    }
}

/// Keeps the file up to date until `stop` (see the module docs). Writes
/// are at least [`WRITE_INTERVAL`] apart, and ten times as long as the
/// last one took, so the writer never takes more than a tenth of a core
/// (or of the control lock) however large the tables.
pub fn spawn_writer(
    path: PathBuf,
    control: Arc<Mutex<Control>>,
    tables: Arc<TablesHandle>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-state".into())
        .spawn(move || {
            let mut seen: Option<(u32, u32)> = None;
            let mut written: Option<u64> = None;
            let mut last_error: Option<String> = None;
            let mut pause = WRITE_INTERVAL;
            loop {
                let now = {
                    let c = control.lock().unwrap_or_else(|p| p.into_inner());
                    (tables.load().generation, c.reloads())
                };
                if seen != Some(now) {
                    let t = std::time::Instant::now();
                    let outcome = write_snapshot(&path, &control).and_then(|hash| {
                        if written == Some(hash) {
                            std::fs::remove_file(tmp_path(&path))
                        } else {
                            std::fs::rename(tmp_path(&path), &path).map(|()| written = Some(hash))
                        }
                    });
                    pause = WRITE_INTERVAL.max(t.elapsed() * 10);
                    match outcome {
                        Ok(()) => {
                            seen = Some(now);
                            last_error = None;
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            if last_error.as_deref() != Some(&msg) {
                                tracing::warn!(file = %path.display(), error = %msg, "cannot save the tables; retrying");
                                last_error = Some(msg);
                            }
                        }
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(pause);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::craft;

    fn node(dir: &Path) -> NodeConfig {
        let mut cfg = NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap();
        cfg.daemon.api_socket = dir.join("sluiced.sock");
        cfg
    }

    fn saved(cfg: &NodeConfig) -> SavedTables {
        SavedTables {
            format: FORMAT,
            base: cfg.clone(),
            node: cfg.node.clone(),
            tunnel: cfg.tunnel.clone(),
            routes: cfg.routes.clone(),
            neighbours: cfg.neighbours.clone(),
        }
    }

    #[test]
    fn the_file_is_beside_the_socket_unless_set_and_empty_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = node(dir.path());
        assert_eq!(
            cfg.daemon.state_file_path(),
            Some(dir.path().join("sluiced.tables.json"))
        );
        cfg.daemon.state_file = Some("".into());
        assert_eq!(cfg.daemon.state_file_path(), None);
        assert_eq!(restore(&cfg).2, Restored::Nothing);
    }

    #[test]
    fn saved_routes_and_settings_are_used_when_the_configuration_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = node(dir.path());
        assert_eq!(restore(&cfg).2, Restored::Nothing, "no file yet");
        let mut s = saved(&cfg);
        s.routes.push(RouteConfig {
            prefix: "10.9.0.0/16".parse().unwrap(),
            via: Via::Blackhole,
            node: None,
            vtep_mac: None,
            port: None,
        });
        s.tunnel.vni = 7;
        let path = cfg.daemon.state_file_path().unwrap();
        write(&path, &serde_json::to_vec(&s).unwrap()).unwrap();
        let (merged, pod_routes, outcome) = restore(&cfg);
        assert_eq!(
            outcome,
            Restored::Used {
                routes: cfg.routes.len() + 1,
                neighbours: cfg.neighbours.len()
            }
        );
        assert!(pod_routes.is_empty());
        assert_eq!(merged.tunnel.vni, 7);
        assert_eq!(merged.routes, s.routes);
        assert_eq!(merged.ports, cfg.ports);
        assert_eq!(read(&path).unwrap(), Some(s));
    }

    #[test]
    fn a_changed_configuration_a_bad_file_or_tables_that_do_not_validate_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = node(dir.path());
        let path = cfg.daemon.state_file_path().unwrap();
        let mut edited = cfg.clone();
        edited.routes.pop();
        write(&path, &serde_json::to_vec(&saved(&edited)).unwrap()).unwrap();
        let (merged, _, outcome) = restore(&cfg);
        assert!(
            matches!(&outcome, Restored::Ignored(w) if w.contains("configuration changed")),
            "{outcome:?}"
        );
        assert_eq!(&merged, &cfg);

        std::fs::write(&path, b"{\"format\":1,").unwrap();
        assert!(
            matches!(restore(&cfg).2, Restored::Ignored(w) if w.starts_with("not saved tables"))
        );

        let mut s = saved(&cfg);
        s.format = 2;
        write(&path, &serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(matches!(restore(&cfg).2, Restored::Ignored(w) if w.starts_with("format 2")));

        let mut s = saved(&cfg);
        s.routes[0].node = Some("0.0.0.0".parse().unwrap());
        write(&path, &serde_json::to_vec(&s).unwrap()).unwrap();
        let (merged, _, outcome) = restore(&cfg);
        assert!(
            matches!(&outcome, Restored::Ignored(w) if w.contains("route[0].node")),
            "{outcome:?}"
        );
        assert_eq!(&merged, &cfg);
    }

    #[test]
    fn the_snapshot_streamed_from_the_control_state_reads_back_without_learned_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = node(dir.path());
        let mut running = cfg.clone();
        let mut learned = cfg.neighbours[0].clone();
        learned.ip = "192.168.50.77".parse().unwrap();
        learned.learned = true;
        running.neighbours.push(learned);
        let handle = Arc::new(TablesHandle::new(
            crate::tables::Tables::from_config(&running).unwrap(),
        ));
        let mut c = Control::new(running, handle, Vec::new());
        c.set_base(cfg.clone());
        let control = Mutex::new(c);
        let path = cfg.daemon.state_file_path().unwrap();
        write_snapshot(&path, &control).unwrap();
        std::fs::rename(tmp_path(&path), &path).unwrap();
        let back = read(&path).unwrap().expect("written");
        assert_eq!(back.base, cfg);
        assert_eq!(back.routes, cfg.routes);
        assert_eq!(back.neighbours, cfg.neighbours, "the learned one left out");
        assert_eq!(back.node, cfg.node);
    }

    #[test]
    fn routes_via_pods_not_yet_attached_wait_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = node(dir.path());
        let mut s = saved(&cfg);
        s.routes.push(RouteConfig {
            prefix: "10.8.0.0/16".parse().unwrap(),
            via: Via::Pod,
            node: None,
            vtep_mac: None,
            port: Some("recorded-pod".into()),
        });
        write(
            &cfg.daemon.state_file_path().unwrap(),
            &serde_json::to_vec(&s).unwrap(),
        )
        .unwrap();
        let (merged, pod_routes, _) = restore(&cfg);
        assert_eq!(pod_routes.len(), 1);
        assert_eq!(merged.routes, cfg.routes);
    }
}

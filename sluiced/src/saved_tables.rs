//! The tables sluiced was programmed with at runtime, kept in a file
//! (`daemon.state_file`) so that a restarted sluiced (a crash, SIGKILL, a
//! new version) forwards across nodes from its first packet, before its
//! agent has noticed the restart. Pods come back from the CNI plugin's
//! records ([`crate::pod_records`]); routes, static neighbours and the node
//! and tunnel settings the agent set come back from here.
//!
//! # Writing
//! A thread checks the tables' generation every [`WRITE_INTERVAL`]; when it
//! moved, it takes the configuration in force under the control lock (a
//! copy, O(routes)) and, outside the lock, writes it to `<file>.tmp` and
//! renames that over the file, so the file is always one whole snapshot.
//! Nothing is written when the snapshot's bytes are those last written
//! (learned neighbours are not kept: the kernel has them). The hot path is
//! never involved. A SIGKILL loses at most the changes of the last interval;
//! the agent's full sync after the restart brings those.
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
    if &saved.base != cfg {
        return (
            cfg.clone(),
            Vec::new(),
            ignored(
                &path,
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
                &path,
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
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp: PathBuf = path.to_path_buf().into_os_string().into();
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Keeps the file up to date until `stop` (see the module docs).
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
            let mut written: Vec<u8> = Vec::new();
            let mut last_error: Option<String> = None;
            loop {
                let now = {
                    let c = control.lock().unwrap_or_else(|p| p.into_inner());
                    (tables.load().generation, c.reloads())
                };
                if seen != Some(now) {
                    let snapshot = control
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .saved_tables();
                    let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
                    let outcome = if bytes == written {
                        Ok(())
                    } else {
                        write(&path, &bytes).map(|()| written = bytes)
                    };
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
                std::thread::sleep(WRITE_INTERVAL);
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

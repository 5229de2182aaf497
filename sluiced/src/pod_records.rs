//! Pods attached again at start from the CNI plugin's attachment records
//! (`sluice_api::attachment`), so a restarted `sluiced` forwards for its
//! pods without any call from the container runtime.
//!
//! The plugin writes `<daemon.pod_records>/<port.name>.json` atomically
//! before its `ports.add` and removes it after `ports.remove`. At start,
//! once the workers run and before the API serves its first request,
//! [`reattach`] reads every record and adds the ports through the API's
//! own `ports.add` path ([`crate::api::add_ports`], in-process).
//!
//! Invariants:
//! - only `*.json` files whose name does not start with `.` are records;
//!   anything else (the writer's temporary files, directories, notes) is
//!   ignored and not counted;
//! - every record gets exactly one [`Outcome`], counted on `/metrics`
//!   (`sluice_pod_records_total{outcome}`); every outcome but `attached`
//!   is logged as a warning naming the file;
//! - a record is used only if it parses as an [`Attachment`] of
//!   [`RECORD_VERSION`] with a `pod` port that has an `ip`, in a file named
//!   after its `port.name`; otherwise it is `invalid`;
//! - the configuration file wins: a record for a port it already has is
//!   `configured` and left alone (a warning when its settings differ);
//! - a record whose interface is not in sluiced's network namespace is
//!   `missing_interface` (the pod went away while sluiced was down); for a
//!   vhost-user pod (`port.vhost_user` set) the test is whether the
//!   socket's directory (the pod's volume) still exists, not the socket:
//!   the pod may not have created it yet, and sluiced's vhost-user client
//!   connects whenever it appears;
//! - the rest are added in one batch; if the batch is refused, one by one,
//!   so one bad record never keeps the others off (`refused`);
//! - sluiced never writes, moves or removes a record: the plugin's DEL or
//!   GC does;
//! - the API serves no request before [`reattach`] returns, so a CNI ADD
//!   or DEL that arrives meanwhile is applied after it, never interleaved.

use crate::api::{ApiError, Control};
use crate::config::{PortConfig, PortKind};
use sluice_api::attachment::{Attachment, RECORD_VERSION};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest record read; larger files are `invalid`.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Its port was added.
    Attached,
    /// The configuration file has a port of that name; it wins.
    Configured,
    /// Its interface does not exist in sluiced's network namespace (a
    /// vhost-user pod: its socket's directory does not exist).
    MissingInterface,
    /// Unreadable, not a record, another version, not a pod, no IP, or a
    /// file name that is not its port's.
    Invalid,
    /// `ports.add` refused its port.
    Refused,
}

impl Outcome {
    /// Every outcome, in the order they are reported.
    pub const ALL: [Outcome; 5] = [
        Outcome::Attached,
        Outcome::Configured,
        Outcome::MissingInterface,
        Outcome::Invalid,
        Outcome::Refused,
    ];

    /// The `outcome` label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Attached => "attached",
            Outcome::Configured => "configured",
            Outcome::MissingInterface => "missing_interface",
            Outcome::Invalid => "invalid",
            Outcome::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Records handled since start, by outcome (read by `/metrics`).
#[derive(Debug, Default)]
pub struct PodRecordCounts {
    counts: [AtomicU64; Outcome::ALL.len()],
}

impl PodRecordCounts {
    /// Counts `n` records with outcome `o`.
    pub fn add(&self, o: Outcome, n: u64) {
        self.counts[o.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Records with outcome `o` so far.
    pub fn get(&self, o: Outcome) -> u64 {
        self.counts[o.index()].load(Ordering::Relaxed)
    }
}

/// Why one record file is not used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The record file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than any record.
    #[error("{}: over {MAX_RECORD_BYTES} bytes, not an attachment record", file.display())]
    TooLarge {
        /// The record file.
        file: PathBuf,
    },
    /// Not JSON, or not an attachment record.
    #[error("{}: not an attachment record: {source}", file.display())]
    Parse {
        /// The record file.
        file: PathBuf,
        /// What serde found.
        source: serde_json::Error,
    },
    /// Another record version.
    #[error("{}: record version {found}; this sluiced reads version {RECORD_VERSION}", file.display())]
    Version {
        /// The record file.
        file: PathBuf,
        /// The version it has.
        found: u32,
    },
    /// The port is not a pod's.
    #[error("{}: port.kind is `{kind}`; only pod ports are attached from records", file.display())]
    Kind {
        /// The record file.
        file: PathBuf,
        /// The kind it has.
        kind: PortKind,
    },
    /// The pod has no address.
    #[error("{}: port.ip is missing; a pod port needs its address", file.display())]
    NoIp {
        /// The record file.
        file: PathBuf,
    },
    /// The file is not named after its port.
    #[error("{}: port.name is `{name}`, but the record of that port is `{name}.json`", file.display())]
    Name {
        /// The record file.
        file: PathBuf,
        /// The port name inside.
        name: String,
    },
}

/// Whether `name` (a directory entry) is a record file: `*.json`, not
/// hidden (the writer's temporary files start with `.`).
pub fn is_record_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".json".len() && name.ends_with(".json")
}

/// Reads and checks one record file; its port on success.
pub fn read_record(file: &Path) -> Result<PortConfig, RecordError> {
    let read_err = |source| RecordError::Read {
        file: file.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(read_err)?
        .take(MAX_RECORD_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge {
            file: file.to_path_buf(),
        });
    }
    // The version first, so a record of another version is named as such
    // even when its fields changed.
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u32,
    }
    let parse_err = |source| RecordError::Parse {
        file: file.to_path_buf(),
        source,
    };
    let v: Versioned = serde_json::from_str(&text).map_err(parse_err)?;
    if v.version != RECORD_VERSION {
        return Err(RecordError::Version {
            file: file.to_path_buf(),
            found: v.version,
        });
    }
    let record: Attachment = serde_json::from_str(&text).map_err(parse_err)?;
    let port = record.port;
    if port.kind != PortKind::Pod {
        return Err(RecordError::Kind {
            file: file.to_path_buf(),
            kind: port.kind,
        });
    }
    if port.ip.is_none() {
        return Err(RecordError::NoIp {
            file: file.to_path_buf(),
        });
    }
    if file.file_name().and_then(|n| n.to_str()) != Some(&format!("{}.json", port.name)) {
        return Err(RecordError::Name {
            file: file.to_path_buf(),
            name: port.name,
        });
    }
    Ok(port)
}

/// A record not used, and why.
#[derive(Debug)]
pub struct Skipped {
    /// The record file.
    pub file: PathBuf,
    /// `configured`, `missing_interface` or `invalid`.
    pub outcome: Outcome,
    /// What to tell the operator.
    pub why: String,
    /// Whether the operator should hear of it (a record that repeats a
    /// configured port exactly is not worth a warning).
    pub warn: bool,
}

/// What a directory holds: the ports to add (with their files) and the
/// records skipped.
#[derive(Debug, Default)]
pub struct Scan {
    /// Ports to add, in file-name order.
    pub ports: Vec<(PathBuf, PortConfig)>,
    /// Records not used.
    pub skipped: Vec<Skipped>,
}

/// Reads every record in `dir` (a missing directory holds none) and sorts
/// them into ports to add and records skipped: `configured` names the
/// ports the configuration file has, `interface_exists` says whether an
/// interface is in this network namespace (asked for veth pods; a
/// vhost-user pod is present when its socket's directory is). The error
/// names the directory.
pub fn scan(
    dir: &Path,
    configured: &[PortConfig],
    interface_exists: impl Fn(&str) -> bool,
) -> Result<Scan, std::io::Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_record_name(name) || entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    let mut out = Scan::default();
    for file in files {
        let port = match read_record(&file) {
            Ok(p) => p,
            Err(e) => {
                out.skipped.push(Skipped {
                    file,
                    outcome: Outcome::Invalid,
                    why: e.to_string(),
                    warn: true,
                });
                continue;
            }
        };
        if let Some(c) = configured
            .iter()
            .find(|c| c.name == port.name && !c.removed)
        {
            let differs = *c != port;
            out.skipped.push(Skipped {
                file,
                outcome: Outcome::Configured,
                why: if differs {
                    format!(
                        "the configuration file has port `{}` with other settings; the configuration file's are kept",
                        port.name
                    )
                } else {
                    format!("the configuration file has port `{}`", port.name)
                },
                warn: differs,
            });
            continue;
        }
        if let Some(sock) = &port.vhost_user {
            let dir = sock.parent().unwrap_or(sock);
            if !dir.is_dir() {
                out.skipped.push(Skipped {
                    file,
                    outcome: Outcome::MissingInterface,
                    why: format!(
                        "vhost-user port `{}`: the socket's directory {} does not exist (the pod is gone; its DEL or GC removes the record)",
                        port.name,
                        dir.display()
                    ),
                    warn: true,
                });
                continue;
            }
        } else if !interface_exists(&port.name) {
            out.skipped.push(Skipped {
                file,
                outcome: Outcome::MissingInterface,
                why: format!(
                    "interface `{}` does not exist (the pod is gone; its DEL or GC removes the record)",
                    port.name
                ),
                warn: true,
            });
            continue;
        }
        out.ports.push((file, port));
    }
    Ok(out)
}

/// Adds `ports` with `add` (a `ports.add`): all in one call, and if that
/// is refused, one call per port. One result per port, in order.
pub fn attach_all(
    ports: &[PortConfig],
    mut add: impl FnMut(Vec<PortConfig>) -> Result<(), ApiError>,
) -> Vec<Result<(), ApiError>> {
    if ports.is_empty() {
        return Vec::new();
    }
    match add(ports.to_vec()) {
        Ok(()) => ports.iter().map(|_| Ok(())).collect(),
        Err(e) if ports.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::info!(
                ports = ports.len(),
                error = %e,
                "recorded pods refused as one batch; adding them one by one"
            );
            ports.iter().map(|p| add(vec![p.clone()])).collect()
        }
    }
}

/// What [`reattach`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records by outcome, in [`Outcome::ALL`] order.
    pub counts: [u64; Outcome::ALL.len()],
    /// From the start of the scan to the last port added.
    pub took: Duration,
}

impl Summary {
    /// Records with outcome `o`.
    pub fn count(&self, o: Outcome) -> u64 {
        self.counts[o.index()]
    }
}

/// Reads the records in `dir` and attaches their pods to the switch that
/// `control` runs, counting every outcome in `counts` and logging it (see
/// the module's invariants). Never fails: what cannot be attached is
/// skipped with a warning.
pub fn reattach(control: &Mutex<Control>, dir: &Path, counts: &PodRecordCounts) -> Summary {
    let t0 = Instant::now();
    let configured = control
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .config()
        .ports()
        .to_vec();
    let exists = |name: &str| sluice_ports::afxdp::ifindex(name).is_ok();
    let scan = match scan(dir, &configured, exists) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "daemon.pod_records: the directory cannot be read; no pods re-attached"
            );
            return Summary {
                took: t0.elapsed(),
                ..Summary::default()
            };
        }
    };
    let mut summary = Summary::default();
    let mut count = |o: Outcome| {
        summary.counts[o.index()] += 1;
        counts.add(o, 1);
    };
    for s in &scan.skipped {
        count(s.outcome);
        if s.warn {
            tracing::warn!(file = %s.file.display(), outcome = s.outcome.name(), "pod record skipped: {}", s.why);
        } else {
            tracing::debug!(file = %s.file.display(), outcome = s.outcome.name(), "pod record skipped: {}", s.why);
        }
    }
    let ports: Vec<PortConfig> = scan.ports.iter().map(|(_, p)| p.clone()).collect();
    let results = attach_all(&ports, |batch| {
        crate::api::add_ports(control, batch).map(|_| ())
    });
    for ((file, port), r) in scan.ports.iter().zip(results) {
        match r {
            Ok(()) => {
                count(Outcome::Attached);
                tracing::debug!(file = %file.display(), port = %port.name, "pod re-attached");
            }
            Err(e) => {
                count(Outcome::Refused);
                tracing::warn!(
                    file = %file.display(),
                    port = %port.name,
                    outcome = Outcome::Refused.name(),
                    "pod record skipped: ports.add refused it: {}",
                    e.message
                );
            }
        }
    }
    summary.took = t0.elapsed();
    tracing::info!(
        dir = %dir.display(),
        attached = summary.count(Outcome::Attached),
        configured = summary.count(Outcome::Configured),
        missing_interface = summary.count(Outcome::MissingInterface),
        invalid = summary.count(Outcome::Invalid),
        refused = summary.count(Outcome::Refused),
        took_ms = format!("{:.1}", summary.took.as_secs_f64() * 1e3),
        "pod records read"
    );
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::MacAddr;
    use std::net::Ipv4Addr;

    fn pod(name: &str, ip: [u8; 4]) -> PortConfig {
        PortConfig::pod(
            name,
            "02:00:00:00:01:02".parse::<MacAddr>().unwrap(),
            Ipv4Addr::from(ip),
            1450,
        )
    }

    fn record(port: &PortConfig) -> String {
        serde_json::to_string(&Attachment {
            version: RECORD_VERSION,
            network: "sluice".into(),
            container_id: format!("c-{}", port.name),
            ifname: "eth0".into(),
            netns: Some("/var/run/netns/p".into()),
            port: port.clone(),
            ipam: serde_json::json!({"type": "sluice"}),
            result: serde_json::json!({}),
        })
        .unwrap()
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn outcome_of<'a>(s: &'a Scan, file: &str) -> Option<&'a Skipped> {
        s.skipped
            .iter()
            .find(|k| k.file.file_name().unwrap() == file)
    }

    #[test]
    fn a_scan_keeps_good_records_and_names_every_file_it_skips() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let good_b = pod("slbbbb", [10, 5, 1, 3]);
        let good_a = pod("slaaaa", [10, 5, 1, 2]);
        write(dir, "slbbbb.json", &record(&good_b));
        write(dir, "slaaaa.json", &record(&good_a));
        write(dir, "slbad.json", "{\"version\":1,\"network\":");
        write(
            dir,
            "slv2.json",
            &record(&pod("slv2", [10, 5, 1, 4])).replace("\"version\":1", "\"version\":2"),
        );
        let mut uplink = pod("sluplink", [10, 5, 1, 5]);
        uplink.kind = PortKind::Uplink;
        write(dir, "sluplink.json", &record(&uplink));
        let mut no_ip = pod("slnoip", [10, 5, 1, 6]);
        no_ip.ip = None;
        write(dir, "slnoip.json", &record(&no_ip));
        write(dir, "slother.json", &record(&pod("slnamed", [10, 5, 1, 7])));
        // The writer's temporary files and anything not a record: ignored.
        write(
            dir,
            ".slcccc.json.tmp",
            &record(&pod("slcccc", [10, 5, 1, 8])),
        );
        write(dir, ".slcccc.json", &record(&pod("slcccc", [10, 5, 1, 8])));
        write(
            dir,
            "slcccc.json.tmp",
            &record(&pod("slcccc", [10, 5, 1, 8])),
        );
        write(dir, "README", "not a record");
        std::fs::create_dir(dir.join("sldir.json")).unwrap();
        // Already configured: the same, and with other settings.
        let same = pod("slsame", [10, 5, 1, 9]);
        write(dir, "slsame.json", &record(&same));
        write(dir, "sldiff.json", &record(&pod("sldiff", [10, 5, 1, 10])));
        let configured = vec![same, pod("sldiff", [10, 5, 1, 11])];
        // The pod went away while sluiced was down.
        write(dir, "slgone.json", &record(&pod("slgone", [10, 5, 1, 12])));

        let s = scan(dir, &configured, |n| n != "slgone").unwrap();
        let names: Vec<&str> = s.ports.iter().map(|(_, p)| p.name.as_str()).collect();
        assert_eq!(names, ["slaaaa", "slbbbb"], "file-name order");
        assert_eq!(s.ports[0].1, good_a, "the record's port as written");
        assert_eq!(s.ports[0].0, dir.join("slaaaa.json"));

        let expect = [
            ("slbad.json", Outcome::Invalid, "not an attachment record"),
            ("slv2.json", Outcome::Invalid, "record version 2"),
            ("sluplink.json", Outcome::Invalid, "port.kind is `uplink`"),
            ("slnoip.json", Outcome::Invalid, "port.ip is missing"),
            ("slother.json", Outcome::Invalid, "port.name is `slnamed`"),
            (
                "slsame.json",
                Outcome::Configured,
                "configuration file has port `slsame`",
            ),
            ("sldiff.json", Outcome::Configured, "with other settings"),
            (
                "slgone.json",
                Outcome::MissingInterface,
                "`slgone` does not exist",
            ),
        ];
        for (file, outcome, why) in expect {
            let k = outcome_of(&s, file).unwrap_or_else(|| panic!("{file} skipped: {s:?}"));
            assert_eq!(k.outcome, outcome, "{file}");
            assert!(k.why.contains(why), "{file}: {}", k.why);
            if outcome == Outcome::Invalid {
                assert!(k.why.contains(file), "the error names the file: {}", k.why);
            }
        }
        assert!(
            !outcome_of(&s, "slsame.json").unwrap().warn,
            "nothing to warn of"
        );
        assert!(outcome_of(&s, "sldiff.json").unwrap().warn);
        assert_eq!(s.skipped.len(), expect.len(), "nothing else counted: {s:?}");
    }

    #[test]
    fn a_vhost_user_pod_is_back_while_its_socket_directory_exists() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("attachments");
        std::fs::create_dir(&dir).unwrap();
        let vols = d.path().join("vhost");
        // The pod's directory exists, its socket not yet: attached (the
        // vhost-user client connects when the pod creates it).
        std::fs::create_dir_all(vols.join("slvhost1")).unwrap();
        let mut up = pod("slvhost1", [10, 5, 1, 20]);
        up.vhost_user = Some(vols.join("slvhost1/net1.sock"));
        write(&dir, "slvhost1.json", &record(&up));
        // Through a link to the pod's volume, as on Kubernetes.
        let volume = d
            .path()
            .join("kubelet/pods/u/volumes/kubernetes.io~empty-dir/sluice-vhost");
        std::fs::create_dir_all(&volume).unwrap();
        std::os::unix::fs::symlink(&volume, vols.join("slvhost2")).unwrap();
        let mut linked = pod("slvhost2", [10, 5, 1, 21]);
        linked.vhost_user = Some(vols.join("slvhost2/net1.sock"));
        write(&dir, "slvhost2.json", &record(&linked));
        // The pod is gone: its volume went, the link dangles.
        let gone_volume = d
            .path()
            .join("kubelet/pods/v/volumes/kubernetes.io~empty-dir/sluice-vhost");
        std::os::unix::fs::symlink(&gone_volume, vols.join("slvhost3")).unwrap();
        let mut gone = pod("slvhost3", [10, 5, 1, 22]);
        gone.vhost_user = Some(vols.join("slvhost3/net1.sock"));
        write(&dir, "slvhost3.json", &record(&gone));

        // No veth for any of them: the interface test is not asked.
        let s = scan(&dir, &[], |n| panic!("asked for interface {n}")).unwrap();
        let names: Vec<&str> = s.ports.iter().map(|(_, p)| p.name.as_str()).collect();
        assert_eq!(names, ["slvhost1", "slvhost2"]);
        assert_eq!(s.ports[0].1, up, "the record's port, vhost_user kept");
        let k = outcome_of(&s, "slvhost3.json").unwrap();
        assert_eq!(k.outcome, Outcome::MissingInterface);
        assert!(
            k.why.contains("slvhost3") && k.why.contains("does not exist"),
            "{}",
            k.why
        );
        assert_eq!(s.skipped.len(), 1);
    }

    #[test]
    fn a_missing_directory_holds_no_records_and_an_unreadable_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        let s = scan(&d.path().join("absent"), &[], |_| true).unwrap();
        assert!(s.ports.is_empty() && s.skipped.is_empty());
        let file = d.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(scan(&file, &[], |_| true).is_err(), "not a directory");
    }

    #[test]
    fn an_oversized_file_is_not_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("slbig.json");
        std::fs::write(&f, vec![b' '; MAX_RECORD_BYTES as usize + 10]).unwrap();
        assert!(matches!(read_record(&f), Err(RecordError::TooLarge { .. })));
    }

    #[test]
    fn a_refused_batch_is_added_one_by_one() {
        let ports: Vec<PortConfig> = (0..4)
            .map(|i| pod(&format!("sl{i}"), [10, 5, 1, 2 + i]))
            .collect();
        let mut calls = Vec::new();
        let results = attach_all(&ports, |batch| {
            calls.push(batch.len());
            if batch.iter().any(|p| p.name == "sl2") {
                Err(ApiError::at("ports[0].name", "`sl2` is a bridge"))
            } else {
                Ok(())
            }
        });
        assert_eq!(calls, [4, 1, 1, 1, 1], "the batch, then each port");
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, false, true]);
        assert!(results[2].as_ref().unwrap_err().message.contains("sl2"));

        let mut calls = 0;
        let results = attach_all(&ports, |_| {
            calls += 1;
            Ok(())
        });
        assert_eq!((calls, results.len()), (1, 4), "one batch when it is taken");
        let results = attach_all(&ports[..1], |_| Err(ApiError::general("no")));
        assert_eq!(results.len(), 1, "a single port is not tried twice");
        assert!(attach_all(&[], |_| panic!("nothing to add")).is_empty());
    }

    #[test]
    fn counts_are_kept_per_outcome() {
        let c = PodRecordCounts::default();
        c.add(Outcome::Attached, 3);
        c.add(Outcome::Refused, 1);
        assert_eq!(c.get(Outcome::Attached), 3);
        assert_eq!(c.get(Outcome::Refused), 1);
        assert_eq!(c.get(Outcome::Invalid), 0);
        let names: Vec<&str> = Outcome::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "attached",
                "configured",
                "missing_interface",
                "invalid",
                "refused"
            ]
        );
    }
}

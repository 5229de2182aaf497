//! Unit tests. Plugins are test doubles: shell scripts written into a
//! tempdir that record each call (environment and stdin) in a directory of
//! their own and print a canned answer.

use super::*;
use base64::Engine;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

// ---------------------------------------------------------------- conflists

const GOOD: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "pods-1.net_a",
  "disableCheck": "TRUE",
  "plugins": [
    {"type": "bridge", "bridge": "br0", "ipam": {"type": "host-local"}},
    {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}, "snat": true}
  ]
}"#;

#[test]
fn conf_parses_a_good_list() {
    let l = ConfList::parse(GOOD.as_bytes()).unwrap();
    assert_eq!(l.name, "pods-1.net_a");
    assert_eq!(l.cni_version, "1.0.0");
    assert_eq!(l.version(), Version(1, 0, 0));
    assert!(l.disable_check, "\"TRUE\" is read as libcni does");
    assert!(!l.disable_gc);
    assert_eq!(l.bytes, GOOD.as_bytes());
    assert_eq!(l.plugins.len(), 2);
    assert_eq!(l.plugins[0].plugin_type, "bridge");
    assert!(l.plugins[0].capabilities.is_empty());
    assert_eq!(l.plugins[0].raw["bridge"], "br0");
    assert_eq!(l.plugins[1].plugin_type, "portmap");
    assert_eq!(
        l.plugins[1].enabled_capabilities().collect::<Vec<_>>(),
        ["portMappings"]
    );
    assert!(!l.plugins[1].capabilities["bandwidth"]);
    assert_eq!(l.plugins[1].raw["snat"], true);
}

#[test]
fn conf_load_reads_a_file_and_names_it_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("10-pods.conflist");
    std::fs::write(&p, GOOD).unwrap();
    assert_eq!(ConfList::load(&p).unwrap().name, "pods-1.net_a");
    let missing = dir.path().join("nope.conflist");
    let e = ConfList::load(&missing).unwrap_err();
    assert!(matches!(e, ConfError::Read { .. }), "{e}");
    assert!(e.to_string().contains("nope.conflist"), "{e}");
}

#[test]
fn conf_cni_versions_picks_the_highest_this_library_supports() {
    let pick = |extra: &str| {
        let s = format!(r#"{{"name":"n",{extra},"plugins":[{{"type":"p"}}]}}"#);
        ConfList::parse(s.as_bytes()).map(|l| l.cni_version)
    };
    assert_eq!(
        pick(r#""cniVersion":"1.0.0","cniVersions":["0.4.0","1.1.0","2.0.0"]"#).unwrap(),
        "1.1.0"
    );
    assert_eq!(
        pick(r#""cniVersion":"1.0.0","cniVersions":["0.3.1"]"#).unwrap(),
        "1.0.0"
    );
    assert_eq!(pick(r#""cniVersions":["0.4.0","0.3.1"]"#).unwrap(), "0.4.0");
    // Nothing supported in cniVersions: cniVersion as written (libcni).
    assert_eq!(
        pick(r#""cniVersion":"1.0.0","cniVersions":["9.0.0"]"#).unwrap(),
        "1.0.0"
    );
    assert_eq!(
        pick(r#""cniVersions":["9.0.0"]"#).unwrap_err().field(),
        Some("cniVersions")
    );
    // Numeric order, not string order.
    assert_eq!(
        pick(r#""cniVersions":["0.10.0","0.9.0"]"#).unwrap(),
        "0.10.0"
    );
}

#[test]
fn conf_each_bad_field_is_named() {
    let cases: &[(&str, &str)] = &[
        (r#"{"cniVersion":"1.0.0","plugins":[{"type":"p"}]}"#, "name"),
        (
            r#"{"name":7,"cniVersion":"1.0.0","plugins":[{"type":"p"}]}"#,
            "name",
        ),
        (
            r#"{"name":"-n","cniVersion":"1.0.0","plugins":[{"type":"p"}]}"#,
            "name",
        ),
        (
            r#"{"name":"a/b","cniVersion":"1.0.0","plugins":[{"type":"p"}]}"#,
            "name",
        ),
        (
            r#"{"name":"","cniVersion":"1.0.0","plugins":[{"type":"p"}]}"#,
            "name",
        ),
        (r#"{"name":"n","plugins":[{"type":"p"}]}"#, "cniVersion"),
        (
            r#"{"name":"n","cniVersion":1,"plugins":[{"type":"p"}]}"#,
            "cniVersion",
        ),
        (
            r#"{"name":"n","cniVersion":"1.x","plugins":[{"type":"p"}]}"#,
            "cniVersion",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0.0","plugins":[{"type":"p"}]}"#,
            "cniVersion",
        ),
        (
            r#"{"name":"n","cniVersions":"1.0.0","plugins":[{"type":"p"}]}"#,
            "cniVersions",
        ),
        (
            r#"{"name":"n","cniVersions":["1.0.0",1],"plugins":[{"type":"p"}]}"#,
            "cniVersions[1]",
        ),
        (
            r#"{"name":"n","cniVersions":["v1"],"plugins":[{"type":"p"}]}"#,
            "cniVersions[0]",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","disableCheck":"maybe","plugins":[{"type":"p"}]}"#,
            "disableCheck",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","disableCheck":1,"plugins":[{"type":"p"}]}"#,
            "disableCheck",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","disableGC":[],"plugins":[{"type":"p"}]}"#,
            "disableGC",
        ),
        (r#"{"name":"n","cniVersion":"1.0.0"}"#, "plugins"),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":{}}"#,
            "plugins",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#,
            "plugins",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":["p"]}"#,
            "plugins[0]",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"p"},{}]}"#,
            "plugins[1].type",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":5}]}"#,
            "plugins[0].type",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":""}]}"#,
            "plugins[0].type",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../bin/sh"}]}"#,
            "plugins[0].type",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"p","capabilities":[]}]}"#,
            "plugins[0].capabilities",
        ),
        (
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"p","capabilities":{"mac":"yes"}}]}"#,
            "plugins[0].capabilities.mac",
        ),
    ];
    for (json, field) in cases {
        let e = ConfList::parse(json.as_bytes()).expect_err(json);
        assert_eq!(e.field(), Some(*field), "{json}: {e}");
        assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
    }
    for not_object in ["", "nope", "[]", "null", "{"] {
        let e = ConfList::parse(not_object.as_bytes()).expect_err(not_object);
        assert!(matches!(e, ConfError::Json(_)), "{not_object}: {e}");
    }
}

#[test]
fn versions_parse_and_order_numerically() {
    assert_eq!(Version::parse("1.1.0"), Some(Version(1, 1, 0)));
    assert_eq!(Version::parse("1"), Some(Version(1, 0, 0)));
    assert_eq!(Version::parse("0.4"), Some(Version(0, 4, 0)));
    for bad in ["", "1.", ".1", "1.2.3.4", "a.b.c", "-1.0.0", "1.0.0-rc1"] {
        assert_eq!(Version::parse(bad), None, "{bad}");
    }
    assert!(Version(0, 10, 0) > Version(0, 9, 9));
    assert!(Version(1, 0, 0) < Version::V1_1_0);
    assert_eq!(Version::CURRENT.to_string(), CURRENT_VERSION);
}

// ----------------------------------------------------------- request build

fn list(json: &str) -> ConfList {
    ConfList::parse(json.as_bytes()).unwrap()
}

#[test]
fn request_injects_name_version_and_the_capability_intersection() {
    let l = list(
        r#"{"cniVersion":"1.0.0","name":"net","plugins":[
          {"type":"p","name":"other","cniVersion":"0.3.1","keep":{"x":1},
           "capabilities":{"portMappings":true,"bandwidth":false,"mac":true,"dns":true}}]}"#,
    );
    let mut rt = RuntimeConf::new("c1", None, "eth0");
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80}]),
    );
    rt.capability_args
        .insert("bandwidth".into(), json!({"ingressRate": 1}));
    rt.capability_args
        .insert("ips".into(), json!(["10.0.0.5/24"]));
    rt.capability_args
        .insert("mac".into(), json!("02:00:00:00:00:01"));
    let p = &l.plugins[0];
    for cmd in [Command::Add, Command::Del, Command::Check] {
        let r = Cni::request(&l, p, cmd, None, &rt);
        assert_eq!(r["name"], "net", "the list's name wins");
        assert_eq!(r["cniVersion"], "1.0.0", "the list's version wins");
        assert_eq!(r["keep"], json!({"x": 1}), "other keys pass through");
        assert_eq!(
            r["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80}],
                   "mac": "02:00:00:00:00:01"}),
            "{cmd}: enabled capabilities ∩ capability args"
        );
        assert!(
            !r.contains_key("capabilities"),
            "{cmd}: capabilities stripped"
        );
        assert!(!r.contains_key("prevResult"));
    }
    // Nothing in common: no runtimeConfig at all.
    let mut rt2 = RuntimeConf::new("c1", None, "eth0");
    rt2.capability_args.insert("bandwidth".into(), json!({}));
    let r = Cni::request(&l, p, Command::Add, None, &rt2);
    assert!(!r.contains_key("runtimeConfig"), "{r:?}");
    // prevResult when given.
    let prev = json!({"cniVersion": "1.0.0", "ips": []});
    let r = Cni::request(&l, p, Command::Del, Some(&prev), &rt);
    assert_eq!(r["prevResult"], prev);
    // STATUS and GC: no runtimeConfig, capabilities kept (as libcni).
    let r = Cni::request(&l, p, Command::Status, None, &rt);
    assert!(!r.contains_key("runtimeConfig"));
    assert!(r.contains_key("capabilities"));
    let g = Cni::gc_request(&l, p, &[("c1".into(), "eth0".into())]);
    let want = json!([{"containerID": "c1", "ifname": "eth0"}]);
    assert_eq!(g["cni.dev/valid-attachments"], want);
    assert_eq!(g["cni.dev/attachments"], want);
    assert_eq!(g["name"], "net");
    assert!(g.contains_key("capabilities") && !g.contains_key("runtimeConfig"));
    let g = Cni::gc_request(&l, p, &[]);
    assert_eq!(g["cni.dev/valid-attachments"], json!([]));
}

// ------------------------------------------------------------ fake plugins

/// One recorded plugin call.
#[derive(Debug)]
struct Call {
    plugin: String,
    command: String,
    env: HashMap<String, String>,
    stdin: Value,
}

struct Harness {
    dir: tempfile::TempDir,
}

/// What a fake plugin does for one command: stdout and exit status.
#[derive(Clone, Copy)]
struct Reply<'a> {
    stdout: &'a str,
    stderr: &'a str,
    exit: i32,
}

const OK: Reply<'static> = Reply {
    stdout: "",
    stderr: "",
    exit: 0,
};

impl Harness {
    fn new() -> Harness {
        let h = Harness {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(h.bin()).unwrap();
        std::fs::create_dir(h.empty_bin()).unwrap();
        std::fs::create_dir(h.calls_dir()).unwrap();
        h
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    /// A plugin dir with nothing in it, searched first.
    fn empty_bin(&self) -> PathBuf {
        self.dir.path().join("bin0")
    }
    fn calls_dir(&self) -> PathBuf {
        self.dir.path().join("calls")
    }
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn cni(&self) -> Cni {
        Cni::new(vec![self.empty_bin(), self.bin()]).with_cache_dir(self.cache())
    }

    /// A plugin whose ADD returns `{"cniVersion":"1.0.0","dns":{"domain":NAME},
    /// "seen": <prevResult's domain or null>}` — so each result says which
    /// plugin made it and which result it was given — and every other command
    /// succeeds silently.
    fn plugin(&self, name: &str) {
        self.plugin_with(name, &[]);
    }

    /// A plugin with `replies` overriding the default per command.
    fn plugin_with(&self, name: &str, replies: &[(&str, Reply<'_>)]) {
        let mut arms = String::new();
        for (cmd, r) in replies {
            for s in [r.stdout, r.stderr] {
                assert!(!s.contains('\''), "canned output must not hold a quote");
            }
            arms += &format!(
                "  {cmd}) printf '%s' '{}'; printf '%s' '{}' >&2; exit {};;\n",
                r.stdout, r.stderr, r.exit
            );
        }
        let script = format!(
            r#"#!/bin/sh
# Test double for the CNI plugin "{name}".
calls='{calls}'
d="$calls/$(printf %03d "$(ls "$calls" | wc -l)")"
mkdir "$d"
cat > "$d/stdin"
env > "$d/env"
printf '%s\n%s\n' '{name}' "$CNI_COMMAND" > "$d/who"
case "$CNI_COMMAND" in
{arms}  ADD)
    seen=$(sed -n 's/.*"prevResult":{{[^}}]*"dns":{{"domain":"\([a-z]*\)".*/\1/p' "$d/stdin")
    [ -n "$seen" ] && seen="\"$seen\"" || seen=null
    printf '{{"cniVersion":"1.0.0","dns":{{"domain":"{name}"}},"seen":%s}}' "$seen";;
  VERSION) printf '{{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}}';;
esac
exit 0
"#,
            calls = self.calls_dir().display(),
        );
        let path = self.bin().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn calls(&self) -> Vec<Call> {
        let mut dirs: Vec<_> = std::fs::read_dir(self.calls_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        dirs.iter()
            .map(|d| {
                let who = std::fs::read_to_string(d.join("who")).unwrap();
                let mut who = who.lines();
                let env = std::fs::read_to_string(d.join("env"))
                    .unwrap()
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let stdin = std::fs::read(d.join("stdin")).unwrap();
                Call {
                    plugin: who.next().unwrap().to_string(),
                    command: who.next().unwrap_or("").to_string(),
                    env,
                    stdin: serde_json::from_slice(&stdin)
                        .unwrap_or_else(|e| panic!("{}: stdin not JSON: {e}", d.display())),
                }
            })
            .collect()
    }

    fn clear_calls(&self) {
        std::fs::remove_dir_all(self.calls_dir()).unwrap();
        std::fs::create_dir(self.calls_dir()).unwrap();
    }
}

fn order(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.plugin, c.command))
        .collect()
}

fn chain(version: &str) -> ConfList {
    list(&format!(
        r#"{{"cniVersion":"{version}","name":"net","plugins":[
          {{"type":"a"}},
          {{"type":"b","capabilities":{{"portMappings":true}}}},
          {{"type":"c"}}]}}"#
    ))
}

fn three(h: &Harness) {
    for p in ["a", "b", "c"] {
        h.plugin(p);
    }
}

fn attachment(cid: &str) -> RuntimeConf {
    let mut rt = RuntimeConf::new(cid, Some("/run/netns/pod-x".into()), "eth0");
    rt.args = vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAME".into(), "web-0".into()),
    ];
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 80, "containerPort": 8080}]),
    );
    rt
}

// ----------------------------------------------------------------------- ADD

#[test]
fn add_runs_the_chain_in_order_passing_each_result_on() {
    let h = Harness::new();
    three(&h);
    let l = chain("1.0.0");
    let rt = attachment("c1");
    let result = h.cni().add_network_list(&l, &rt).unwrap();
    assert_eq!(
        result,
        json!({"cniVersion":"1.0.0","dns":{"domain":"c"},"seen":"b"}),
        "the final result is the last plugin's"
    );
    let calls = h.calls();
    assert_eq!(order(&calls), ["a ADD", "b ADD", "c ADD"]);
    assert!(
        !calls[0]
            .stdin
            .as_object()
            .unwrap()
            .contains_key("prevResult"),
        "no prevResult on the first ADD"
    );
    assert_eq!(
        calls[1].stdin["prevResult"],
        json!({"cniVersion":"1.0.0","dns":{"domain":"a"},"seen":null})
    );
    assert_eq!(
        calls[2].stdin["prevResult"],
        json!({"cniVersion":"1.0.0","dns":{"domain":"b"},"seen":"a"})
    );
    // runtimeConfig only where declared.
    assert!(!calls[0]
        .stdin
        .as_object()
        .unwrap()
        .contains_key("runtimeConfig"));
    assert_eq!(
        calls[1].stdin["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
    );
    assert!(!calls[1]
        .stdin
        .as_object()
        .unwrap()
        .contains_key("capabilities"));
    for c in &calls {
        assert_eq!(c.stdin["name"], "net");
        assert_eq!(c.stdin["cniVersion"], "1.0.0");
        assert_eq!(c.env["CNI_COMMAND"], "ADD");
        assert_eq!(c.env["CNI_CONTAINERID"], "c1");
        assert_eq!(c.env["CNI_NETNS"], "/run/netns/pod-x");
        assert_eq!(c.env["CNI_IFNAME"], "eth0");
        assert_eq!(c.env["CNI_ARGS"], "IgnoreUnknown=1;K8S_POD_NAME=web-0");
        assert_eq!(
            c.env["CNI_PATH"],
            format!("{}:{}", h.empty_bin().display(), h.bin().display())
        );
        assert_eq!(
            c.env.get("PATH"),
            std::env::var("PATH").ok().as_ref(),
            "PATH is inherited"
        );
    }
}

#[test]
fn add_caches_the_result_in_libcnis_format() {
    let h = Harness::new();
    three(&h);
    let l = chain("1.0.0");
    let rt = attachment("c1");
    let result = h.cni().add_network_list(&l, &rt).unwrap();
    let path = h.cache().join("results").join("net-c1-eth0");
    assert_eq!(h.cni().cache_path("net", &rt).unwrap(), path);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_meta = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(dir_meta.permissions().mode() & 0o777, 0o700);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["kind"], "cniCacheV1");
    assert_eq!(v["containerId"], "c1");
    assert_eq!(v["ifName"], "eth0");
    assert_eq!(v["networkName"], "net");
    assert_eq!(v["netns"], "/run/netns/pod-x");
    assert_eq!(
        v["cniArgs"],
        json!([["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web-0"]])
    );
    assert_eq!(
        v["capabilityArgs"],
        json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
    );
    assert_eq!(v["result"], result);
    let config = base64::engine::general_purpose::STANDARD
        .decode(v["config"].as_str().unwrap())
        .unwrap();
    assert_eq!(config, l.bytes, "config is the conflist, base64");
    assert_eq!(
        h.cni().cached_result(&l, &rt).unwrap(),
        Some(result.clone())
    );
    let atts = h.cni().cached_attachments(None).unwrap();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0].container_id, "c1");
    assert_eq!(atts[0].network, "net");
    assert_eq!(atts[0].ifname, "eth0");
    assert_eq!(atts[0].netns, rt.netns);
    assert_eq!(atts[0].args, rt.args);
    assert_eq!(atts[0].capability_args, rt.capability_args);
    assert_eq!(atts[0].config, l.bytes);
    assert_eq!(atts[0].result.as_ref(), Some(&result));

    // Empty args, no netns: left out, as Go's omitempty does.
    let rt2 = RuntimeConf::new("c2", None, "net1");
    h.cni().add_network_list(&l, &rt2).unwrap();
    let v: Value =
        serde_json::from_slice(&std::fs::read(h.cache().join("results/net-c2-net1")).unwrap())
            .unwrap();
    let o = v.as_object().unwrap();
    for absent in ["netns", "cniArgs", "capabilityArgs"] {
        assert!(!o.contains_key(absent), "{absent} in {v}");
    }
    assert_eq!(h.cni().cached_attachments(Some("c2")).unwrap().len(), 1);
    assert_eq!(h.cni().cached_attachments(None).unwrap().len(), 2);
}

#[test]
fn add_fills_in_a_missing_result_version_and_refuses_non_objects() {
    let h = Harness::new();
    h.plugin_with(
        "quiet",
        &[(
            "ADD",
            Reply {
                stdout: r#"{"ips":[]}"#,
                ..OK
            },
        )],
    );
    h.plugin_with(
        "silly",
        &[(
            "ADD",
            Reply {
                stdout: "[1,2]",
                ..OK
            },
        )],
    );
    let l = list(r#"{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"quiet"}]}"#);
    let r = h
        .cni()
        .add_network_list(&l, &RuntimeConf::new("c", None, "eth0"))
        .unwrap();
    assert_eq!(r, json!({"cniVersion": "0.4.0", "ips": []}));
    let l = list(r#"{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"silly"}]}"#);
    let e = h
        .cni()
        .add_network_list(&l, &RuntimeConf::new("c", None, "eth0"))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadOutput {
                command: Command::Add,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn add_failure_stops_the_chain_returns_the_plugins_error_and_does_not_del() {
    let h = Harness::new();
    h.plugin("a");
    h.plugin_with(
        "b",
        &[(
            "ADD",
            Reply {
                stdout: r#"{"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"10.0.0.0/31 too small"}"#,
                stderr: "b: giving up",
                exit: 1,
            },
        )],
    );
    h.plugin("c");
    let l = chain("1.0.0");
    let rt = attachment("c1");
    let e = h.cni().add_network_list(&l, &rt).unwrap_err();
    let ce = e.cni().unwrap_or_else(|| panic!("not a plugin error: {e}"));
    assert_eq!(
        (ce.plugin.as_str(), ce.network.as_str(), ce.command, ce.code),
        ("b", "net", Command::Add, 7)
    );
    assert_eq!(ce.msg, "bad subnet");
    assert_eq!(ce.details, "10.0.0.0/31 too small");
    assert_eq!(ce.stderr, "b: giving up");
    let text = e.to_string();
    for part in ["\"b\"", "ADD", "bad subnet", "code 7", "too small"] {
        assert!(text.contains(part), "{part} not in {text}");
    }
    assert_eq!(order(&h.calls()), ["a ADD", "b ADD"], "no c, no DEL");
    assert!(!h.cni().cache_path("net", &rt).unwrap().exists());
    // The runtime's decision: DEL, which runs the whole chain in reverse
    // without a prevResult (nothing cached).
    h.clear_calls();
    h.cni().del_network_list(&l, &rt).unwrap();
    let calls = h.calls();
    assert_eq!(order(&calls), ["c DEL", "b DEL", "a DEL"]);
    assert!(calls
        .iter()
        .all(|c| !c.stdin.as_object().unwrap().contains_key("prevResult")));
}

#[test]
fn add_checks_the_attachment_arguments_like_libcni() {
    let h = Harness::new();
    h.plugin("a");
    let l = list(r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}]}"#);
    for (cid, ifname) in [
        ("", "eth0"),
        ("-c", "eth0"),
        ("c 1", "eth0"),
        ("c1", ""),
        ("c1", "a-very-long-name"),
        ("c1", "."),
        ("c1", "a/b"),
        ("c1", "a:b"),
        ("c1", "a b"),
    ] {
        let e = h
            .cni()
            .add_network_list(&l, &RuntimeConf::new(cid, None, ifname))
            .expect_err(&format!("{cid:?} {ifname:?}"));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
    assert!(h.calls().is_empty());
    h.cni()
        .add_network_list(&l, &RuntimeConf::new("C_1.x-y", None, "eth0.100"))
        .unwrap();
}

// -------------------------------------------------------------- DEL, CHECK

#[test]
fn del_runs_in_reverse_with_the_cached_result_then_drops_the_cache() {
    let h = Harness::new();
    three(&h);
    let l = chain("1.0.0");
    let rt = attachment("c1");
    let result = h.cni().add_network_list(&l, &rt).unwrap();
    h.clear_calls();
    h.cni().del_network_list(&l, &rt).unwrap();
    let calls = h.calls();
    assert_eq!(order(&calls), ["c DEL", "b DEL", "a DEL"]);
    for c in &calls {
        assert_eq!(c.stdin["prevResult"], result, "{}", c.plugin);
        assert_eq!(c.env["CNI_COMMAND"], "DEL");
        assert_eq!(c.env["CNI_CONTAINERID"], "c1");
        assert_eq!(c.env["CNI_NETNS"], "/run/netns/pod-x");
    }
    assert_eq!(
        calls[1].stdin["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
    );
    assert!(!h.cni().cache_path("net", &rt).unwrap().exists());
    assert_eq!(h.cni().cached_result(&l, &rt).unwrap(), None);
    // Again: nothing cached, so no prevResult; no netns is an empty CNI_NETNS.
    h.clear_calls();
    let mut rt2 = rt.clone();
    rt2.netns = None;
    h.cni().del_network_list(&l, &rt2).unwrap();
    let calls = h.calls();
    assert_eq!(order(&calls), ["c DEL", "b DEL", "a DEL"]);
    for c in &calls {
        assert!(!c.stdin.as_object().unwrap().contains_key("prevResult"));
        assert_eq!(c.env["CNI_NETNS"], "");
    }
}

#[test]
fn del_stops_at_a_failure_and_keeps_the_cache() {
    let h = Harness::new();
    h.plugin("a");
    h.plugin_with(
        "b",
        &[(
            "DEL",
            Reply {
                stdout: r#"{"code":11,"msg":"busy"}"#,
                stderr: "",
                exit: 1,
            },
        )],
    );
    h.plugin("c");
    let l = chain("1.0.0");
    let rt = attachment("c1");
    h.cni().add_network_list(&l, &rt).unwrap();
    h.clear_calls();
    let e = h.cni().del_network_list(&l, &rt).unwrap_err();
    assert_eq!(
        e.cni().map(|c| (c.command, c.code)),
        Some((Command::Del, 11))
    );
    assert_eq!(order(&h.calls()), ["c DEL", "b DEL"]);
    assert!(h.cni().cache_path("net", &rt).unwrap().exists());
}

#[test]
fn del_and_check_before_0_4_0() {
    let h = Harness::new();
    three(&h);
    let l = chain("0.3.1");
    let rt = attachment("c1");
    h.cni().add_network_list(&l, &rt).unwrap();
    h.clear_calls();
    let e = h.cni().check_network_list(&l, &rt).unwrap_err();
    assert!(matches!(e, Error::CheckNotSupported(_)), "{e}");
    h.cni().del_network_list(&l, &rt).unwrap();
    let calls = h.calls();
    assert_eq!(order(&calls), ["c DEL", "b DEL", "a DEL"]);
    assert!(
        calls
            .iter()
            .all(|c| !c.stdin.as_object().unwrap().contains_key("prevResult")),
        "no prevResult on DEL before 0.4.0"
    );
    assert!(!h.cni().cache_path("net", &rt).unwrap().exists());
}

#[test]
fn del_goes_on_without_a_corrupt_cache_entry_and_reads_the_legacy_format() {
    let h = Harness::new();
    three(&h);
    let l = chain("1.0.0");
    let rt = attachment("c1");
    let path = h.cni().cache_path("net", &rt).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "garbage").unwrap();
    assert!(matches!(
        h.cni().cached_result(&l, &rt),
        Err(Error::Cache { .. })
    ));
    h.cni().del_network_list(&l, &rt).unwrap();
    assert!(!path.exists());
    assert!(h
        .calls()
        .iter()
        .all(|c| !c.stdin.as_object().unwrap().contains_key("prevResult")));
    // Old libcni wrote the bare result.
    let legacy = json!({"cniVersion": "0.4.0", "ips": [{"address": "10.1.0.2/24"}]});
    std::fs::write(&path, legacy.to_string()).unwrap();
    assert_eq!(
        h.cni().cached_result(&l, &rt).unwrap(),
        Some(legacy.clone())
    );
    h.clear_calls();
    h.cni().del_network_list(&l, &rt).unwrap();
    assert!(h.calls().iter().all(|c| c.stdin["prevResult"] == legacy));
}

#[test]
fn check_runs_in_order_with_the_cached_result() {
    let h = Harness::new();
    three(&h);
    let l = chain("1.0.0");
    let rt = attachment("c1");
    let result = h.cni().add_network_list(&l, &rt).unwrap();
    h.clear_calls();
    h.cni().check_network_list(&l, &rt).unwrap();
    let calls = h.calls();
    assert_eq!(order(&calls), ["a CHECK", "b CHECK", "c CHECK"]);
    for c in &calls {
        assert_eq!(c.stdin["prevResult"], result);
        assert_eq!(c.env["CNI_COMMAND"], "CHECK");
    }
    assert!(calls[1].stdin.get("runtimeConfig").is_some());
    // disableCheck: nothing runs.
    let off =
        list(r#"{"cniVersion":"1.0.0","name":"net","disableCheck":true,"plugins":[{"type":"a"}]}"#);
    h.clear_calls();
    h.cni().check_network_list(&off, &rt).unwrap();
    assert!(h.calls().is_empty());
    // A failing CHECK is returned.
    h.plugin_with(
        "b",
        &[(
            "CHECK",
            Reply {
                stdout: r#"{"code":100,"msg":"eth0 has no address"}"#,
                stderr: "",
                exit: 1,
            },
        )],
    );
    let e = h.cni().check_network_list(&l, &rt).unwrap_err();
    assert_eq!(
        e.cni().map(|c| (c.plugin.as_str(), c.command, c.code)),
        Some(("b", Command::Check, 100))
    );
}

// ---------------------------------------------------------------- GC, STATUS

#[test]
fn gc_dels_stale_attachments_then_sends_gc_to_every_plugin() {
    let h = Harness::new();
    three(&h);
    let l = chain("1.1.0");
    let keep = attachment("c1");
    let stale = attachment("c2");
    h.cni().add_network_list(&l, &keep).unwrap();
    let stale_result = h.cni().add_network_list(&l, &stale).unwrap();
    // Another network's entry is not this GC's business.
    let other = list(r#"{"cniVersion":"1.1.0","name":"other","plugins":[{"type":"a"}]}"#);
    h.cni().add_network_list(&other, &attachment("c3")).unwrap();
    h.clear_calls();
    h.cni()
        .gc_network_list(&l, &[("c1".into(), "eth0".into())])
        .unwrap();
    let calls = h.calls();
    assert_eq!(
        order(&calls),
        ["c DEL", "b DEL", "a DEL", "a GC", "b GC", "c GC"]
    );
    for c in &calls[..3] {
        assert_eq!(c.env["CNI_CONTAINERID"], "c2");
        assert_eq!(c.env["CNI_NETNS"], "/run/netns/pod-x", "from the cache");
        assert_eq!(c.env["CNI_ARGS"], "IgnoreUnknown=1;K8S_POD_NAME=web-0");
        assert_eq!(c.stdin["prevResult"], stale_result);
    }
    let valid = json!([{"containerID": "c1", "ifname": "eth0"}]);
    for c in &calls[3..] {
        assert_eq!(c.stdin["cni.dev/valid-attachments"], valid);
        assert_eq!(c.stdin["cni.dev/attachments"], valid);
        assert_eq!(c.stdin["name"], "net");
        assert_eq!(c.stdin["cniVersion"], "1.1.0");
        assert!(!c.stdin.as_object().unwrap().contains_key("runtimeConfig"));
        assert_eq!(c.env["CNI_COMMAND"], "GC");
        assert_eq!(c.env["CNI_CONTAINERID"], "");
        assert_eq!(c.env["CNI_IFNAME"], "");
        assert!(!c.env["CNI_PATH"].is_empty(), "GC needs CNI_PATH");
    }
    let left: Vec<_> = h
        .cni()
        .cached_attachments(None)
        .unwrap()
        .into_iter()
        .map(|a| (a.network, a.container_id))
        .collect();
    assert_eq!(
        left,
        [
            ("net".to_string(), "c1".to_string()),
            ("other".into(), "c3".into())
        ]
    );
}

#[test]
fn gc_goes_on_past_errors_and_returns_them_all() {
    let h = Harness::new();
    let fail = Reply {
        stdout: r#"{"code":100,"msg":"lost track"}"#,
        stderr: "",
        exit: 1,
    };
    h.plugin_with("a", &[("GC", fail)]);
    h.plugin("b");
    h.plugin_with("c", &[("GC", fail)]);
    let l = chain("1.1.0");
    let e = h.cni().gc_network_list(&l, &[]).unwrap_err();
    assert_eq!(order(&h.calls()), ["a GC", "b GC", "c GC"]);
    let failed: Vec<_> =
        e.0.iter()
            .map(|e| e.cni().unwrap().plugin.clone())
            .collect();
    assert_eq!(failed, ["a", "c"]);
    assert!(e.to_string().contains("lost track"), "{e}");
    assert_eq!(
        h.calls()[0].stdin["cni.dev/valid-attachments"],
        json!([]),
        "an empty valid set is sent as []"
    );
}

#[test]
fn gc_is_skipped_with_disable_gc_and_sends_no_gc_before_1_1_0() {
    let h = Harness::new();
    three(&h);
    let off = list(
        r#"{"cniVersion":"1.1.0","name":"net-off","disableGC":true,"plugins":[{"type":"a"}]}"#,
    );
    h.cni().add_network_list(&off, &attachment("c1")).unwrap();
    h.clear_calls();
    h.cni().gc_network_list(&off, &[]).unwrap();
    assert!(h.calls().is_empty(), "disableGC: not even the stale DEL");

    let old = chain("1.0.0");
    h.cni().add_network_list(&old, &attachment("c2")).unwrap();
    h.clear_calls();
    h.cni().gc_network_list(&old, &[]).unwrap();
    assert_eq!(
        order(&h.calls()),
        ["c DEL", "b DEL", "a DEL"],
        "1.0.0: the stale attachment is DELed, no GC is sent"
    );
}

#[test]
fn status_asks_each_plugin_in_order_and_stops_at_the_first_failure() {
    let h = Harness::new();
    h.plugin("a");
    h.plugin_with(
        "b",
        &[(
            "STATUS",
            Reply {
                stdout: r#"{"cniVersion":"1.1.0","code":50,"msg":"daemon down"}"#,
                stderr: "",
                exit: 1,
            },
        )],
    );
    h.plugin("c");
    let l = chain("1.1.0");
    let e = h.cni().status_network_list(&l).unwrap_err();
    assert_eq!(
        e.cni().map(|c| (c.command, c.code)),
        Some((Command::Status, 50))
    );
    let calls = h.calls();
    assert_eq!(order(&calls), ["a STATUS", "b STATUS"]);
    assert_eq!(calls[0].stdin["name"], "net");
    assert_eq!(calls[0].stdin["cniVersion"], "1.1.0");
    assert_eq!(calls[0].env["CNI_CONTAINERID"], "");
    // Before 1.1.0 there is no STATUS.
    h.clear_calls();
    h.cni().status_network_list(&chain("1.0.0")).unwrap();
    assert!(h.calls().is_empty());
}

// ------------------------------------------------------- VERSION and errors

#[test]
fn version_asks_with_the_current_version() {
    let h = Harness::new();
    h.plugin("a");
    let v = h.cni().version("a").unwrap();
    assert_eq!(v.cni_version, "1.1.0");
    assert_eq!(v.supported_versions, ["0.4.0", "1.0.0", "1.1.0"]);
    let c = &h.calls()[0];
    assert_eq!(c.command, "VERSION");
    assert_eq!(c.stdin, json!({"cniVersion": "1.1.0"}));
    assert_eq!(c.env["CNI_NETNS"], "dummy");

    h.plugin_with(
        "old",
        &[(
            "VERSION",
            Reply {
                stdout: r#"{"code":4,"msg":"unknown CNI_COMMAND: VERSION"}"#,
                stderr: "",
                exit: 1,
            },
        )],
    );
    assert_eq!(
        h.cni().version("old").unwrap().supported_versions,
        ["0.1.0"]
    );
    h.plugin_with(
        "v020",
        &[(
            "VERSION",
            Reply {
                stdout: r#"{"cniVersion":"0.2.0"}"#,
                ..OK
            },
        )],
    );
    assert_eq!(
        h.cni().version("v020").unwrap().supported_versions,
        ["0.1.0", "0.2.0"]
    );
    h.plugin_with("mute", &[("VERSION", Reply { stdout: "{}", ..OK })]);
    assert!(matches!(
        h.cni().version("mute"),
        Err(Error::BadOutput {
            command: Command::Version,
            ..
        })
    ));
}

#[test]
fn failures_without_a_json_error_get_code_999_and_the_raw_output() {
    let h = Harness::new();
    h.plugin_with(
        "garbled",
        &[(
            "ADD",
            Reply {
                stdout: "panic: oops",
                stderr: "goroutine 1",
                exit: 2,
            },
        )],
    );
    h.plugin_with(
        "mute",
        &[(
            "ADD",
            Reply {
                stdout: "",
                stderr: "cannot open netns",
                exit: 1,
            },
        )],
    );
    h.plugin_with("silent", &[("ADD", Reply { exit: 3, ..OK })]);
    let rt = RuntimeConf::new("c", None, "eth0");
    let run = |t: &str| {
        let l = list(&format!(
            r#"{{"cniVersion":"1.0.0","name":"n","plugins":[{{"type":"{t}"}}]}}"#
        ));
        let e = h.cni().add_network_list(&l, &rt).unwrap_err();
        let c = e.cni().cloned().unwrap_or_else(|| panic!("{e}"));
        (c, e.to_string())
    };
    let (c, text) = run("garbled");
    assert_eq!(c.code, ERR_INTERNAL);
    assert_eq!(c.details, "panic: oops");
    assert_eq!(c.stderr, "goroutine 1");
    assert!(
        text.contains("garbled") && text.contains("ADD") && text.contains("oops"),
        "{text}"
    );
    let (c, _) = run("mute");
    assert_eq!(c.code, ERR_INTERNAL);
    assert!(c.msg.contains("cannot open netns"), "{}", c.msg);
    let (c, _) = run("silent");
    assert_eq!(c.code, ERR_INTERNAL);
    assert!(
        c.msg.contains("no error message") && c.msg.contains('3'),
        "{}",
        c.msg
    );
}

#[test]
fn a_missing_plugin_is_not_found_and_nothing_runs() {
    let h = Harness::new();
    h.plugin("a");
    let l = list(r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"type":"ghost"}]}"#);
    let e = h
        .cni()
        .add_network_list(&l, &RuntimeConf::new("c", None, "eth0"))
        .unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { plugin, .. } if plugin == "ghost"),
        "{e}"
    );
    assert_eq!(order(&h.calls()), ["a ADD"]);
    // A directory named like a plugin is not one.
    std::fs::create_dir(h.empty_bin().join("dir")).unwrap();
    assert!(h.cni().find_plugin("dir").is_err());
    assert_eq!(h.cni().find_plugin("a").unwrap(), h.bin().join("a"));
}

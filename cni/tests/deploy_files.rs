//! Keeps the deployment files honest: every file in `deploy/` is read by the
//! code that will read it in production (sluiced's configuration loader, the
//! agent's settings loader, this plugin's configuration parser), and the
//! Kubernetes manifests mount every path those configurations name, at the
//! same path as on the host (the plugin runs on the host, the daemons in the
//! DaemonSet, and they meet at sluiced's socket, the subnet file and the
//! records directory).

use serde::Deserialize;
use serde_json::Value;
use sluice_cni::conf::{IpamConf, PluginConf};
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of every manifest, as JSON values (empty documents
/// skipped), with the file each came from.
fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = deploy().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = read(&f);
        for (i, doc) in yaml_serde::Deserializer::from_str(&text).enumerate() {
            let v = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.clone(), v));
            }
        }
    }
    docs
}

fn object<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} `{name}` in deploy/kubernetes"))
}

fn config_map_entry(docs: &[(PathBuf, Value)], key: &str) -> String {
    object(docs, "ConfigMap", "sluice-config")["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap sluice-config has no `{key}`"))
        .to_string()
}

fn pod_spec(docs: &[(PathBuf, Value)]) -> &Value {
    &object(docs, "DaemonSet", "sluice")["spec"]["template"]["spec"]
}

fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the DaemonSet has no container `{name}`"))
}

/// The host path `path` reaches inside container `c`, and whether the
/// mount is read-only: the longest mount path that holds `path`, mapped
/// through its hostPath volume.
fn host_path_of(spec: &Value, c: &Value, path: &Path) -> Option<(PathBuf, bool)> {
    let mounts = c["volumeMounts"].as_array()?;
    let m = mounts
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\0")))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))?;
    let vol = spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap_or_else(|| panic!("volume `{}` is not declared", m["name"]));
    let host = vol["hostPath"]["path"].as_str()?;
    let rest = path.strip_prefix(m["mountPath"].as_str().unwrap()).unwrap();
    Some((
        Path::new(host).join(rest),
        m["readOnly"].as_bool().unwrap_or(false),
    ))
}

/// `path` is mounted into container `name` from the same host path.
fn assert_shared(spec: &Value, name: &str, path: &Path, writable: bool) {
    let c = container(spec, name);
    let (host, ro) = host_path_of(spec, c, path).unwrap_or_else(|| {
        panic!(
            "container `{name}` does not mount {} from the host",
            path.display()
        )
    });
    assert_eq!(
        host,
        path,
        "container `{name}`: {} comes from the host's {}",
        path.display(),
        host.display()
    );
    if writable {
        assert!(
            !ro,
            "container `{name}` mounts {} read-only",
            path.display()
        );
    }
}

/// Any volume (hostPath, ConfigMap, Secret) holding `path` in container
/// `name`.
fn assert_mounted(spec: &Value, name: &str, path: &Path) {
    let c = container(spec, name);
    let ok = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\0")));
    assert!(ok, "container `{name}` does not mount {}", path.display());
}

fn sluiced_config(text: &str) -> sluice_dataplane::config::NodeConfig {
    // sluiced's own loader (sluiced/src/main.rs), on a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluiced.toml");
    std::fs::write(&path, text).unwrap();
    sluice_dataplane::replay::load_config(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn agent_settings(text: &str) -> sluice_control::settings::Settings {
    // The agent's loader (control/src/settings.rs): the file, then flags.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    sluice_control::settings::Settings::resolve(&sluice_control::settings::Flags {
        config: Some(path),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("agent.toml: {e}\n{text}"))
}

/// The plugin's entry of a conflist, as the runtime hands it to the plugin
/// (`cniVersion` and `name` injected), through the plugin's own parser.
fn plugin_conf(list: &Value) -> PluginConf {
    let mut entry = list["plugins"][0].clone();
    entry["cniVersion"] = list["cniVersion"].clone();
    entry["name"] = list["name"].clone();
    let nc: rscni_plugin::types::NetConf =
        serde_json::from_value(entry).expect("the plugin's entry is a NetConf");
    PluginConf::from_netconf(&nc).expect("the plugin accepts its entry")
}

fn conflist(text: &str, origin: &str) -> Value {
    let list: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let version = list["cniVersion"].as_str().expect("cniVersion");
    // Debian 12's runtimes and portmap stop at 1.0.0 (docs/cni.md).
    assert_eq!(version, "1.0.0", "{origin}: the shipped lists say 1.0.0");
    assert!(
        list.get("cniVersions").is_none(),
        "{origin}: no cniVersions, so no runtime picks 1.1.0 over portmap"
    );
    let supported: Vec<String> = sluice_cni::plugin::supported_versions()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert!(
        supported.iter().any(|s| s == version),
        "{origin}: the plugin does not speak {version}"
    );
    assert_eq!(list["name"], "sluice", "{origin}");
    let plugins = list["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 2, "{origin}: sluice, then portmap");
    assert_eq!(plugins[0]["type"], "sluice", "{origin}");
    assert_eq!(plugins[1]["type"], "portmap", "{origin}");
    assert_eq!(plugins[1]["capabilities"]["portMappings"], true, "{origin}");
    assert_eq!(plugins[1]["snat"], true, "{origin}");
    // tbf on the host veth shapes nothing sluiced sends or takes (docs/cni.md).
    assert!(
        !plugins.iter().any(|p| p["type"] == "bandwidth"),
        "{origin}: bandwidth does not apply to AF_XDP pod ports"
    );
    let conf = plugin_conf(&list);
    assert_eq!(conf.sluiced_socket, Path::new(sluice_api::DEFAULT_SOCKET));
    assert_eq!(
        conf.subnet_file,
        Path::new(sluice_api::subnet_file::DEFAULT_PATH)
    );
    assert_eq!(
        conf.attachments_dir(),
        Path::new(sluice_api::attachment::DEFAULT_DIR),
        "{origin}: dataDir/attachments must be what sluiced reads (daemon.pod_records)"
    );
    assert_eq!(conf.mtu, None, "{origin}: the MTU comes from FLANNEL_MTU");
    list
}

#[test]
fn conflists_are_what_the_plugin_reads() {
    let own = conflist(
        &read(&deploy().join("cni/10-sluice.conflist")),
        "10-sluice.conflist",
    );
    assert_eq!(plugin_conf(&own).ipam, IpamConf::Own);
    let hl = conflist(
        &read(&deploy().join("cni/10-sluice-host-local.conflist")),
        "10-sluice-host-local.conflist",
    );
    let conf = plugin_conf(&hl);
    assert_eq!(conf.ipam.kind(), "host-local");
    let IpamConf::Delegate(m) = &conf.ipam else {
        unreachable!()
    };
    assert!(
        !m.contains_key("ranges") && !m.contains_key("subnet"),
        "host-local's ranges come from the subnet file"
    );
}

#[test]
fn manifests_parse_and_live_in_kube_system() {
    let docs = manifests();
    for (file, v) in &docs {
        let what = format!(
            "{}: {} {}",
            file.display(),
            v["kind"],
            v["metadata"]["name"]
        );
        assert!(v["apiVersion"].is_string(), "{what}: apiVersion");
        assert!(v["kind"].is_string(), "{what}: kind");
        assert!(v["metadata"]["name"].is_string(), "{what}: metadata.name");
        assert_eq!(v["metadata"]["namespace"], "kube-system", "{what}");
    }
    // No RBAC: nothing in the DaemonSet calls the API server.
    assert!(!docs.iter().any(|(_, v)| {
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
            .iter()
            .any(|k| v["kind"] == *k)
    }));
    let spec = pod_spec(&docs);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostPID"], false);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
    assert!(spec["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["operator"] == "Exists" && t.get("key").is_none()));
    let ds = object(&docs, "DaemonSet", "sluice");
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &spec_labels(ds)[k],
            v,
            "the selector matches the pod's labels"
        );
    }
}

fn spec_labels(ds: &Value) -> &Value {
    &ds["spec"]["template"]["metadata"]["labels"]
}

#[test]
fn the_config_maps_files_load() {
    let docs = manifests();
    // sluiced.toml: the cluster-wide part, as sluiced's loader takes it.
    let node = sluiced_config(&config_map_entry(&docs, "sluiced.toml"));
    assert_eq!(
        node.daemon.api_socket,
        Path::new(sluice_api::DEFAULT_SOCKET)
    );
    assert!(
        node.daemon.workers.is_empty(),
        "pinning is the CPU manager's"
    );
    assert!(
        node.ports
            .iter()
            .all(|p| p.kind != sluice_api::PortKind::Uplink),
        "the uplink is the node's: sluice-node.sh adds it"
    );
    assert!(node
        .ports
        .iter()
        .any(|p| p.kind == sluice_api::PortKind::Host));
    // Without a default route to the host port, pods reach nothing outside
    // the pod network: not the node, not Services, not hostPort clients.
    assert!(
        node.routes
            .iter()
            .any(|r| r.prefix.to_string() == "0.0.0.0/0" && r.via == sluice_api::Via::Host),
        "sluiced.toml: route 0.0.0.0/0 via host"
    );
    // agent.toml, as the agent's loader takes it.
    let agent = agent_settings(&config_map_entry(&docs, "agent.toml"));
    assert_eq!(agent.agent.sluiced_socket, node.daemon.api_socket);
    assert_eq!(
        agent.agent.subnet_file,
        Path::new(sluice_api::subnet_file::DEFAULT_PATH)
    );
    assert!(matches!(
        agent.store,
        sluice_control::settings::StoreChoice::Etcd(_)
    ));
    // The conflist the installer copies is the one in deploy/cni.
    let installed = conflist(
        &config_map_entry(&docs, "10-sluice.conflist"),
        "ConfigMap 10-sluice.conflist",
    );
    let file: Value =
        serde_json::from_str(&read(&deploy().join("cni/10-sluice.conflist"))).unwrap();
    assert_eq!(installed, file);
}

/// Runs `deploy/sluice-node.sh render` as the sluiced container does, with
/// the uplink's facts given instead of read from the kernel.
fn render(template: &str, subnet_file: Option<&str>, bootstrap: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("template.toml");
    std::fs::write(&t, template).unwrap();
    let s = dir.path().join("subnet.env");
    if let Some(text) = subnet_file {
        std::fs::write(&s, text).unwrap();
    }
    let out = dir.path().join("sluiced.toml");
    let mut cmd = Command::new("sh");
    cmd.arg(deploy().join("sluice-node.sh"))
        .arg("render")
        .arg(&out)
        .env("SLUICE_TEMPLATE", &t)
        .env("SLUICE_SUBNET_FILE", &s)
        .env("SLUICE_UPLINK", "ens1f0")
        .env("SLUICE_UPLINK_MAC", "02:00:00:00:aa:01")
        .env("SLUICE_UPLINK_ADDRESS", "192.168.50.1/24")
        .env("SLUICE_UPLINK_GATEWAY", "192.168.50.254")
        .env("SLUICE_UPLINK_MTU", "9000");
    if bootstrap {
        cmd.arg("bootstrap");
    }
    let o = cmd.output().expect("sh runs");
    assert!(
        o.status.success(),
        "sluice-node.sh render: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read(&out)
}

#[test]
fn the_node_config_sluice_node_sh_renders_loads() {
    let docs = manifests();
    let template = config_map_entry(&docs, "sluiced.toml");
    let subnet = sluice_api::subnet_file::SubnetFile {
        network: "10.244.0.0/16".parse().unwrap(),
        subnet: "10.244.37.0/24".parse().unwrap(),
        mtu: 1450,
        ip_masq: false,
    };
    let node = sluiced_config(&render(&template, Some(&subnet.render()), false));
    assert_eq!(node.node.pod_network.to_string(), "10.244.0.0/16");
    assert_eq!(node.node.pod_subnet.to_string(), "10.244.37.0/24");
    let up = node
        .ports
        .iter()
        .find(|p| p.kind == sluice_api::PortKind::Uplink)
        .expect("an uplink");
    assert_eq!(up.name, "ens1f0");
    assert_eq!(up.mac.to_string(), "02:00:00:00:aa:01");
    assert_eq!(up.mtu, 9000);
    assert_eq!(
        up.gateway.map(|g| g.to_string()).as_deref(),
        Some("192.168.50.254")
    );
    // The first start: the template's provisional subnet, no subnet file.
    let first = sluiced_config(&render(&template, None, true));
    assert_eq!(first.node.pod_subnet.to_string(), "10.244.0.0/24");
    assert!(first
        .ports
        .iter()
        .any(|p| p.kind == sluice_api::PortKind::Uplink));
}

#[test]
fn the_daemonset_mounts_what_the_configs_name() {
    let docs = manifests();
    let spec = pod_spec(&docs);
    let node = sluiced_config(&config_map_entry(&docs, "sluiced.toml"));
    let agent = agent_settings(&config_map_entry(&docs, "agent.toml"));
    let cni = plugin_conf(&conflist(
        &config_map_entry(&docs, "10-sluice.conflist"),
        "ConfigMap 10-sluice.conflist",
    ));
    let socket_dir = node.daemon.api_socket.parent().unwrap().to_path_buf();
    let subnet_dir = agent.agent.subnet_file.parent().unwrap().to_path_buf();
    // sluiced: its socket beside the plugin's, the subnet file it renders
    // from, the records it reads back (daemon.pod_records' default), BPF.
    assert_shared(spec, "sluiced", &socket_dir, true);
    assert_shared(spec, "sluiced", &agent.agent.subnet_file, false);
    assert_shared(
        spec,
        "sluiced",
        Path::new(sluice_api::attachment::DEFAULT_DIR),
        false,
    );
    assert_shared(spec, "sluiced", Path::new("/sys/fs/bpf"), true);
    assert_shared(spec, "sluiced", Path::new("/lib/modules"), false);
    assert_mounted(spec, "sluiced", Path::new("/etc/sluice/sluiced.toml"));
    // The plugin, on the host, uses the same three paths.
    assert_eq!(cni.sluiced_socket, node.daemon.api_socket);
    assert_eq!(cni.subnet_file, agent.agent.subnet_file);
    assert_shared(spec, "sluiced", &cni.data_dir, false);
    // The agent: sluiced's socket, the subnet file (written), etcd's TLS.
    assert_shared(spec, "sluice-agent", &agent.agent.sluiced_socket, true);
    assert_shared(spec, "sluice-agent", &subnet_dir, true);
    assert_mounted(spec, "sluice-agent", Path::new("/etc/sluice/agent.toml"));
    let sluice_control::settings::StoreChoice::Etcd(etcd) = &agent.store else {
        panic!("etcd expected")
    };
    for f in [&etcd.ca_file, &etcd.cert_file, &etcd.key_file]
        .into_iter()
        .flatten()
    {
        assert_mounted(spec, "sluice-agent", f);
        assert_mounted(spec, "bootstrap", f);
    }
    // The bootstrap runs both daemons with the same files.
    assert_shared(spec, "bootstrap", &socket_dir, true);
    assert_shared(spec, "bootstrap", &subnet_dir, true);
    assert_shared(spec, "bootstrap", Path::new("/sys/fs/bpf"), true);
    // The installer writes to the host's CNI directories.
    let install = container(spec, "install-cni");
    for (inside, host) in [
        ("/host/opt/cni/bin/sluice", "/opt/cni/bin/sluice"),
        (
            "/host/etc/cni/net.d/10-sluice.conflist",
            "/etc/cni/net.d/10-sluice.conflist",
        ),
    ] {
        let (h, ro) = host_path_of(spec, install, Path::new(inside))
            .unwrap_or_else(|| panic!("install-cni does not mount {inside}"));
        assert_eq!(h, Path::new(host));
        assert!(!ro);
    }
    // Each copied beside its target, then renamed over it.
    let script = install["command"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    for target in [
        "/host/opt/cni/bin/sluice",
        "/host/etc/cni/net.d/10-sluice.conflist",
    ] {
        assert!(
            script
                .lines()
                .any(|l| l.trim_start().starts_with("mv -f ") && l.trim_end().ends_with(target)),
            "install-cni: no `mv -f <temp> {target}`:\n{script}"
        );
    }
    assert_mounted(
        spec,
        "install-cni",
        Path::new("/etc/sluice/10-sluice.conflist"),
    );
}

fn quantity_millicores(q: &Value) -> u64 {
    match q {
        Value::Number(n) => n.as_u64().unwrap() * 1000,
        Value::String(s) if s.ends_with('m') => s[..s.len() - 1].parse().unwrap(),
        Value::String(s) => s.parse::<u64>().unwrap() * 1000,
        other => panic!("cpu quantity {other}"),
    }
}

#[test]
fn resources_give_guaranteed_qos_and_probes_match_the_configs() {
    let docs = manifests();
    let spec = pod_spec(&docs);
    // Guaranteed QoS needs requests = limits for cpu and memory in every
    // container, init containers included.
    for c in spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().unwrap())
    {
        let r = &c["resources"];
        for res in ["cpu", "memory"] {
            assert!(
                r["requests"][res].is_string() || r["requests"][res].is_number(),
                "{}: requests.{res}",
                c["name"]
            );
            assert_eq!(
                r["requests"][res], r["limits"][res],
                "{}: requests.{res} = limits.{res}",
                c["name"]
            );
        }
        // AF_XDP needs no hugepages.
        for k in ["requests", "limits"] {
            if let Some(m) = r[k].as_object() {
                assert!(
                    !m.keys().any(|k| k.starts_with("hugepages-")),
                    "{}: hugepages",
                    c["name"]
                );
            }
        }
    }
    let sluiced = container(spec, "sluiced");
    let cpu = quantity_millicores(&sluiced["resources"]["requests"]["cpu"]);
    assert!(
        cpu >= 1000 && cpu.is_multiple_of(1000),
        "sluiced: whole cores ({cpu}m)"
    );
    assert_eq!(sluiced["securityContext"]["privileged"], true);
    let node = sluiced_config(&config_map_entry(&docs, "sluiced.toml"));
    let agent = agent_settings(&config_map_entry(&docs, "agent.toml"));
    for probe in ["readinessProbe", "livenessProbe"] {
        let g = &sluiced[probe]["httpGet"];
        assert_eq!(g["path"], "/metrics");
        assert_eq!(
            g["port"].as_u64(),
            Some(u64::from(node.daemon.metrics_address.port()))
        );
        assert_eq!(
            g["host"].as_str(),
            Some(node.daemon.metrics_address.ip().to_string().as_str())
        );
    }
    let healthz = agent.healthz.expect("the agent serves /healthz");
    let a = container(spec, "sluice-agent");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let g = &a[probe]["httpGet"];
        assert_eq!(g["path"], path);
        assert_eq!(g["port"].as_u64(), Some(u64::from(healthz.port())));
        assert_eq!(g["host"].as_str(), Some(healthz.ip().to_string().as_str()));
    }
    // One image for all; what the containers run is in it.
    let containerfile = read(&deploy().join("Containerfile"));
    for c in spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().unwrap())
    {
        assert_eq!(c["image"], sluiced["image"], "{}: one image", c["name"]);
        let cmd0 = Path::new(c["command"][0].as_str().unwrap());
        if cmd0 != Path::new("/bin/sh") {
            let (dir, file) = (cmd0.parent().unwrap(), cmd0.file_name().unwrap());
            assert!(
                containerfile.contains(&format!("{}/", dir.display()))
                    && containerfile.contains(&*file.to_string_lossy()),
                "{}: {} is not put into the image by deploy/Containerfile",
                c["name"],
                cmd0.display()
            );
        }
    }
    for f in [
        "/opt/cni/bin/sluice",
        "sluiced",
        "sluicectl",
        "sluice-agent",
    ] {
        assert!(containerfile.contains(f), "deploy/Containerfile: {f}");
    }
}

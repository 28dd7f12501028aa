//! The cluster packaging: packaging/k8s/daemonset.yaml (its structure, and its agent.toml
//! as the binary reads it) and packaging/Containerfile (kept in step with the manifest and
//! with the toolchain `cargo xtask setup` installs). No cluster and no image build here.

mod common;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

fn workspace(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(workspace("packaging/k8s/daemonset.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the manifest");
    found[0]
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_sequence().unwrap_or_else(|| panic!("not a list: {v:?}")).iter().map(|s| s.as_str().unwrap()).collect()
}

/// The port of a `metrics-addr` setting in agent.toml text.
fn metrics_port(toml_text: &str) -> u16 {
    let table: toml::Table = toml::from_str(toml_text).unwrap();
    let addr: std::net::SocketAddr = table["metrics-addr"].as_str().expect("metrics-addr").parse().unwrap();
    addr.port()
}

#[test]
fn the_daemonset_runs_the_agent_on_the_host_network_with_only_its_capabilities() {
    let docs = manifest();
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let namespace = &ds["metadata"]["namespace"];
    assert_eq!(of_kind(&docs, "Namespace")["metadata"]["name"], *namespace);
    assert_eq!(ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"]);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the agent watches the node's interfaces and sockets");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");

    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    let security = &agent["securityContext"];
    assert_ne!(security["privileged"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(str_list(&security["capabilities"]["drop"]), ["ALL"]);
    let mut added = str_list(&security["capabilities"]["add"]);
    added.sort();
    // The unit's set, less DAC_READ_SEARCH, which root in the pod does not need for tracefs.
    assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON"]);

    // The host's filesystems the agent reads, each from a hostPath volume of that path.
    let volumes = pod["volumes"].as_sequence().unwrap();
    let mounts = agent["volumeMounts"].as_sequence().unwrap();
    for host_path in ["/sys/fs/bpf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/run/tcpviz", "/var/lib/tcpviz"] {
        let volume = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host_path)
            .unwrap_or_else(|| panic!("no hostPath volume for {host_path}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("volume {:?} is not mounted", volume["name"]));
        assert_eq!(mount["mountPath"], host_path, "{host_path} is mounted elsewhere");
    }
}

/// The container's arguments name the ConfigMap's agent.toml where it is mounted, and the
/// port Prometheus and the probes use is the one the agent serves metrics on.
#[test]
fn the_config_map_is_the_agents_config_and_its_metrics_port_is_probed() {
    let docs = manifest();
    let ds = of_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    let args = str_list(&agent["args"]);
    assert_eq!(args[0], "live");
    let config_at = args.iter().position(|a| *a == "--config").expect("--config in the container's args");
    let config_path = Path::new(args[config_at + 1]);

    let config_map = of_kind(&docs, "ConfigMap");
    assert_eq!(config_map["metadata"]["namespace"], ds["metadata"]["namespace"]);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("a volume of the ConfigMap");
    let mount = agent["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["name"] == volume["name"]).unwrap();
    assert_eq!(Path::new(mount["mountPath"].as_str().unwrap()), config_path.parent().unwrap());
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let toml_text = config_map["data"][key].as_str().unwrap_or_else(|| panic!("the ConfigMap has no {key}"));

    // The agent's default metrics port (packaging/agent.toml), on every address in the pod.
    let default_port = metrics_port(&std::fs::read_to_string(workspace("packaging/agent.toml")).unwrap());
    assert_eq!(metrics_port(toml_text), default_port);
    let table: toml::Table = toml::from_str(toml_text).unwrap();
    let addr: std::net::SocketAddr = table["metrics-addr"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_unspecified(), "the kubelet and Prometheus reach the pod at the node's address: {addr}");
    let port = &agent["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(u64::from(default_port)));
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["path"], "/metrics", "{probe}");
        assert!(get["port"] == port["name"] || get["port"].as_u64() == Some(u64::from(default_port)), "{probe}");
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], default_port.to_string().as_str());

    // The binary reads the file: an unknown key or a bad value would exit 2 naming it.
    // A ring size from the command line that is not a power of two is the first error
    // after the file is read, so reaching it shows the file was accepted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(key);
    std::fs::write(&file, toml_text).unwrap();
    let o = common::tcpviz().args(["live", "--config"]).arg(&file).args(["--ring-mb", "3"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("power of two"), "{stderr}");
}

/// The image is built with the toolchain setup installs, and runs what the manifest expects.
#[test]
fn the_containerfile_builds_with_the_projects_toolchain() {
    let text = std::fs::read_to_string(workspace("packaging/Containerfile")).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    let rust_version = env!("CARGO_PKG_RUST_VERSION");
    assert!(text.contains(&format!("rust:{rust_version}-")), "the build image is Rust {rust_version}");
    let setup = std::fs::read_to_string(workspace("xtask/src/setup.rs")).unwrap();
    let linker = setup
        .lines()
        .find_map(|l| l.strip_prefix("const BPF_LINKER_VERSION: &str = \""))
        .and_then(|l| l.strip_suffix("\";"))
        .expect("BPF_LINKER_VERSION in setup.rs");
    assert!(text.contains(&format!("bpf-linker@{linker}")), "bpf-linker {linker}, as setup installs it");
    assert!(text.contains("rust-src"), "the eBPF build needs the nightly rust-src");
    assert!(text.contains("cargo build --release --locked -p tcpviz"));
    assert!(text.contains(r#"ENTRYPOINT ["/usr/bin/tcpviz"]"#));
    let ds = manifest();
    let args = str_list(&of_kind(&ds, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]);
    let cmd = format!("CMD [{}]", args.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "));
    assert!(text.contains(&cmd), "the image's default command is the DaemonSet's: {cmd}");
}

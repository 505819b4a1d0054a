//! The deployment files: `docker-compose.yml`, the `Dockerfile`, nginx, Prometheus (checked by
//! `promtool`) and the Grafana dashboards (every metric they query exists on a real node).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;
use serde_yaml::Value;

use crate::support::TestNode;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    let mut v: Value = serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    v.apply_merge().unwrap();
    // Merge keys nest (`<<: *rookery` then `environment: {<<: *rookery-env}`): apply them all.
    for (_, svc) in v["services"].as_mapping_mut().unwrap().iter_mut() {
        svc.apply_merge().unwrap();
    }
    v
}

fn env_of(svc: &Value) -> std::collections::HashMap<String, String> {
    let mut env: Value = svc["environment"].clone();
    env.apply_merge().unwrap();
    env.as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().map(str::to_string).unwrap_or_default()))
        .collect()
}

#[test]
fn compose_wires_a_whole_cluster() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for s in ["scylla", "redis", "rookery-1", "rookery-2", "rookery-3", "lb", "prometheus", "grafana", "secrets"] {
        assert!(names.contains(s), "service {s} missing");
    }
    let mut ids = BTreeSet::new();
    for n in ["rookery-1", "rookery-2", "rookery-3"] {
        let svc = &c["services"][n];
        assert_eq!(svc["build"].as_str(), Some("."), "{n} is built from the repo's Dockerfile");
        let env = env_of(svc);
        assert_eq!(env["ROOKERY_REDIS"], "redis://redis:6379");
        assert_eq!(env["ROOKERY_SCYLLA"], "scylla:9042");
        assert!(env.contains_key("ROOKERY_BLOB_STORE"), "attachments on a shared volume");
        assert_eq!(env["ROOKERY_MAX_CONNECTIONS_PER_ADDR"], "0", "behind the balancer all clients share one address");
        assert!(!env.contains_key("ROOKERY_JWT_SECRET"), "no secret in the file");
        assert!(ids.insert(env["ROOKERY_NODE_ID"].clone()), "node ids are unique");
        for dep in ["scylla", "redis"] {
            assert_eq!(svc["depends_on"][dep]["condition"].as_str(), Some("service_healthy"), "{n} waits for {dep}");
        }
        assert_eq!(svc["depends_on"]["secrets"]["condition"].as_str(), Some("service_completed_successfully"));
        assert!(svc["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|t| t.as_str() == Some("http://127.0.0.1:8080/readyz")));
        let vols: Vec<&str> = svc["volumes"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(vols.contains(&"secrets:/secrets:ro") && vols.contains(&"blobs:/blobs"), "{vols:?}");
        let cmd = svc["command"][0].as_str().unwrap();
        assert!(cmd.contains("/secrets/jwt_secret") && cmd.contains("rookery serve"), "{cmd}");
    }
    for dep in ["rookery-1", "rookery-2", "rookery-3"] {
        assert_eq!(c["services"]["lb"]["depends_on"][dep]["condition"].as_str(), Some("service_healthy"));
    }
    assert!(c["services"]["scylla"]["healthcheck"].is_mapping());
    assert!(c["services"]["redis"]["healthcheck"].is_mapping());
    for v in ["scylla-data", "secrets", "blobs"] {
        assert!(c["volumes"].as_mapping().unwrap().contains_key(v), "volume {v}");
    }
    // Files the services mount exist in the repo.
    for svc in ["lb", "prometheus", "grafana"] {
        for v in c["services"][svc]["volumes"].as_sequence().unwrap() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if let Some(rel) = src.strip_prefix("./") {
                assert!(repo().join(rel).exists(), "{svc} mounts {src}, which is missing");
            }
        }
    }
    // nginx balances the three chat listeners, with WebSocket upgrades.
    let nginx = read("deploy/nginx.conf");
    for n in ["rookery-1:8080", "rookery-2:8080", "rookery-3:8080", "Upgrade $http_upgrade"] {
        assert!(nginx.contains(n), "nginx.conf lacks {n}");
    }
    // Prometheus scrapes every node's ops listener.
    let prom: Value = serde_yaml::from_str(&read("prometheus/prometheus.yml")).unwrap();
    let targets: Vec<&str> = prom["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(targets, ["rookery-1:9090", "rookery-2:9090", "rookery-3:9090"]);
    // The Dockerfile is multi-stage and runs the node.
    let docker = read("Dockerfile");
    assert!(docker.contains(" AS build") && docker.contains("COPY --from=build"), "multi-stage");
    assert!(docker.contains("ENTRYPOINT [\"rookery\"]"));
    // Where the Docker client has the compose plugin, it validates the file too.
    let check = std::process::Command::new("docker").args(["compose", "config", "-q"]).current_dir(repo()).output();
    if let Ok(out) = check {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("unknown") {
            assert!(out.status.success(), "docker compose config: {stderr}");
        }
    }
}

#[test]
fn promtool_accepts_the_prometheus_config_and_rules() {
    let out = std::process::Command::new("promtool")
        .args(["check", "config", "prometheus/prometheus.yml"])
        .current_dir(repo())
        .output()
        .expect("promtool (Debian package prometheus) is needed: run scripts/test.sh, which installs it");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        if (rest.starts_with("rookery_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn every_metric_a_dashboard_queries_exists_on_a_real_node() {
    let node = TestNode::start().await;
    // Some traffic: a message, an error, an HTTP request.
    let a = node.signup("dash_alice").await;
    let b = node.signup("dash_bob").await;
    let conv = node.group(&a, &[&b]).await;
    let mut ws = node.ws(&a).await;
    ws.send_msg(&conv, "d1", "hello").await;
    ws.send(json!({"op":"send","conv":conv,"client_id":"","body":"x"})).await;
    ws.expect_op("error").await;
    let scrape = node.metrics().await;
    let mut checked = 0;
    for file in ["grafana/dashboards/rookery-cluster.json", "grafana/dashboards/rookery-node.json"] {
        let dash: serde_json::Value = serde_json::from_str(&read(file)).unwrap();
        let panels = dash["panels"].as_array().unwrap();
        assert!(panels.len() >= 10, "{file}: {} panels", panels.len());
        for p in panels {
            for t in p["targets"].as_array().unwrap() {
                for name in metric_names(t["expr"].as_str().unwrap()) {
                    let present = scrape
                        .lines()
                        .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
                    assert!(present, "{file} panel {:?} queries {name}, which the node does not export", p["title"]);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 30);
    assert!(metric("rookery_ws_errors_total{code=\"bad_request\"}", &scrape) >= 1.0);
}

fn metric(name: &str, scrape: &str) -> f64 {
    crate::support::metric(scrape, name)
}

//! `farmlog dev`: a local TLS cluster in one command. It makes a
//! throwaway CA and certificates (nodes, a landlord admin, an
//! applications MLM, and two tenants with an admin, a customer MLM, two
//! proxies and a service module each), writes one config file per node,
//! starts `farmlog serve` for each, and stops them on Ctrl-C. Run again,
//! it reuses the data, the certificates and the ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use farmlog_api::certs::DevCa;
use serde::{Deserialize, Serialize};

use crate::serve::{read_config, NodeConfig, TlsConfig};
use crate::Failure;

/// Most nodes a dev cluster may have.
pub const DEV_NODES_MAX: u64 = 7;
/// How long stopping waits for a node before it kills it.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long start-up waits for the nodes to listen.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// The tenants of the dev cluster.
pub const DEV_TENANTS: [&str; 2] = ["acme", "globex"];

#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Where the nodes' data, configs and certificates go.
    #[arg(long, default_value = "./farmlog-data")]
    pub dir: PathBuf,
}

/// What `dev` remembers between runs: the ports it chose.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevState {
    nodes: BTreeMap<String, String>,
    /// Each node's metrics address (runs before metrics existed have none).
    #[serde(default)]
    metrics: BTreeMap<String, String>,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message)
}

/// A free loopback port, as the system hands one out.
fn free_port() -> Result<u16, Failure> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| usage(format!("finding a free port: {error}")))?;
    let port = listener
        .local_addr()
        .map_err(|error| usage(format!("finding a free port: {error}")))?
        .port();
    Ok(port)
}

/// The certificates `dev` issues: file name → principal.
pub fn dev_clients() -> Vec<(String, String)> {
    let mut clients = vec![
        ("landlord-admin".to_string(), "farmlog://landlord/admin".to_string()),
        (
            "applications-mlm".to_string(),
            "farmlog://landlord/applications-mlm".to_string(),
        ),
    ];
    for tenant in DEV_TENANTS {
        let principal = |rest: &str| format!("farmlog://tenant/{tenant}/{rest}");
        clients.push((format!("{tenant}-admin"), principal("admin")));
        clients.push((
            format!("{tenant}-mlm"),
            principal(&format!("intermediate-mlm/component/{tenant}-mlm")),
        ));
        clients.push((
            format!("{tenant}-proxy-1"),
            principal(&format!("proxy/component/{tenant}-p1")),
        ));
        clients.push((
            format!("{tenant}-proxy-2"),
            principal(&format!("proxy/component/{tenant}-p2")),
        ));
        clients.push((format!("{tenant}-service-module"), principal("service-module")));
    }
    clients
}

fn write_certificates(certs: &Path, nodes: u64) -> Result<(), Failure> {
    let fail = |error: &dyn std::fmt::Display| usage(format!("certificates: {error}"));
    std::fs::create_dir_all(certs).map_err(|error| fail(&error))?;
    let ca = DevCa::new().map_err(|error| fail(&error))?;
    for id in 1..=nodes {
        ca.write_issued(
            certs,
            &format!("node-{id}"),
            "farmlog://landlord/node",
            &["127.0.0.1", "localhost"],
        )
        .map_err(|error| fail(&error))?;
    }
    for (name, principal) in dev_clients() {
        ca.write_issued(certs, &name, &principal, &[])
            .map_err(|error| fail(&error))?;
    }
    // Last: its presence says the set is complete.
    ca.write_ca(certs).map_err(|error| fail(&error))
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|error| usage(format!("{}: {error}", path.display())))
}

/// Prepares the directory (first run) or reads it back (later runs);
/// returns each node's config file.
fn prepare(args: &DevArgs) -> Result<Vec<(u64, PathBuf, String)>, Failure> {
    if !(1..=DEV_NODES_MAX).contains(&args.nodes) {
        return Err(usage(format!("--nodes must be 1..={DEV_NODES_MAX}")));
    }
    let dir = absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).map_err(|error| usage(format!("{}: {error}", dir.display())))?;
    let state_path = dir.join("dev.toml");
    let state: DevState = match std::fs::read_to_string(&state_path) {
        Ok(text) => toml::from_str(&text).map_err(|error| usage(format!("{}: {error}", state_path.display())))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut nodes = BTreeMap::new();
            let mut metrics = BTreeMap::new();
            for id in 1..=args.nodes {
                nodes.insert(id.to_string(), format!("127.0.0.1:{}", free_port()?));
                metrics.insert(id.to_string(), format!("127.0.0.1:{}", free_port()?));
            }
            let state = DevState { nodes, metrics };
            let text = toml::to_string(&state).map_err(|error| usage(error.to_string()))?;
            std::fs::write(&state_path, text).map_err(|error| usage(format!("{}: {error}", state_path.display())))?;
            state
        }
        Err(error) => return Err(usage(format!("{}: {error}", state_path.display()))),
    };
    if state.nodes.len() as u64 != args.nodes {
        return Err(usage(format!(
            "{} holds a {}-node cluster; use --nodes {} or another --dir",
            dir.display(),
            state.nodes.len(),
            state.nodes.len()
        )));
    }
    let certs = dir.join("certs");
    if !certs.join("ca.pem").exists() {
        write_certificates(&certs, args.nodes)?;
    }
    let mut nodes = Vec::new();
    for (key, address) in &state.nodes {
        let id: u64 = key
            .parse()
            .map_err(|_| usage(format!("{}: bad node id {key:?}", state_path.display())))?;
        let config = NodeConfig {
            id: Some(id),
            listen: Some(address.clone()),
            advertise: None,
            data_dir: Some(dir.join(format!("node-{id}"))),
            cluster_name: Some("farmlog-dev".to_string()),
            members: state.nodes.clone(),
            tls: Some(TlsConfig {
                ca: certs.join("ca.pem"),
                cert: certs.join(format!("node-{id}.pem")),
                key: certs.join(format!("node-{id}.key")),
            }),
            insecure: false,
            quotas: None,
            metrics_listen: state.metrics.get(key).cloned(),
        };
        let path = dir.join(format!("node-{id}.toml"));
        let text = toml::to_string(&config).map_err(|error| usage(error.to_string()))?;
        std::fs::write(&path, text).map_err(|error| usage(format!("{}: {error}", path.display())))?;
        read_config(&path)?;
        nodes.push((id, path, address.clone()));
    }
    Ok(nodes)
}

fn terminate(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Stops every child: SIGTERM, then SIGKILL after [`STOP_GRACE`].
fn stop_all(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        terminate(child);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("farmlog dev: node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn wait_listening(address: &str) -> bool {
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn run(args: &DevArgs) -> Result<(), Failure> {
    let nodes = prepare(args)?;
    let dir = absolute(&args.dir)?;
    let exe = std::env::current_exe().map_err(|error| usage(format!("finding the farmlog binary: {error}")))?;
    let mut children = Vec::new();
    for (id, config, _) in &nodes {
        let log_path = dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| usage(format!("{}: {error}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|error| usage(error.to_string()))?;
        let child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        match child {
            Ok(child) => children.push((*id, child)),
            Err(error) => {
                stop_all(&mut children);
                return Err(usage(format!("starting node {id}: {error}")));
            }
        }
    }
    for (id, _, address) in &nodes {
        if !wait_listening(address) {
            stop_all(&mut children);
            return Err(usage(format!(
                "node {id} did not start listening on {address}; see {}",
                dir.join(format!("node-{id}.log")).display()
            )));
        }
    }
    let certs = dir.join("certs");
    let endpoints: Vec<&str> = nodes.iter().map(|(_, _, address)| address.as_str()).collect();
    println!("farmlog dev: {} nodes running (TLS)", nodes.len());
    for (id, config, address) in &nodes {
        println!(
            "  node {id}: {address}  config {}  log {}",
            config.display(),
            dir.join(format!("node-{id}.log")).display()
        );
    }
    println!(
        "certificates: {} (ca.pem; <name>.pem and <name>.key per principal)",
        certs.display()
    );
    for (name, principal) in dev_clients() {
        println!("  {name:<24} {principal}");
    }
    // The client settings of the landlord's admin, ready to source.
    let env_path = dir.join("env");
    let env = format!(
        "export FARMLOG_ENDPOINTS={}\nexport FARMLOG_CA={}\nexport FARMLOG_CERT={}\nexport FARMLOG_KEY={}\n",
        endpoints.join(","),
        certs.join("ca.pem").display(),
        certs.join("landlord-admin.pem").display(),
        certs.join("landlord-admin.key").display()
    );
    std::fs::write(&env_path, env).map_err(|error| usage(format!("{}: {error}", env_path.display())))?;
    println!();
    println!("try (as the landlord's admin):");
    println!("  source {}", env_path.display());
    println!("  farmlog cluster status");
    println!("Ctrl-C stops the cluster; running `farmlog dev` again reuses its data.");
    wait_for_stop(&mut children);
    stop_all(&mut children);
    println!("farmlog dev: stopped");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM. A node that exits on its own (killed to
/// try a failover, say) is reported once; the others go on, and the next
/// `farmlog dev` starts it again.
fn wait_for_stop(children: &mut [(u64, Child)]) {
    let signals = signal_flag();
    let mut reported = std::collections::BTreeSet::new();
    loop {
        if signals.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                if reported.insert(*id) {
                    eprintln!("farmlog dev: node {id} exited ({status}); the others go on (Ctrl-C, then `farmlog dev` again, restarts it)");
                }
            }
        }
        if reported.len() == children.len() {
            eprintln!("farmlog dev: every node has exited");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A flag set by SIGINT or SIGTERM.
fn signal_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        });
        set.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}

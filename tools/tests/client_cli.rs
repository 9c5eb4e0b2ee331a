//! The client subcommands end to end: one `farmlog serve --insecure`
//! process, driven only through the `farmlog` binary as a user would, each
//! call claiming its principal with `--insecure-principal` (and `--tenant`
//! for a landlord principal acting in a customer's namespace).
//!
//! The story is the README's quickstart: a customer and its topology, a
//! multicast back-channel message polled by both proxies, another collected
//! by the customer MLM on their behalf, alarms followed by class, a stream
//! appended with an expected version, a bulk transfer and a throttle; every
//! `--json` answer must parse, and refused calls exit 2 with the status
//! code's name on stderr.
//!
//! Every process is started here and killed by its `Child` handle when
//! its guard is dropped, however the test ends; every wait is bounded.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the server may take to answer its first status call.
const START_WAIT: Duration = Duration::from_secs(60);
/// How long one run of the binary may take (a client retries for at most
/// 15 s).
const RUN_MAX: Duration = Duration::from_secs(40);
/// How long a followed subscription may run in this test.
const FOLLOW_MS: u64 = 20_000;

/// Variables that would change how the binary connects.
const CLIENT_ENV: [&str; 7] = [
    "FARMLOG_ENDPOINTS",
    "FARMLOG_CA",
    "FARMLOG_CERT",
    "FARMLOG_KEY",
    "FARMLOG_PRINCIPAL",
    "FARMLOG_TENANT",
    "RUST_LOG",
];

/// Who calls: a principal, and the tenant a landlord principal acts in.
#[derive(Clone, Copy)]
struct As {
    principal: &'static str,
    tenant: Option<&'static str>,
}

const LANDLORD: As = As {
    principal: "farmlog://landlord/admin",
    tenant: None,
};
const LANDLORD_FOR_ACME: As = As {
    principal: "farmlog://landlord/admin",
    tenant: Some("acme"),
};
const APPS_FOR_ACME: As = As {
    principal: "farmlog://landlord/applications-mlm",
    tenant: Some("acme"),
};
const ACME_ADMIN: As = As {
    principal: "farmlog://tenant/acme/admin",
    tenant: None,
};
const ACME_MLM: As = As {
    principal: "farmlog://tenant/acme/intermediate-mlm/component/acme-mlm",
    tenant: None,
};
const ACME_P1: As = As {
    principal: "farmlog://tenant/acme/proxy/component/acme-p1",
    tenant: None,
};
const ACME_P2: As = As {
    principal: "farmlog://tenant/acme/proxy/component/acme-p2",
    tenant: None,
};
const ACME_SERVICE_MODULE: As = As {
    principal: "farmlog://tenant/acme/service-module",
    tenant: None,
};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; run: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "the binary panicked: {self:#?}");
        self
    }

    /// stdout as one JSON value.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|error| panic!("stdout is not one JSON value ({error}): {self:#?}"))
    }

    /// Each line of stdout as one JSON value.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?} is not JSON: {error}")))
            .collect()
    }
}

/// A running `farmlog` process; killed when dropped.
struct Running {
    child: Child,
    args: Vec<String>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_farmlog"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in CLIENT_ENV {
            command.env_remove(name);
        }
        let mut child = command.spawn().expect("the farmlog binary starts");
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        Self {
            child,
            args: args.iter().map(|arg| arg.to_string()).collect(),
            stdout,
            stderr,
        }
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait().expect("waiting for farmlog") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    panic!("farmlog {:?} did not finish within {limit:?}", self.args)
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let text = |handle: Option<JoinHandle<String>>| handle.map(|handle| handle.join().unwrap()).unwrap_or_default();
        Run {
            code: status.code().expect("farmlog exits rather than being killed"),
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one-node `--insecure` cluster of this test; its process is killed
/// when dropped.
struct Server {
    process: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("node-1.log")).unwrap();
        let process = Command::new(env!("CARGO_BIN_EXE_farmlog"))
            .arg("serve")
            .arg("--insecure")
            .args(["--id", "1", "--listen", &endpoint])
            .arg("--data-dir")
            .arg(dir.path().join("node-1"))
            .args(["--members", &format!("1={endpoint}")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Self { process, endpoint, dir };
        server.wait_ready();
        server
    }

    /// Waits until a landlord admin's `cluster status` succeeds.
    fn wait_ready(&self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let run = self.run(LANDLORD, &["cluster", "status", "--timeout-ms", "1000"]);
            if run.code == 0 {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the server did not answer within {START_WAIT:?}: {run:#?}\nits log:\n{}",
                    log_of(self.dir.path())
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The arguments of a call as `who`, flags after the leaf subcommand.
    fn args<'a>(&'a self, who: As, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = args.to_vec();
        full.extend(["--endpoints", &self.endpoint, "--insecure-principal", who.principal]);
        if let Some(tenant) = who.tenant {
            full.extend(["--tenant", tenant]);
        }
        full
    }

    fn run(&self, who: As, args: &[&str]) -> Run {
        Running::start(&self.args(who, args)).wait(RUN_MAX)
    }

    /// A call that must succeed.
    fn ok(&self, who: As, args: &[&str]) -> Run {
        let run = self.run(who, args);
        run.assert_code(0);
        run
    }

    /// A call that must succeed, with `--json`: its one JSON value.
    fn json(&self, who: As, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        self.ok(who, &args).json()
    }

    /// A call the cluster must refuse with `code`: exit 2, the code on
    /// stderr.
    fn refused(&self, who: As, args: &[&str], code: &str) -> Run {
        let run = self.run(who, args);
        run.assert_code(2);
        assert!(
            run.stderr.starts_with(&format!("farmlog: {code}")),
            "expected {code}: {run:#?}"
        );
        run
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node-1.log")).unwrap_or_default()
}

fn ids(components: &Value) -> Vec<&str> {
    components
        .as_array()
        .unwrap()
        .iter()
        .map(|component| component["id"].as_str().unwrap())
        .collect()
}

#[test]
fn the_quickstart_story_through_the_cli() {
    let server = Server::start();
    the_door(&server);
    topology(&server);
    back_channel(&server);
    alarms(&server);
    streams(&server);
    bulk_and_throttle(&server);
    cluster(&server);
}

/// Who may call what: a tenant principal may not call Admin; bad input
/// is a usage error, also exit 2.
fn the_door(server: &Server) {
    let status = server.json(LANDLORD, &["cluster", "status"]);
    assert_eq!(status["role"], "leader");
    server.refused(ACME_ADMIN, &["cluster", "status"], "PERMISSION_DENIED");
    let bad = server.run(
        LANDLORD,
        &["topology", "register", "component", "x", "--kind", "toaster"],
    );
    bad.assert_code(2);
}

/// acme and its topology: the landlord's application server and
/// applications MLM; acme's MLM below it, two proxies below that, an
/// integration module and support instance below the first; an MLM group
/// and a proxy group.
fn topology(server: &Server) {
    server.ok(LANDLORD, &["topology", "register", "customer", "acme"]);
    server.refused(
        LANDLORD,
        &["topology", "register", "customer", "acme"],
        "ALREADY_EXISTS",
    );
    let registered = server.json(
        LANDLORD,
        &[
            "topology",
            "register",
            "component",
            "app-server",
            "--kind",
            "application-server",
        ],
    );
    assert!(registered["position"].as_u64().unwrap() > 0);
    server.ok(
        LANDLORD,
        &[
            "topology",
            "register",
            "component",
            "applications-mlm",
            "--kind",
            "applications-mlm",
            "--parent",
            "app-server",
        ],
    );
    for (id, kind, parent) in [
        ("acme-mlm", "customer-mlm", "hosted:applications-mlm"),
        ("acme-p1", "proxy", "acme-mlm"),
        ("acme-p2", "proxy", "acme-mlm"),
        ("acme-im1", "integration-module", "acme-p1"),
        ("acme-si1", "support-instance", "acme-im1"),
    ] {
        server.ok(
            LANDLORD_FOR_ACME,
            &[
                "topology",
                "register",
                "component",
                id,
                "--kind",
                kind,
                "--parent",
                parent,
            ],
        );
    }
    for (group, kind, members) in [
        ("acme-mlms", "mlm", &["acme-mlm"][..]),
        ("acme-proxies", "proxy", &["acme-p1", "acme-p2"][..]),
    ] {
        server.ok(ACME_ADMIN, &["topology", "group", "define", group, "--kind", kind]);
        for member in members {
            server.ok(ACME_ADMIN, &["topology", "group", "add", group, member]);
        }
    }
    let group = server.json(ACME_ADMIN, &["topology", "group", "show", "acme-proxies"]);
    assert_eq!(group["kind"], "proxy");
    assert_eq!(ids(&group["members"]), ["acme-p1", "acme-p2"]);

    let below = server.json(ACME_P1, &["topology", "reachable", "acme-mlm"]);
    assert_eq!(
        ids(&below["components"]),
        ["acme-p1", "acme-im1", "acme-si1", "acme-p2"]
    );
    let mlm = server.json(ACME_MLM, &["topology", "show", "acme-mlm"]);
    assert_eq!(
        (mlm["kind"].as_str(), mlm["tenant"].as_str()),
        (Some("customer-mlm"), Some("acme"))
    );
    assert_eq!(
        mlm["parents"][0],
        serde_json::json!({"id": "applications-mlm", "hosted": true})
    );
    let status = server.json(ACME_ADMIN, &["topology", "status", "acme-p1"]);
    assert_eq!(
        (status["own"].as_str(), status["worst"].as_str()),
        (Some("alive"), Some("alive"))
    );
    // A switch, by the component's kind.
    server.ok(ACME_ADMIN, &["topology", "disable", "acme-si1"]);
    let instance = server.json(ACME_ADMIN, &["topology", "show", "acme-si1"]);
    assert_eq!(instance["enabled"], false);
    server.ok(ACME_ADMIN, &["topology", "enable", "acme-si1"]);
    // Another tenant's component is not found, like a missing one.
    server.refused(
        As {
            principal: "farmlog://tenant/globex/admin",
            tenant: None,
        },
        &["topology", "show", "acme-mlm"],
        "NOT_FOUND",
    );
}

/// A multicast to the proxy group, polled and acked by each proxy; then
/// one to the proxies and the MLM, collected once by the MLM for all
/// three.
fn back_channel(server: &Server) {
    let published = server.json(
        APPS_FOR_ACME,
        &[
            "spool",
            "publish",
            "--source",
            "hosted:applications-mlm",
            "--id",
            "fw-1",
            "--class",
            "software",
            "--subclass",
            "firmware",
            "--group",
            "acme-proxies",
            "--body",
            "firmware 2.0",
        ],
    );
    assert_eq!(published["destinations"], 2);
    let position = published["position"].as_u64().unwrap().to_string();

    // A proxy polls only as itself.
    server.refused(ACME_P1, &["spool", "poll", "acme-p2"], "NOT_FOUND");
    for (who, proxy) in [(ACME_P1, "acme-p1"), (ACME_P2, "acme-p2")] {
        let polled = server.json(who, &["spool", "poll", proxy]);
        let handouts = polled["handouts"].as_array().unwrap();
        assert_eq!(handouts.len(), 1, "{polled}");
        assert_eq!(handouts[0]["message_id"], "fw-1");
        assert_eq!(handouts[0]["payload"]["inline"]["body"]["text"], "firmware 2.0");
        assert_eq!(ids(&handouts[0]["destinations"]), [proxy]);
        let acked = server.json(who, &["spool", "ack", proxy, &position]);
        assert_eq!(acked["acked"], 1);
    }
    let nothing = server.json(ACME_MLM, &["spool", "poll", "acme-mlm"]);
    assert_eq!(nothing["handouts"], serde_json::json!([]));
    let status = server.json(APPS_FOR_ACME, &["spool", "status", "--message-id", "fw-1"]);
    assert_eq!(status["finished"], true);

    // The MLM collects the next one for itself and both proxies below it,
    // and acks it on their behalf.
    server.ok(
        APPS_FOR_ACME,
        &[
            "spool",
            "publish",
            "--source",
            "hosted:applications-mlm",
            "--id",
            "cfg-2",
            "--group",
            "acme-proxies",
            "--to",
            "acme-mlm",
            "--body",
            "poll every 30 s",
        ],
    );
    let polled = server.json(ACME_MLM, &["spool", "poll", "acme-mlm"]);
    assert_eq!(
        ids(&polled["handouts"][0]["destinations"]),
        ["acme-mlm", "acme-p1", "acme-p2"]
    );
    let acked = server.json(
        ACME_MLM,
        &[
            "spool",
            "ack",
            "acme-mlm",
            "--message-id",
            "cfg-2",
            "--for",
            "acme-mlm,acme-p1,acme-p2",
        ],
    );
    assert_eq!(acked["acked"], 3);
    let human = server.ok(ACME_P1, &["spool", "poll", "acme-p1"]);
    assert_eq!(human.stdout.trim(), "nothing ready for acme-p1");
    let depth = server.json(ACME_ADMIN, &["spool", "depth"]);
    assert_eq!(depth["depth"], 0);
    // Only an applications MLM or a landlord admin publishes.
    server.refused(
        ACME_ADMIN,
        &[
            "spool", "publish", "--source", "acme-mlm", "--to", "acme-p1", "--body", "x",
        ],
        "PERMISSION_DENIED",
    );
}

/// Alarms sent upstream by a proxy for its integration module, followed
/// by a service module subscribed to the class, and listed.
fn alarms(server: &Server) {
    let follow_ms = FOLLOW_MS.to_string();
    let subscriber = Running::start(&server.args(
        ACME_SERVICE_MODULE,
        &[
            "message",
            "subscribe",
            "--class",
            "alarm",
            "--count",
            "3",
            "--follow-ms",
            &follow_ms,
            "--json",
        ],
    ));
    let alarm = |alarm_id: &str, extra: &[&str]| {
        let mut args = vec![
            "message",
            "send",
            "alarm",
            "--source",
            "acme-im1",
            "--support-instance",
            "acme-si1",
            "--alarm-id",
            alarm_id,
        ];
        args.extend(extra);
        server.json(ACME_P1, &args)
    };
    let raised = alarm("disk-full", &["--severity", "critical", "--text", "disk /var at 99%"]);
    assert_eq!(raised["alarm"], "raised");
    alarm("cpu", &["--text", "load 40"]);
    let cleared = alarm("disk-full", &["--clear", "--text", "disk /var at 60%"]);
    assert_eq!(cleared["alarm"], "cleared");

    let followed = subscriber.wait(Duration::from_millis(FOLLOW_MS) + RUN_MAX);
    followed.assert_code(0);
    let lines = followed.json_lines();
    let states: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            let alarm = &line["content"]["alarm"];
            (alarm["alarm_id"].as_str().unwrap(), alarm["state"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        states,
        [("disk-full", "raised"), ("cpu", "raised"), ("disk-full", "cleared")]
    );

    let open = server.json(ACME_SERVICE_MODULE, &["alarm", "list"]);
    let open = open["alarms"].as_array().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["alarm_id"], "cpu");
    // Nothing of another class arrives: the follow ends on time, empty.
    let quiet = server.ok(
        ACME_SERVICE_MODULE,
        &["message", "subscribe", "--class", "inventory", "--follow-ms", "300"],
    );
    assert!(quiet.stdout.is_empty(), "{quiet:#?}");

    // Other content, then reads by id, source and class.
    server.ok(
        ACME_P1,
        &[
            "message",
            "send",
            "data",
            "--source",
            "acme-p1",
            "--id",
            "inv-1",
            "--class",
            "inventory",
            "--subclass",
            "packages",
            "--body",
            "openssl 3.0",
        ],
    );
    server.ok(ACME_P1, &["message", "send", "heartbeat", "--source", "acme-p1"]);
    let message = server.json(ACME_SERVICE_MODULE, &["message", "get", "inv-1"]);
    assert_eq!(message["content"]["data"]["body"]["text"], "openssl 3.0");
    let by_source = server.json(ACME_ADMIN, &["message", "list", "--source", "acme-p1"]);
    assert_eq!(by_source["messages"].as_array().unwrap().len(), 2);
    let by_class = server.json(ACME_ADMIN, &["message", "list", "--class", "alarm"]);
    assert_eq!(by_class["messages"].as_array().unwrap().len(), 3);
    server.refused(ACME_SERVICE_MODULE, &["message", "get", "no-such"], "NOT_FOUND");
}

/// A stream appended with expected versions.
fn streams(server: &Server) {
    server.ok(
        ACME_SERVICE_MODULE,
        &["append", "acme-audit", "first", "--expected", "no-stream"],
    );
    server.ok(
        ACME_SERVICE_MODULE,
        &["append", "acme-audit", "second", "--expected", "0"],
    );
    server.refused(
        ACME_SERVICE_MODULE,
        &["append", "acme-audit", "oops", "--expected", "0"],
        "FAILED_PRECONDITION",
    );
    let read = server.ok(ACME_SERVICE_MODULE, &["read", "acme-audit", "--json"]);
    let bodies: Vec<Value> = read.json_lines().iter().map(|event| event["body"].clone()).collect();
    assert_eq!(bodies, ["first", "second"]);
    // The landlord's own namespace holds no such stream.
    server.refused(LANDLORD, &["read", "acme-audit"], "NOT_FOUND");
}

/// A bulk request granted and transferred; a farm's throttle set and
/// shown.
fn bulk_and_throttle(server: &Server) {
    server.ok(
        ACME_P1,
        &[
            "bulk", "request", "--source", "acme-p1", "--id", "dump-1", "--size", "1048576",
        ],
    );
    let requested = server.json(ACME_MLM, &["bulk", "status", "dump-1"]);
    assert_eq!(requested["phase"], "requested");
    server.ok(
        APPS_FOR_ACME,
        &[
            "bulk",
            "grant",
            "dump-1",
            "--hop",
            "hosted:applications-mlm",
            "--url",
            "https://apps.example/bulk/dump-1",
        ],
    );
    server.ok(ACME_P1, &["bulk", "transferred", "dump-1", "--hop", "acme-p1"]);
    let done = server.json(ACME_P1, &["bulk", "status", "dump-1"]);
    assert_eq!(done["phase"], "transferred");
    assert_eq!(done["url"], "https://apps.example/bulk/dump-1");

    server.ok(
        ACME_ADMIN,
        &[
            "throttle",
            "set",
            "acme-mlms",
            "--rule",
            "window-ms=60000,max-bytes=1000000,max-messages=100",
        ],
    );
    server.ok(
        ACME_MLM,
        &[
            "throttle",
            "report",
            "acme-mlms",
            "--member",
            "acme-mlm",
            "--bytes",
            "500",
            "--messages",
            "2",
        ],
    );
    let shown = server.json(ACME_ADMIN, &["throttle", "show", "acme-mlms"]);
    assert_eq!(shown["reported"]["bytes"], 500);
    assert_eq!(shown["rules"][0]["rule"]["limit"]["max_messages"], 100);
    let decision = server.json(ACME_ADMIN, &["throttle", "may-send", "acme-mlm", "--bytes", "100"]);
    assert_eq!(
        (decision["allowed"].as_bool(), decision["farm"].as_str()),
        (Some(true), Some("acme-mlms"))
    );
}

/// The cluster's administration.
fn cluster(server: &Server) {
    let snapshot = server.json(LANDLORD, &["cluster", "snapshot"]);
    assert!(snapshot["snapshot_index"].as_u64().is_some(), "{snapshot}");
    let scrub = server.json(LANDLORD, &["cluster", "scrub"]);
    assert_eq!(scrub["damage"], Value::Null);
    let promoted = server.json(LANDLORD, &["cluster", "promote", "1"]);
    assert_eq!(promoted["nodes"][0]["voter"], true);
    server.refused(ACME_ADMIN, &["cluster", "snapshot"], "PERMISSION_DENIED");
}

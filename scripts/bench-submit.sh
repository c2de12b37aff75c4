#!/usr/bin/env bash
# Measures, on a real one-machine cluster (ZooKeeper, Nimbus, one supervisor), the time
# from `squall jar` of WordCount to its first tuple processed (as Nimbus reports from
# worker heartbeats, polled every 10 ms). Prints one JSON line per run.
# Usage: scripts/bench-submit.sh [runs]
# SQUALL_BENCH_NO_BUILD=1 uses the release binaries as they are.
# With SQUALL_BENCH_LOGS=DIR the daemons' and workers' logs are kept there (for a
# timeline of where the time goes).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
./scripts/ensure-zookeeper.sh >/dev/null
if [[ -z "${SQUALL_BENCH_NO_BUILD:-}" ]]; then
  cargo build -j2 --release -p squall-cli -p squall-examples >&2
fi
bin="$PWD/target/release"
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
zk=$(free_port); nimbus=$(free_port); s1=$(free_port); s2=$(free_port)
cat > "$dir/storm.yaml" <<YAML
storm.zookeeper.servers: ["127.0.0.1"]
storm.zookeeper.port: $zk
dev.zookeeper.path: "$dir/zk"
nimbus.seeds: ["127.0.0.1"]
nimbus.thrift.port: $nimbus
storm.local.hostname: "127.0.0.1"
storm.local.dir: "$dir/local"
supervisor.slots.ports: [$s1, $s2]
supervisor.monitor.frequency.secs: 1
YAML
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -n "${SQUALL_BENCH_LOGS:-}" ]]; then
    mkdir -p "$SQUALL_BENCH_LOGS"
    (cd "$dir" && find . -name '*.log' -exec cp --parents {} "$SQUALL_BENCH_LOGS" \;)
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
"$bin/squall" dev-zookeeper --config "$dir/storm.yaml" > "$dir/zk.log" 2>&1 & pids+=($!)
sleep 2
"$bin/squall" nimbus --config "$dir/storm.yaml" > "$dir/nimbus.log" 2>&1 & pids+=($!)
"$bin/squall" supervisor --config "$dir/storm.yaml" > "$dir/supervisor.log" 2>&1 & pids+=($!)
sleep 3
for i in $(seq "$runs"); do
  start=$(date +%s.%N)
  "$bin/squall" jar "$bin/word-count" "wc$i" --config "$dir/storm.yaml" > /dev/null
  submitted=$(date +%s.%N)
  # One poller process (every 10 ms), so the figure is not a process start per poll.
  first=$(python3 - "127.0.0.1:$nimbus" "wc$i" <<'PY'
import json, sys, time, urllib.request
url = "http://%s/nimbus/v1/topologies/%s" % (sys.argv[1], sys.argv[2])
deadline = time.time() + 60
while True:
    if time.time() > deadline:
        sys.exit("bench-submit: %s processed no tuple within 60 s (logs: SQUALL_BENCH_LOGS=DIR)" % sys.argv[2])
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            d = json.load(r)
        if any(c["id"] == "count" and c["executed"] > 0 for c in d["components"]):
            print(time.time())
            break
    except Exception:
        pass
    time.sleep(0.01)
PY
)
  python3 -c "import datetime; print('{\"run\": $i, \"started\": \"%s\", \"submit_secs\": %.3f, \"submit_to_first_tuple_secs\": %.3f}' % (datetime.datetime.fromtimestamp($start, datetime.timezone.utc).strftime(\"%H:%M:%S.%f\"), $submitted - $start, $first - $start))"
  "$bin/squall" kill "wc$i" -w 0 --config "$dir/storm.yaml" > /dev/null
  sleep 3
done

#!/usr/bin/env bash
# Local demo of raftpoll, all on 127.0.0.1: starts rrdcached, a real net-snmp agent (v3
# authPriv), snmpsimd with recorded devices from the snmpsim package plus one whose counters
# move at a known rate (1000 octets/s in, 2000 out, per port), and a local cluster of three
# raftpoll nodes (polling every 10 s). Adds the devices with the CLI, waits for a few polls, then
# prints the cluster status, the devices, the RRD files, one port's RRD and a few lines of one
# node's Prometheus metrics. Stops everything on exit; the files stay in $RAFTPOLL_DEMO_DIR
# (default /tmp/raftpoll-demo) for a look afterwards.
#
#   scripts/demo.sh            # environment: RAFTPOLL_DEMO_DIR, RAFTPOLL_DEMO_POLLS (default 3)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=${RAFTPOLL_DEMO_DIR:-${TMPDIR:-/tmp}/raftpoll-demo}
POLLS=${RAFTPOLL_DEMO_POLLS:-3}
FREQ=10
SIM_DATA=/usr/share/doc/snmpsim/examples/data
V3_USER=raftpoll
V3_AUTH_PASS=demo-auth-pass
V3_PRIV_PASS=demo-priv-pass

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- build --------------------------------------------------------------------------------
scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
say "cargo build --release -p raftpoll"
cargo build --release -p raftpoll
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/raftpoll"
[ -x "$BIN" ] || die "no binary at $BIN"
PATH="$PATH:/usr/sbin:/sbin"

# --- helpers ------------------------------------------------------------------------------
PIDS=()
NAMES=()
cleanup() {
    local i
    for i in "${!PIDS[@]}"; do
        kill "${PIDS[$i]}" 2>/dev/null || true
    done
    for i in "${!PIDS[@]}"; do
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    echo
    echo "demo: stopped; files kept in $DEMO (logs: $DEMO/*.log)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME LOG CMD...: runs CMD in the background, remembered for cleanup.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
}

# alive: fails (with the log) if any started process has exited.
alive() {
    local i
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            echo "demo: ${NAMES[$i]} exited; its log:" >&2
            tail -n 40 "$DEMO/${NAMES[$i]}.log" >&2 || true
            exit 1
        fi
    done
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds, at most SECONDS.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        alive
        [ $SECONDS -lt $deadline ] || die "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

free_port() { # tcp|udp
    python3 -c 'import socket,sys
k = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, k); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}

# rrdcached_cmd LINE: one rrdcached protocol command; prints the status line.
rrdcached_cmd() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$RRD_PORT" || return 1
    printf '%s\n' "$1" >&3
    read -r -t 5 line <&3 || { exec 3<&-; return 1; }
    exec 3<&-
    echo "$line"
}

json() { # json EXPR: evaluates a python expression on the JSON document `d` read from stdin
    python3 -c 'import json,sys; d=json.load(sys.stdin); r='"$1"'; print("" if r is None else r)'
}

rp() { "$BIN" "$@"; }

# --- test bed -----------------------------------------------------------------------------
# Only ever wipe a directory this script made (marked), never an arbitrary one.
if [ -e "$DEMO" ]; then
    [ -f "$DEMO/.raftpoll-demo" ] || die "$DEMO exists and is not a demo dir; set RAFTPOLL_DEMO_DIR"
    rm -rf "$DEMO"
fi
mkdir -p "$DEMO"/{rrd,journal,snmpd-persist,snmpsim-data,snmpsim-cache,node}
touch "$DEMO/.raftpoll-demo"
chmod 755 "$DEMO" "$DEMO/snmpsim-data"
chmod 777 "$DEMO/snmpsim-cache"

RRD_PORT=$(free_port tcp)
say "rrdcached on 127.0.0.1:$RRD_PORT (files under $DEMO/rrd)"
start rrdcached "$DEMO/rrdcached.log" rrdcached -g -l "127.0.0.1:$RRD_PORT" -b "$DEMO/rrd" -B -R \
    -j "$DEMO/journal" -F -w 5 -z 1 -p "$DEMO/rrdcached.pid"
wait_for rrdcached 20 rrdcached_cmd STATS

SNMPD_PORT=$(free_port udp)
say "snmpd (this machine's live counters, SNMPv3 authPriv) on 127.0.0.1:$SNMPD_PORT"
cat >"$DEMO/snmpd.conf" <<EOF
agentAddress udp:127.0.0.1:$SNMPD_PORT
rocommunity public 127.0.0.0/8
createUser $V3_USER SHA "$V3_AUTH_PASS" AES "$V3_PRIV_PASS"
rouser $V3_USER priv
EOF
start snmpd "$DEMO/snmpd.log" env SNMP_PERSISTENT_DIR="$DEMO/snmpd-persist" \
    snmpd -f -C -c "$DEMO/snmpd.conf" -m "" -I -smux -Lo -p "$DEMO/snmpd.pid"
wait_for snmpd 20 snmpget -m "" -t 0.5 -r 0 -v2c -c public "127.0.0.1:$SNMPD_PORT" 1.3.6.1.2.1.1.3.0

SIM_PORT=$(free_port udp)
say "snmpsimd on 127.0.0.1:$SIM_PORT: communities linux, winxp (recordings), moving (known rates)"
gzip -dc "$SIM_DATA/recorded/linux-full-walk.snmprec.gz" >"$DEMO/snmpsim-data/linux.snmprec"
gzip -dc "$SIM_DATA/recorded/winxp-full-walk.snmprec.gz" >"$DEMO/snmpsim-data/winxp.snmprec"
cp "$ROOT/crates/testbed/recordings/moving.snmprec" "$DEMO/snmpsim-data/moving.snmprec"
chmod 644 "$DEMO"/snmpsim-data/*.snmprec
start snmpsimd "$DEMO/snmpsimd.log" env HOME="$DEMO" snmpsimd \
    --data-dir="$DEMO/snmpsim-data" --cache-dir="$DEMO/snmpsim-cache" \
    --agent-udpv4-endpoint="127.0.0.1:$SIM_PORT" \
    --process-user=nobody --process-group=nogroup --logging-method=null
for c in linux winxp moving; do
    wait_for "snmpsimd ($c)" 60 snmpget -m "" -t 0.5 -r 0 -v2c -c "$c" "127.0.0.1:$SIM_PORT" 1.3.6.1.2.1.1.3.0
done

# --- raftpoll: a 3-node cluster -----------------------------------------------------------
NODES=3
PORTS=()
METRICS_PORTS=()
for n in $(seq 1 $NODES); do PORTS+=("$(free_port tcp)"); METRICS_PORTS+=("$(free_port tcp)"); done
SEEDS=$(printf '"127.0.0.1:%s", ' "${PORTS[@]}")
SEEDS="[${SEEDS%, }]"
export RAFTPOLL_ADDR="127.0.0.1:${PORTS[0]}"
RAFTPOLL_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export RAFTPOLL_SECRET
for n in $(seq 1 $NODES); do
    mkdir -p "$DEMO/node$n"
    cat >"$DEMO/node$n.toml" <<EOF
node_name = "demo-$n"
data_dir = "$DEMO/node$n"
listen = "127.0.0.1:${PORTS[$((n - 1))]}"
seeds = $SEEDS
bootstrap = $([ "$n" = 1 ] && echo true || echo false)
secret = "$RAFTPOLL_SECRET"
groups = [0]
metrics_listen = "127.0.0.1:${METRICS_PORTS[$((n - 1))]}"

[poller]
frequency = $FREQ
down_retry = $FREQ
timeout_ms = 1000
retries = 1
# each node polls from its own loopback address
source_ip = "127.0.0.$n"

[rrd]
rrdcached = "127.0.0.1:$RRD_PORT"
EOF
    chmod 600 "$DEMO/node$n.toml"
    say "raftpoll node demo-$n on 127.0.0.1:${PORTS[$((n - 1))]} (config $DEMO/node$n.toml)"
    start "node$n" "$DEMO/node$n.log" env RUST_LOG="${RUST_LOG:-info}" "$BIN" node --config "$DEMO/node$n.toml"
done
cluster_formed() {
    rp status --json | json 'd.get("leader_id") is not None and sum(1 for n in d["nodes"] if n["alive"]) == '"$NODES" | grep -qx True
}
wait_for "a leader and $NODES live nodes" 60 cluster_formed

say "adding devices"
add() { echo "+ raftpoll device add $*" | sed -E 's/(--(auth|priv)-pass) [^ ]+/\1 ***/g'; rp device add "$@"; }
add linux-sim --ip 127.0.0.1 --port "$SIM_PORT" --snmp-version v2c --community linux
add winxp-sim --ip 127.0.0.1 --port "$SIM_PORT" --snmp-version v2c --community winxp
add moving-sim --ip 127.0.0.1 --port "$SIM_PORT" --snmp-version v2c --community moving
add localhost --ip 127.0.0.1 --port "$SNMPD_PORT" --snmp-version v3 --v3-user "$V3_USER" \
    --auth-proto sha --auth-pass "$V3_AUTH_PASS" --priv-proto aes --priv-pass "$V3_PRIV_PASS"

say "waiting for $POLLS polls of every device (every ${FREQ}s)"
all_polled() { rp device list --json | json 'all(x.get("last_polled") for x in d) and len(d) == 4' | grep -qx True; }
wait_for "every device to be polled" $((FREQ * 3 + 30)) all_polled
first=$(rp device list --json | json 'max(x["last_polled"] for x in d)')
polled_again() {
    rp device list --json | json "min(x['last_polled'] for x in d) >= $first + $(((POLLS - 1) * FREQ))" | grep -qx True
}
wait_for "$POLLS polls" $((FREQ * (POLLS + 2) + 30)) polled_again

# --- results ------------------------------------------------------------------------------
say "raftpoll status"
rp status
say "raftpoll device list"
rp device list
say "raftpoll device show moving-sim"
rp device show moving-sim

rrdcached_cmd FLUSHALL >/dev/null || true
say "RRD files (under $DEMO/rrd)"
(cd "$DEMO/rrd" && find . -name '*.rrd' | sed 's|^\./||' | sort)

PORT_RRD=$(rp device show moving-sim --json | json 'd["ports"][0]["rrd"]')
[ -n "$PORT_RRD" ] || die "moving-sim has no port RRD"
rrdcached_cmd "FLUSH $PORT_RRD" >/dev/null || true
say "rrdtool info $PORT_RRD (summary: step, data sources, RRAs as CF:steps-per-row:rows)"
rrdtool info "$DEMO/rrd/$PORT_RRD" | awk -F' = ' '
    function unq(v) { gsub(/"/, "", v); return v }
    $1 == "step" { print "step: " $2 }
    match($1, /^ds\[[A-Z]+\]/) { n = substr($1, 4, RLENGTH - 4); if (!(n in seen)) { seen[n] = 1; order[++nds] = n }
        split($1, p, "."); if (p[2] ~ /^(type|minimal_heartbeat|min|max)$/) ds[n] = ds[n] " " p[2] "=" unq($2) }
    match($1, /^rra\[[0-9]+\]\.(cf|pdp_per_row|rows)$/) { split($1, p, "."); r = substr(p[1], 5) + 0
        rra[r, p[2]] = unq($2); if (r + 1 > nrra) nrra = r + 1 }
    END {
        for (i = 1; i <= nds; i++) if (order[i] ~ /OCTETS$/) printf "DS %-16s%s\n", order[i], ds[order[i]]
        printf "(%d data sources in all)\nRRAs:", nds
        for (r = 0; r < nrra; r++) printf " %s:%s:%s", rra[r, "cf"], rra[r, "pdp_per_row"], rra[r, "rows"]
        print ""
    }'
say "rrdtool lastupdate $PORT_RRD"
rrdtool lastupdate "$DEMO/rrd/$PORT_RRD"
say "INOCTETS / OUTOCTETS of $PORT_RRD over the last 90 s (the agent moves them at 1000 / 2000 per s)"
rrdtool fetch "$DEMO/rrd/$PORT_RRD" AVERAGE --start -90 | awk '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i + 1; print "time         INOCTETS/s  OUTOCTETS/s"; next }
    NF > 2 && $(col["INOCTETS"]) !~ /nan/ { printf "%s %12.1f %12.1f\n", $1, $(col["INOCTETS"]), $(col["OUTOCTETS"]) }'

METRICS_URL="http://127.0.0.1:${METRICS_PORTS[0]}/metrics"
say "a few lines of demo-1's Prometheus metrics ($METRICS_URL; every metric in README \"Metrics\")"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "$METRICS_URL" |
    grep -E '^raftpoll_(polls_total|devices|raft_(term|is_leader|applied_index)|members_alive|snmp_(requests|retries)_total|rrd_updates_sent_total|rrdcached_connected|poll_duration_seconds_(sum|count))[ {]'

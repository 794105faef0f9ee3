#!/usr/bin/env bash
# Installs what raftpoll's tests and demo need, only if missing (idempotent):
# rrdcached, rrdtool, net-snmp agent and tools, snmpsim, MariaDB server and client, promtool (from
# the prometheus package: the metrics test lints /metrics with it) (Debian/Ubuntu
# packages), and checks for the Rust toolchain. Runs as root, or through sudo when available.
# `--bench` also installs the pollers the benchmarks compare against (collectd, snmp_exporter).
set -euo pipefail

PACKAGES=(rrdcached rrdtool snmpd snmp snmpsim iproute2 mariadb-server mariadb-client prometheus)
# One program per package above, looked up in PATH and the sbin dirs. The test bed's MariaDB
# (LibreNMS's database) also needs mariadb-install-db, which mariadb-server ships.
PROGRAMS=(rrdcached rrdtool snmpd snmpget snmpsimd ip mariadbd mariadb promtool)
# prometheus also brings the Prometheus server and node exporter as services.
SERVICES=(snmpd rrdcached mariadb prometheus prometheus-node-exporter)
if [ "${1:-}" = "--bench" ]; then
    PACKAGES+=(collectd-core prometheus-snmp-exporter)
    PROGRAMS+=(collectd prometheus-snmp-exporter)
    SERVICES+=(collectd prometheus-snmp-exporter)
fi

say() { printf 'install-deps: %s\n' "$*"; }

have() {
    command -v "$1" >/dev/null 2>&1 && return 0
    local d
    for d in /usr/local/sbin /usr/sbin /sbin; do
        [ -x "$d/$1" ] && return 0
    done
    return 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# The packages start system services (snmpd on 127.0.0.1:161, rrdcached on its own socket,
# mariadb on 3306 with /var/lib/mysql, …).
# The test bed never uses them (every daemon gets its own port and temp dir); stop and disable
# them so a fresh machine is not left running agents nobody asked for.
stop_service() {
    local svc=$1
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
        as_root service "$svc" stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    fi
}

missing=()
for p in "${PROGRAMS[@]}"; do
    have "$p" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    say "missing: ${missing[*]}; installing ${PACKAGES[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        say "apt-get not found: install ${PACKAGES[*]} with your package manager" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}"
    for svc in "${SERVICES[@]}"; do
        stop_service "$svc"
    done
    for p in "${PROGRAMS[@]}"; do
        have "$p" || { say "still missing after install: $p" >&2; exit 1; }
    done
else
    say "${PROGRAMS[*]}: present"
fi

# The snmpsim package keeps its example recordings here; the test bed serves some of them.
if [ ! -f /usr/share/doc/snmpsim/examples/data/recorded/linux-full-walk.snmprec.gz ]; then
    say "snmpsim example recordings missing under /usr/share/doc/snmpsim/examples/data" >&2
    say "(a dpkg path-exclude for /usr/share/doc removes them; reinstall snmpsim without it)" >&2
    exit 1
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v cargo >/dev/null 2>&1; then
    say "rust: $(cargo --version)"
else
    say "cargo not found: install the Rust toolchain (https://rustup.rs), then run again" >&2
    exit 1
fi

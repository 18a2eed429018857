#!/usr/bin/env bash
# Starts, stops or shows a 3-server rookery ensemble on loopback.
#
#   scripts/ensemble.sh start|stop|status [DIR]
#
# DIR (default ./ensemble) gets s1/ s2/ s3/, each with zoo.cfg, data/myid, a pid file and a log.
# Client ports: $CLIENT_PORT_BASE+1..3 (default 2181-2183); peer ports $PEER_PORT_BASE+N
# (default 2889-2891); election ports $ELECTION_PORT_BASE+N (default 3889-3891, shown in conf
# only). $TICK_TIME (default 2000) sets tickTime. The binary is $ROOKERY_BIN, else
# target/release/rookery.
set -euo pipefail

cmd=${1:-}
dir=${2:-ensemble}
bin=${ROOKERY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/rookery}
client_base=${CLIENT_PORT_BASE:-2180}
peer_base=${PEER_PORT_BASE:-2888}
election_base=${ELECTION_PORT_BASE:-3888}
tick=${TICK_TIME:-2000}

servers() {
    local n
    for n in 1 2 3; do
        echo "server.$n=127.0.0.1:$((peer_base + n)):$((election_base + n));127.0.0.1:$((client_base + n))"
    done
}

start() {
    [ -x "$bin" ] || { echo "no rookery binary at $bin (cargo build --release, or set ROOKERY_BIN)" >&2; exit 1; }
    for n in 1 2 3; do
        local s="$dir/s$n"
        mkdir -p "$s/data"
        if [ -f "$s/pid" ] && kill -0 "$(cat "$s/pid")" 2>/dev/null; then
            echo "server $n already running (pid $(cat "$s/pid"))"
            continue
        fi
        {
            echo "tickTime=$tick"
            echo "initLimit=10"
            echo "syncLimit=5"
            echo "dataDir=$(cd "$s/data" && pwd)"
            echo "clientPort=$((client_base + n))"
            echo "clientPortAddress=127.0.0.1"
            echo "4lw.commands.whitelist=*"
            servers
        } > "$s/zoo.cfg"
        echo "$n" > "$s/data/myid"
        nohup "$bin" --config "$s/zoo.cfg" > "$s/rookery.log" 2>&1 &
        echo $! > "$s/pid"
        echo "server $n started (pid $!, client 127.0.0.1:$((client_base + n)), log $s/rookery.log)"
    done
    echo "connect: zkCli.sh -server 127.0.0.1:$((client_base + 1)),127.0.0.1:$((client_base + 2)),127.0.0.1:$((client_base + 3))"
}

stop() {
    for n in 1 2 3; do
        local s="$dir/s$n"
        [ -f "$s/pid" ] || continue
        local pid
        pid=$(cat "$s/pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "server $n (pid $pid) did not stop in 5 s; killing it"
                kill -9 "$pid"
            fi
            echo "server $n stopped"
        fi
        rm -f "$s/pid"
    done
}

status() {
    for n in 1 2 3; do
        local s="$dir/s$n" state="stopped"
        if [ -f "$s/pid" ] && kill -0 "$(cat "$s/pid")" 2>/dev/null; then
            state="running (pid $(cat "$s/pid"))"
            local mode
            mode=$( (exec 3<>"/dev/tcp/127.0.0.1/$((client_base + n))" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null \
                | grep -E '^Mode:|not currently serving' || true)
            state="$state ${mode:-no answer}"
        fi
        echo "server $n: $state"
    done
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Starts, stops or shows a rookery ensemble on loopback: $VOTERS participants (default 3) and
# $OBSERVERS observers (default 0), numbered 1..VOTERS+OBSERVERS, observers last.
#
#   scripts/ensemble.sh start|stop|status [DIR]
#   VOTERS=5 OBSERVERS=2 scripts/ensemble.sh start      # 5 voters + 2 observers
#
# DIR (default ./ensemble) gets s1/ s2/ ..., each with zoo.cfg, data/myid, a pid file and a log.
# Client ports: $CLIENT_PORT_BASE+N (default 2181, 2182, ...); peer ports $PEER_PORT_BASE+N
# (default 2889, ...); election ports $ELECTION_PORT_BASE+N (default 3889, ..., shown in conf
# only). $TICK_TIME (default 2000) sets tickTime. The binary is $ROOKERY_BIN, else
# target/release/rookery. stop and status look at every s*/ in DIR.
set -euo pipefail

cmd=${1:-}
dir=${2:-ensemble}
bin=${ROOKERY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/rookery}
client_base=${CLIENT_PORT_BASE:-2180}
peer_base=${PEER_PORT_BASE:-2888}
election_base=${ELECTION_PORT_BASE:-3888}
tick=${TICK_TIME:-2000}
voters=${VOTERS:-3}
observers=${OBSERVERS:-0}
members=$((voters + observers))

servers() {
    local n role
    for n in $(seq "$members"); do
        role=""; [ "$n" -gt "$voters" ] && role=":observer"
        echo "server.$n=127.0.0.1:$((peer_base + n)):$((election_base + n))$role;127.0.0.1:$((client_base + n))"
    done
}

# The member numbers that have a directory under DIR (for stop and status).
existing() {
    local s
    for s in "$dir"/s*; do
        [ -d "$s" ] && echo "${s##*/s}"
    done | sort -n
}

start() {
    [ -x "$bin" ] || { echo "no rookery binary at $bin (cargo build --release, or set ROOKERY_BIN)" >&2; exit 1; }
    for n in $(seq "$members"); do
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
            if [ "$n" -gt "$voters" ]; then echo "peerType=observer"; fi
        } > "$s/zoo.cfg"
        echo "$n" > "$s/data/myid"
        nohup "$bin" --config "$s/zoo.cfg" > "$s/rookery.log" 2>&1 &
        echo $! > "$s/pid"
        echo "server $n started (pid $!, client 127.0.0.1:$((client_base + n)), log $s/rookery.log)"
    done
    local connect n
    connect=$(for n in $(seq "$members"); do printf '127.0.0.1:%s,' "$((client_base + n))"; done)
    echo "connect: zkCli.sh -server ${connect%,}"
}

stop() {
    for n in $(existing); do
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
    for n in $(existing); do
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

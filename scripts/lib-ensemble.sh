# Shared by scripts/ensemble-fg.sh, benches/ensemble.sh, benches/observer.sh and benches/commit-io.sh (source it; it runs nothing itself):
# ports, zoo.cfg + myid, starting a member and asking its mode, for a loopback ensemble of
# ZooKeeper 3.8 or rookery members. The zoo.cfg is the one tests/common/cluster.rs writes:
#   server.N=127.0.0.1:peer:election;127.0.0.1:client, myid in each dataDir.
#
# Inputs (set before calling): MEMBERS, TICK (ms), TARGET (zk|rookery), ROOKERY (binary),
# optionally ZK_HEAP (512m). Outputs: the arrays CPORT, PPORT, EPORT, PID (indexed from 1) and
# ENS_CONNECT (the client connect string).

ENS_ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
declare -a PID CPORT PPORT EPORT

# Picks 3 × MEMBERS distinct free loopback ports (client, peer, election per member).
ens_ports() {
    local ports i
    read -r -a ports <<<"$(python3 - "$MEMBERS" <<'PY'
import socket, sys
n = int(sys.argv[1]); socks = []
for _ in range(3 * n):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
    for i in $(seq "$MEMBERS"); do
        CPORT[$i]=${ports[$((3 * (i - 1)))]}
        PPORT[$i]=${ports[$((3 * (i - 1) + 1))]}
        EPORT[$i]=${ports[$((3 * (i - 1) + 2))]}
    done
    ENS_CONNECT=$(for i in $(seq "$MEMBERS"); do printf '127.0.0.1:%s,' "${CPORT[$i]}"; done)
    ENS_CONNECT=${ENS_CONNECT%,}
}

# Writes member $1's dataDir/myid and zoo.cfg under dir $2 (and a log4j.properties sending
# ZooKeeper's log to $2/zk.log at level ${ZK_LOG_LEVEL:-WARN}).
ens_write_cfg() {
    local i=$1 d=$2 j
    mkdir -p "$d/data"
    echo "$i" >"$d/data/myid"
    {
        echo "tickTime=$TICK"; echo "initLimit=10"; echo "syncLimit=5"
        echo "dataDir=$d/data"; echo "clientPort=${CPORT[$i]}"; echo "clientPortAddress=127.0.0.1"
        echo "4lw.commands.whitelist=*"; echo "maxClientCnxns=0"; echo "admin.enableServer=false"
        echo "standaloneEnabled=false"
        for j in $(seq "$MEMBERS"); do
            echo "server.$j=127.0.0.1:${PPORT[$j]}:${EPORT[$j]};127.0.0.1:${CPORT[$j]}"
        done
    } >"$d/zoo.cfg"
    printf '%s\n' "log4j.rootLogger=${ZK_LOG_LEVEL:-WARN}, F" "log4j.appender.F=org.apache.log4j.FileAppender" \
        "log4j.appender.F.File=$d/zk.log" "log4j.appender.F.layout=org.apache.log4j.PatternLayout" \
        "log4j.appender.F.layout.ConversionPattern=%d %p %c{1}: %m%n" >"$d/log4j.properties"
}

# Starts member $1 from dir $2 in the background, stdout/stderr appended to $3; sets PID[$1].
ens_start_member() {
    local i=$1 d=$2 out=$3
    if [ "$TARGET" = zk ]; then
        java -Xmx"${ZK_HEAP:-512m}" -XX:+UseG1GC -Dzookeeper.admin.enableServer=false \
            -Dlog4j.configuration="file:$d/log4j.properties" \
            -cp "$ENS_ZK_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" >>"$out" 2>&1 &
    else
        "$ROOKERY" --config "$d/zoo.cfg" >>"$out" 2>&1 &
    fi
    PID[$i]=$!
}

# What member $1's `srvr` says after `Mode:` (empty if it does not answer or is not serving).
ens_mode_of() {
    echo srvr | timeout 3 nc -w 2 127.0.0.1 "${CPORT[$1]}" 2>/dev/null | awk '/^Mode:/{print $2}'
}

# Whether pid $1 runs (and is no zombie).
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && ! awk '{exit !($3 == "Z")}' "/proc/$1/stat" 2>/dev/null; }

# Stops pid $1: TERM, KILL after 20 s.
stop_pid() {
    local pid=${1:-}
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 200); do alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 0
}

# Bounds the sourcing script in time: after $1 seconds, TERM to it (its traps clean up).
# Prints the watchdog's pid, to kill on exit.
start_watchdog() {
    local limit=$1 script=$$
    (
        trap 'kill "$sp" 2>/dev/null; exit 0' TERM
        sleep "$limit" & sp=$!
        wait "$sp" && { echo "watchdog: $limit s exceeded" >&2; kill -TERM "$script"; }
    ) >/dev/null &
    echo $!
}

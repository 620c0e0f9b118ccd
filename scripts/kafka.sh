#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker and controller in one JVM) for development and tests.
#
#   scripts/kafka.sh start    start the broker of the run directory (or find it running); the last line of stdout
#                             is its bootstrap address 127.0.0.1:PORT (with the SASL_SSL listener, the line before
#                             it is SASL_SSL://127.0.0.1:PORT)
#   scripts/kafka.sh stop     stop it (SIGTERM, then SIGKILL after STREAMSSL_KAFKA_STOP_TIMEOUT seconds)
#   scripts/kafka.sh status   print its address(es) as start does and exit 0 if it runs and answers, else exit 3
#   scripts/kafka.sh fetch    only fetch (or find cached) the broker's jars
#
# Environment:
#   STREAMSSL_KAFKA_DIR    run directory: server.properties, KRaft data, broker.log, pid and port files
#                          (default ${TMPDIR:-/tmp}/streamssl-kafka-$(id -u)); one directory, one broker
#   STREAMSSL_CACHE        cache of the broker's jars, outside the clone (default ~/.cache/streamssl)
#   STREAMSSL_KAFKA_START_TIMEOUT / STREAMSSL_KAFKA_STOP_TIMEOUT   seconds (default 60 / 30)
#   KAFKA_HEAP             JVM heap options (default -Xmx512m);  JAVA_OPTS   more JVM options (default none)
#   STREAMSSL_KAFKA_SASL_SSL  1: also open a SASL_SSL listener on a third port of 127.0.0.1, where clients log in
#                          with SCRAM-SHA-512 over TLS (default 0: PLAINTEXT only). PLAINTEXT stays the inter-broker
#                          listener and the last line of start. The listener's files are in RUN_DIR/sasl-ssl/
#                          (mode 700): port; ca.pem, the CA a client trusts; username and password of the SCRAM user,
#                          one line each; keystore.pem, the broker's private key (PKCS#8, not encrypted) followed by
#                          its certificate chain. start makes a CA, a certificate for 127.0.0.1 and localhost and a
#                          random password unless they are there: to use your own certificates, put ca.pem and
#                          keystore.pem there before the first start. The user is written into the KRaft metadata
#                          when the run directory is formatted, so a directory first started without
#                          STREAMSSL_KAFKA_SASL_SSL=1 cannot get it later. Needs openssl.
#
# The jars (Kafka 4.3.1 and a Log4j binding, see scripts/kafka/pom.xml) are fetched once from Maven Central.
# A stopped broker keeps its data: the next start in the same directory has the same topics and committed offsets,
# and its old port if that is still free. Delete the directory to start from nothing.
set -euo pipefail

KAFKA_VERSION=4.3.1
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM=$SCRIPTS/kafka/pom.xml
LOG4J_CONFIG=$SCRIPTS/kafka/log4j2.properties
# Absolute paths: the broker's command line names its run directory, which is how stop and status recognise it.
CACHE=$(realpath -m "${STREAMSSL_CACHE:-$HOME/.cache/streamssl}/kafka-$KAFKA_VERSION")
LIBS=$CACHE/libs
RUN_DIR=$(realpath -m "${STREAMSSL_KAFKA_DIR:-${TMPDIR:-/tmp}/streamssl-kafka-$(id -u)}")
START_TIMEOUT_S=${STREAMSSL_KAFKA_START_TIMEOUT:-60}
STOP_TIMEOUT_S=${STREAMSSL_KAFKA_STOP_TIMEOUT:-30}
KAFKA_HEAP=${KAFKA_HEAP:--Xmx512m}
JAVA_OPTS=${JAVA_OPTS:-}

PID_FILE=$RUN_DIR/pid
PORT_FILE=$RUN_DIR/port
CONTROLLER_PORT_FILE=$RUN_DIR/controller.port
PROPERTIES=$RUN_DIR/server.properties
DATA_DIR=$RUN_DIR/data
BROKER_LOG=$RUN_DIR/broker.log
SASL_SSL=${STREAMSSL_KAFKA_SASL_SSL:-0}
SASL_DIR=$RUN_DIR/sasl-ssl
SASL_PORT_FILE=$SASL_DIR/port
KEYSTORE=$SASL_DIR/keystore.pem
SCRAM_MECHANISM=SCRAM-SHA-512
SCRAM_USER=streamssl

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

require() { # command, Debian package that provides it
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: apt-get install -y --no-install-recommends $2"
}

# --- the broker's jars ------------------------------------------------------------------------------------------

# Fetch the jars unless a complete fetch of this very pom is cached. The marker holds the pom's checksum and is
# written last, so an interrupted fetch (or a changed pom) is fetched again, into a fresh directory.
fetch_jars() {
    local marker=$CACHE/libs.complete checksum
    checksum=$(sha256sum "$POM" | cut -d' ' -f1)
    [[ -f $marker && $(<"$marker") == "$checksum" ]] && return 0
    require mvn maven
    mkdir -p "$CACHE"
    exec 8>"$CACHE/fetch.lock"
    flock -w 600 8 || die "another fetch of the Kafka jars holds $CACHE/fetch.lock"
    if [[ ! -f $marker || $(<"$marker") != "$checksum" ]]; then
        say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $CACHE (once) ..."
        local started=$SECONDS staging=$CACHE/libs.partial
        rm -rf "$staging"
        # Maven's output (only errors with -q, plus stray colour codes from Debian's Maven 3.8) is shown on failure.
        if ! mvn -q -B -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
            -DoutputDirectory="$staging" -DincludeScope=runtime -f "$POM" >"$CACHE/fetch.log" 2>&1; then
            sed 's/\x1b\[[0-9;]*m//g' "$CACHE/fetch.log" | tail -n 40 >&2
            die "mvn could not fetch the Kafka jars (is Maven Central reachable?); its output is above"
        fi
        rm -rf "$LIBS"
        mv "$staging" "$LIBS"
        printf '%s\n' "$checksum" >"$marker"
        say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - started)) s"
    fi
    exec 8>&-
}

# --- the broker process -----------------------------------------------------------------------------------------

# The pid of this directory's broker if it is alive (a pid reused by another process does not count), else nothing.
broker_pid() {
    local pid
    [[ -f $PID_FILE ]] || return 0
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$PROPERTIES"; then
        echo "$pid"
    fi
}

# Exit 0 if the broker on port $1 answers a Metadata request listing at least one live broker: then it accepts
# connections, has caught up with its metadata log and is unfenced, so topics can be created on it.
answers() {
    python3 - "$1" <<'EOF'
import socket
import struct
import sys

def read(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data

try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as sock:
        client_id = b"streamssl-kafka-sh"
        # Request header v1 (api_key 3 = Metadata, version 0, correlation id 7, client id); body: 0 topics = all.
        request = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", read(sock, 4))
        correlation_id, brokers = struct.unpack(">ii", read(sock, size)[:8])
except (OSError, struct.error):
    sys.exit(1)
sys.exit(0 if correlation_id == 7 and brokers >= 1 else 1)
EOF
}

# Distinct free ports on 127.0.0.1, one per port file given (broker, controller[, SASL_SSL]): the previous ones if
# every file has one and all are still free.
choose_ports() {
    local file previous=()
    for file in "$@"; do
        [[ -f $file ]] && previous+=("$(<"$file")")
    done
    python3 - "$#" "${previous[@]}" <<'EOF'
import socket
import sys

def bind(port):
    sock = socket.socket()
    # As the JVM does for its listeners: lingering TIME_WAIT connections of a killed broker do not block the port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock

count, previous = int(sys.argv[1]), sys.argv[2:]
try:
    sockets = [bind(int(port)) for port in previous] if len(previous) == count else []
except OSError:
    sockets = []
if len(sockets) != count:
    sockets = [bind(0) for _ in range(count)]
print(*(sock.getsockname()[1] for sock in sockets))
EOF
}

write_properties() { # broker port, controller port[, SASL_SSL port]
    local listeners=PLAINTEXT://127.0.0.1:$1 protocols=PLAINTEXT:PLAINTEXT
    if [[ -n ${3:-} ]]; then
        listeners+=,SASL_SSL://127.0.0.1:$3
        protocols+=,SASL_SSL:SASL_SSL
    fi
    cat >"$PROPERTIES" <<EOF
# Written by scripts/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
listeners=$listeners,CONTROLLER://127.0.0.1:$2
advertised.listeners=$listeners
listener.security.protocol.map=$protocols,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@127.0.0.1:$2
log.dirs=$DATA_DIR
# One broker: every internal topic has one replica; a few partitions keep the first group join quick.
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# StreamSSL creates its topics explicitly; a typo must fail, not create a topic.
auto.create.topics.enable=false
# A new group's first rebalance starts at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# A restart after a crash waits for the old broker session to expire: ~5 s with these, 13-15 s by default.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2000
# Small thread pools: this broker shares a few cores with the tests.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    [[ -n ${3:-} ]] || return 0
    cat >>"$PROPERTIES" <<EOF
# STREAMSSL_KAFKA_SASL_SSL=1: clients of the SASL_SSL listener log in with SCRAM (users in the KRaft metadata) over
# TLS. The broker's key and certificate chain are one PEM file; its key is not encrypted, the file is the secret.
listener.name.sasl_ssl.sasl.enabled.mechanisms=$SCRAM_MECHANISM
listener.name.sasl_ssl.${SCRAM_MECHANISM,,}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KEYSTORE
EOF
}

# --- the SASL_SSL listener (STREAMSSL_KAFKA_SASL_SSL=1) ---------------------------------------------------------

# The port of the SASL_SSL listener in server.properties (the broker's last start), or nothing.
sasl_ssl_port() {
    [[ -f $PROPERTIES ]] || return 0
    sed -n 's|^listeners=.*SASL_SSL://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$PROPERTIES"
}

# What start and status print: the SASL_SSL address if that listener is on, then the bootstrap address (port $1).
print_addresses() {
    local sasl_port
    sasl_port=$(sasl_ssl_port)
    [[ -z $sasl_port ]] || echo "SASL_SSL://127.0.0.1:$sasl_port"
    echo "127.0.0.1:$1"
}

# The listener's certificates and SCRAM password: made once per run directory, unless they are there already.
prepare_sasl_ssl() {
    require openssl openssl
    [[ -f $SASL_DIR/password || ! -f $DATA_DIR/meta.properties ]] ||
        die "$RUN_DIR was formatted without STREAMSSL_KAFKA_SASL_SSL=1, so it has no SCRAM user; use a new run directory"
    (umask 077 && mkdir -p "$SASL_DIR")
    if [[ ! -f $KEYSTORE ]]; then
        # A CA and a broker certificate for 127.0.0.1 and localhost, valid for a year; P-256 keys (~0.1 s).
        local broker_extensions="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
        # The CA's key signs this one certificate and is deleted: nothing else can be signed by what clients trust.
        # (&& throughout: errexit does not apply in a subshell tested by if.)
        if ! (
            umask 077 && cd "$SASL_DIR" &&
                openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
                    -days 365 -subj "/CN=StreamSSL test CA" -addext "basicConstraints=critical,CA:TRUE" \
                    -addext "keyUsage=critical,keyCertSign,cRLSign" &&
                openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout broker.key \
                    -out broker.csr -subj "/CN=localhost" &&
                openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
                    -days 365 -out broker.crt -extfile <(printf '%s\n' "$broker_extensions") &&
                cat broker.key broker.crt >keystore.pem.partial &&
                mv keystore.pem.partial keystore.pem &&
                rm ca.key broker.key broker.csr broker.crt
        ) >"$SASL_DIR/openssl.log" 2>&1; then
            sed 's/^/    /' "$SASL_DIR/openssl.log" >&2
            die "openssl could not make the SASL_SSL listener's certificates in $SASL_DIR; its output is above"
        fi
        say "made a test CA ($SASL_DIR/ca.pem) and a broker certificate for 127.0.0.1 and localhost"
    fi
    if [[ ! -f $SASL_DIR/password ]]; then
        (umask 077 && openssl rand -hex 24 >"$SASL_DIR/password.partial")
        mv "$SASL_DIR/password.partial" "$SASL_DIR/password"
        echo "$SCRAM_USER" >"$SASL_DIR/username"
    fi
}

# Format the KRaft storage with cluster id $1; with the SASL_SSL listener, with its SCRAM user. StorageTool takes the
# user's password as an argument: it goes in a Java @argfile in the 700 directory, not on a command line (which any
# local user can read), and the file is removed after. Runs within start, whose java_cmd it uses.
format_storage() {
    if [[ $SASL_SSL == 0 ]]; then
        "${java_cmd[@]}" kafka.tools.StorageTool format -t "$1" -c "$PROPERTIES"
        return
    fi
    local args=$SASL_DIR/format.args properties status=0
    # An argfile argument is one line; in double quotes, backslashes and quotes are escaped.
    properties=${PROPERTIES//\\/\\\\}
    properties=${properties//\"/\\\"}
    (umask 077 && printf '%s\n' kafka.tools.StorageTool format -t "$1" -c "\"$properties\"" --add-scram \
        "$SCRAM_MECHANISM=[name=$(<"$SASL_DIR/username"),password=$(<"$SASL_DIR/password")]" >"$args")
    "${java_cmd[@]}" "@$args" || status=$?
    rm -f "$args"
    return "$status"
}

# Print the last lines of broker.log to stderr.
log_tail() {
    [[ -f $BROKER_LOG ]] || return 0
    say "last lines of $BROKER_LOG:"
    tail -n 40 "$BROKER_LOG" | sed 's/^/    /' >&2
}

# Stop process $1: SIGTERM (a clean shutdown), SIGKILL if it has not exited after STOP_TIMEOUT_S seconds.
terminate() {
    local pid=$1 waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= STOP_TIMEOUT_S * 10)); then
            say "broker $pid did not stop in ${STOP_TIMEOUT_S} s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Wait until the broker of pid $1 answers on port $2; fail (status 1) if it exits or the time runs out.
wait_ready() {
    local pid=$1 port=$2 deadline=$((SECONDS + START_TIMEOUT_S))
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the broker (pid $pid) exited during start-up"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "the broker (pid $pid) did not answer on 127.0.0.1:$port within ${START_TIMEOUT_S} s"
            return 1
        fi
        sleep 0.25
    done
}

lock_run_dir() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/lock"
    flock -w $((START_TIMEOUT_S + STOP_TIMEOUT_S + 30)) 9 || die "another kafka.sh holds $RUN_DIR/lock"
}

# --- commands ---------------------------------------------------------------------------------------------------

start() {
    require java openjdk-17-jre-headless
    require python3 python3
    require flock util-linux
    lock_run_dir
    local pid port controller_port started=$SECONDS
    pid=$(broker_pid)
    if [[ -n $pid ]]; then
        port=$(<"$PORT_FILE")
        if wait_ready "$pid" "$port"; then
            [[ $SASL_SSL == 0 || -n $(sasl_ssl_port) ]] ||
                die "broker pid $pid of $RUN_DIR runs without the SASL_SSL listener; run '$0 stop' first"
            say "broker already running (pid $pid, run dir $RUN_DIR)"
            print_addresses "$port"
            return 0
        fi
        log_tail
        die "broker pid $pid of $RUN_DIR is running but not answering; run '$0 stop' first"
    fi
    fetch_jars

    local sasl_port=""
    if [[ $SASL_SSL == 0 ]]; then
        read -r port controller_port < <(choose_ports "$PORT_FILE" "$CONTROLLER_PORT_FILE") || true
    else
        prepare_sasl_ssl
        read -r port controller_port sasl_port < <(choose_ports "$PORT_FILE" "$CONTROLLER_PORT_FILE" "$SASL_PORT_FILE") ||
            true
        [[ ${sasl_port:-} =~ ^[0-9]+$ ]] || die "could not find three free ports on 127.0.0.1"
        echo "$sasl_port" >"$SASL_PORT_FILE"
    fi
    [[ ${port:-} =~ ^[0-9]+$ && ${controller_port:-} =~ ^[0-9]+$ ]] || die "could not find two free ports on 127.0.0.1"
    write_properties "$port" "$controller_port" "$sasl_port"
    echo "$port" >"$PORT_FILE"
    echo "$controller_port" >"$CONTROLLER_PORT_FILE"
    rm -f "$PID_FILE"

    # KAFKA_HEAP and JAVA_OPTS are split into words on purpose: each may hold several JVM options.
    # shellcheck disable=SC2206
    local java_cmd=(java $KAFKA_HEAP $JAVA_OPTS "-Dlog4j2.configurationFile=$LOG4J_CONFIG" -cp "$LIBS/*")
    if [[ ! -f $DATA_DIR/meta.properties ]]; then
        local cluster_id
        cluster_id=$("${java_cmd[@]}" kafka.tools.StorageTool random-uuid 2>>"$BROKER_LOG") ||
            { log_tail; die "kafka.tools.StorageTool random-uuid failed"; }
        if ! format_storage "$cluster_id" >>"$BROKER_LOG" 2>&1; then
            log_tail
            die "formatting the KRaft storage in $DATA_DIR failed"
        fi
        say "formatted $DATA_DIR (cluster id $cluster_id)"
    fi

    say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$port${sasl_port:+ (SASL_SSL :$sasl_port)}" \
        "(controller :$controller_port, run dir $RUN_DIR)"
    # setsid + nohup: the broker outlives this shell and its terminal; 9>&- keeps it from holding the run-dir lock.
    setsid nohup "${java_cmd[@]}" kafka.Kafka "$PROPERTIES" >>"$BROKER_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    if ! wait_ready "$pid" "$port"; then
        terminate "$pid"
        rm -f "$PID_FILE"
        log_tail
        die "Kafka did not start; see $BROKER_LOG (delete $RUN_DIR to start from nothing)"
    fi
    say "broker ready in $((SECONDS - started)) s (pid $pid)"
    print_addresses "$port"
}

stop() {
    lock_run_dir
    local pid
    pid=$(broker_pid)
    if [[ -z $pid ]]; then
        rm -f "$PID_FILE"
        say "no broker running in $RUN_DIR"
        return 0
    fi
    say "stopping broker pid $pid ..."
    terminate "$pid"
    rm -f "$PID_FILE"
    say "stopped"
}

status() {
    local pid port
    pid=$(broker_pid)
    if [[ -n $pid && -f $PORT_FILE ]]; then
        port=$(<"$PORT_FILE")
        if answers "$port"; then
            print_addresses "$port"
            return 0
        fi
        say "broker pid $pid is running but not answering on 127.0.0.1:$port"
        return 3
    fi
    say "no broker running in $RUN_DIR"
    return 3
}

[[ $SASL_SSL == 0 || $SASL_SSL == 1 ]] || die "STREAMSSL_KAFKA_SASL_SSL must be 0 or 1, not '$SASL_SSL'"

case "${1:-}" in
fetch) fetch_jars ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 fetch|start|stop|status" >&2
    exit 2
    ;;
esac

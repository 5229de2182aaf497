#!/bin/sh
# sluice-node.sh: the node's own part of sluiced's configuration, for the
# DaemonSet in deploy/kubernetes/sluice.yaml (installed in the image as
# /usr/local/bin/sluice-node.sh). docs/kubernetes.md explains the steps.
#
#   sluice-node.sh render OUT [bootstrap]
#       The ConfigMap's sluiced.toml (cluster-wide settings) with this
#       node's values, written atomically to OUT: node.pod_network and
#       node.pod_subnet from the subnet file (kept as in the template with
#       `bootstrap`), and the uplink port (its name, MAC, address, gateway
#       and MTU, read from the kernel).
#   sluice-node.sh bootstrap
#       First start on a node (no subnet file yet): runs sluiced (the
#       template's provisional subnet) and sluice-agent until the agent has
#       leased this node's subnet and written the subnet file, then stops
#       both. sluiced takes a new pod subnet only at start while it has a
#       host port, so the real start waits for the lease.
#   sluice-node.sh sluiced
#       Renders, runs sluiced, forwards SIGTERM/SIGINT to it, and ends it
#       (exit 75) when the subnet file names another subnet, so that the
#       container restarts with the new one. When sluiced hands its ports
#       over to a new one (`sluicectl upgrade`, docs/upgrade.md) and exits,
#       the new one (now serving the API socket) is followed instead: the
#       container lives on with it.
#
# Environment, with defaults:
#   SLUICE_TEMPLATE            /etc/sluice/sluiced.toml
#   SLUICE_AGENT_CONFIG        /etc/sluice/agent.toml
#   SLUICE_SUBNET_FILE         /run/flannel/subnet.env (the agent's subnet_file)
#   SLUICE_RUN_DIR             /run/sluice (rendered files)
#   SLUICE_UPLINK              the device of the IPv4 default route
#   SLUICE_UPLINK_MAC          /sys/class/net/$SLUICE_UPLINK/address
#   SLUICE_UPLINK_ADDRESS      the uplink's first global IPv4 address, a.b.c.d/len
#   SLUICE_UPLINK_GATEWAY      the default route's gateway via the uplink ("" for none)
#   SLUICE_UPLINK_MTU          /sys/class/net/$SLUICE_UPLINK/mtu
#   SLUICE_BOOTSTRAP_TIMEOUT   600 (seconds)
#   SLUICED, SLUICE_AGENT,
#   SLUICECTL                  sluiced, sluice-agent, sluicectl (the binaries)
set -eu

TEMPLATE=${SLUICE_TEMPLATE:-/etc/sluice/sluiced.toml}
AGENT_CONFIG=${SLUICE_AGENT_CONFIG:-/etc/sluice/agent.toml}
SUBNET_FILE=${SLUICE_SUBNET_FILE:-/run/flannel/subnet.env}
RUN_DIR=${SLUICE_RUN_DIR:-/run/sluice}
SLUICED=${SLUICED:-sluiced}
SLUICE_AGENT=${SLUICE_AGENT:-sluice-agent}
SLUICECTL=${SLUICECTL:-sluicectl}

say() { echo "sluice-node: $*" >&2; }
die() { say "$*"; exit 1; }

# KEY from the subnet file, empty when absent.
subnet_value() {
    [ -r "$SUBNET_FILE" ] || return 0
    sed -n "s/^$1=//p" "$SUBNET_FILE" | tail -n 1
}

# 10.244.3.1/24 -> 10.244.3.0/24
network_of() {
    addr=${1%/*}
    len=${1#*/}
    case $len in '' | *[!0-9]*) die "\`$1\`: not address/length" ;; esac
    [ "$len" -le 32 ] || die "\`$1\`: prefix length above 32"
    old_ifs=$IFS
    IFS=.
    # shellcheck disable=SC2086
    set -- $addr
    IFS=$old_ifs
    [ $# -eq 4 ] || die "\`$addr\`: not an IPv4 address"
    n=$((($1 << 24) | ($2 << 16) | ($3 << 8) | $4))
    if [ "$len" -eq 0 ]; then mask=0; else mask=$(((0xffffffff << (32 - len)) & 0xffffffff)); fi
    n=$((n & mask))
    echo "$(((n >> 24) & 255)).$(((n >> 16) & 255)).$(((n >> 8) & 255)).$((n & 255))/$len"
}

# FIELD after WORD in the first line of stdin that has WORD.
field_after() {
    awk -v w="$1" '{ for (i = 1; i < NF; i++) if ($i == w) { print $(i + 1); exit } }'
}

render() {
    out=$1
    mode=${2:-}
    [ -r "$TEMPLATE" ] || die "template $TEMPLATE is missing (the ConfigMap's sluiced.toml)"
    uplink=${SLUICE_UPLINK:-$(ip -4 route show default | field_after dev)}
    [ -n "$uplink" ] || die "no IPv4 default route to take the uplink from: set SLUICE_UPLINK"
    mac=${SLUICE_UPLINK_MAC:-$(cat "/sys/class/net/$uplink/address")}
    address=${SLUICE_UPLINK_ADDRESS:-$(ip -4 -o addr show dev "$uplink" scope global | awk '{ print $4; exit }')}
    [ -n "$address" ] || die "uplink $uplink has no global IPv4 address: set SLUICE_UPLINK_ADDRESS"
    gateway=${SLUICE_UPLINK_GATEWAY-$(ip -4 route show default dev "$uplink" | field_after via)}
    mtu=${SLUICE_UPLINK_MTU:-$(cat "/sys/class/net/$uplink/mtu")}
    tmp="$out.tmp.$$"
    if [ "$mode" = bootstrap ]; then
        cp "$TEMPLATE" "$tmp"
    else
        network=$(subnet_value FLANNEL_NETWORK)
        subnet=$(subnet_value FLANNEL_SUBNET)
        [ -n "$network" ] && [ -n "$subnet" ] ||
            die "$SUBNET_FILE names no FLANNEL_NETWORK/FLANNEL_SUBNET (the bootstrap step writes it)"
        subnet=$(network_of "$subnet")
        n=$(grep -c -E '^(pod_network|pod_subnet)[[:space:]]*=' "$TEMPLATE" || true)
        [ "$n" -eq 2 ] || die "$TEMPLATE: expected one pod_network and one pod_subnet line in [node]"
        sed -e "s|^pod_network[[:space:]]*=.*|pod_network = \"$network\"|" \
            -e "s|^pod_subnet[[:space:]]*=.*|pod_subnet = \"$subnet\"|" "$TEMPLATE" >"$tmp"
    fi
    {
        echo
        echo "# This node's uplink, added by sluice-node.sh."
        echo "[[port]]"
        echo "name = \"$uplink\""
        echo "kind = \"uplink\""
        echo "mac = \"$mac\""
        echo "address = \"$address\""
        [ -z "$gateway" ] || echo "gateway = \"$gateway\""
        echo "mtu = $mtu"
    } >>"$tmp"
    mv -f "$tmp" "$out"
    say "rendered $out: uplink $uplink $address${gateway:+ via $gateway}, mtu $mtu${subnet:+, pod subnet $subnet}"
}

bootstrap() {
    if [ -n "$(subnet_value FLANNEL_SUBNET)" ]; then
        say "$SUBNET_FILE names $(subnet_value FLANNEL_SUBNET): nothing to bootstrap"
        return 0
    fi
    mkdir -p "$RUN_DIR"
    cfg="$RUN_DIR/bootstrap.toml"
    render "$cfg" bootstrap
    timeout=${SLUICE_BOOTSTRAP_TIMEOUT:-600}
    "$SLUICED" --config "$cfg" &
    spid=$!
    "$SLUICE_AGENT" --config "$AGENT_CONFIG" --healthz-address "" &
    apid=$!
    stop() {
        kill -TERM "$apid" 2>/dev/null || true
        wait "$apid" 2>/dev/null || true
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        rm -f "$cfg"
    }
    trap 'stop; exit 143' TERM INT
    waited=0
    while [ -z "$(subnet_value FLANNEL_SUBNET)" ]; do
        if ! kill -0 "$spid" 2>/dev/null; then
            stop
            die "sluiced exited during the bootstrap (its log is above)"
        fi
        if ! kill -0 "$apid" 2>/dev/null; then
            stop
            die "sluice-agent exited during the bootstrap (its log is above)"
        fi
        if [ "$waited" -ge "$timeout" ]; then
            stop
            die "no subnet leased within ${timeout}s (the agent's log above says why)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    stop
    trap - TERM INT
    say "leased $(subnet_value FLANNEL_SUBNET)"
}

# Whether process $1 runs (a zombie does not).
alive() {
    [ -r "/proc/$1/stat" ] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null
}

# The pid of the sluiced answering on the API socket of config $1 (the
# hex before the first `-` of node.get's epoch), empty when none answers.
serving_pid() {
    sock=$(sed -n 's/^api_socket[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$1" | head -n 1)
    epoch=$("$SLUICECTL" ${sock:+--socket "$sock"} --json node 2>/dev/null |
        sed -n 's/.*"epoch":[[:space:]]*"\([0-9a-f]*\)-.*/\1/p')
    [ -z "$epoch" ] || printf '%d\n' "0x$epoch"
}

run_sluiced() {
    mkdir -p "$RUN_DIR"
    cfg="$RUN_DIR/sluiced.toml"
    render "$cfg"
    rendered="$(subnet_value FLANNEL_NETWORK) $(subnet_value FLANNEL_SUBNET)"
    "$SLUICED" --config "$cfg" &
    pid=$!
    child=$pid
    stopping=0
    nap=
    trap 'stopping=1; kill -TERM "$pid" ${nap:+"$nap"} 2>/dev/null || true' TERM INT
    while :; do
        while [ "$stopping" -eq 0 ] && alive "$pid"; do
            sleep 5 &
            nap=$!
            wait "$nap" || true
            nap=
            [ "$stopping" -eq 0 ] || break
            now="$(subnet_value FLANNEL_NETWORK) $(subnet_value FLANNEL_SUBNET)"
            if [ "$now" != " " ] && [ "$now" != "$rendered" ] && alive "$pid"; then
                say "the subnet file changed ($rendered -> $now): stopping sluiced to start again with it"
                kill -TERM "$pid" 2>/dev/null || true
                while alive "$pid"; do sleep 0.1; done
                exit 75
            fi
        done
        [ "$stopping" -eq 0 ] || break
        # sluiced is gone: after an upgrade another one serves its socket.
        new=$(serving_pid "$cfg")
        if [ -n "$new" ] && [ "$new" != "$pid" ] && alive "$new"; then
            say "sluiced $pid handed its ports over to sluiced $new: following it"
            pid=$new
            continue
        fi
        break
    done
    if [ "$pid" = "$child" ]; then
        wait "$child"
    else
        while alive "$pid"; do sleep 0.1; done
    fi
}

case ${1:-} in
render)
    [ $# -ge 2 ] || die "usage: $0 render OUT [bootstrap]"
    render "$2" "${3:-}"
    ;;
bootstrap) bootstrap ;;
sluiced) run_sluiced ;;
*) die "usage: $0 render OUT [bootstrap] | bootstrap | sluiced" ;;
esac

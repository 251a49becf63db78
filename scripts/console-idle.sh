#!/bin/sh
# Idle cost of the console attached to a real node: CPU % and RSS of the
# console process over a window, with the node it watches measured in the same
# window for comparison. Targets: console < 1 % CPU, < 50 MB RSS.
#
#   scripts/console-idle.sh [SECONDS] [PEERVISOR_BINARY]
#   PEERS=4 VMS=6 scripts/console-idle.sh ...   # the console on a busy node
#
# Starts `peervisor demo --no-console` (PEERS peers, default 2, and its real
# guest) in a temp XDG data dir, creates VMS - 1 more guests on peer-a (VMS
# default 1), opens the console in a private tmux server attached to peer-a,
# measures, then stops everything. Needs root (the demo does), tmux.
set -eu
window=${1:-60}
bin=${2:-$(command -v peervisor || echo target/release/peervisor)}
peers=${PEERS:-2}
vms=${VMS:-1}
work=$(mktemp -d /tmp/pv-idle.XXXXXX)
sock="pv-idle-$$"
export XDG_DATA_HOME="$work/data" XDG_CONFIG_HOME="$work/config"
cleanup() {
    tmux -L "$sock" kill-server 2>/dev/null || true
    rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$sock"
    "$bin" demo --stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin" demo --peers "$peers" --no-console ${PEERVISOR_IMAGE_DIR:+--image-dir "$PEERVISOR_IMAGE_DIR"} >"$work/demo.out" 2>&1 \
    || { cat "$work/demo.out"; exit 1; }
root="$XDG_DATA_HOME/peervisor/demo"
node_pid=$(head -n1 "$root/pids")
i=1
while [ "$i" -lt "$vms" ]; do
    "$bin" --data-dir "$root/peer-a" vm create "busy-$i" --vcpus 1 --memory 96 >/dev/null
    i=$((i + 1))
done
tmux -L "$sock" new-session -d -s idle -x 120 -y 36 \
    "exec env TERM=xterm-256color $bin --attach $root/peer-a"
console_pid=$(tmux -L "$sock" display -p -t idle '#{pane_pid}')
sleep 10  # first snapshots, guest boot

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
c0=$(ticks "$console_pid"); n0=$(ticks "$node_pid")
sleep "$window"
c1=$(ticks "$console_pid"); n1=$(ticks "$node_pid")

printf '%-34s %8s %9s  %s\n' "process (${peers} peers, ${vms} VMs, ${window} s)" "cpu %" "RSS MB" "target"
printf '%-34s %8.2f %9s  %s\n' "console (peervisor --attach)" \
    "$(echo "($c1 - $c0) * 100 / $hz / $window" | bc -l)" "$(rss_mb "$console_pid")" "< 1 % CPU, < 50 MB"
printf '%-34s %8.2f %9s  %s\n' "node peer-a (baseline, same window)" \
    "$(echo "($n1 - $n0) * 100 / $hz / $window" | bc -l)" "$(rss_mb "$node_pid")" "-"
tmux -L "$sock" send-keys -t idle q
sleep 1

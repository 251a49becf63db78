#!/usr/bin/env bash
# The main job, from a fresh Debian/Ubuntu machine: installs what it needs, builds
# peervisor, and opens the console on a local demo overlay of three peers with a
# real guest. `q` quits and stops every peer and VM the demo started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
exec $SUDO ./target/release/peervisor demo "$@"

#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine: installs what it needs
# (scripts/setup.sh), builds, and runs every test, including the ones that boot
# real guests and migrate them between peers (they need root: libvirtd, netns).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo nextest run --no-fail-fast "$@"

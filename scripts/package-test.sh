#!/usr/bin/env bash
# Installs a peervisor .deb into a fresh Debian 12 root (debootstrap into a
# directory, chroot) with its dependencies from Debian's archive, and checks
# what the package gives a user: `peervisor --version`, the systemd unit, the
# config file, the bash/zsh/fish completions and the man pages.
#
#   scripts/package-test.sh target/debian/peervisor_*.deb
#
# Needs root and Debian's archive. The debootstrapped base and the downloaded
# .debs are cached in PEERVISOR_TEST_CACHE (default /var/cache/peervisor-test):
# the first run on a machine takes ~3 min more (debootstrap) and downloads the
# dependencies once (~150 MB); every run installs into a fresh copy of the base.
set -euo pipefail
deb=$(realpath "$1")
suite=bookworm
cache=${PEERVISOR_TEST_CACHE:-/var/cache/peervisor-test}
base="$cache/debian-$suite-minbase.tar"
archives="$cache/apt-archives-$suite"
mkdir -p "$cache" "$archives/partial"
export DEBIAN_FRONTEND=noninteractive

if ! command -v debootstrap >/dev/null; then
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

if [ ! -s "$base" ]; then
  echo "package-test: debootstrap $suite (cached in $base)"
  work=$(mktemp -d "$cache/debootstrap.XXXXXX")
  debootstrap --variant=minbase "$suite" "$work/root" >"$work/log" 2>&1 \
    || { tail -n 20 "$work/log" >&2; rm -rf "$work"; exit 1; }
  tar -C "$work/root" -cf "$base.partial" . && mv "$base.partial" "$base"
  rm -rf "$work"
fi

root=$(mktemp -d /var/tmp/pv-debroot.XXXXXX)
cleanup() {
  umount "$root/var/cache/apt/archives" 2>/dev/null || true
  umount "$root/proc" 2>/dev/null || true
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$base"
mount -t proc proc "$root/proc"
mount --bind "$archives" "$root/var/cache/apt/archives"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No daemon starts inside the chroot (as in Debian's build chroots).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }

start=$(date +%s)
in_root apt-get update -qq
# As a user would: apt resolves the package's Depends from the archive.
in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$deb")" >"$root/tmp/install.log" 2>&1 \
  || { tail -n 30 "$root/tmp/install.log" >&2; exit 1; }
echo "package-test: apt-get install took $(( $(date +%s) - start )) s"

fail() { echo "package-test: FAILED: $*" >&2; exit 1; }

version=$(in_root peervisor --version) || fail "peervisor --version"
echo "package-test: $version"
want=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml" | head -n1)
[ "$version" = "peervisor $want" ] || fail "version '$version', expected 'peervisor $want'"

unit=$root/usr/lib/systemd/system/peervisor.service
[ -f "$unit" ] || unit=$root/lib/systemd/system/peervisor.service
[ -f "$unit" ] || fail "no peervisor.service"
grep -qx 'ExecStart=/usr/bin/peervisor node' "$unit" || fail "unit's ExecStart"
grep -qx 'KillMode=process' "$unit" || fail "unit's KillMode"
grep -qx 'Environment=PEERVISOR_CONFIG=/etc/peervisor/config.toml' "$unit" || fail "unit's config"
if in_root sh -c 'command -v systemd-analyze' >/dev/null; then
  in_root systemd-analyze verify --man=no /usr/lib/systemd/system/peervisor.service \
    || fail "systemd-analyze verify peervisor.service"
  echo "package-test: systemd-analyze verify: ok"
fi

in_root peervisor config check /etc/peervisor/config.toml || fail "config check"
in_root dpkg-query -W -f='${Conffiles}\n' peervisor | grep -q /etc/peervisor/config.toml \
  || fail "config.toml is not a conffile"

in_root bash -c '. /usr/share/bash-completion/completions/peervisor && complete -p peervisor' \
  | grep -q peervisor || fail "bash completion"
grep -q '^#compdef peervisor' "$root/usr/share/zsh/vendor-completions/_peervisor" || fail "zsh completion"
grep -q 'complete -c peervisor' "$root/usr/share/fish/vendor_completions.d/peervisor.fish" || fail "fish completion"

for page in peervisor peervisor-node peervisor-vm-create peervisor-config-check; do
  f=$root/usr/share/man/man1/$page.1.gz
  [ -f "$f" ] || fail "no man page $page.1"
  zcat "$f" | grep -q '^\.TH' || fail "$page.1 is not a man page"
done
zcat "$root/usr/share/man/man1/peervisor-node.1.gz" | grep -q 'max\\-connections' \
  || fail "peervisor-node.1 lacks the node's options"

for dep in libvirtd qemu-system-x86_64 qemu-img busybox ip; do
  in_root sh -c "command -v $dep" >/dev/null || fail "dependency $dep not installed"
done
# doctor on the fresh install: the package's dependencies are what its libvirt
# check looks for. (Its exit status depends on this machine: the chroot shares the
# host's ports, and no node runs here.)
doctor=$(in_root peervisor doctor 2>&1 || true)
echo "$doctor" | sed 's/^/package-test: doctor: /'
echo "$doctor" | grep -q '^ok    libvirt ' || fail "doctor's libvirt check on the fresh install"
echo "package-test: ok"

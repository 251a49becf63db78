#!/bin/sh
# A real cloud image, built locally: Debian bookworm with the distribution's
# kernel, cloud-init (NoCloud datasource only) and ifupdown + isc-dhcp-client,
# as a bootable qcow2 that `peervisor vm create NAME --disk IMAGE --cloud-init
# FILE` boots like Debian's genericcloud image. Used by the opt-in test
# tests/cloud_image.rs (PEERVISOR_TEST_REAL_CLOUD_IMAGE=1); docs/hosting.md.
#
# Usage: scripts/build-cloud-image.sh OUT.qcow2 [WORK_DIR]
#   WORK_DIR (default: OUT's dir/cloud-image-work) keeps the debootstrapped root,
#   so a rebuild after a change below skips the download (rm -rf it to start over).
#   MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
# Needs root (debootstrap), the Debian mirror, and debootstrap, e2fsprogs
# (mkfs.ext4 -d), dosfstools, mtools, syslinux, fdisk (sfdisk), qemu-utils.
#
# Layout: an MBR disk, partition 1 a FAT volume with syslinux, the kernel and
# the initramfs; partition 2 the ext4 root, filled by `mkfs.ext4 -d` from the
# root directory. Each file system is made in its own file and copied into
# place: no loop device, no mount.
set -eu
out=${1:?usage: $0 OUT.qcow2 [WORK_DIR]}
work=${2:-$(dirname "$out")/cloud-image-work}
mirror=${MIRROR:-http://deb.debian.org/debian}
suite=${SUITE:-bookworm}
root=$work/root
boot_mib=128

for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy syslinux sfdisk qemu-img; do
	command -v "$tool" >/dev/null || {
		echo "$0: $tool not found (apt-get install debootstrap e2fsprogs dosfstools mtools syslinux fdisk qemu-utils)" >&2
		exit 1
	}
done
[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
mkdir -p "$work"

# 1. The root: minbase plus what a cloud guest needs. Kept between builds.
if [ ! -e "$root/.pv-debootstrap-done" ]; then
	rm -rf "$root"
	debootstrap --variant=minbase \
		--include=systemd-sysv,udev,linux-image-amd64,cloud-init,python3-cffi-backend,ifupdown,isc-dhcp-client,netbase,iproute2,python3,ca-certificates \
		"$suite" "$root" "$mirror"
	touch "$root/.pv-debootstrap-done"
fi

# 2. Configure it as a cloud image: the rest is cloud-init's job at first boot.
uuid=$(cat /proc/sys/kernel/random/uuid)
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
echo "UUID=$uuid / ext4 defaults,errors=remount-ro 0 1" >"$root/etc/fstab"
# cloud-init writes the NIC's stanza (DHCP on the first NIC, its fallback
# network config) under interfaces.d at first boot.
printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' \
	>"$root/etc/network/interfaces"
mkdir -p "$root/etc/network/interfaces.d"
# Only NoCloud: probing the cloud providers' metadata services would cost
# minutes of timeouts on a host that has none.
cat >"$root/etc/cloud/cloud.cfg.d/90-peervisor.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
EOF
# A fresh machine id per instance (systemd makes one at first boot).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*_Packages

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)
[ -f "$kernel" ] && [ -f "$initrd" ] || { echo "$0: no kernel or initramfs in $root/boot" >&2; exit 1; }

# 3. The two file systems, each in its own file.
rm -f "$work/boot.img" "$work/root.img" "$work/disk.raw"
used_mib=$(du -sm --exclude=./proc --exclude=./sys "$root" | cut -f1)
root_mib=$((used_mib * 13 / 10 + 512))
mkfs.ext4 -q -F -L cloudimg-root -U "$uuid" -d "$root" "$work/root.img" "${root_mib}M"

cat >"$work/syslinux.cfg" <<EOF
DEFAULT debian
TIMEOUT 0
LABEL debian
  KERNEL vmlinuz
  APPEND initrd=initrd.img root=UUID=$uuid ro console=ttyS0
EOF
# -h 2048: the volume starts at sector 2048 of the disk (its boot sector adds it).
mkfs.vfat -h 2048 -n CIBOOT -C "$work/boot.img" $((boot_mib * 1024)) >/dev/null
mcopy -i "$work/boot.img" "$kernel" ::vmlinuz
mcopy -i "$work/boot.img" "$initrd" ::initrd.img
mcopy -i "$work/boot.img" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$work/boot.img"

# 4. The disk: MBR with syslinux's boot code, partition 1 (active) boot, 2 root.
total_mib=$((1 + boot_mib + root_mib))
truncate -s "${total_mib}M" "$work/disk.raw"
sfdisk -q "$work/disk.raw" <<EOF
label: dos
start=2048, size=$((boot_mib * 2048)), type=c, bootable
start=$((2048 + boot_mib * 2048)), type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$out.partial"
mv "$out.partial" "$out"
rm -f "$work/boot.img" "$work/root.img" "$work/disk.raw" "$work/syslinux.cfg"
echo "$out: $(qemu-img info --output=json "$out" | grep -m1 '"virtual-size"' | tr -dc 0-9) bytes virtual, root UUID $uuid"

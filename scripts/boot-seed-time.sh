#!/bin/sh
# Boot time of the guest disk image (`peervisor image build --disk`) under TCG,
# without and with a cloud-init NoCloud seed, alternated: QEMU started by hand
# (no libvirt), slirp networking, until the guest prints "peervisor-guest: ready"
# (and, with the seed, until its runcmd has finished).
# Usage: scripts/boot-seed-time.sh IMAGE_DIR [ROUNDS]   (needs mtools, dosfstools)
set -eu
image=${1:?usage: $0 IMAGE_DIR [ROUNDS]}/peervisor-guest/disk.qcow2
rounds=${2:-5}
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT
cat >"$work/user-data" <<'EOF'
#cloud-config
hostname: seeded-web
write_files:
  - path: /srv/www/index.html
    content: |
      hello from cloud-init
runcmd:
  - [httpd, -p, "8080", -h, /srv/www]
EOF
printf 'instance-id: iid-bench\nlocal-hostname: bench\n' >"$work/meta-data"
mkfs.vfat -n CIDATA -C "$work/seed.img" 1024 >/dev/null
mcopy -i "$work/seed.img" "$work/user-data" "$work/meta-data" ::

now() { date +%s.%N; }
# boot [seed]: prints seconds to "ready" (and to runcmd's end with a seed)
boot() {
	rm -f "$work/ov.qcow2" "$work/console.log"
	qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$work/ov.qcow2"
	extra=
	[ "${1:-}" = seed ] && extra="-drive file=$work/seed.img,if=virtio,format=raw,readonly=on"
	t0=$(now)
	# shellcheck disable=SC2086
	qemu-system-x86_64 -machine pc,accel=tcg -m 128 -display none -monitor none \
		-drive "file=$work/ov.qcow2,if=virtio,format=qcow2" $extra \
		-netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
		-serial "file:$work/console.log" >/dev/null 2>&1 &
	echo $! >"$work/pid"
	ready= done_=
	n=0
	while [ $n -lt 3000 ]; do
		if [ -z "$ready" ] && grep -q "peervisor-guest: ready" "$work/console.log" 2>/dev/null; then
			ready=$(echo "$(now) - $t0" | bc)
			[ "${1:-}" = seed ] || break
		fi
		if [ -n "$ready" ] && grep -q "runcmd finished" "$work/console.log" 2>/dev/null; then
			done_=$(echo "$(now) - $t0" | bc)
			break
		fi
		sleep 0.1
		n=$((n + 1))
	done
	kill "$(cat "$work/pid")"
	wait "$(cat "$work/pid")" 2>/dev/null || true
	printf '%.1f %s\n' "${ready:-0}" "${done_:+$(printf '%.1f' "$done_")}"
}

i=0
while [ $i -lt "$rounds" ]; do
	echo "plain  $(boot)"
	echo "seeded $(boot seed)"
	i=$((i + 1))
done
uptime

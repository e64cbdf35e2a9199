#!/bin/bash
# RECIPE PROOF, NOT THE PRODUCT. Moves the running old host onto the
# encrypted mail-host layout on two new disks, the way the coming
# `cryptshift migrate-host` verb is to do it; the boot tier runs it inside
# the old host and then boots the new disks alone. Every step here was
# needed to make that boot work (docs/boot-tier.md says why).
#
# Environment (all required):
#   DISK0 DISK1   the new disks (by-id paths)
#   LAYOUT        the mail-host layout (cryptshift plan --example mail-host -o layout)
#   PASSFILE      the root volume's passphrase (mode 0600)
#   RECOVERY      where apply writes the recovery key
#   CRYPTSHIFT    the cryptshift binary
#   CMDLINE       extra kernel parameters for the moved system (console, ip=)
# Optional: AUTHORIZED_KEYS (dropbear-initramfs; default root's);
#   DEVICE_TIMEOUT (systemd's DefaultDeviceTimeoutSec in the new system; the
#   boot tier raises it because udev under TCG on a loaded 2-core host can
#   take longer than the default 90 s to announce the disks).
set -euo pipefail
T=/target
step() { printf '== move: %s (%s)\n' "$*" "$(date +%T)"; }

step "lay out the encrypted disks with cryptshift apply"
"$CRYPTSHIFT" apply -f "$LAYOUT" --device "disk0=$DISK0" --device "disk1=$DISK1" \
	--allow-destroy --yes --passphrase-file "$PASSFILE" --recovery-key-file "$RECOVERY" --root "$T"
findmnt -R "$T"

# What rsync must not copy: pseudo filesystems, the mount point of the new
# system itself, the move's own secrets and tools, and the files apply
# wrote for the new system (fstab, crypttab, key files, header backups),
# which excluded from --delete too.
EXCLUDES=(/target /proc/ /sys/ /dev/ /run/ /tmp/ /mnt/ /media/ /lost+found
	'/var/tmp/systemd-private-*'
	/etc/fstab /etc/crypttab /etc/cryptsetup-keys.d /root/luks-header-backups
	/var/lib/cryptshift "$PASSFILE" "$RECOVERY" "$CRYPTSHIFT" "$LAYOUT")
ex=()
for e in "${EXCLUDES[@]}"; do ex+=(--exclude="$e"); done
copy() {
	# -x: only the old root filesystem; /target's own mounts (boot, efi,
	# var, vmail) receive what belongs to them because rsync writes through
	# the mounted tree.
	rsync -aHAXSx --numeric-ids "$@" "${ex[@]}" / "$T/"
}
step "copy the running system (live pass)"
copy
step "stop the mail services and copy again (final pass)"
systemctl stop postfix dovecot
copy --delete
for d in proc sys dev run tmp mnt media; do install -d "$T/$d"; done
chmod 1777 "$T/tmp"

step "configure the new system's boot"
# The old fstab mounted the old root; apply's marked block is the new one.
grep -n . "$T/etc/fstab" "$T/etc/crypttab"
# Unlock the root in the initramfs even if the hook's autodetection misses
# it; swap has a random key and must never be a resume device.
echo 'RESUME=none' >"$T/etc/initramfs-tools/conf.d/resume"
# MODULES=dep: the default (most) copies about a thousand modules with a
# shell loop, which took over 15 minutes under TCG. dep finds the root's
# stack (dm-crypt, LVM, virtio_blk) from the chroot; the network driver for
# dropbear and Clevis's Tang pin must be named.
echo 'MODULES=dep' >"$T/etc/initramfs-tools/conf.d/cryptshift-modules"
echo 'virtio_net' >>"$T/etc/initramfs-tools/modules"
sed -i -E 's/^(root_crypt\s+\S+\s+\S+\s+)(\S+)/\1\2,initramfs/' "$T/etc/crypttab"
# dropbear-initramfs: the admin's key, no passwords, no forwarding.
install -m 0600 "${AUTHORIZED_KEYS:-/root/.ssh/authorized_keys}" "$T/etc/dropbear/initramfs/authorized_keys"
sed -i -E '/^#?DROPBEAR_OPTIONS=/d' "$T/etc/dropbear/initramfs/dropbear.conf"
echo 'DROPBEAR_OPTIONS="-I 600 -j -k -p 22 -s"' >>"$T/etc/dropbear/initramfs/dropbear.conf"
# GRUB on the serial console, no menu delay, and the kernel parameters.
mkdir -p "$T/etc/default/grub.d"
cat >"$T/etc/default/grub.d/cryptshift.cfg" <<GRUB
GRUB_TIMEOUT=0
GRUB_TERMINAL=console
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="$CMDLINE"
GRUB
if [ -n "${DEVICE_TIMEOUT:-}" ]; then
	mkdir -p "$T/etc/systemd/system.conf.d"
	printf '[Manager]\nDefaultDeviceTimeoutSec=%s\n' "$DEVICE_TIMEOUT" >"$T/etc/systemd/system.conf.d/cryptshift-boot-test.conf"
fi

step "initramfs and GRUB in the new system (chroot)"
for d in dev dev/pts proc sys run; do mount --bind "/$d" "$T/$d"; done
undo_binds() { for d in run sys proc dev/pts dev; do umount "$T/$d" 2>/dev/null || true; done; }
trap undo_binds EXIT
chroot "$T" update-initramfs -u -k all
chroot "$T" grub-install --target=x86_64-efi --efi-directory=/boot/efi --boot-directory=/boot --removable --no-nvram 2>&1
chroot "$T" update-grub 2>&1
undo_binds
trap - EXIT

step "check the initramfs"
initrd=$(ls "$T"/boot/initrd.img-* | head -n1)
lsinitramfs "$initrd" >/tmp/initrd.list
# dropbear's authorized_keys lands in root-RANDOM/.ssh/; tpm_tis is built
# into Debian's kernel (CONFIG_TCG_TIS=y), so there is no module to find.
for f in 'usr/sbin/cryptsetup' 'cryptroot/crypttab' 'usr/sbin/dropbear' 'root-[^/]*/\.ssh/authorized_keys' \
	'usr/bin/cryptroot-unlock' 'usr/bin/clevis' 'usr/bin/clevis-decrypt-tang' 'usr/bin/clevis-decrypt-tpm2' \
	'usr/lib/modules/.*/virtio_net\.ko' 'usr/lib/modules/.*/dm-crypt\.ko'; do
	grep -q "^$f\$" /tmp/initrd.list || { echo "move: the initramfs lacks $f" >&2; exit 1; }
done
rm -rf /tmp/initrd.x && mkdir /tmp/initrd.x && unmkinitramfs "$initrd" /tmp/initrd.x
# unmkinitramfs puts the main archive in main/ only when there is an early
# (microcode) archive before it.
x=/tmp/initrd.x; [ -d $x/main ] && x=$x/main
cat $x/cryptroot/crypttab $x/conf/conf.d/*
grep -q '^root_crypt ' $x/cryptroot/crypttab || { echo "move: the initramfs does not unlock root_crypt" >&2; exit 1; }
grep -q 'linux.*/vmlinuz' "$T/boot/grub/grub.cfg"
ls -R "$T/boot/efi"

step "release the new disks"
swapoff -a
umount -R "$T"
for m in $(dmsetup ls --target crypt | awk '{print $1}'); do cryptsetup close "$m"; done
vgchange -an vg0
step "done"

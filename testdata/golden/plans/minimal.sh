#!/bin/bash
# cryptshift plan for layout minimal on host vps01, target root /target.
# It runs exactly the commands "cryptshift apply" runs, in the same order.
# Unlike apply it keeps no journal, checks no postconditions and cannot resume:
# review it, and prefer cryptshift apply to run it.
# warning at playbooks/examples/minimal.yaml $.keys.headerBackupDir, line 39 col 20: header backups in /root/luks-header-backups live on volume root: useless if that volume's own header is damaged; fix: copy the backups to offline storage as well
set -euo pipefail
umask 077

# The passphrase: from $CRYPTSHIFT_PASSPHRASE_FILE (trailing newlines dropped) or a prompt.
if [ -n "${CRYPTSHIFT_PASSPHRASE_FILE:-}" ]; then
  PASSPHRASE=$(<"$CRYPTSHIFT_PASSPHRASE_FILE")
else
  read -rsp "Passphrase for the LUKS2 volumes: " PASSPHRASE; echo
  read -rsp "Repeat it: " PASSPHRASE2; echo
  [ "$PASSPHRASE" = "$PASSPHRASE2" ] || { echo "the passphrases differ" >&2; exit 1; }
  unset PASSPHRASE2
fi
[ -n "$PASSPHRASE" ] || { echo "the passphrase is empty" >&2; exit 1; }

# The recovery key: from $CRYPTSHIFT_RECOVERY_KEY_FILE, else generated now.
if [ -n "${CRYPTSHIFT_RECOVERY_KEY_FILE:-}" ] && [ -s "$CRYPTSHIFT_RECOVERY_KEY_FILE" ]; then
  RECOVERY_KEY=$(<"$CRYPTSHIFT_RECOVERY_KEY_FILE")
else
  RECOVERY_KEY=$(cryptshift step recovery-key)
  printf 'Recovery key (write it down and keep it offline; it is shown once):\n  %s\n' "$RECOVERY_KEY" >/dev/tty
fi

# [1/22] partition:/dev/vda: write a GPT with 4 partitions to /dev/vda
cryptshift step partition --device /dev/vda --table-uuid 5fc49146-841c-4e88-9437-cf3b15fce38f --partition 1:start=1048576,size=1048576,type=21686148-6449-6E6F-744E-656564454649,name=bios,uuid=cd7c3332-8007-4bfb-9e1b-4699bbdc7773 --partition 2:start=2097152,size=268435456,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=esp,uuid=f86d8a7d-8255-49be-a0d4-1fc1983ee821 --partition 3:start=270532608,size=536870912,type=BC13C2FF-59E6-4262-A352-B275FD6F7172,name=boot,uuid=f7e76d5c-b72a-4376-8f4e-d4795b1f021e --partition 4:start=807403520,size=42141220864,type=E6D6D379-F507-44C2-A23C-238F2A3DF928,name=pv,uuid=0dfdf1a8-dd7e-422f-aad5-3bf494a4b090

# [2/22] mkfs:/dev/vda2: create a vfat filesystem on /dev/vda2 (unencrypted: UEFI firmware must read the EFI system partition)
mkfs.vfat -F 32 -i C88C0DDE -n ESP /dev/vda2

# [3/22] mkfs:/dev/vda3: create an ext4 filesystem on /dev/vda3 (unencrypted: GRUB loads the kernel and initramfs from /boot)
mkfs.ext4 -q -F -b 4096 -U 736cb6e6-df02-4452-823e-32a7cd9ccf32 /dev/vda3

# [4/22] pvcreate:/dev/vda4: make /dev/vda4 an LVM physical volume
lvm pvcreate /dev/vda4

# [5/22] vgcreate:vg0: create volume group vg0 on /dev/vda4
lvm vgcreate --physicalextentsize 4096k vg0 /dev/vda4

# [6/22] lvcreate:/dev/vg0/root: create volume /dev/vg0/root of 31.4 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name root --extents 8037 vg0

# [7/22] lvcreate:/dev/vg0/swap: create volume /dev/vg0/swap of 2 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name swap --extents 512 vg0

# [8/22] luksFormat:/dev/vg0/root: format /dev/vg0/root as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by the passphrase (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --sector-size 4096 --label root --uuid 00d88bfd-b2b5-49b5-8342-e19f8b6cb674 --key-file - /dev/vg0/root < <(printf '%s' "$PASSPHRASE")

# [9/22] addRecoveryKey:/dev/vg0/root: add the recovery key to a second keyslot of /dev/vg0/root (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file - /dev/vg0/root /proc/self/fd/3 < <(printf '%s' "$PASSPHRASE") 3< <(printf '%s' "$RECOVERY_KEY")

# [10/22] open:/dev/mapper/root_crypt: open /dev/vg0/root as /dev/mapper/root_crypt
cryptsetup open --type luks2 --key-file - /dev/vg0/root root_crypt < <(printf '%s' "$PASSPHRASE")

# [11/22] mkfs:/dev/mapper/root_crypt: create an ext4 filesystem on /dev/mapper/root_crypt
mkfs.ext4 -q -F -b 4096 -U 674b19b9-6143-45d1-be5a-efdda9da6f90 /dev/mapper/root_crypt

# [12/22] mount:/target: mount /dev/mapper/root_crypt on /target
mount --mkdir -t ext4 /dev/mapper/root_crypt /target

# [13/22] openPlain:/dev/mapper/swap_crypt: open /dev/vg0/swap as /dev/mapper/swap_crypt with a fresh random key (plain dm-crypt; nothing survives a reboot)
cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --key-file /dev/urandom /dev/vg0/swap swap_crypt

# [14/22] mkswap:/dev/mapper/swap_crypt: make /dev/mapper/swap_crypt a swap area
mkswap /dev/mapper/swap_crypt

# [15/22] mkdir:/target/root/luks-header-backups: create the header backup directory (mode 0700)
cryptshift step mkdir --mode 0700 --path /target/root/luks-header-backups

# [16/22] luksHeaderBackup:/target/root/luks-header-backups/root_crypt.luksheader: back up the LUKS2 header of /dev/vg0/root
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/root --header-backup-file /target/root/luks-header-backups/root_crypt.luksheader

# [17/22] mount:/target/boot: mount /dev/vda3 on /target/boot
mount --mkdir -t ext4 /dev/vda3 /target/boot

# [18/22] mount:/target/boot/efi: mount /dev/vda2 on /target/boot/efi
mount --mkdir -t vfat /dev/vda2 /target/boot/efi

# [19/22] swapon:/dev/mapper/swap_crypt: enable swap on /dev/mapper/swap_crypt
swapon /dev/mapper/swap_crypt

# [20/22] writeCrypttab:/target/etc/crypttab: write 2 crypttab entr(y/ies) into /target/etc/crypttab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/crypttab --block crypttab:minimal <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout minimal
# <name> <device> <key file> <options>
root_crypt UUID=00d88bfd-b2b5-49b5-8342-e19f8b6cb674 none luks
swap_crypt /dev/vg0/swap /dev/urandom swap,cipher=aes-xts-plain64,size=512,sector-size=4096
# END cryptshift layout minimal
CRYPTSHIFT_EOF

# [21/22] writeFstab:/target/etc/fstab: write 5 fstab entr(y/ies) into /target/etc/fstab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/fstab --block fstab:minimal <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout minimal
# <spec> <file> <type> <options> <dump> <pass>
UUID=674b19b9-6143-45d1-be5a-efdda9da6f90 / ext4 defaults 0 1
UUID=736cb6e6-df02-4452-823e-32a7cd9ccf32 /boot ext4 defaults 0 2
UUID=C88C-0DDE /boot/efi vfat umask=0077 0 2
/dev/mapper/swap_crypt none swap sw 0 0
tmpfs /tmp tmpfs size=25%,mode=1777,nosuid,nodev 0 0
# END cryptshift layout minimal
CRYPTSHIFT_EOF

# [22/22] initramfs:/target: regenerate the initramfs so it unlocks the root volume at boot (skipped, with a notice, while the target root has no operating system yet)
cryptshift step initramfs --root /target


#!/bin/bash
# cryptshift plan for layout hibernate on host ws01, target root /target.
# It runs exactly the commands "cryptshift apply" runs, in the same order.
# Unlike apply it keeps no journal, checks no postconditions and cannot resume:
# review it, and prefer cryptshift apply to run it.
# warning at playbooks/examples/hibernate.yaml $.keys.headerBackupDir, line 41 col 20: header backups in /media/backup-usb/luks-headers live on volume root: useless if that volume's own header is damaged; fix: copy the backups to offline storage as well
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

# [1/33] partition:/dev/nvme0n1: write a GPT with 3 partitions to /dev/nvme0n1
cryptshift step partition --device /dev/nvme0n1 --table-uuid 6352f73e-7742-47d8-ae33-44e1857687a9 --partition 1:start=1048576,size=536870912,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=esp,uuid=17d3a959-f49e-4b57-8b8c-4df2dc7e5b65 --partition 2:start=537919488,size=1073741824,type=BC13C2FF-59E6-4262-A352-B275FD6F7172,name=boot,uuid=d362600d-ce1d-40e8-a248-231277191ad4 --partition 3:start=1611661312,size=510498177024,type=E6D6D379-F507-44C2-A23C-238F2A3DF928,name=pv,uuid=3fbf86b8-7c00-4ce8-8ad3-5f006f86ca57

# [2/33] mkfs:/dev/nvme0n1p1: create a vfat filesystem on /dev/nvme0n1p1 (unencrypted: UEFI firmware must read the EFI system partition)
mkfs.vfat -F 32 -i DAAEA943 -n ESP /dev/nvme0n1p1

# [3/33] mkfs:/dev/nvme0n1p2: create an ext4 filesystem on /dev/nvme0n1p2 (unencrypted: GRUB loads the kernel and initramfs from /boot)
mkfs.ext4 -q -F -b 4096 -U da423772-20e4-4aff-bf0d-48cf1750d684 /dev/nvme0n1p2

# [4/33] pvcreate:/dev/nvme0n1p3: make /dev/nvme0n1p3 an LVM physical volume
lvm pvcreate /dev/nvme0n1p3

# [5/33] vgcreate:vg0: create volume group vg0 on /dev/nvme0n1p3
lvm vgcreate --physicalextentsize 4096k vg0 /dev/nvme0n1p3

# [6/33] lvcreate:/dev/vg0/root: create volume /dev/vg0/root of 60 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name root --extents 15360 vg0

# [7/33] lvcreate:/dev/vg0/home: create volume /dev/vg0/home of 290.8 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name home --extents 74446 vg0

# [8/33] lvcreate:/dev/vg0/swap: create volume /dev/vg0/swap of 32 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name swap --extents 8192 vg0

# [9/33] luksFormat:/dev/vg0/root: format /dev/vg0/root as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by the passphrase (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --sector-size 4096 --label root --uuid 63b2e816-10fa-4b74-a9e5-1d74e535e8b1 --key-file - /dev/vg0/root < <(printf '%s' "$PASSPHRASE")

# [10/33] addRecoveryKey:/dev/vg0/root: add the recovery key to a second keyslot of /dev/vg0/root (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file - /dev/vg0/root /proc/self/fd/3 < <(printf '%s' "$PASSPHRASE") 3< <(printf '%s' "$RECOVERY_KEY")

# [11/33] open:/dev/mapper/root_crypt: open /dev/vg0/root as /dev/mapper/root_crypt
cryptsetup open --type luks2 --key-file - /dev/vg0/root root_crypt < <(printf '%s' "$PASSPHRASE")

# [12/33] mkfs:/dev/mapper/root_crypt: create an ext4 filesystem on /dev/mapper/root_crypt
mkfs.ext4 -q -F -b 4096 -U 730a0ebc-9de6-4425-a104-be2ef2929ede /dev/mapper/root_crypt

# [13/33] mount:/target: mount /dev/mapper/root_crypt on /target
mount --mkdir -t ext4 /dev/mapper/root_crypt /target

# [14/33] keyfile:/target/etc/cryptsetup-keys.d/home_crypt.key: generate a 4096-byte random key file for /dev/vg0/home (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/home_crypt.key --bytes 4096

# [15/33] luksFormat:/dev/vg0/home: format /dev/vg0/home as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/home_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label home --uuid 01bf0c83-dc9b-4370-9d3f-f6f58b28a26e --key-file /target/etc/cryptsetup-keys.d/home_crypt.key /dev/vg0/home

# [16/33] addRecoveryKey:/dev/vg0/home: add the recovery key to a second keyslot of /dev/vg0/home (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/home_crypt.key /dev/vg0/home /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [17/33] open:/dev/mapper/home_crypt: open /dev/vg0/home as /dev/mapper/home_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/home_crypt.key /dev/vg0/home home_crypt

# [18/33] mkfs:/dev/mapper/home_crypt: create an ext4 filesystem on /dev/mapper/home_crypt
mkfs.ext4 -q -F -b 4096 -U 5c361d46-4c2e-496e-9cef-4cac54e0669c /dev/mapper/home_crypt

# [19/33] luksFormat:/dev/vg0/swap: format /dev/vg0/swap as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by the passphrase (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --sector-size 4096 --label swap --uuid a17515a5-04ef-45e0-b095-34e9988c2aba --key-file - /dev/vg0/swap < <(printf '%s' "$PASSPHRASE")

# [20/33] addRecoveryKey:/dev/vg0/swap: add the recovery key to a second keyslot of /dev/vg0/swap (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file - /dev/vg0/swap /proc/self/fd/3 < <(printf '%s' "$PASSPHRASE") 3< <(printf '%s' "$RECOVERY_KEY")

# [21/33] open:/dev/mapper/swap_crypt: open /dev/vg0/swap as /dev/mapper/swap_crypt
cryptsetup open --type luks2 --key-file - /dev/vg0/swap swap_crypt < <(printf '%s' "$PASSPHRASE")

# [22/33] mkswap:/dev/mapper/swap_crypt: make /dev/mapper/swap_crypt a swap area
mkswap -U 33840211-6319-4d2d-bd59-c90660ef788a /dev/mapper/swap_crypt

# [23/33] mkdir:/target/media/backup-usb/luks-headers: create the header backup directory (mode 0700)
cryptshift step mkdir --mode 0700 --path /target/media/backup-usb/luks-headers

# [24/33] luksHeaderBackup:/target/media/backup-usb/luks-headers/root_crypt.luksheader: back up the LUKS2 header of /dev/vg0/root
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/root --header-backup-file /target/media/backup-usb/luks-headers/root_crypt.luksheader

# [25/33] luksHeaderBackup:/target/media/backup-usb/luks-headers/home_crypt.luksheader: back up the LUKS2 header of /dev/vg0/home
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/home --header-backup-file /target/media/backup-usb/luks-headers/home_crypt.luksheader

# [26/33] luksHeaderBackup:/target/media/backup-usb/luks-headers/swap_crypt.luksheader: back up the LUKS2 header of /dev/vg0/swap
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/swap --header-backup-file /target/media/backup-usb/luks-headers/swap_crypt.luksheader

# [27/33] mount:/target/boot: mount /dev/nvme0n1p2 on /target/boot
mount --mkdir -t ext4 /dev/nvme0n1p2 /target/boot

# [28/33] mount:/target/home: mount /dev/mapper/home_crypt on /target/home
mount --mkdir -t ext4 /dev/mapper/home_crypt /target/home

# [29/33] mount:/target/boot/efi: mount /dev/nvme0n1p1 on /target/boot/efi
mount --mkdir -t vfat /dev/nvme0n1p1 /target/boot/efi

# [30/33] swapon:/dev/mapper/swap_crypt: enable swap on /dev/mapper/swap_crypt
swapon /dev/mapper/swap_crypt

# [31/33] writeCrypttab:/target/etc/crypttab: write 3 crypttab entr(y/ies) into /target/etc/crypttab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/crypttab --block crypttab:hibernate <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout hibernate
# <name> <device> <key file> <options>
root_crypt UUID=63b2e816-10fa-4b74-a9e5-1d74e535e8b1 none luks
home_crypt UUID=01bf0c83-dc9b-4370-9d3f-f6f58b28a26e /etc/cryptsetup-keys.d/home_crypt.key luks
swap_crypt UUID=a17515a5-04ef-45e0-b095-34e9988c2aba none luks,initramfs
# END cryptshift layout hibernate
CRYPTSHIFT_EOF

# [32/33] writeFstab:/target/etc/fstab: write 6 fstab entr(y/ies) into /target/etc/fstab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/fstab --block fstab:hibernate <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout hibernate
# <spec> <file> <type> <options> <dump> <pass>
UUID=730a0ebc-9de6-4425-a104-be2ef2929ede / ext4 defaults 0 1
UUID=da423772-20e4-4aff-bf0d-48cf1750d684 /boot ext4 defaults 0 2
UUID=5c361d46-4c2e-496e-9cef-4cac54e0669c /home ext4 defaults 0 2
UUID=DAAE-A943 /boot/efi vfat umask=0077 0 2
UUID=33840211-6319-4d2d-bd59-c90660ef788a none swap sw 0 0
tmpfs /tmp tmpfs size=25%,mode=1777,nosuid,nodev 0 0
# END cryptshift layout hibernate
CRYPTSHIFT_EOF

# [33/33] initramfs:/target: regenerate the initramfs so it unlocks the root volume at boot (skipped, with a notice, while the target root has no operating system yet)
cryptshift step initramfs --root /target


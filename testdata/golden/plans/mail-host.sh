#!/bin/bash
# cryptshift plan for layout mail-host on host mail01, target root /target.
# It runs exactly the commands "cryptshift apply" runs, in the same order.
# Unlike apply it keeps no journal, checks no postconditions and cannot resume:
# review it, and prefer cryptshift apply to run it.
# warning at playbooks/examples/mail-host.yaml $.keys.headerBackupDir, line 74 col 20: header backups in /root/luks-header-backups live on volume root: useless if that volume's own header is damaged; fix: copy the backups to offline storage as well
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

# [1/51] partition:/dev/sda: write a GPT with 3 partitions to /dev/sda
cryptshift step partition --device /dev/sda --table-uuid 0b252f0f-293d-45ee-b3a5-3d7dad865cf8 --partition 1:start=1048576,size=268435456,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=esp,uuid=5c329ca3-07db-4297-b760-ad5cd12de71d --partition 2:start=269484032,size=536870912,type=BC13C2FF-59E6-4262-A352-B275FD6F7172,name=boot,uuid=a3e147fa-ffe4-4675-aae4-293174669c45 --partition 3:start=806354944,size=479296749568,type=E6D6D379-F507-44C2-A23C-238F2A3DF928,name=pv0,uuid=ca0fa0c9-5d14-423b-8a7e-e1faa2f8ae35

# [2/51] mkfs:/dev/sda1: create a vfat filesystem on /dev/sda1 (unencrypted: UEFI firmware must read the EFI system partition)
mkfs.vfat -F 32 -i BBF2F66B -n ESP /dev/sda1

# [3/51] mkfs:/dev/sda2: create an ext4 filesystem on /dev/sda2 (unencrypted: GRUB loads the kernel and initramfs from /boot; it holds no keys)
mkfs.ext4 -q -F -b 4096 -U b21ce1eb-e3a6-4c68-bbc1-528b5b4761e2 /dev/sda2

# [4/51] pvcreate:/dev/sda3: make /dev/sda3 an LVM physical volume
lvm pvcreate /dev/sda3

# [5/51] pvcreate:/dev/sdb: make /dev/sdb an LVM physical volume
lvm pvcreate /dev/sdb

# [6/51] vgcreate:vg0: create volume group vg0 on /dev/sda3, /dev/sdb
lvm vgcreate --physicalextentsize 4096k vg0 /dev/sda3 /dev/sdb

# [7/51] lvcreate:/dev/vg0/root: create volume /dev/vg0/root of 134.0 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name root --extents 34310 vg0

# [8/51] lvcreate:/dev/vg0/var: create volume /dev/vg0/var of 89.3 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name var --extents 22873 vg0

# [9/51] lvcreate:/dev/vg0/vmail: create volume /dev/vg0/vmail of 312.7 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name vmail --extents 80058 vg0

# [10/51] lvcreate:/dev/vg0/swap: create volume /dev/vg0/swap of 44.7 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name swap --extents 11436 vg0

# [11/51] lvcreate:/dev/vg0/guest-mx: create volume /dev/vg0/guest-mx of 134.0 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name guest-mx --extents 34310 vg0

# [12/51] lvcreate:/dev/vg0/guest-web: create volume /dev/vg0/guest-web of 89.3 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name guest-web --extents 22873 vg0

# [13/51] luksFormat:/dev/vg0/root: format /dev/vg0/root as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by the passphrase (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --sector-size 4096 --label root --uuid f1197c4e-8383-4b63-bb6a-d15708c044fc --key-file - /dev/vg0/root < <(printf '%s' "$PASSPHRASE")

# [14/51] addRecoveryKey:/dev/vg0/root: add the recovery key to a second keyslot of /dev/vg0/root (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file - /dev/vg0/root /proc/self/fd/3 < <(printf '%s' "$PASSPHRASE") 3< <(printf '%s' "$RECOVERY_KEY")

# [15/51] open:/dev/mapper/root_crypt: open /dev/vg0/root as /dev/mapper/root_crypt
cryptsetup open --type luks2 --key-file - /dev/vg0/root root_crypt < <(printf '%s' "$PASSPHRASE")

# [16/51] mkfs:/dev/mapper/root_crypt: create an ext4 filesystem on /dev/mapper/root_crypt
mkfs.ext4 -q -F -b 4096 -U 8faae2dc-24f3-4cd6-9de0-3a9c1e9daaa7 /dev/mapper/root_crypt

# [17/51] mount:/target: mount /dev/mapper/root_crypt on /target
mount --mkdir -t ext4 /dev/mapper/root_crypt /target

# [18/51] keyfile:/target/etc/cryptsetup-keys.d/var_crypt.key: generate a 4096-byte random key file for /dev/vg0/var (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/var_crypt.key --bytes 4096

# [19/51] keyfile:/target/etc/cryptsetup-keys.d/vmail_crypt.key: generate a 4096-byte random key file for /dev/vg0/vmail (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/vmail_crypt.key --bytes 4096

# [20/51] keyfile:/target/etc/cryptsetup-keys.d/guest-mx_crypt.key: generate a 4096-byte random key file for /dev/vg0/guest-mx (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/guest-mx_crypt.key --bytes 4096

# [21/51] keyfile:/target/etc/cryptsetup-keys.d/guest-web_crypt.key: generate a 4096-byte random key file for /dev/vg0/guest-web (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/guest-web_crypt.key --bytes 4096

# [22/51] luksFormat:/dev/vg0/var: format /dev/vg0/var as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/var_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label var --uuid 729ad46d-f4c0-4afb-9f6a-63b5a4493783 --key-file /target/etc/cryptsetup-keys.d/var_crypt.key /dev/vg0/var

# [23/51] addRecoveryKey:/dev/vg0/var: add the recovery key to a second keyslot of /dev/vg0/var (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/var_crypt.key /dev/vg0/var /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [24/51] open:/dev/mapper/var_crypt: open /dev/vg0/var as /dev/mapper/var_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/var_crypt.key /dev/vg0/var var_crypt

# [25/51] mkfs:/dev/mapper/var_crypt: create an ext4 filesystem on /dev/mapper/var_crypt
mkfs.ext4 -q -F -b 4096 -U 28900994-afab-4f95-b373-a52fcf57e96d /dev/mapper/var_crypt

# [26/51] luksFormat:/dev/vg0/vmail: format /dev/vg0/vmail as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/vmail_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label vmail --uuid a11eb69d-8bc8-4d6f-afc4-3310691e5ce6 --key-file /target/etc/cryptsetup-keys.d/vmail_crypt.key /dev/vg0/vmail

# [27/51] addRecoveryKey:/dev/vg0/vmail: add the recovery key to a second keyslot of /dev/vg0/vmail (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/vmail_crypt.key /dev/vg0/vmail /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [28/51] open:/dev/mapper/vmail_crypt: open /dev/vg0/vmail as /dev/mapper/vmail_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/vmail_crypt.key /dev/vg0/vmail vmail_crypt

# [29/51] mkfs:/dev/mapper/vmail_crypt: create an ext4 filesystem on /dev/mapper/vmail_crypt
mkfs.ext4 -q -F -b 4096 -U c6857538-9587-4d3d-b85c-501ab710151a /dev/mapper/vmail_crypt

# [30/51] openPlain:/dev/mapper/swap_crypt: open /dev/vg0/swap as /dev/mapper/swap_crypt with a fresh random key (plain dm-crypt; nothing survives a reboot)
cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --key-file /dev/urandom /dev/vg0/swap swap_crypt

# [31/51] mkswap:/dev/mapper/swap_crypt: make /dev/mapper/swap_crypt a swap area
mkswap /dev/mapper/swap_crypt

# [32/51] luksFormat:/dev/vg0/guest-mx: format /dev/vg0/guest-mx as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/guest-mx_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label guest-mx --uuid f1441150-3286-42dd-8344-11620f11aafe --key-file /target/etc/cryptsetup-keys.d/guest-mx_crypt.key /dev/vg0/guest-mx

# [33/51] addRecoveryKey:/dev/vg0/guest-mx: add the recovery key to a second keyslot of /dev/vg0/guest-mx (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/guest-mx_crypt.key /dev/vg0/guest-mx /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [34/51] open:/dev/mapper/guest-mx_crypt: open /dev/vg0/guest-mx as /dev/mapper/guest-mx_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/guest-mx_crypt.key /dev/vg0/guest-mx guest-mx_crypt

# [35/51] luksFormat:/dev/vg0/guest-web: format /dev/vg0/guest-web as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/guest-web_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label guest-web --uuid f007b321-abba-4a71-956d-2faa449f07a8 --key-file /target/etc/cryptsetup-keys.d/guest-web_crypt.key /dev/vg0/guest-web

# [36/51] addRecoveryKey:/dev/vg0/guest-web: add the recovery key to a second keyslot of /dev/vg0/guest-web (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/guest-web_crypt.key /dev/vg0/guest-web /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [37/51] open:/dev/mapper/guest-web_crypt: open /dev/vg0/guest-web as /dev/mapper/guest-web_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/guest-web_crypt.key /dev/vg0/guest-web guest-web_crypt

# [38/51] mkdir:/target/root/luks-header-backups: create the header backup directory (mode 0700)
cryptshift step mkdir --mode 0700 --path /target/root/luks-header-backups

# [39/51] luksHeaderBackup:/target/root/luks-header-backups/root_crypt.luksheader: back up the LUKS2 header of /dev/vg0/root
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/root --header-backup-file /target/root/luks-header-backups/root_crypt.luksheader

# [40/51] luksHeaderBackup:/target/root/luks-header-backups/var_crypt.luksheader: back up the LUKS2 header of /dev/vg0/var
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/var --header-backup-file /target/root/luks-header-backups/var_crypt.luksheader

# [41/51] luksHeaderBackup:/target/root/luks-header-backups/vmail_crypt.luksheader: back up the LUKS2 header of /dev/vg0/vmail
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/vmail --header-backup-file /target/root/luks-header-backups/vmail_crypt.luksheader

# [42/51] luksHeaderBackup:/target/root/luks-header-backups/guest-mx_crypt.luksheader: back up the LUKS2 header of /dev/vg0/guest-mx
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/guest-mx --header-backup-file /target/root/luks-header-backups/guest-mx_crypt.luksheader

# [43/51] luksHeaderBackup:/target/root/luks-header-backups/guest-web_crypt.luksheader: back up the LUKS2 header of /dev/vg0/guest-web
cryptsetup luksHeaderBackup --batch-mode /dev/vg0/guest-web --header-backup-file /target/root/luks-header-backups/guest-web_crypt.luksheader

# [44/51] mount:/target/boot: mount /dev/sda2 on /target/boot
mount --mkdir -t ext4 /dev/sda2 /target/boot

# [45/51] mount:/target/var: mount /dev/mapper/var_crypt on /target/var
mount --mkdir -t ext4 /dev/mapper/var_crypt /target/var

# [46/51] mount:/target/boot/efi: mount /dev/sda1 on /target/boot/efi
mount --mkdir -t vfat /dev/sda1 /target/boot/efi

# [47/51] mount:/target/var/vmail: mount /dev/mapper/vmail_crypt on /target/var/vmail
mount --mkdir -t ext4 /dev/mapper/vmail_crypt /target/var/vmail

# [48/51] swapon:/dev/mapper/swap_crypt: enable swap on /dev/mapper/swap_crypt
swapon /dev/mapper/swap_crypt

# [49/51] writeCrypttab:/target/etc/crypttab: write 6 crypttab entr(y/ies) into /target/etc/crypttab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/crypttab --block crypttab:mail-host <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout mail-host
# <name> <device> <key file> <options>
root_crypt UUID=f1197c4e-8383-4b63-bb6a-d15708c044fc none luks
var_crypt UUID=729ad46d-f4c0-4afb-9f6a-63b5a4493783 /etc/cryptsetup-keys.d/var_crypt.key luks
vmail_crypt UUID=a11eb69d-8bc8-4d6f-afc4-3310691e5ce6 /etc/cryptsetup-keys.d/vmail_crypt.key luks
swap_crypt /dev/vg0/swap /dev/urandom swap,cipher=aes-xts-plain64,size=512,sector-size=4096
guest-mx_crypt UUID=f1441150-3286-42dd-8344-11620f11aafe /etc/cryptsetup-keys.d/guest-mx_crypt.key luks
guest-web_crypt UUID=f007b321-abba-4a71-956d-2faa449f07a8 /etc/cryptsetup-keys.d/guest-web_crypt.key luks
# END cryptshift layout mail-host
CRYPTSHIFT_EOF

# [50/51] writeFstab:/target/etc/fstab: write 8 fstab entr(y/ies) into /target/etc/fstab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/fstab --block fstab:mail-host <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout mail-host
# <spec> <file> <type> <options> <dump> <pass>
UUID=8faae2dc-24f3-4cd6-9de0-3a9c1e9daaa7 / ext4 errors=remount-ro 0 1
UUID=b21ce1eb-e3a6-4c68-bbc1-528b5b4761e2 /boot ext4 defaults 0 2
UUID=28900994-afab-4f95-b373-a52fcf57e96d /var ext4 nodev,nosuid 0 2
UUID=BBF2-F66B /boot/efi vfat umask=0077 0 2
UUID=c6857538-9587-4d3d-b85c-501ab710151a /var/vmail ext4 nodev,nosuid,noexec,noatime 0 2
/dev/mapper/swap_crypt none swap sw 0 0
tmpfs /tmp tmpfs size=2048m,mode=1777,nosuid,nodev 0 0
tmpfs /dev/shm tmpfs size=1024m,mode=1777,nosuid,nodev,noexec 0 0
# END cryptshift layout mail-host
CRYPTSHIFT_EOF

# [51/51] initramfs:/target: regenerate the initramfs so it unlocks the root volume at boot (skipped, with a notice, while the target root has no operating system yet)
cryptshift step initramfs --root /target


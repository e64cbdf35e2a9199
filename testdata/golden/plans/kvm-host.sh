#!/bin/bash
# cryptshift plan for layout kvm-host on host kvm01, target root /target.
# It runs exactly the commands "cryptshift apply" runs, in the same order.
# Unlike apply it keeps no journal, checks no postconditions and cannot resume:
# review it, and prefer cryptshift apply to run it.
# warning at playbooks/examples/kvm-host.yaml $.keys.headerBackupDir, line 66 col 20: header backups in /media/backup-usb/luks-headers live on volume root: useless if that volume's own header is damaged; fix: copy the backups to offline storage as well
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

# [1/50] partition:/dev/nvme0n1: write a GPT with 3 partitions to /dev/nvme0n1
cryptshift step partition --device /dev/nvme0n1 --table-uuid b2eeac48-bf8d-48e6-af5d-fe0d721fe30b --partition 1:start=1048576,size=536870912,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=esp,uuid=1545aa6f-b34d-4ac2-92f2-60436d5f5d9d --partition 2:start=537919488,size=1073741824,type=BC13C2FF-59E6-4262-A352-B275FD6F7172,name=boot,uuid=278f4497-c785-49e3-ab17-ae4d3d630431 --partition 3:start=1611661312,size=998592479232,type=E6D6D379-F507-44C2-A23C-238F2A3DF928,name=sys,uuid=805029e3-49cf-4460-8b2b-9d0049a397d3

# [2/50] mkfs:/dev/nvme0n1p1: create a vfat filesystem on /dev/nvme0n1p1 (unencrypted: UEFI firmware must read the EFI system partition)
mkfs.vfat -F 32 -i A040CCF8 -n ESP /dev/nvme0n1p1

# [3/50] mkfs:/dev/nvme0n1p2: create an ext4 filesystem on /dev/nvme0n1p2 (unencrypted: GRUB loads the kernel and initramfs from /boot)
mkfs.ext4 -q -F -b 4096 -U 28b46ec6-3695-4e63-a745-f1ba0db5b943 /dev/nvme0n1p2

# [4/50] pvcreate:/dev/nvme0n1p3: make /dev/nvme0n1p3 an LVM physical volume
lvm pvcreate /dev/nvme0n1p3

# [5/50] pvcreate:/dev/sda: make /dev/sda an LVM physical volume
lvm pvcreate /dev/sda

# [6/50] vgcreate:vg-sys: create volume group vg-sys on /dev/nvme0n1p3
lvm vgcreate --physicalextentsize 4096k vg-sys /dev/nvme0n1p3

# [7/50] vgcreate:vg-guests: create volume group vg-guests on /dev/sda
lvm vgcreate --physicalextentsize 16384k vg-guests /dev/sda

# [8/50] lvcreate:/dev/vg-sys/root: create volume /dev/vg-sys/root of 40 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name root --extents 10240 vg-sys

# [9/50] lvcreate:/dev/vg-sys/libvirt: create volume /dev/vg-sys/libvirt of 20 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name libvirt --extents 5120 vg-sys

# [10/50] lvcreate:/dev/vg-sys/swap: create volume /dev/vg-sys/swap of 8 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name swap --extents 2048 vg-sys

# [11/50] lvcreate:/dev/vg-guests/mail-vda: create volume /dev/vg-guests/mail-vda of 200 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name mail-vda --extents 12800 vg-guests

# [12/50] lvcreate:/dev/vg-guests/mail-vdb: create volume /dev/vg-guests/mail-vdb of 500 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name mail-vdb --extents 32000 vg-guests

# [13/50] lvcreate:/dev/vg-guests/dns-vda: create volume /dev/vg-guests/dns-vda of 20 GiB
lvm lvcreate --yes --wipesignatures y --zero y --name dns-vda --extents 1280 vg-guests

# [14/50] luksFormat:/dev/vg-sys/root: format /dev/vg-sys/root as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by the passphrase (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --sector-size 4096 --label root --uuid 702b35ed-6420-4aa7-ac9e-582d3608aee1 --key-file - /dev/vg-sys/root < <(printf '%s' "$PASSPHRASE")

# [15/50] addRecoveryKey:/dev/vg-sys/root: add the recovery key to a second keyslot of /dev/vg-sys/root (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file - /dev/vg-sys/root /proc/self/fd/3 < <(printf '%s' "$PASSPHRASE") 3< <(printf '%s' "$RECOVERY_KEY")

# [16/50] open:/dev/mapper/root_crypt: open /dev/vg-sys/root as /dev/mapper/root_crypt
cryptsetup open --type luks2 --key-file - --allow-discards /dev/vg-sys/root root_crypt < <(printf '%s' "$PASSPHRASE")

# [17/50] mkfs:/dev/mapper/root_crypt: create an ext4 filesystem on /dev/mapper/root_crypt
mkfs.ext4 -q -F -b 4096 -U d450f210-bc8a-42a2-8677-b6a9364feb57 /dev/mapper/root_crypt

# [18/50] mount:/target: mount /dev/mapper/root_crypt on /target
mount --mkdir -t ext4 /dev/mapper/root_crypt /target

# [19/50] keyfile:/target/etc/cryptsetup-keys.d/libvirt_crypt.key: generate a 4096-byte random key file for /dev/vg-sys/libvirt (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/libvirt_crypt.key --bytes 4096

# [20/50] keyfile:/target/etc/cryptsetup-keys.d/mail-vda_crypt.key: generate a 4096-byte random key file for /dev/vg-guests/mail-vda (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/mail-vda_crypt.key --bytes 4096

# [21/50] keyfile:/target/etc/cryptsetup-keys.d/mail-vdb_crypt.key: generate a 4096-byte random key file for /dev/vg-guests/mail-vdb (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/mail-vdb_crypt.key --bytes 4096

# [22/50] keyfile:/target/etc/cryptsetup-keys.d/dns-vda_crypt.key: generate a 4096-byte random key file for /dev/vg-guests/dns-vda (mode 0400, directory 0700, on the encrypted root)
cryptshift step keyfile --path /target/etc/cryptsetup-keys.d/dns-vda_crypt.key --bytes 4096

# [23/50] luksFormat:/dev/vg-sys/libvirt: format /dev/vg-sys/libvirt as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/libvirt_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label libvirt --uuid 8210a4c5-6988-499a-bae6-6dec4123d896 --key-file /target/etc/cryptsetup-keys.d/libvirt_crypt.key /dev/vg-sys/libvirt

# [24/50] addRecoveryKey:/dev/vg-sys/libvirt: add the recovery key to a second keyslot of /dev/vg-sys/libvirt (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/libvirt_crypt.key /dev/vg-sys/libvirt /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [25/50] open:/dev/mapper/libvirt_crypt: open /dev/vg-sys/libvirt as /dev/mapper/libvirt_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/libvirt_crypt.key --allow-discards /dev/vg-sys/libvirt libvirt_crypt

# [26/50] mkfs:/dev/mapper/libvirt_crypt: create an ext4 filesystem on /dev/mapper/libvirt_crypt
mkfs.ext4 -q -F -b 4096 -U 30f6ce96-15c4-4bff-a9ee-01e974376bbf /dev/mapper/libvirt_crypt

# [27/50] openPlain:/dev/mapper/swap_crypt: open /dev/vg-sys/swap as /dev/mapper/swap_crypt with a fresh random key (plain dm-crypt; nothing survives a reboot)
cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --key-file /dev/urandom /dev/vg-sys/swap swap_crypt

# [28/50] mkswap:/dev/mapper/swap_crypt: make /dev/mapper/swap_crypt a swap area
mkswap /dev/mapper/swap_crypt

# [29/50] luksFormat:/dev/vg-guests/mail-vda: format /dev/vg-guests/mail-vda as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/mail-vda_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label mail-vda --uuid c402d19b-674b-4685-9ee7-2f7422a68a34 --key-file /target/etc/cryptsetup-keys.d/mail-vda_crypt.key /dev/vg-guests/mail-vda

# [30/50] addRecoveryKey:/dev/vg-guests/mail-vda: add the recovery key to a second keyslot of /dev/vg-guests/mail-vda (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/mail-vda_crypt.key /dev/vg-guests/mail-vda /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [31/50] open:/dev/mapper/mail-vda_crypt: open /dev/vg-guests/mail-vda as /dev/mapper/mail-vda_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/mail-vda_crypt.key /dev/vg-guests/mail-vda mail-vda_crypt

# [32/50] luksFormat:/dev/vg-guests/mail-vdb: format /dev/vg-guests/mail-vdb as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/mail-vdb_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label mail-vdb --uuid 3443e3a2-c2db-4e5a-975c-6205fcb99990 --key-file /target/etc/cryptsetup-keys.d/mail-vdb_crypt.key /dev/vg-guests/mail-vdb

# [33/50] addRecoveryKey:/dev/vg-guests/mail-vdb: add the recovery key to a second keyslot of /dev/vg-guests/mail-vdb (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/mail-vdb_crypt.key /dev/vg-guests/mail-vdb /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [34/50] open:/dev/mapper/mail-vdb_crypt: open /dev/vg-guests/mail-vdb as /dev/mapper/mail-vdb_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/mail-vdb_crypt.key /dev/vg-guests/mail-vdb mail-vdb_crypt

# [35/50] luksFormat:/dev/vg-guests/dns-vda: format /dev/vg-guests/dns-vda as LUKS2 (aes-xts-plain64, 512-bit key, 4096-byte sectors), unlocked by key file /etc/cryptsetup-keys.d/dns-vda_crypt.key (keyslot KDF: argon2id, 4 passes over 64 MiB, 1 thread)
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1 --sector-size 4096 --label dns-vda --uuid 2d197811-6805-4ef0-8466-ab9837326169 --key-file /target/etc/cryptsetup-keys.d/dns-vda_crypt.key /dev/vg-guests/dns-vda

# [36/50] addRecoveryKey:/dev/vg-guests/dns-vda: add the recovery key to a second keyslot of /dev/vg-guests/dns-vda (keyslot KDF: argon2id, 2000 ms, up to 1024 MiB, 4 threads)
cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /target/etc/cryptsetup-keys.d/dns-vda_crypt.key /dev/vg-guests/dns-vda /proc/self/fd/3 3< <(printf '%s' "$RECOVERY_KEY")

# [37/50] open:/dev/mapper/dns-vda_crypt: open /dev/vg-guests/dns-vda as /dev/mapper/dns-vda_crypt
cryptsetup open --type luks2 --key-file /target/etc/cryptsetup-keys.d/dns-vda_crypt.key /dev/vg-guests/dns-vda dns-vda_crypt

# [38/50] mkdir:/target/media/backup-usb/luks-headers: create the header backup directory (mode 0700)
cryptshift step mkdir --mode 0700 --path /target/media/backup-usb/luks-headers

# [39/50] luksHeaderBackup:/target/media/backup-usb/luks-headers/root_crypt.luksheader: back up the LUKS2 header of /dev/vg-sys/root
cryptsetup luksHeaderBackup --batch-mode /dev/vg-sys/root --header-backup-file /target/media/backup-usb/luks-headers/root_crypt.luksheader

# [40/50] luksHeaderBackup:/target/media/backup-usb/luks-headers/libvirt_crypt.luksheader: back up the LUKS2 header of /dev/vg-sys/libvirt
cryptsetup luksHeaderBackup --batch-mode /dev/vg-sys/libvirt --header-backup-file /target/media/backup-usb/luks-headers/libvirt_crypt.luksheader

# [41/50] luksHeaderBackup:/target/media/backup-usb/luks-headers/mail-vda_crypt.luksheader: back up the LUKS2 header of /dev/vg-guests/mail-vda
cryptsetup luksHeaderBackup --batch-mode /dev/vg-guests/mail-vda --header-backup-file /target/media/backup-usb/luks-headers/mail-vda_crypt.luksheader

# [42/50] luksHeaderBackup:/target/media/backup-usb/luks-headers/mail-vdb_crypt.luksheader: back up the LUKS2 header of /dev/vg-guests/mail-vdb
cryptsetup luksHeaderBackup --batch-mode /dev/vg-guests/mail-vdb --header-backup-file /target/media/backup-usb/luks-headers/mail-vdb_crypt.luksheader

# [43/50] luksHeaderBackup:/target/media/backup-usb/luks-headers/dns-vda_crypt.luksheader: back up the LUKS2 header of /dev/vg-guests/dns-vda
cryptsetup luksHeaderBackup --batch-mode /dev/vg-guests/dns-vda --header-backup-file /target/media/backup-usb/luks-headers/dns-vda_crypt.luksheader

# [44/50] mount:/target/boot: mount /dev/nvme0n1p2 on /target/boot
mount --mkdir -t ext4 /dev/nvme0n1p2 /target/boot

# [45/50] mount:/target/boot/efi: mount /dev/nvme0n1p1 on /target/boot/efi
mount --mkdir -t vfat /dev/nvme0n1p1 /target/boot/efi

# [46/50] mount:/target/var/lib/libvirt: mount /dev/mapper/libvirt_crypt on /target/var/lib/libvirt
mount --mkdir -t ext4 /dev/mapper/libvirt_crypt /target/var/lib/libvirt

# [47/50] swapon:/dev/mapper/swap_crypt: enable swap on /dev/mapper/swap_crypt
swapon /dev/mapper/swap_crypt

# [48/50] writeCrypttab:/target/etc/crypttab: write 6 crypttab entr(y/ies) into /target/etc/crypttab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/crypttab --block crypttab:kvm-host <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout kvm-host
# <name> <device> <key file> <options>
root_crypt UUID=702b35ed-6420-4aa7-ac9e-582d3608aee1 none luks,discard
libvirt_crypt UUID=8210a4c5-6988-499a-bae6-6dec4123d896 /etc/cryptsetup-keys.d/libvirt_crypt.key luks,discard
swap_crypt /dev/vg-sys/swap /dev/urandom swap,cipher=aes-xts-plain64,size=512,sector-size=4096
mail-vda_crypt UUID=c402d19b-674b-4685-9ee7-2f7422a68a34 /etc/cryptsetup-keys.d/mail-vda_crypt.key luks
mail-vdb_crypt UUID=3443e3a2-c2db-4e5a-975c-6205fcb99990 /etc/cryptsetup-keys.d/mail-vdb_crypt.key luks
dns-vda_crypt UUID=2d197811-6805-4ef0-8466-ab9837326169 /etc/cryptsetup-keys.d/dns-vda_crypt.key luks
# END cryptshift layout kvm-host
CRYPTSHIFT_EOF

# [49/50] writeFstab:/target/etc/fstab: write 6 fstab entr(y/ies) into /target/etc/fstab (a marked block; a backup of the old file is kept)
cryptshift step write-block --file /target/etc/fstab --block fstab:kvm-host <<'CRYPTSHIFT_EOF'
# BEGIN cryptshift layout kvm-host
# <spec> <file> <type> <options> <dump> <pass>
UUID=d450f210-bc8a-42a2-8677-b6a9364feb57 / ext4 defaults 0 1
UUID=28b46ec6-3695-4e63-a745-f1ba0db5b943 /boot ext4 defaults 0 2
UUID=A040-CCF8 /boot/efi vfat umask=0077 0 2
UUID=30f6ce96-15c4-4bff-a9ee-01e974376bbf /var/lib/libvirt ext4 defaults 0 2
/dev/mapper/swap_crypt none swap sw 0 0
tmpfs /tmp tmpfs size=4096m,mode=1777,nosuid,nodev 0 0
# END cryptshift layout kvm-host
CRYPTSHIFT_EOF

# [50/50] initramfs:/target: regenerate the initramfs so it unlocks the root volume at boot (skipped, with a notice, while the target root has no operating system yet)
cryptshift step initramfs --root /target


#!/bin/bash
# Configures a debootstrapped Debian 12 tree as the "old host": a small mail
# server (Postfix delivering through dovecot-lda into Maildirs under
# /var/vmail, Dovecot IMAP) with three mails for the user alice, root
# reachable over SSH with the harness's test key, DHCP on any wired
# interface through systemd-networkd. Run on the build host as root:
#   oldhost-config.sh ROOT PUBKEY ROOT_UUID
# Nothing here needs /proc, /sys or /dev in the tree: files are written,
# and the chrooted commands (systemctl enable, useradd, postconf) only
# edit files.
set -euo pipefail
R=$1 PUBKEY=$2 ROOT_UUID=$3

echo oldhost >"$R/etc/hostname"
cat >"$R/etc/hosts" <<HOSTS
127.0.0.1	localhost
127.0.1.1	oldhost.example.test oldhost
HOSTS
echo "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1" >"$R/etc/fstab"

install -d -m 0700 "$R/root/.ssh"
install -m 0600 "$PUBKEY" "$R/root/.ssh/authorized_keys"

cat >"$R/etc/systemd/network/20-wired.network" <<NET
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
chroot "$R" systemctl enable systemd-networkd.service
# No timers that reach for the network: the guest has none, and must not.
chroot "$R" systemctl mask apt-daily.timer apt-daily-upgrade.timer

# Mail: system user alice, Maildir on /var/vmail (the layout's vmail volume).
chroot "$R" useradd -m -s /bin/bash alice
install -d -o 0 -g 0 -m 0755 "$R/var/vmail"
uid=$(chroot "$R" id -u alice) gid=$(chroot "$R" id -g alice)
for d in cur new tmp; do install -d -o "$uid" -g "$gid" -m 0700 "$R/var/vmail/alice/$d"; done
install -d -o "$uid" -g "$gid" -m 0700 "$R/var/vmail/alice"
for i in 1 2 3; do
	f="$R/var/vmail/alice/new/170000000$i.M${i}P1.oldhost"
	cat >"$f" <<MAIL
Return-Path: <bob@example.test>
From: Bob <bob@example.test>
To: Alice <alice@oldhost.example.test>
Subject: cryptshift boot test mail $i
Date: Mon, 01 Jan 2024 10:0$i:00 +0000
Message-ID: <boot-test-$i@example.test>

Mail number $i, stored in plain text on the old host's disk.
MAIL
	chown "$uid:$gid" "$f"
	chmod 0600 "$f"
done

chroot "$R" postconf -e \
	'myhostname = oldhost.example.test' \
	'mydestination = $myhostname, oldhost, localhost' \
	'inet_interfaces = loopback-only' \
	'inet_protocols = ipv4' \
	'relayhost =' \
	'default_transport = error:this test host sends no mail out' \
	'mailbox_command = /usr/lib/dovecot/dovecot-lda -f "$SENDER" -a "$RECIPIENT"'
cat >"$R/etc/dovecot/conf.d/99-cryptshift-test.conf" <<DOVECOT
# cryptshift boot test: Maildirs on the vmail volume.
mail_location = maildir:/var/vmail/%n
protocols = imap
listen = 127.0.0.1
DOVECOT

# Smaller tree, faster copies (the host move copies it under TCG at a few
# MB/s); the package lists come back with apt update. Documentation and
# translations go, and the kernel modules for hardware a q35 guest never
# has (graphics, sound, media, wireless, InfiniBand, IIO, staging): about
# 280 of the tree's 800 MB. virtio, TPM, dm-crypt, filesystems, network
# and USB stay. The initrd was made with every module by the kernel's
# install above; modules.dep is rebuilt for what is left.
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/log/*.log
rm -rf "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/locale/*
for k in "$R"/usr/lib/modules/*/; do
	v=$(basename "$k")
	(cd "$k/kernel" && rm -rf sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband \
		drivers/iio drivers/staging drivers/comedi drivers/bluetooth net/bluetooth net/mac80211 net/wireless)
	chroot "$R" depmod -a "$v"
done

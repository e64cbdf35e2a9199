#!/bin/bash
# Installs the Debian packages cryptshift's test tiers need. Idempotent: it
# only runs apt-get when a package is missing. Every install the project needs
# is recorded here.
set -euo pipefail

PKGS=(
  # tier 2: real tools on the host
  cryptsetup-bin lvm2 e2fsprogs dosfstools util-linux fdisk strace
  qemu-utils qemu-system-x86
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  # tier 3: the throwaway VM (busybox initramfs, kernel modules)
  busybox-static cpio kmod zstd xz-utils
  # fleet (packaging/fleet_host_test.go): the playbooks run for real with
  # Debian's Ansible and are linted; the .deb's man pages and bash
  # completion are checked once installed
  ansible ansible-lint python3-apt man-db bash-completion
  # tier 4: whole-system boots (internal/harness/boot): debootstrap builds
  # the old host, OVMF boots the moved disks, swtpm is the TPM, tang + socat
  # (+ jose for the key thumbprint) the Tang server, ssh drives the guests
  debootstrap ovmf swtpm swtpm-tools tang socat jose openssh-client
  # Clevis on the host: apply's Clevis bindings on LUKS2 image files
  # (internal/runner/apply TestHostApplyClevis)
  clevis clevis-luks
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

#!/bin/sh
# Runs inside the new guest root (chroot) at the end of an image build.
# $1 is the public key that may log in as root.
set -eu

echo l2tp-lac-lab > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 l2tp-lac-lab\n' > /etc/hosts
echo '/dev/vda / ext4 errors=remount-ro 0 1' > /etc/fstab

install -d -m 0700 /root/.ssh
install -m 0600 "$1" /root/.ssh/authorized_keys
cat > /etc/ssh/sshd_config.d/l2tp-lac-lab.conf <<'CONF'
PasswordAuthentication no
PermitRootLogin prohibit-password
UseDNS no
CONF

# The user-mode network hands out an address by DHCP; nothing waits for it.
cat > /etc/systemd/network/20-lab.network <<'CONF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
CONF
systemctl enable systemd-networkd.service

# Timers and waits that cost boot time under emulation and do nothing offline.
systemctl mask systemd-networkd-wait-online.service \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer \
    2>/dev/null || true

# pppd always reads /etc/ppp/options; the distro's copy turns on echo
# requests and proxy ARP. The tests set every option on the command line.
echo '# Options come from the command line in this lab.' > /etc/ppp/options

# The guest holds no secret that matters: the image's host keys are shared
# by every guest made from it, and the controller does not record them.

#!/usr/bin/env bash
# Builds the tiny test guest used by the libvirt QEMU tests: Debian's cloud kernel and a busybox
# initramfs whose init prints a marker, loads the ACPI power-button modules and runs acpid, so a
# graceful shutdown (ACPI) really powers the guest off. A guest with a virtio NIC (an OpenStack server
# on a Neutron network) asks for a DHCP lease on eth0, prints
# `INTERCLOUD-GUEST-ADDRESS eth0 ADDRESS` on its console and serves `INTERCLOUD-GUEST-HTTP boot=ID`
# over HTTP on port 8080 (busybox httpd); without a NIC (the libvirt tests) none of that runs.
#
#   scripts/guest-build.sh OUT_DIR      -> OUT_DIR/vmlinuz, OUT_DIR/initrd.gz, OUT_DIR/disk.qcow2
#
# Needs: apt-get, dpkg-deb, gzip, xz-utils, qemu-img (qemu-utils); cpio comes from busybox itself.
# Idempotent: does nothing if OUT_DIR already holds all three files built by this version of the script.
set -euo pipefail
out=${1:?usage: guest-build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Rebuilt whenever this script changes.
stamp=$(sha256sum "$0" | cut -c1-16)
if [[ -s $out/vmlinuz && -s $out/initrd.gz && -s $out/disk.qcow2 && $(cat "$out/stamp" 2>/dev/null) == "$stamp" ]]; then exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0777 "$work"  # apt-get download drops privileges to _apt when it can
cd "$work"
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [[ -z $kernel_pkg ]]; then
    apt-get update -qq >/dev/null
    kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
apt-get download -qq "$kernel_pkg" busybox-static >/dev/null
mkdir kernel bb root
dpkg-deb -x "$kernel_pkg"_*.deb kernel
dpkg-deb -x busybox-static_*.deb bb
version=${kernel_pkg#linux-image-}
cp kernel/boot/vmlinuz-"$version" "$out/vmlinuz.partial"

mkdir -p root/{bin,sbin,proc,sys,dev,etc/acpi,lib/modules,tmp,run,var/log,var/run,www}
cp bb/bin/busybox root/bin/busybox
# The power button needs button.ko and evdev.ko when they are modules (they are in the cloud flavour);
# a virtio NIC needs virtio_pci and virtio_net with what they depend on. insmod does not resolve
# dependencies: init loads them in the order of lib/modules/order, which is this list's.
for module in drivers/acpi/button.ko drivers/input/evdev.ko drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko \
              drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci.ko \
              net/core/failover.ko drivers/net/net_failover.ko drivers/net/virtio_net.ko; do
    for candidate in kernel/lib/modules/"$version"/kernel/$module kernel/lib/modules/"$version"/kernel/$module.xz; do
        if [[ -f $candidate ]]; then
            if [[ $candidate == *.xz ]]; then xz -dc "$candidate" > root/lib/modules/$(basename "$module"); else cp "$candidate" root/lib/modules/; fi
            basename "$module" >> root/lib/modules/order
        fi
    done
done
# udhcpc runs this with the lease in its environment ($ip, $mask, $router).
mkdir -p root/etc/udhcpc
cat > root/etc/udhcpc/script <<'SH'
#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    echo "INTERCLOUD-GUEST-ADDRESS $interface $ip" > /dev/console ;;
esac
SH
chmod +x root/etc/udhcpc/script
cat > root/etc/acpid.conf <<'CONF'
PWRF power
CONF
cat > root/etc/acpi/power <<'SH'
#!/bin/sh
echo "INTERCLOUD-GUEST-POWEROFF" > /dev/console
poweroff -f
SH
chmod +x root/etc/acpi/power
cat > root/init <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" 2>/dev/null; done
# acpid opens the event devices present when it starts: give devtmpfs a moment to create them all.
[ -e /dev/input/event1 ] || sleep 0.5
acpid -f -c /etc/acpi -a /etc/acpid.conf -l /tmp/acpid.log -p /tmp/acpid.pid &
sleep 0.2
echo "guest: modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ') inputs: $(ls /dev/input 2>&1 | tr '\n' ' ')" > /dev/console
echo "guest: acpid: $(pidof acpid)" > /dev/console
# The boot id tells one boot from the next where a console log restarts with every boot (Nova's).
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "INTERCLOUD-GUEST-READY boot=$boot" > /dev/console
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    echo "INTERCLOUD-GUEST-HTTP boot=$boot" > /www/index.html
    httpd -p 8080 -h /www
    udhcpc -i eth0 -s /etc/udhcpc/script -b -t 60 -T 2 -A 2 -q >/dev/null 2>&1 &
fi
while true; do sleep 3600; done
SH
chmod +x root/init
(cd root && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$out/initrd.gz.partial"
# A small disk so the guest has a real block device to export and import.
qemu-img create -q -f qcow2 "$out/disk.qcow2.partial" 64M
mv "$out/vmlinuz.partial" "$out/vmlinuz"
mv "$out/initrd.gz.partial" "$out/initrd.gz"
mv "$out/disk.qcow2.partial" "$out/disk.qcow2"
chmod 0644 "$out"/vmlinuz "$out"/initrd.gz "$out"/disk.qcow2
echo "$stamp" > "$out/stamp"

#!/usr/bin/env bash
# Runs a real, single-machine OpenStack (Debian 12 "Zed" packages) on loopback, for the tests of the
# OpenStack cloud driver: Keystone, Glance, Placement, the Neutron API, Nova with one libvirt/QEMU
# compute service, a project with a user and an application credential, flavors and the busybox
# test guest (scripts/guest-build.sh) as Glance images.
#
#   scripts/openstack.sh install                 apt-get install everything (idempotent, quiet)
#   scripts/openstack.sh start DIR [WATCH_PID]   start everything with all state under DIR, print the
#                                                environment; with WATCH_PID, everything stops when
#                                                that process exits. Idempotent when already running.
#   scripts/openstack.sh stop DIR                stop every process it started, guests included
#   scripts/openstack.sh status DIR
#
# What start writes: DIR/openstack.env (export lines: OS_* for the member user, INTERCLOUD_OS_*),
# DIR/openstack-appcred.env (OS_AUTH_TYPE=v3applicationcredential with id and secret) and
# DIR/openstack.json (the same facts, for tests). Ports: a block of 10 from 20000-39990 picked from
# DIR's path and kept in DIR/port-base (override with OPENSTACK_PORT_BASE on the first start), so two
# DIRs normally do not collide; start refuses to run if one of them is taken.
#
# Loopback only: every service listens on 127.0.0.1, Nova's my_ip is 127.0.0.1, guests get no
# network (--nic none), and nova-compute runs with refusing ssh/scp/rsync first on its PATH.
# libvirt: a private system-mode libvirtd in its own mount namespace (its /etc, /run, /var/lib,
# /var/log and /var/cache libvirt directories are bind mounts of DIR/libvirt/...), socket in DIR, so
# it neither uses nor disturbs the machine's libvirtd. Guests use QEMU TCG (virt_type = qemu).
#
# Why by hand: Debian's packages expect systemd and debconf to configure them; here every daemon is
# started directly (the packages' postinsts are kept from starting or configuring anything).
# Debian's OpenStack programs run /usr/bin/python3; they are always called by their /usr/bin path.
#
# Programs and their packages: mariadbd, mariadb-install-db, mariadb (mariadb-server, mariadb-client);
# rabbitmq-server, rabbitmqctl (rabbitmq-server); keystone-manage + keystone-wsgi-public (keystone);
# glance-api, glance-manage (glance-api, glance-common); placement-api, placement-manage
# (placement-api, placement-common); neutron-api + neutron-db-manage (neutron-api, neutron-common);
# nova-api-wsgi, nova-conductor, nova-scheduler, nova-compute, nova-manage (nova-api, nova-conductor,
# nova-scheduler, nova-compute, nova-compute-kvm, nova-common); uwsgi (uwsgi-core via
# uwsgi-plugin-python3); libvirtd, virsh (libvirt-daemon-system, libvirt-clients); qemu-system-x86;
# openstack (python3-openstackclient, python3-osc-placement); curl; unshare, setsid (util-linux).
# python3-swiftclient comes along and ships /usr/bin/swift, which would shadow the Swift toolchain's
# `swift`: install diverts it to /usr/bin/swift.openstack first.
set -euo pipefail
cmd=${1:?usage: openstack.sh install | start DIR [WATCH_PID] | stop DIR | status DIR}
here=$(cd "$(dirname "$0")" && pwd)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

packages=(mariadb-server mariadb-client rabbitmq-server keystone glance-api placement-api neutron-api
          nova-api nova-conductor nova-scheduler nova-compute-kvm python3-openstackclient
          python3-osc-placement python3-glanceclient python3-novaclient python3-pymysql
          uwsgi-plugin-python3 libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils curl
          util-linux)

install() {
    local missing=() package
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    # python3-swiftclient's /usr/bin/swift must never exist: it shadows the Swift toolchain.
    if ! dpkg-divert --list /usr/bin/swift | grep -q swift.openstack; then
        $SUDO dpkg-divert --quiet --local --rename --divert /usr/bin/swift.openstack --add /usr/bin/swift
    fi
    # No postinst may start a daemon (they would take the ports) or configure a database, RabbitMQ,
    # Keystone users or endpoints: start does all of that under its own directory.
    local created_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local seeds="" q
    for q in keystone/configure_db keystone/create-admin-tenant keystone/register-endpoint \
             glance/configure_db glance/configure_rabbit glance/configure_ksat glance/configure_api-endpoint \
             placement/configure_db placement/configure_ksat placement/configure_api-endpoint \
             neutron/configure_db neutron/configure_rabbit neutron/configure_ksat neutron/configure_nova \
             nova/configure_db novaapi/configure_db nova/configure_rabbit nova/configure_ksat \
             nova/configure_api-endpoint nova/configure_neutron nova/configure_placement; do
        seeds+="${q%%/*} $q boolean false"$'\n'
    done
    $SUDO debconf-set-selections <<<"$seeds"
    $SUDO apt-get update -qq
    local log status=0
    log=$(mktemp)
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >"$log" 2>&1 || status=$?
    [[ -n $created_policy ]] && $SUDO rm -f /usr/sbin/policy-rc.d
    if [[ $status -ne 0 ]]; then cat "$log" >&2; rm -f "$log"; echo "openstack.sh: apt-get install failed" >&2; exit 1; fi
    rm -f "$log"
    # Nothing of this runs as a machine service: the tests start private instances.
    local service
    for service in mariadb rabbitmq-server libvirtd virtlogd virtlockd keystone glance-api placement-api \
                   neutron-api neutron-rpc-server nova-api nova-conductor nova-scheduler nova-compute; do
        $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    done
    if [[ -e /usr/bin/swift ]]; then echo "openstack.sh: /usr/bin/swift exists, it shadows the Swift toolchain" >&2; exit 1; fi
}

case $cmd in
install) install ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

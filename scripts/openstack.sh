#!/usr/bin/env bash
# Runs a real, single-machine OpenStack (Debian 12 "Zed" packages) on loopback, for the tests of the
# OpenStack cloud driver: Keystone, Glance, Placement, Neutron (API, RPC server, Linux bridge agent,
# DHCP agent), Nova with one libvirt/QEMU compute service, a project with a user and an application
# credential, flavors, a host-only guest network and the busybox test guest (scripts/guest-build.sh)
# as Glance images.
#
#   scripts/openstack.sh install                 apt-get install everything (idempotent, quiet)
#   scripts/openstack.sh start DIR [WATCH_PID]   start everything with all state under DIR, print the
#                                                environment; with WATCH_PID, everything stops when
#                                                that process exits. Idempotent when already running.
#   scripts/openstack.sh stop DIR                stop every process it started, guests included
#   scripts/openstack.sh status DIR
#
# What start writes: DIR/openstack.env (export lines: OS_* for the member user, INTERCLOUD_OS_*),
# DIR/openstack-appcred.env (OS_AUTH_TYPE=v3applicationcredential with id and secret),
# DIR/openstack-admin.env (the admin user) and DIR/openstack.json (the same facts, for tests); logs
# in DIR/log. Servers get an address on the shared network `intercloud-private` (its id is
# INTERCLOUD_OS_NETWORK_ID and network_id in openstack.json: `server create --network ID`), or none
# with `--nic none` (compute API 2.37 or later). Ports: a block of 10 from 20000-39990 picked from
# DIR's path and kept in DIR/port-base (override with OPENSTACK_PORT_BASE on the first start), so two
# DIRs normally do not collide; start refuses to run if one of them is taken.
#
# Loopback and host only: every service listens on 127.0.0.1, Nova's my_ip is 127.0.0.1, and
# nova-compute runs with refusing ssh/scp/rsync first on its PATH. The guest network is a flat
# Neutron network on a bridge whose only other member is a veth pair into this machine: a /24 of
# 10.234.0.0/16 (network_cidr in openstack.json) with DHCP (dnsmasq in namespace qdhcp-NETWORKID) and
# no gateway; the host has .1 (host_address) on the veth's far end, so it reaches the guests and they
# reach it, and nothing else (no default route in the guests, no forwarding or NAT set up here).
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
# (placement-api, placement-common); neutron-api + neutron-db-manage + neutron-rpc-server (neutron-api,
# neutron-common); neutron-linuxbridge-agent (neutron-linuxbridge-agent); neutron-dhcp-agent, dnsmasq
# (neutron-dhcp-agent, dnsmasq-base);
# nova-api-wsgi, nova-conductor, nova-scheduler, nova-compute, nova-manage (nova-api, nova-conductor,
# nova-scheduler, nova-compute, nova-compute-kvm, nova-common); uwsgi (uwsgi-core via
# uwsgi-plugin-python3); libvirtd, virsh (libvirt-daemon-system, libvirt-clients); qemu-system-x86;
# openstack (python3-openstackclient, python3-osc-placement); curl; unshare, setsid (util-linux);
# ip, ss (iproute2).
# python3-swiftclient comes along and ships /usr/bin/swift, which would shadow the Swift toolchain's
# `swift`: install diverts it to /usr/bin/swift.openstack first.
set -euo pipefail
cmd=${1:?usage: openstack.sh install | start DIR [WATCH_PID] | stop DIR | status DIR}
here=$(cd "$(dirname "$0")" && pwd)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

packages=(mariadb-server mariadb-client rabbitmq-server keystone glance-api placement-api neutron-api
          neutron-linuxbridge-agent neutron-dhcp-agent dnsmasq-base nova-api nova-conductor nova-scheduler
          nova-compute-kvm python3-openstackclient python3-osc-placement python3-glanceclient python3-novaclient python3-pymysql
          uwsgi-plugin-python3 libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils curl
          util-linux iproute2)

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
    # None of these runs as a machine service: start runs private instances. (The machine's libvirtd
    # is left as it is; the private one does not use it.)
    local service
    for service in mariadb rabbitmq-server keystone glance-api placement-api \
                   neutron-api neutron-rpc-server neutron-linuxbridge-agent neutron-dhcp-agent nova-api nova-conductor \
                   nova-scheduler nova-compute; do
        $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    done
    if [[ -e /usr/bin/swift ]]; then echo "openstack.sh: /usr/bin/swift exists, it shadows the Swift toolchain" >&2; exit 1; fi
}

# ---------------------------------------------------------------------------------------------------
# start/stop/status

t0=$(date +%s)
say() { echo "openstack: [$(( $(date +%s) - t0 ))s] $*" >&2; }
die() { echo "openstack: $*" >&2; exit 1; }

setup_dir() {
    dir=${1:?directory}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ ! -s $dir/port-base ]]; then
        local hash
        hash=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
        echo "${OPENSTACK_PORT_BASE:-$(( 20000 + (hash % 2000) * 10 ))}" > "$dir/port-base"
    fi
    base=$(cat "$dir/port-base")
    p_mysql=$base p_amqp=$((base + 1)) p_dist=$((base + 2)) p_epmd=$((base + 3)) p_keystone=$((base + 4))
    p_glance=$((base + 5)) p_placement=$((base + 6)) p_neutron=$((base + 7)) p_nova=$((base + 8))
    pids=$dir/pids logs=$dir/log etc=$dir/etc
    sock=$dir/libvirt/sock/libvirt-sock
    libvirt_uri="qemu+unix:///system?socket=$sock"
    keystone_url=http://127.0.0.1:$p_keystone/v3
    # Guest network: a /24 of 10.234.0.0/16 picked from the port block (two DIRs normally differ),
    # the host's address .1 on the host end of a veth pair whose other end is the flat network's
    # interface; names carry the port base (at most 15 characters).
    physnet=intercloud
    local octet=$(( base / 10 % 256 ))
    net_cidr=10.234.$octet.0/24 host_address=10.234.$octet.1
    net_ifc=icnet$base net_host=ichost$base
}

alive() { [[ -s $pids/$1.pid ]] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null; }

# launch NAME COMMAND...: runs COMMAND in a session of its own (so stop can end its whole process
# group), output to DIR/log/NAME.out, pid in DIR/pids/NAME.pid.
launch() {
    local name=$1; shift
    setsid "$@" </dev/null >>"$logs/$name.out" 2>&1 &
    echo $! > "$pids/$name.pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME SECONDS COMMAND...: until COMMAND succeeds; fails with NAME's log if its process died.
wait_for() {
    local name=$1 deadline=$(( $(date +%s) + $2 )); shift 2
    while (( $(date +%s) < deadline )); do
        "$@" && return 0
        if [[ -s $pids/$name.pid ]] && ! alive "$name"; then break; fi
        sleep 0.25
    done
    echo "openstack: $name did not come up; the end of its logs:" >&2
    tail -n 30 "$logs/$name".* >&2 2>/dev/null || true
    return 1
}

# uwsgi's HTTP socket does not do keep-alive right: clients reusing a connection get it closed
# under them (RemoteDisconnected), so every answer says Connection: close.
uwsgi_app() {  # uwsgi_app NAME PORT WSGI_FILE PROCESSES [extra uwsgi args...]
    local name=$1 port=$2 file=$3 processes=$4; shift 4
    launch "$name" /usr/bin/uwsgi --plugin python3 --master --need-app --die-on-term --lazy-apps \
        --http-socket "127.0.0.1:$port" --wsgi-file "$file" --processes "$processes" --threads 2 \
        --enable-threads --buffer-size 65535 --add-header 'Connection: close' "$@"
}

stop_all() {
    # Guests first, while libvirtd can still destroy them; then every process group, then any QEMU
    # libvirt started (its pid files are under DIR/libvirt/run/qemu).
    if [[ -S $sock ]] && alive libvirtd; then
        local domain
        for domain in $(virsh -q -c "$libvirt_uri" list --name 2>/dev/null); do
            virsh -q -c "$libvirt_uri" destroy "$domain" >/dev/null 2>&1 || true
        done
    fi
    local file pid name
    for name in watcher nova-compute nova-scheduler nova-conductor nova-api neutron-dhcp neutron-linuxbridge neutron-rpc neutron \
                placement glance keystone libvirtd rabbitmq epmd mariadb; do
        file=$pids/$name.pid
        [[ -s $file ]] || continue
        pid=$(cat "$file")
        [[ $pid == "$$" ]] && continue  # stop run by the watcher itself
        if [[ $name == watcher ]]; then kill -TERM "$pid" 2>/dev/null || true; continue; fi
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 40); do
        local any=""
        for file in "$pids"/*.pid; do [[ -s $file && $(cat "$file") != "$$" ]] && kill -0 "$(cat "$file")" 2>/dev/null && any=1; done
        [[ -z $any ]] && break
        sleep 0.25
    done
    for file in "$pids"/*.pid "$dir"/libvirt/run/qemu/*.pid; do
        [[ -s $file ]] || continue
        pid=$(cat "$file")
        rm -f "$file"
        [[ $pid == "$$" ]] && continue
        kill -KILL -- "-$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    done
    # Should an epmd have been started by RabbitMQ itself (it daemonizes), it is the one on our port.
    pid=$(ss -Hltnp "sport = :$p_epmd" 2>/dev/null | sed -n 's/.*"epmd",pid=\([0-9]*\).*/\1/p' | head -n 1)
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$sock"
    stop_network
}

# The guest network's pieces in this machine's namespace: a veth pair, $net_host with the host
# address, $net_ifc the flat network's interface (the Linux bridge agent adds it to the network's
# bridge brqNETWORKID). Nothing routes or forwards: the subnet has no gateway, so guests get no
# default route, and the host's own forwarding setting is left as it is.
start_network() {
    ip link del "$net_ifc" 2>/dev/null || true
    [[ -z $(ip -4 route show "$net_cidr") ]] || die "$net_cidr is already routed on this machine ($(ip -4 route show "$net_cidr")); start with another DIR or OPENSTACK_PORT_BASE"
    ip link add "$net_ifc" type veth peer name "$net_host"
    local ifc
    for ifc in "$net_ifc" "$net_host"; do
        [[ -w /proc/sys/net/ipv6/conf/$ifc/disable_ipv6 ]] && echo 1 > "/proc/sys/net/ipv6/conf/$ifc/disable_ipv6"
        ip link set "$ifc" up
    done
    ip addr add "$host_address/24" dev "$net_host"
}

# What the agents leave behind when they stop: the DHCP agent's dnsmasq (a daemon of its own) and
# namespace qdhcp-NETWORKID for each network under DIR/neutron/dhcp, the network's bridge, the veth
# pair. Only what DIR's own state names is touched.
stop_network() {
    local d id pid ids=()
    for d in "$dir"/neutron/dhcp/*/; do [[ -d $d ]] && ids+=("$(basename "$d")"); done
    [[ -s $dir/network-id ]] && ids+=("$(cat "$dir/network-id")")
    for id in "${ids[@]}"; do
        [[ $id =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] || continue
        pid=$(cat "$dir/neutron/dhcp/$id/pid" 2>/dev/null || true)
        if [[ -n $pid ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "dnsmasq.*$dir/neutron/dhcp/$id"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/neutron/dhcp/$id/pid"
        ip netns delete "qdhcp-$id" 2>/dev/null || true
        ip link del "brq${id:0:11}" 2>/dev/null || true
    done
    ip link del "$net_ifc" 2>/dev/null || true
}

print_env() { cat "$dir/openstack.env"; }

running() {
    [[ -s $dir/openstack.json && -s $dir/openstack.env ]] || return 1
    local name
    for name in mariadb rabbitmq libvirtd keystone glance placement neutron neutron-rpc neutron-linuxbridge neutron-dhcp \
                nova-api nova-conductor nova-scheduler nova-compute; do
        alive "$name" || return 1
    done
    curl -sf -o /dev/null "$keystone_url"
}

status() {
    local name state
    for name in mariadb rabbitmq libvirtd keystone glance placement neutron neutron-rpc neutron-linuxbridge neutron-dhcp \
                nova-api nova-conductor nova-scheduler nova-compute watcher; do
        if alive "$name"; then state="running (pid $(cat "$pids/$name.pid"))"; elif [[ -e $pids/$name.pid ]]; then state=dead; else state="not started"; fi
        printf '%-20s %s\n' "$name" "$state"
    done
    echo "ports: mysql $p_mysql amqp $p_amqp keystone $p_keystone glance $p_glance placement $p_placement neutron $p_neutron nova $p_nova"
    echo "guest network: $net_cidr, host address $host_address on $net_host"
    if [[ -S $sock ]]; then echo "guests:"; virsh -q -c "$libvirt_uri" list --all 2>/dev/null || true; fi
    running
}

authtoken() {  # the [keystone_authtoken] section of every service: they all act as the admin user
    cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $keystone_url
auth_url = $keystone_url
auth_type = password
username = admin
password = $admin_password
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOF
}

ksa() {  # ksa SECTION: keystoneauth options for a section nova uses to call another service as admin
    cat <<EOF
[$1]
auth_type = password
auth_url = $keystone_url
username = admin
password = $admin_password
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOF
}

write_configs() {
    local db="mysql+pymysql://openstack:$db_password@127.0.0.1:$p_mysql"
    local amqp="rabbit://guest:guest@127.0.0.1:$p_amqp/"
    mkdir -p "$etc"/{keystone,nova,placement} "$dir"/keystone "$dir"/glance/{images,staging} "$dir"/nova/{instances,lock} \
        "$dir"/neutron/lock "$dir"/bin
    cat > "$etc/keystone/keystone.conf" <<EOF
[DEFAULT]
log_file = $logs/keystone.log
[database]
connection = $db/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $dir/keystone/fernet-keys
[fernet_receipts]
key_repository = $dir/keystone/fernet-keys
[credential]
key_repository = $dir/keystone/credential-keys
[cache]
enabled = false
EOF
    cat > "$etc/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $p_glance
workers = 1
log_file = $logs/glance.log
node_staging_uri = file://$dir/glance/staging
[database]
connection = $db/glance
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $dir/glance/images
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[oslo_concurrency]
lock_path = $dir/glance
$(authtoken)
EOF
    cat > "$etc/placement/placement.conf" <<EOF
[DEFAULT]
log_file = $logs/placement.log
[placement_database]
connection = $db/placement
[api]
auth_strategy = keystone
$(authtoken)
EOF
    # Neutron: the API under uwsgi, the RPC server (the agents' side of the plugin), and on the same
    # host a Linux bridge agent and a DHCP agent. ML2 with the linuxbridge mechanism driver and one
    # flat provider network, physnet "intercloud", whose "physical" interface is one end of a veth
    # pair made by start (the other end, in this machine's namespace, holds the host address): see
    # start_network. The router plugin is loaded because Zed fails the first GET /ports without it.
    # Security groups: the server says they are on, so a port binding carries port_filter = true and
    # Nova's os-vif adds no iptables rules of its own; the agent's firewall is noop, and the network
    # is made without port security, so no agent writes iptables or ebtables rules either.
    cat > "$etc/neutron.conf" <<EOF
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
api_paste_config = /etc/neutron/api-paste.ini
transport_url = $amqp
state_path = $dir/neutron
log_file = $logs/neutron.log
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
rpc_workers = 1
rpc_state_report_workers = 0
[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0
[database]
connection = $db/neutron
[experimental]
linuxbridge = true
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers = linuxbridge
extension_drivers = port_security
[ml2_type_flat]
flat_networks = $physnet
[securitygroup]
enable_security_group = true
firewall_driver = iptables
[agent]
root_helper =
[oslo_concurrency]
lock_path = $dir/neutron/lock
[oslo_messaging_notifications]
driver = noop
$(authtoken)
EOF
    # The agents run as root: commands and privsep daemons are started directly, not through sudo +
    # neutron-rootwrap (an empty root_helper runs the command as it is).
    local agent section
    for agent in linuxbridge dhcp; do
        {
            case $agent in
            linuxbridge) cat <<EOF
[linux_bridge]
physical_interface_mappings = $physnet:$net_ifc
[vxlan]
enable_vxlan = false
[securitygroup]
enable_security_group = false
firewall_driver = noop
[agent]
polling_interval = 1
root_helper =
EOF
            ;;
            dhcp) cat <<EOF
[DEFAULT]
interface_driver = linuxbridge
enable_isolated_metadata = false
dnsmasq_base_log_dir = $logs/dnsmasq
[agent]
root_helper =
EOF
            ;;
            esac
            for section in privsep privsep_dhcp_release privsep_ovs_vsctl privsep_namespace privsep_conntrack privsep_link; do
                printf '[%s]\nhelper_command = /usr/bin/privsep-helper --config-file %s --config-file %s\n' \
                    "$section" "$etc/neutron.conf" "$etc/neutron-$agent-agent.ini"
            done
        } > "$etc/neutron-$agent-agent.ini"
    done
    # nova-api's WSGI app takes its paste pipeline from the first file of its configuration directory.
    cp /etc/nova/api-paste.ini "$etc/nova/api-paste.ini"
    local privsep="/usr/bin/privsep-helper --config-file $etc/nova/nova.conf" section
    {
        cat <<EOF
[DEFAULT]
my_ip = 127.0.0.1
state_path = $dir/nova
instances_path = $dir/nova/instances
transport_url = $amqp
compute_driver = libvirt.LibvirtDriver
enabled_apis = osapi_compute
shutdown_timeout = 0
allow_resize_to_same_host = true
reserved_host_memory_mb = 256
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
# AMQP heartbeats off: under uwsgi, nova-api's heartbeat thread starves when the machine is busy,
# RabbitMQ drops the connection ("Too many heartbeats missed") and a request waits a minute for the
# reconnect. Everything is on loopback, where a dead peer is seen at once anyway.
[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0
[api]
auth_strategy = keystone
[api_database]
connection = $db/nova_api
[database]
connection = $db/nova
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[libvirt]
virt_type = qemu
cpu_mode = none
connection_uri = $libvirt_uri
wait_soft_reboot_seconds = 5
snapshot_image_format = qcow2
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[scheduler]
discover_hosts_in_cells_interval = 10
[oslo_concurrency]
lock_path = $dir/nova/lock
[oslo_messaging_notifications]
driver = noop
[glance]
region_name = RegionOne
[cinder]
os_region_name = RegionOne
$(authtoken)
$(ksa placement)
$(ksa neutron)
EOF
        # nova-compute runs as root: privsep daemons are started directly, not through sudo + rootwrap.
        for section in nova_sys_admin privsep_osbrick vif_plug_linux_bridge_privileged vif_plug_ovs_privileged; do
            printf '[%s]\nhelper_command = %s\n' "$section" "$privsep"
        done
    } > "$etc/nova/nova.conf"
    # Nothing may leave this machine: Nova copies disks with ssh/scp/rsync only for migrations and
    # resizes between hosts; these stubs come first on nova-compute's PATH and refuse.
    for section in ssh scp rsync; do
        printf '#!/bin/sh\necho "%s refused: this OpenStack is loopback only" >&2\nexit 255\n' "$section" > "$dir/bin/$section"
        chmod +x "$dir/bin/$section"
    done
}

start_mariadb() {
    if [[ ! -d $dir/mysql/data/mysql ]]; then
        mkdir -p "$dir/mysql"
        /usr/bin/mariadb-install-db --no-defaults --user=root --datadir="$dir/mysql/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$logs/mariadb.install" 2>&1 \
            || { cat "$logs/mariadb.install" >&2; die "mariadb-install-db failed"; }
    fi
    launch mariadb /usr/sbin/mariadbd --no-defaults --user=root --datadir="$dir/mysql/data" \
        --socket="$dir/mysql/mysql.sock" --port="$p_mysql" --bind-address=127.0.0.1 \
        --pid-file="$dir/mysql/mariadb.pid" --log-error="$logs/mariadb.log" --skip-name-resolve \
        --max-connections=1000 --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 \
        --innodb-doublewrite=0 --skip-log-bin --character-set-server=utf8mb4
}

sql() { /usr/bin/mariadb --no-defaults -S "$dir/mysql/mysql.sock" -u root -N -e "$1"; }

start_rabbitmq() {
    mkdir -p "$dir/rabbitmq/home" "$dir/rabbitmq/mnesia"
    echo "[]." > "$dir/rabbitmq/enabled_plugins"
    # Erlang's port mapper of our own, on our port, so stop can end it (RabbitMQ would daemonize one).
    launch epmd env ERL_EPMD_ADDRESS=127.0.0.1 /usr/bin/epmd -port "$p_epmd"
    printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users.guest = true\n' "$p_amqp" > "$dir/rabbitmq/rabbitmq.conf"
    launch rabbitmq env HOME="$dir/rabbitmq/home" RABBITMQ_NODENAME="rabbit-$base@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$p_amqp" RABBITMQ_DIST_PORT="$p_dist" \
        ERL_EPMD_PORT="$p_epmd" ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONF_ENV_FILE=/dev/null \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/rabbitmq/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$logs" RABBITMQ_LOGS="$logs/rabbitmq.log" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        RABBITMQ_PID_FILE="$dir/rabbitmq/rabbitmq.pid" /usr/lib/rabbitmq/bin/rabbitmq-server
}

start_libvirtd() {
    local d=$dir/libvirt
    mkdir -p "$d"/{run,lib,log,cache,sock}
    if [[ ! -d $d/etc ]]; then
        cp -a /etc/libvirt "$d/etc"
        # No libvirt network is started (no virbr0, no dnsmasq of libvirt's): a guest's only NIC is
        # its Neutron port.
        rm -rf "$d/etc/qemu/networks/autostart"
        cat >> "$d/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$d/sock"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$logs/libvirtd.log"
EOF
        cat >> "$d/etc/qemu.conf" <<EOF
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
    fi
    local target
    for target in /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do mkdir -p "$target"; done
    # Its own mount namespace (the machine's libvirt directories replaced by DIR's). It stays in the
    # machine's network namespace, where Nova and the Linux bridge agent put the guests' tap devices
    # on the network's bridge; the only network guests can reach is that bridge (start_network).
    launch libvirtd unshare --mount --propagation private sh -c '
        d=$1
        mount --bind "$d/etc" /etc/libvirt && mount --bind "$d/run" /run/libvirt &&
        mount --bind "$d/lib" /var/lib/libvirt && mount --bind "$d/log" /var/log/libvirt &&
        mount --bind "$d/cache" /var/cache/libvirt || exit 1
        exec libvirtd --pid-file "$d/libvirtd.pid"' libvirtd "$d"
}

start_all() {
    mkdir -p "$pids" "$logs"
    local port
    for port in $p_mysql $p_amqp $p_dist $p_epmd $p_keystone $p_glance $p_placement $p_neutron $p_nova; do
        port_open "$port" && die "port $port (of the block $base-$((base + 9)) for $dir) is already in use; stop what holds it or start with another DIR"
    done
    if [[ ! -s $dir/secrets ]]; then
        printf 'admin_password=%s\ndb_password=%s\nuser_password=%s\n' \
            "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" \
            "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" > "$dir/secrets"
        chmod 0600 "$dir/secrets"
    fi
    # shellcheck disable=SC1091
    source "$dir/secrets"
    write_configs
    say "starting MariaDB, RabbitMQ, libvirtd (ports $base-$((base + 9)))"
    start_mariadb
    start_rabbitmq
    start_libvirtd
    wait_for mariadb 60 sql "select 1" >/dev/null 2>&1
    local db
    for db in keystone glance placement neutron nova_api nova nova_cell0; do
        sql "CREATE DATABASE IF NOT EXISTS $db"
    done
    sql "CREATE USER IF NOT EXISTS 'openstack'@'127.0.0.1' IDENTIFIED BY '$db_password'; GRANT ALL ON *.* TO 'openstack'@'127.0.0.1'"
    say "MariaDB up; creating the databases"
    local dbsync=$dir/dbsync
    mkdir -p "$dbsync"
    (
        /usr/bin/keystone-manage --config-file "$etc/keystone/keystone.conf" db_sync &&
        /usr/bin/keystone-manage --config-file "$etc/keystone/keystone.conf" fernet_setup --keystone-user root --keystone-group root &&
        /usr/bin/keystone-manage --config-file "$etc/keystone/keystone.conf" credential_setup --keystone-user root --keystone-group root &&
        /usr/bin/keystone-manage --config-file "$etc/keystone/keystone.conf" bootstrap --bootstrap-password "$admin_password" \
            --bootstrap-admin-url "$keystone_url" --bootstrap-internal-url "$keystone_url" \
            --bootstrap-public-url "$keystone_url" --bootstrap-region-id RegionOne
    ) >"$logs/keystone.dbsync" 2>&1 &
    local j_keystone=$!
    /usr/bin/glance-manage --config-file "$etc/glance-api.conf" db_sync >"$logs/glance.dbsync" 2>&1 &
    local j_glance=$!
    /usr/bin/placement-manage --config-file "$etc/placement/placement.conf" db sync >"$logs/placement.dbsync" 2>&1 &
    local j_placement=$!
    /usr/bin/neutron-db-manage --config-file "$etc/neutron.conf" upgrade heads >"$logs/neutron.dbsync" 2>&1 &
    local j_neutron=$!
    (
        n() { /usr/bin/nova-manage --config-file "$etc/nova/nova.conf" "$@"; }
        # The cell list is read whole before grep looks at it: `grep -q` stops reading at its first
        # match, nova-manage then dies of SIGPIPE, and with pipefail a cell that exists looked missing.
        n api_db sync &&
        cells=$(n cell_v2 list_cells) &&
        { grep -q ' cell0 ' <<<"$cells" || n cell_v2 map_cell0 --database_connection "mysql+pymysql://openstack:$db_password@127.0.0.1:$p_mysql/nova_cell0"; } &&
        { grep -q ' cell1 ' <<<"$cells" || n cell_v2 create_cell --name cell1; } &&
        n db sync
    ) >"$logs/nova.dbsync" 2>&1 &
    local j_nova=$!
    wait $j_keystone || { cat "$logs/keystone.dbsync" >&2; die "keystone database setup failed"; }
    say "Keystone database ready; starting Keystone"
    OS_KEYSTONE_CONFIG_DIR=$etc/keystone uwsgi_app keystone "$p_keystone" /usr/bin/keystone-wsgi-public 2
    wait_for rabbitmq 60 port_open "$p_amqp"
    wait_for keystone 60 curl -sf -o /dev/null "$keystone_url"
    say "Keystone up; registering services, project, user"
    setup_py keystone
    wait $j_glance || { cat "$logs/glance.dbsync" >&2; die "glance db_sync failed"; }
    launch glance /usr/bin/glance-api --config-file "$etc/glance-api.conf"
    wait $j_placement || { cat "$logs/placement.dbsync" >&2; die "placement db sync failed"; }
    OS_PLACEMENT_CONFIG_DIR=$etc/placement uwsgi_app placement "$p_placement" /usr/bin/placement-api 1
    wait $j_neutron || { cat "$logs/neutron.dbsync" >&2; die "neutron-db-manage failed"; }
    OS_NEUTRON_CONFIG_DIR=$etc OS_NEUTRON_CONFIG_FILES=neutron.conf uwsgi_app neutron "$p_neutron" /usr/bin/neutron-api 1
    launch neutron-rpc /usr/bin/neutron-rpc-server --config-file "$etc/neutron.conf" --log-file "$logs/neutron-rpc.log"
    start_network
    local agent
    for agent in linuxbridge dhcp; do
        launch neutron-$agent /usr/bin/neutron-$agent-agent --config-file "$etc/neutron.conf" \
            --config-file "$etc/neutron-$agent-agent.ini" --log-file "$logs/neutron-$agent-agent.log"
    done
    wait $j_nova || { cat "$logs/nova.dbsync" >&2; die "nova database setup failed"; }
    say "databases ready; starting Glance, Placement, Neutron, Nova"
    OS_NOVA_CONFIG_DIR=$etc/nova OS_NOVA_CONFIG_FILES="api-paste.ini;nova.conf" uwsgi_app nova-api "$p_nova" /usr/bin/nova-api-wsgi 2
    local service
    for service in conductor scheduler; do
        launch nova-$service /usr/bin/nova-$service --config-file "$etc/nova/nova.conf" --log-file "$logs/nova-$service.log"
    done
    wait_for libvirtd 30 virsh -q -c "$libvirt_uri" version >/dev/null
    launch nova-compute env PATH="$dir/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        /usr/bin/nova-compute --config-file "$etc/nova/nova.conf" --log-file "$logs/nova-compute.log"
    wait_for glance 60 port_open "$p_glance"
    wait_for placement 60 curl -sf -o /dev/null "http://127.0.0.1:$p_placement/"
    wait_for neutron 90 curl -sf -o /dev/null "http://127.0.0.1:$p_neutron/"
    wait_for nova-api 90 curl -sf -o /dev/null "http://127.0.0.1:$p_nova/"
    say "APIs up; creating flavors, images, application credential"
    local guest=$dir/guest
    "$here/guest-build.sh" "$guest"
    [[ -s $guest/disk.raw ]] || qemu-img convert -f qcow2 -O raw "$guest/disk.qcow2" "$guest/disk.raw"
    setup_py resources
    say "waiting for the compute service and its resource provider"
    wait_for nova-compute 180 setup_py compute
    say "ready"
}

# The registrations and resources, through openstacksdk (one Python process instead of dozens of
# openstack CLI calls). Each step is idempotent.
setup_py() {
    DIR=$dir STEP=$1 ADMIN_PASSWORD=$admin_password USER_PASSWORD=$user_password KEYSTONE_URL=$keystone_url \
    PHYSNET=$physnet NET_CIDR=$net_cidr HOST_ADDRESS=$host_address \
    P_GLANCE=$p_glance P_PLACEMENT=$p_placement P_NEUTRON=$p_neutron P_NOVA=$p_nova NOVA_CONF=$etc/nova/nova.conf \
    /usr/bin/python3 - <<'PY'
import json, os, subprocess, sys, time
import openstack
env = os.environ
d, step = env["DIR"], env["STEP"]
openstack.enable_logging(debug=False)
def connect(user, password, project):
    return openstack.connect(auth_url=env["KEYSTONE_URL"], username=user, password=password, project_name=project,
                             user_domain_name="Default", project_domain_name="Default", region_name="RegionOne",
                             interface="public", identity_api_version="3")
admin = connect("admin", env["ADMIN_PASSWORD"], "admin")

if step == "keystone":
    ks = admin.identity
    services = {"image": ("glance", env["P_GLANCE"], ""), "placement": ("placement", env["P_PLACEMENT"], ""),
                "network": ("neutron", env["P_NEUTRON"], ""), "compute": ("nova", env["P_NOVA"], "/v2.1")}
    for kind, (name, port, path) in services.items():
        service = next((s for s in ks.services() if s.type == kind), None) or ks.create_service(name=name, type=kind)
        have = {e.interface for e in ks.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                ks.create_endpoint(service_id=service.id, interface=interface, region_id="RegionOne",
                                   url=f"http://127.0.0.1:{port}{path}")
    project = ks.find_project("intercloud", domain_id="default") or ks.create_project(name="intercloud", domain_id="default",
                                                                                     description="Intercloud tests")
    user = ks.find_user("intercloud", domain_id="default")
    if user is None:
        user = ks.create_user(name="intercloud", domain_id="default", password=env["USER_PASSWORD"], default_project_id=project.id)
    member = ks.find_role("member")
    ks.assign_project_role_to_user(project, user, member)
    sys.exit(0)

if step == "resources":
    user = connect("intercloud", env["USER_PASSWORD"], "intercloud")
    # Neutron Zed answers 500 (Port has no attribute port_forwardings) to GET /ports until a network
    # list has loaded the remaining models; Nova lists ports for every server create.
    list(admin.network.networks())
    list(admin.network.ports())
    # ic.medium holds a migrated SimCloud sim.nano (512 MiB, 1 GiB disk).
    for name, ram, disk in (("ic.tiny", 128, 1), ("ic.small", 256, 1), ("ic.medium", 512, 2)):
        if admin.compute.find_flavor(name) is None:
            admin.compute.create_flavor(name=name, vcpus=1, ram=ram, disk=disk, is_public=True)
    g = os.path.join(d, "guest")
    # Each image carries the guest build's stamp: a DIR kept across a change of guest-build.sh gets
    # the new guest, and the images of the old one are deleted (servers booted from them keep running).
    stamp = open(os.path.join(g, "stamp")).read().strip()
    def image(name, path, disk_format, container_format, **properties):
        images = list(admin.image.images(name=name))
        found = [i for i in images if i.status == "active" and (i.properties or {}).get("intercloud_guest_stamp") == stamp]
        if found:
            return found[0]
        for old in images:
            admin.image.delete_image(old, ignore_missing=True)
        with open(path, "rb") as f:
            return admin.image.create_image(name=name, data=f, disk_format=disk_format, container_format=container_format,
                                            visibility="public", validate_checksum=False, wait=True,
                                            intercloud_guest_stamp=stamp, **properties)
    kernel = image("intercloud-busybox-kernel", os.path.join(g, "vmlinuz"), "aki", "aki")
    ramdisk = image("intercloud-busybox-ramdisk", os.path.join(g, "initrd.gz"), "ari", "ari")
    disk = image("intercloud-busybox", os.path.join(g, "disk.raw"), "raw", "bare", kernel_id=kernel.id, ramdisk_id=ramdisk.id,
                 os_command_line="console=ttyS0", hw_machine_type="pc")
    # The guest network: flat on the agents' physnet, shared with every project, DHCP from the
    # DHCP agent, no gateway (guests get no default route) and no port security (no iptables or
    # ebtables rules). .1 is the host's, outside the allocation pool.
    network = admin.network.find_network("intercloud-private")
    if network is None:
        network = admin.network.create_network(
            name="intercloud-private", shared=True, provider_network_type="flat", provider_physical_network=env["PHYSNET"],
            port_security_enabled=False)
    with open(os.path.join(d, "network-id"), "w") as f:
        f.write(network.id)
    prefix = env["NET_CIDR"].rsplit(".", 1)[0]
    if admin.network.find_subnet("intercloud-private-v4", network_id=network.id) is None:
        admin.network.create_subnet(
            name="intercloud-private-v4", network_id=network.id, ip_version=4, cidr=env["NET_CIDR"], gateway_ip=None,
            enable_dhcp=True, allocation_pools=[{"start": f"{prefix}.10", "end": f"{prefix}.250"}])
    appcred_file = os.path.join(d, "appcred.json")
    if not os.path.exists(appcred_file):
        uid = user.current_user_id
        old = user.identity.find_application_credential(uid, "intercloud-tests")
        if old is not None:
            user.identity.delete_application_credential(uid, old.id)
        cred = user.identity.create_application_credential(uid, "intercloud-tests", description="Intercloud tests")
        with open(appcred_file, "w") as f:
            json.dump({"id": cred.id, "secret": cred.secret}, f)
    cred = json.load(open(appcred_file))
    secrets = dict(l.strip().split("=", 1) for l in open(os.path.join(d, "secrets")))
    facts = {
        "auth_url": env["KEYSTONE_URL"], "identity_api_version": "3", "region_name": "RegionOne",
        "username": "intercloud", "password": env["USER_PASSWORD"], "project_name": "intercloud",
        "project_id": user.current_project_id, "user_id": user.current_user_id,
        "user_domain_name": "Default", "project_domain_name": "Default",
        "application_credential_id": cred["id"], "application_credential_secret": cred["secret"],
        "admin_username": "admin", "admin_password": env["ADMIN_PASSWORD"], "admin_project_name": "admin",
        "image_id": disk.id, "kernel_image_id": kernel.id, "ramdisk_image_id": ramdisk.id, "image_name": disk.name,
        "flavor": "ic.tiny", "flavors": ["ic.tiny", "ic.small", "ic.medium"],
        "network_id": network.id, "network_name": network.name, "network_cidr": env["NET_CIDR"], "host_address": env["HOST_ADDRESS"],
        "endpoints": {"identity": env["KEYSTONE_URL"], "compute": f"http://127.0.0.1:{env['P_NOVA']}/v2.1",
                      "image": f"http://127.0.0.1:{env['P_GLANCE']}", "placement": f"http://127.0.0.1:{env['P_PLACEMENT']}",
                      "network": f"http://127.0.0.1:{env['P_NEUTRON']}"},
        "guest_marker": "INTERCLOUD-GUEST-READY",
    }
    with open(os.path.join(d, "openstack.json.partial"), "w") as f:
        json.dump(facts, f, indent=2)
    q = lambda v: "'" + str(v).replace("'", "'\\''") + "'"
    common = [("OS_AUTH_URL", facts["auth_url"]), ("OS_IDENTITY_API_VERSION", "3"), ("OS_REGION_NAME", "RegionOne"),
              ("OS_INTERFACE", "public")]
    tail = [("INTERCLOUD_OS_IMAGE_ID", disk.id), ("INTERCLOUD_OS_FLAVOR", "ic.tiny"), ("INTERCLOUD_OS_NETWORK_ID", network.id)]
    with open(os.path.join(d, "openstack.env.partial"), "w") as f:
        for k, v in common + [("OS_USERNAME", "intercloud"), ("OS_PASSWORD", env["USER_PASSWORD"]), ("OS_PROJECT_NAME", "intercloud"),
                              ("OS_USER_DOMAIN_NAME", "Default"), ("OS_PROJECT_DOMAIN_NAME", "Default")] + tail:
            f.write(f"export {k}={q(v)}\n")
    with open(os.path.join(d, "openstack-appcred.env.partial"), "w") as f:
        for k, v in common + [("OS_AUTH_TYPE", "v3applicationcredential"), ("OS_APPLICATION_CREDENTIAL_ID", cred["id"]),
                              ("OS_APPLICATION_CREDENTIAL_SECRET", cred["secret"])] + tail:
            f.write(f"export {k}={q(v)}\n")
    with open(os.path.join(d, "openstack-admin.env.partial"), "w") as f:
        for k, v in common + [("OS_USERNAME", "admin"), ("OS_PASSWORD", env["ADMIN_PASSWORD"]), ("OS_PROJECT_NAME", "admin"),
                              ("OS_USER_DOMAIN_NAME", "Default"), ("OS_PROJECT_DOMAIN_NAME", "Default")]:
            f.write(f"export {k}={q(v)}\n")
    sys.exit(0)

if step == "compute":
    # Up when nova-compute reports, its host is mapped to cell1 and placement has its inventory.
    up = [s for s in admin.compute.services() if s.binary == "nova-compute" and s.state == "up"]
    if not up:
        sys.exit(1)
    subprocess.run(["/usr/bin/nova-manage", "--config-file", env["NOVA_CONF"], "cell_v2", "discover_hosts"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hypervisors = list(admin.compute.hypervisors())
    if not hypervisors:
        sys.exit(1)
    providers = admin.placement.get("/resource_providers").json()["resource_providers"]
    if not any("VCPU" in inventory and "MEMORY_MB" in inventory
               for inventory in (admin.placement.get(f"/resource_providers/{p['uuid']}/inventories").json()["inventories"]
                                 for p in providers)):
        sys.exit(1)
    # Both agents report, and the DHCP agent's port on the guest network is bound and up (the Linux
    # bridge agent has put it on the bridge): a server's port can be bound and its guest gets a lease.
    alive = {a.agent_type for a in admin.network.agents() if a.is_alive}
    if not {"Linux bridge agent", "DHCP agent"} <= alive:
        sys.exit(1)
    network = admin.network.find_network("intercloud-private")
    dhcp = [p for p in admin.network.ports(network_id=network.id, device_owner="network:dhcp") if p.status == "ACTIVE"]
    sys.exit(0 if dhcp else 1)
PY
}

case $cmd in
install) install ;;
start)
    setup_dir "${2:?usage: openstack.sh start DIR [WATCH_PID]}"
    watch=${3:-}
    if running; then
        say "already running in $dir"
    else
        stop_all
        rm -f "$dir/openstack.json" "$dir/openstack.env" "$dir/openstack-appcred.env"
        # Nothing half-started stays behind when a step fails.
        trap stop_all EXIT
        start_all
        trap - EXIT
        for f in openstack.json openstack.env openstack-appcred.env openstack-admin.env; do mv "$dir/$f.partial" "$dir/$f"; done
    fi
    if [[ -n $watch ]] && ! alive watcher; then
        # In a session of its own so a process-group kill of the caller does not take it down first.
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop "$3"' watcher "$watch" "$here/openstack.sh" "$dir" \
            </dev/null >>"$logs/watcher.out" 2>&1 &
        echo $! > "$pids/watcher.pid"
    fi
    print_env
    ;;
stop)
    setup_dir "${2:?usage: openstack.sh stop DIR}"
    stop_all
    ;;
status)
    setup_dir "${2:?usage: openstack.sh status DIR}"
    status
    ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs a private libvirt session daemon (qemu:///session) for an unprivileged user, so tests and the
# broker can drive real QEMU guests even when they run as root.
#
#   scripts/libvirt-session.sh start DIR [WATCH_PID]   prints the socket path to use as
#                                                      qemu+unix:///session?socket=PATH
#   scripts/libvirt-session.sh stop DIR
#
# Why: as root, `qemu:///session` is routed to the system daemon. Instead we start `libvirtd` in
# session mode as uid/gid 65534 (override with SESSION_UID/SESSION_GID) with its own HOME and
# XDG_RUNTIME_DIR under DIR. Root can open that daemon's socket directly, so a root process uses
# libvirt in-process through the socket while QEMU and its files belong to the unprivileged user.
# With WATCH_PID the daemon is stopped when that process exits (no orphan daemons after a test run).
#
# Needs: libvirt-daemon (libvirtd), libvirt-clients (virsh), qemu-system-x86, util-linux (setpriv).
set -euo pipefail
cmd=${1:?usage: libvirt-session.sh start|stop DIR [WATCH_PID]}
dir=${2:?directory}
uid=${SESSION_UID:-65534}
gid=${SESSION_GID:-65534}
socket=$dir/run/libvirt/libvirt-sock

stop() {
    if [[ -f $dir/daemon.pid ]]; then
        kill "$(cat "$dir/daemon.pid")" 2>/dev/null || true
        sleep 1
        kill -9 "$(cat "$dir/daemon.pid")" 2>/dev/null || true
        rm -f "$dir/daemon.pid"
    fi
    if [[ -f $dir/watch.pid ]]; then
        kill "$(cat "$dir/watch.pid")" 2>/dev/null || true
        rm -f "$dir/watch.pid"
    fi
}

case $cmd in
start)
    mkdir -p "$dir"/home "$dir"/run
    chmod 0755 "$dir"
    chown -R "$uid:$gid" "$dir"/home "$dir"/run
    chmod 0700 "$dir"/run
    if [[ -S $socket ]] && virsh -q -c "qemu+unix:///session?socket=$socket" version >/dev/null 2>&1; then
        echo "$socket"
        exit 0
    fi
    setpriv --reuid="$uid" --regid="$gid" --clear-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir/home" XDG_RUNTIME_DIR="$dir/run" \
        XDG_CONFIG_HOME="$dir/home/.config" XDG_CACHE_HOME="$dir/home/.cache" \
        libvirtd --timeout=0 >"$dir/daemon.log" 2>&1 &
    echo $! > "$dir/daemon.pid"
    for _ in $(seq 1 100); do
        if [[ -S $socket ]] && virsh -q -c "qemu+unix:///session?socket=$socket" version >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    [[ -S $socket ]] || { echo "libvirtd session did not start; see $dir/daemon.log" >&2; cat "$dir/daemon.log" >&2; exit 1; }
    if [[ -n ${3:-} ]]; then
        # The watcher runs in its own session so a process-group kill of the caller (timeout, Ctrl-C)
        # does not take it down before it has cleaned up.
        setsid bash -c '
            watch=$1 daemon=$2 socket=$3
            while kill -0 "$watch" 2>/dev/null && kill -0 "$daemon" 2>/dev/null; do sleep 0.5; done
            # Destroy leftover guests before the daemon goes, so no QEMU outlives the run.
            for domain in $(virsh -q -c "qemu+unix:///session?socket=$socket" list --name 2>/dev/null); do
                virsh -q -c "qemu+unix:///session?socket=$socket" destroy "$domain" >/dev/null 2>&1 || true
            done
            kill "$daemon" 2>/dev/null || true
            sleep 2
            kill -9 "$daemon" 2>/dev/null || true
        ' watcher "$3" "$(cat "$dir/daemon.pid")" "$socket" </dev/null >/dev/null 2>&1 &
        echo $! > "$dir/watch.pid"
    fi
    echo "$socket"
    ;;
stop) stop ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

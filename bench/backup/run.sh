#!/usr/bin/env bash
# Backup benchmark: `intercloud backup run` and `intercloud backup restore` of one SimCloud
# instance with a disk of SIZE_MIB MiB of random data, to a directory and to moto's S3 (signatures
# checked), beside the same work done by hand with standard tools in the same run:
#   backup to a directory:  cp (the snapshot) + qemu-img convert -O qcow2 + sha256sum + cp + sync
#   backup to S3:           cp + qemu-img convert -O qcow2 + sha256sum + aws s3 cp
#   restore from directory: cp + sha256sum + qemu-img convert -O raw (what SimCloud stores)
# Rounds alternate ours and the baseline; medians, ratios, and the peak RSS of our process.
#
#   bench/backup/run.sh [SIZE_MIB] [ROUNDS]     -> bench/backup/RESULTS.md
#
# Needs what scripts/setup.sh installs: qemu-utils, moto[server], awscli.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-256}
rounds=${2:-3}
bench/lib/build.sh intercloud
root=$PWD
bin=$root/.build/release/intercloud
work=$(mktemp -d /var/tmp/intercloud-backup-bench-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'scripts/moto.sh stop "$port" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
scripts/moto.sh start "$port" >/dev/null
read -r key secret < <(scripts/moto.sh user "$port")
export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_DEFAULT_REGION=us-east-1
endpoint=http://127.0.0.1:$port
aws --endpoint-url "$endpoint" s3 mb s3://bench-backups >/dev/null

cd "$work"
cat > cloud.toml <<TOML
[broker]
cloud = "bench"
regions = []
database = "state/broker.sqlite"
[xmpp]
jid = "broker@bench.test"
password = "unused"
tls = "disabled-for-testing"
host = "127.0.0.1"
[provider]
driver = "simcloud"
options = { data-dir = "sim", boot-delay-ms = "0", shutdown-delay-ms = "0", terminate-delay-ms = "0" }
TOML
for kind in directory s3; do
    {
        echo 'version = 1'
        echo "name = \"bench-$kind\""
        echo 'instances = ["web-1"]'
        echo 'keep_last = 1000'
        echo '[target]'
        if [[ $kind == directory ]]; then
            echo 'kind = "directory"'
            echo "path = \"$work/store\""
        else
            echo 'kind = "s3"'
            echo "endpoint = \"$endpoint\""
            echo 'bucket = "bench-backups"'
        fi
    } > "$kind.toml"
done
head -c $((size << 20)) /dev/urandom > disk.raw
"$bin" provider import disk.raw --name big --format raw --config cloud.toml >/dev/null
image=$("$bin" provider images --config cloud.toml --output json | python3 -c 'import json,sys; print([i["id"] for i in json.load(sys.stdin) if i["name"]=="big"][0])')
"$bin" provider create web-1 --size sim.small --image "$image" --config cloud.toml >/dev/null
instance=$("$bin" provider instances --config cloud.toml --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
mkdir -p base-store base-restore

out=$(mktemp)
python3 - "$bin" "$rounds" "$size" "$instance" "$endpoint" > "$out" <<'PY'
import json, os, statistics, subprocess, sys, time

bin, rounds, size, instance, endpoint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def timed(command, shell=False):
    """Wall seconds and peak RSS (MiB) of one command and its children."""
    start = time.monotonic()
    process = subprocess.Popen(command, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - start
    if status != 0:
        sys.exit(f"failed: {command}: {process.stderr.read().decode()[-400:]}")
    return elapsed, usage.ru_maxrss / 1024

disk = f"sim/disks/{instance}.raw"
base_dir = ("cp --reflink=never {d} snap.raw && qemu-img convert -f raw -O qcow2 snap.raw out.qcow2 && sha256sum out.qcow2 >/dev/null"
            " && cp out.qcow2 base-store/disk-{n}.qcow2 && sync -f base-store/disk-{n}.qcow2 && rm -f snap.raw out.qcow2")
base_s3 = ("cp --reflink=never {d} snap.raw && qemu-img convert -f raw -O qcow2 snap.raw out.qcow2 && sha256sum out.qcow2 >/dev/null"
           " && aws --endpoint-url {e} s3 cp --quiet out.qcow2 s3://bench-backups/base/disk-{n}.qcow2 && rm -f snap.raw out.qcow2")
base_restore = ("cp base-store/disk-{n}.qcow2 base-restore/in.qcow2 && sha256sum base-restore/in.qcow2 >/dev/null"
                " && qemu-img convert -f qcow2 -O raw base-restore/in.qcow2 base-restore/out.raw && sync -f base-restore/out.raw"
                " && rm -f base-restore/in.qcow2 base-restore/out.raw")
results = {k: [] for k in ["dir", "dir-base", "s3", "s3-base", "restore", "restore-base"]}
rss = {"dir": [], "s3": [], "restore": []}
for n in range(rounds):
    t, m = timed([bin, "backup", "run", "directory.toml", "-c", "cloud.toml", "-q"]); results["dir"].append(t); rss["dir"].append(m)
    results["dir-base"].append(timed(base_dir.format(d=disk, n=n), shell=True)[0])
    t, m = timed([bin, "backup", "run", "s3.toml", "-c", "cloud.toml", "-q"]); results["s3"].append(t); rss["s3"].append(m)
    results["s3-base"].append(timed(base_s3.format(d=disk, e=endpoint, n=n), shell=True)[0])
    listing = json.loads(subprocess.check_output([bin, "backup", "list", "directory.toml", "-c", "cloud.toml", "--output", "json"]))
    backup = listing[0]["backupID"]
    t, m = timed([bin, "backup", "restore", "directory.toml", backup, "--name", f"restored-{n}", "-c", "cloud.toml", "-q"])
    results["restore"].append(t); rss["restore"].append(m)
    results["restore-base"].append(timed(base_restore.format(n=n), shell=True)[0])

def med(k): return statistics.median(results[k])
print(f"{size} MiB of random data, {rounds} alternating rounds, medians (wall seconds; peak RSS of the intercloud process and its children, e.g. qemu-img).")
print()
print("| operation | intercloud | by hand (same run) | ratio | intercloud peak RSS |")
print("|---|---|---|---|---|")
for key, label in [("dir", "backup to a directory"), ("s3", "backup to S3 (moto, SigV4 checked)"), ("restore", "restore from the directory")]:
    print(f"| {label} | {med(key):.2f} s | {med(key + '-base'):.2f} s | **{med(key) / med(key + '-base'):.2f}×** | {statistics.median(rss[key]):.0f} MiB |")
print()
print("Every round: " + "; ".join(f"{k} " + " ".join(f"{v:.2f}" for v in vals) for k, vals in results.items()) + ".")
PY
{
    echo "# Backup benchmark"
    echo
    echo "Command: \`bench/backup/run.sh $size $rounds\` (release build; $(nproc) cores; $(date -u +%Y-%m-%d))."
    echo "One SimCloud instance; moto $(pip show moto 2>/dev/null | sed -n 's/^Version: //p') on loopback with signatures checked; awscli $(aws --version 2>&1 | cut -d' ' -f1 | cut -d/ -f2)."
    echo "The machine is shared; treat numbers as indicative."
    echo
    cat "$out"
} > "$root/bench/backup/RESULTS.md"
rm -f "$out"
cat "$root/bench/backup/RESULTS.md"

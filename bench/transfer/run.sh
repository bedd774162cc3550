#!/usr/bin/env bash
# Transfer benchmark: a 1 GiB file between two brokers on loopback (two processes, mutual TLS 1.3,
# 1 MiB chunks each with SHA-256, end-to-end SHA-256) against `curl -o` of the same file from
# nginx (Debian package, sendfile on) in the same run. Prints medians, the ratio, and each side's
# peak RSS.
#
#   bench/transfer/run.sh [RUNS] [SIZE_MIB]      (defaults: 5 runs, 1024 MiB)
#
# The transfer runs with the broker's defaults: chained chunk digests, direct IO (the sender reads
# and the receiver writes past the page cache). TRANSFER_BENCH_FLAGS=--buffered runs both ends
# through the page cache instead, for comparison.
#
# Needs nginx (apt-get install nginx-light), curl, openssl. Builds intercloud-bench in release and
# runs `intercloud-bench transfer serve` and `… transfer send` as the two sides.
set -euo pipefail
runs=${1:-5}
size_mib=${2:-1024}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

command -v nginx >/dev/null || { echo "nginx missing: apt-get install -y nginx-light" >&2; exit 1; }
"$root/bench/lib/build.sh" intercloud-bench
bench="$root/.build/release/intercloud-bench"

work=$(mktemp -d /tmp/transfer-bench.XXXXXX)
nginx_pid=""
cleanup() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Two broker identities: P-256 keys, leaf certificates from one throwaway root.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/root.key" 2>/dev/null
openssl req -x509 -new -key "$work/root.key" -subj "/CN=bench root" -days 2 -out "$work/root.pem" 2>/dev/null
for broker in source destination; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$work/$broker.key.sec1" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$work/$broker.key.sec1" -out "$work/$broker.key"
    openssl req -new -key "$work/$broker.key" -subj "/CN=broker@$broker.test" -out "$work/$broker.csr" 2>/dev/null
    openssl x509 -req -in "$work/$broker.csr" -CA "$work/root.pem" -CAkey "$work/root.key" -CAcreateserial \
        -days 2 -out "$work/$broker.pem" 2>/dev/null
done
fingerprint() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
source_fp=$(fingerprint "$work/source.pem")
destination_fp=$(fingerprint "$work/destination.pem")

mkdir -p "$work/www" "$work/in"
echo "making a ${size_mib} MiB file..." >&2
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/www/image.raw"
size=$(stat -c %s "$work/www/image.raw")
digest=$(sha256sum "$work/www/image.raw" | cut -d' ' -f1)

# nginx as the HTTP baseline: one worker, sendfile, no logging.
port=$((20000 + RANDOM % 20000))
cat > "$work/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $work/tmp-body;
    proxy_temp_path $work/tmp-proxy;
    fastcgi_temp_path $work/tmp-fastcgi;
    uwsgi_temp_path $work/tmp-uwsgi;
    scgi_temp_path $work/tmp-scgi;
    server { listen 127.0.0.1:$port; root $work/www; }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" &
nginx_pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

worker=$(pgrep -P "$nginx_pid" | head -1 || true)
# utime + stime of the nginx worker, in clock ticks.
nginx_cpu() { awk '{print $14 + $15}' "/proc/$worker/stat"; }
curl_times=(); curl_rss=(); curl_cpu=(); send_times=(); send_rss=(); serve_rss=(); transfer_cpu=()
for run in $(seq "$runs"); do
    # curl -o to a file, as the transfer writes to a file.
    before=$(nginx_cpu)
    line=$( { /usr/bin/time -f "rss=%M cpu=%U+%S" curl -s -o "$work/in/curl.raw" -w "time=%{time_total}\n" \
        "http://127.0.0.1:$port/image.raw"; } 2>&1 )
    [ "$(stat -c %s "$work/in/curl.raw")" = "$size" ] || { echo "curl got a short file" >&2; exit 1; }
    rm -f "$work/in/curl.raw"
    curl_times+=("$(sed -n 's/.*time=\([0-9.]*\).*/\1/p' <<<"$line")")
    curl_rss+=("$(sed -n 's/.*rss=\([0-9]*\).*/\1/p' <<<"$line")")
    curl_cpu+=("$(python3 -c "print($(sed -n 's/.*cpu=\([0-9.+]*\).*/\1/p' <<<"$line") + ($(nginx_cpu) - $before) / $(getconf CLK_TCK))")")

    # Transfer: receiver and sender as two processes.
    rm -f "$work/port"
    /usr/bin/time -o "$work/serve.time" -f "cpu=%U+%S" "$bench" transfer serve --chain "$work/destination.pem" --key "$work/destination.key" --port-file "$work/port" \
        --destination "$work/in/image.raw" --id "run$run" --token "token$run" --size "$size" --sha256 "$digest" \
        --peer "$source_fp" ${TRANSFER_BENCH_FLAGS:-} > "$work/serve.out" &
    serve_pid=$!
    for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
    send_line=$(/usr/bin/time -o "$work/send.time" -f "cpu=%U+%S" "$bench" transfer send --chain "$work/source.pem" --key "$work/source.key" --port "$(cat "$work/port")" \
        --file "$work/www/image.raw" --id "run$run" --token "token$run" --peer "$destination_fp" ${TRANSFER_BENCH_FLAGS:-})
    wait "$serve_pid"
    grep -q "sha256=$digest" <<<"$send_line" || { echo "transfer digest mismatch: $send_line" >&2; exit 1; }
    [ "$(sha256sum "$work/in/image.raw" | cut -d' ' -f1)" = "$digest" ] || { echo "received file differs" >&2; exit 1; }
    rm -f "$work/in/image.raw"
    send_times+=("$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$send_line")")
    send_rss+=("$(sed -n 's/.*vmhwm_kib=\([0-9]*\).*/\1/p' <<<"$send_line")")
    serve_rss+=("$(sed -n 's/.*vmhwm_kib=\([0-9]*\).*/\1/p' "$work/serve.out")")
    transfer_cpu+=("$(python3 -c "print($(sed -n 's/.*cpu=\([0-9.+]*\).*/\1/p' "$work/send.time") + $(sed -n 's/.*cpu=\([0-9.+]*\).*/\1/p' "$work/serve.time"))")")
    echo "run $run: curl ${curl_times[-1]} s, transfer ${send_times[-1]} s" >&2
done
nginx_rss=$(awk '/VmHWM/ {print $2}' "/proc/$worker/status" 2>/dev/null || echo "?")

python3 - "$size" "${curl_times[*]}" "${send_times[*]}" "${curl_rss[*]}" "${send_rss[*]}" "${serve_rss[*]}" "$nginx_rss" \
    "${curl_cpu[*]}" "${transfer_cpu[*]}" <<'PY'
import statistics, sys
size = int(sys.argv[1])
curl, send = [list(map(float, a.split())) for a in sys.argv[2:4]]
curl_rss, send_rss, serve_rss = [list(map(int, a.split())) for a in sys.argv[4:7]]
nginx_rss = sys.argv[7]
curl_cpu, transfer_cpu = [list(map(float, a.split())) for a in sys.argv[8:10]]
mib = size / 2**20
def line(name, times):
    m = statistics.median(times)
    return f"{name:28s} median {m:6.3f} s  {mib / m:7.1f} MiB/s   runs: " + " ".join(f"{t:.3f}" for t in times)
print(f"file: {mib:.0f} MiB, {len(curl)} runs each, alternating")
print(line("curl -o from nginx", curl))
print(line("transfer (mTLS, chunk hashes)", send))
ratio = statistics.median(curl) / statistics.median(send)
print(f"throughput ratio transfer / curl: {ratio:.2f}x (target >= 0.90)")
print(f"CPU seconds (user+sys, both ends) median: curl+nginx {statistics.median(curl_cpu):.2f}, "
      f"transfer sender+receiver {statistics.median(transfer_cpu):.2f}")
print(f"peak RSS: sender max {max(send_rss)/1024:.1f} MiB, receiver max {max(serve_rss)/1024:.1f} MiB, "
      f"curl max {max(curl_rss)/1024:.1f} MiB, nginx worker {int(nginx_rss)/1024 if nginx_rss.isdigit() else nginx_rss} MiB")
PY

#!/usr/bin/env bash
# Runs a moto EC2/S3/IAM server on loopback with request signature checking available.
#
#   scripts/moto.sh run PORT [WATCH_PID]   foreground; with WATCH_PID, exits when that process does
#   scripts/moto.sh start PORT             background, pid in ${TMPDIR:-/tmp}/moto-PORT.pid
#   scripts/moto.sh stop PORT
#   scripts/moto.sh user PORT              reset moto, create an IAM user with an access key, print
#                                          "KEY SECRET"; from then on every request must be signed
#
# Needs: pip install "moto[server]" (moto_server on PATH, or its path in MOTO_SERVER), curl.
# Signature checking: moto only checks signatures after INITIAL_NO_AUTH_ACTION_COUNT unauthenticated
# requests; `user` resets that counter to exactly the three IAM calls it makes, so anything after is checked.
set -euo pipefail
cmd=${1:?usage: moto.sh run|start|stop|user PORT}
port=${2:?port}
pidfile=${TMPDIR:-/tmp}/moto-$port.pid
url=http://127.0.0.1:$port

wait_ready() {
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "$url/moto-api/" && return 0
        sleep 0.1
    done
    echo "moto did not start on port $port" >&2
    return 1
}

case $cmd in
run)
    watch=${3:-}
    # AMI validation makes RunInstances refuse unknown images, as AWS does.
    MOTO_ENABLE_AMI_VALIDATION=true INITIAL_NO_AUTH_ACTION_COUNT=1000000 \
        "${MOTO_SERVER:-moto_server}" -H 127.0.0.1 -p "$port" >"${MOTO_LOG:-/dev/null}" 2>&1 &
    server=$!
    # TERM first; KILL if it is still there (a server that inherited a blocked SIGTERM ignores it).
    trap 'kill $server 2>/dev/null; sleep 1; kill -9 $server 2>/dev/null' EXIT TERM INT
    if [[ -n $watch ]]; then
        while kill -0 "$watch" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
    else
        wait "$server"
    fi
    ;;
start)
    "$0" run "$port" &
    echo $! > "$pidfile"
    wait_ready
    ;;
stop)
    [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
user)
    curl -sf -X POST "$url/moto-api/reset" >/dev/null
    curl -sf -X POST "$url/moto-api/reset-auth" -H "Content-Type: text/plain" --data 3 >/dev/null
    auth='Authorization: AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00'
    q() { curl -sf -H "$auth" -H 'Content-Type: application/x-www-form-urlencoded' "$url/" --data "$1"; }
    q 'Action=CreateUser&Version=2010-05-08&UserName=intercloud' >/dev/null
    q 'Action=PutUserPolicy&Version=2010-05-08&UserName=intercloud&PolicyName=all&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D' >/dev/null
    out=$(q 'Action=CreateAccessKey&Version=2010-05-08&UserName=intercloud')
    key=$(sed -n 's:.*<AccessKeyId>\(.*\)</AccessKeyId>.*:\1:p' <<<"$out")
    secret=$(sed -n 's:.*<SecretAccessKey>\(.*\)</SecretAccessKey>.*:\1:p' <<<"$out")
    echo "$key $secret"
    ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Two clouds find and trust each other: a private Prosody with cloud1.test and cloud2.test, one
# broker per cloud, each cloud with its own CA (made with `intercloud certs`), discovery through an
# exchange room and through direct peering, then the X.509 trust handshake. Prints both peer
# tables, stops cloud2 and shows cloud1 noticing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ "${SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
mkdir -p var
echo "building (release)..."
swift build -c release --product intercloud > var/demo-build.log 2>&1 || { tail -40 var/demo-build.log; exit 1; }
bin="$root/.build/release/intercloud"

demo="$root/var/demo"
rm -rf "$demo"; mkdir -p "$demo"
port=${DEMO_PORT:-25222}
scripts/prosody.sh start "$demo/prosody" "$port"
cleanup() {
    for pidfile in "$demo"/*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
    scripts/prosody.sh stop "$demo/prosody" || true
}
trap cleanup EXIT

for n in 1 2; do
    password=$(head -c 12 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9')
    scripts/prosody.sh register "$demo/prosody" broker "cloud$n.test" "$password"
    echo "$password" > "$demo/cloud$n.password"; chmod 600 "$demo/cloud$n.password"
    other=$((3 - n))
    cat > "$demo/cloud$n.toml" <<TOML
[broker]
cloud = "cloud$n"
regions = ["region-$n-a", "region-$n-b"]
database = "cloud$n.sqlite"
load = 0.$n

[xmpp]
jid = "broker@cloud$n.test/broker"
password_file = "cloud$n.password"
host = "127.0.0.1"
port = $port
tls = "required"
ca_file = "prosody/certs/ca.crt"

[discovery]
rooms = ["exchange@conference.cloud1.test"]
peers = ["broker@cloud$other.test"]
approve = ["*@cloud$other.test"]

[trust]
key = "pki/broker$n/broker.key"
chain = "pki/broker$n/broker-chain.pem"
anchors = ["pki/anchors"]

[provider]
driver = "simcloud"
options = { data-dir = "sim$n" }
TOML
done

echo "== each cloud makes its own CA and broker certificate; each trusts the other's CA"
mkdir -p "$demo/pki/anchors"
for n in 1 2; do
    "$bin" certs init-ca --dir "$demo/pki/ca$n" --cn "cloud$n CA" --org "cloud$n" >/dev/null
    "$bin" certs issue --ca "$demo/pki/ca$n" --config "$demo/cloud$n.toml" >/dev/null
    cp "$demo/pki/ca$n/ca.pem" "$demo/pki/anchors/cloud$n-ca.pem"
done
"$bin" certs show --config "$demo/cloud1.toml" | head -8

for n in 1 2; do
    "$bin" serve --config "$demo/cloud$n.toml" > "$demo/cloud$n.log" 2>&1 &
    echo $! > "$demo/cloud$n.pid"
done

wait_for() {  # wait_for CONFIG PEER ONLINE(true|false)
    for _ in $(seq 1 100); do
        if "$bin" peers --config "$1" --output json 2>/dev/null | python3 -c "
import json, sys
peers = {p['jid']: p for p in json.load(sys.stdin)}
sys.exit(0 if peers.get('$2', {}).get('online') == $3 else 1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for $2 online=$3 in $1" >&2; return 1
}
wait_for "$demo/cloud1.toml" broker@cloud2.test True
wait_for "$demo/cloud2.toml" broker@cloud1.test True
wait_trusted() {  # wait_trusted CONFIG PEER
    for _ in $(seq 1 100); do
        "$bin" peers --config "$1" --output json 2>/dev/null | python3 -c "
import json, sys
peers = {p['jid']: p for p in json.load(sys.stdin)}
sys.exit(0 if peers.get('$2', {}).get('trust') == 'trusted' else 1)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for $2 to be trusted in $1" >&2; return 1
}
wait_trusted "$demo/cloud1.toml" broker@cloud2.test
wait_trusted "$demo/cloud2.toml" broker@cloud1.test
sleep 0.5  # let disco#info answers land in the tables

echo; echo "== peers seen by cloud1 =="; "$bin" peers --config "$demo/cloud1.toml"
echo; echo "== peers seen by cloud2 =="; "$bin" peers --config "$demo/cloud2.toml"

echo; echo "== cloud1 asks cloud2's catalog: SPARQL over XMPP in signed envelopes, answered from cloud2's live SimCloud inventory"
query='PREFIX ic: <https://intercloud.example.org/ontology#>
SELECT ?name ?vcpu ?memoryMiB ?price ?currency WHERE {
  GRAPH <urn:intercloud:graph:inventory> { ?o a ic:Offering ; ic:name ?name ; ic:vcpu ?vcpu ;
     ic:memoryMiB ?memoryMiB ; ic:pricePerHour ?price ; ic:currency ?currency }
} ORDER BY ?price'
"$bin" catalog query --config "$demo/cloud1.toml" --peer broker@cloud2.test "$query"
echo; echo "== and every trusted peer at once (federated query)"
"$bin" catalog query --config "$demo/cloud2.toml" --all-peers \
    "PREFIX ic: <https://intercloud.example.org/ontology#> SELECT ?name ?price WHERE { GRAPH ?g { ?o a ic:Offering ; ic:name ?name ; ic:pricePerHour ?price FILTER(?price < 0.05) } } ORDER BY ?price"

echo; echo "== stopping cloud2 (SIGTERM) =="
kill -TERM "$(cat "$demo/cloud2.pid")"; wait "$(cat "$demo/cloud2.pid")" 2>/dev/null || true
wait_for "$demo/cloud1.toml" broker@cloud2.test False
"$bin" peers --config "$demo/cloud1.toml"
echo; echo "== cloud1's audit log (trust decisions)"
"$bin" audit --config "$demo/cloud1.toml" | head -8
echo; echo "logs and state: $demo"

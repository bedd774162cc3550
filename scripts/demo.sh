#!/usr/bin/env bash
# The whole Intercloud sequence between two clouds on the embedded defaults: a private Prosody with
# cloud1.test and cloud2.test, one broker per cloud, each cloud with its own CA (made with
# `intercloud certs`) and its own SimCloud. The brokers find each other (exchange room and direct
# peering), trust each other (X.509 handshake), query each other's catalogs (SPARQL), negotiate an
# agreement (policy files, counter-offer, both signatures), migrate a running VM from cloud1 to
# cloud2 (progress bar), and print cloud2's usage bill for it. Then cloud2 stops and cloud1 notices.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ "${SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
mkdir -p var
if [ -n "${INTERCLOUD_BIN:-}" ]; then  # an already built binary (development)
    bin=$INTERCLOUD_BIN
else
    echo "building (release)..."
    swift build -c release --product intercloud > var/demo-build.log 2>&1 || { tail -40 var/demo-build.log; exit 1; }
    bin="$root/.build/release/intercloud"
fi

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
options = { data-dir = "sim$n", boot-delay-ms = "500" }

[policy]
files = ["policy$n.toml"]

[metering]
sample_seconds = 1       # short periods so the demo sees a usage record within seconds
period_seconds = 10

[migration]
graceful_shutdown_seconds = 5
TOML
done

# cloud2 (the provider) lets cloud1 query and migrate in, with a quota, EUR rates and an SLA;
# cloud1 lets cloud2 query and moves workloads out to it if the SLA is at least 99.5 %.
cat > "$demo/policy2.toml" <<'TOML'
version = 1
[[peer]]
name = "cloud1-partner"
match = ["broker@cloud1.test"]
entitlements = ["query", "migrate-in"]
[peer.quota]
instances = 4
vcpu = 8
memory_gib = 16
storage_gib = 200
transfer_gb = 100
[peer.rates]
currency = "EUR"
per_gb_transferred = "0.02"
per_gb_month_stored = "0.04"
[peer.rates.instance_hour]
"sim.small" = "0.0230"
"sim.medium" = "0.0460"
[peer.sla_offered]
availability_percent = "99.9"
max_migration_downtime_seconds = 300
support = "24x7"
TOML
cat > "$demo/policy1.toml" <<'TOML'
version = 1
[[peer]]
name = "cloud2-provider"
match = ["broker@cloud2.test"]
entitlements = ["query", "migrate-out"]
[peer.sla_required]
availability_percent = "99.5"
max_migration_downtime_seconds = 600
support = "24x7"
TOML

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

echo; echo "== cloud1 negotiates with cloud2 (asking with prices at 0: cloud2 counters with its rate card)"
"$bin" negotiate --config "$demo/cloud1.toml" --peer broker@cloud2.test --entitle query,migrate-in \
    --instances 2 --vcpu 4 --memory-gib 8 --storage-gib 80 --transfer-gb 50 --types sim.small,sim.medium --days 30
agreement=$("$bin" agreement list --config "$demo/cloud1.toml" --output json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['agreement']['id'])")
"$bin" agreement export "$agreement" --config "$demo/cloud1.toml" --out "$demo/agreement.json" >/dev/null
echo; echo "== the agreement, checked offline (both signatures, both chains against both CAs)"
"$bin" agreement verify "$demo/agreement.json" --anchors "$demo/pki/anchors"

echo; echo "== a VM in cloud1: a 256 MiB disk image, imported and started"
head -c $((256 << 20)) /dev/urandom > "$demo/web-disk.raw"
image=$("$bin" provider import "$demo/web-disk.raw" --name web-disk --config "$demo/cloud1.toml" --output json 2>/dev/null \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
instance=$("$bin" provider create web-1 --size sim.small --image "$image" --config "$demo/cloud1.toml" --output json 2>/dev/null \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
"$bin" provider instances --config "$demo/cloud1.toml"

echo; echo "== cloud1 migrates $instance to cloud2 (cold: stop, export, TLS transfer with chunk hashes, import, start, cut over)"
"$bin" migrate "$instance" --to broker@cloud2.test --config "$demo/cloud1.toml"
echo; echo "== instances afterwards: cloud1, then cloud2"
"$bin" provider instances --config "$demo/cloud1.toml"
"$bin" provider instances --config "$demo/cloud2.toml"

echo; echo "== metering: cloud2 signs a usage record per period, cloud1 checks it against its own view and countersigns"
for _ in $(seq 1 60); do
    if "$bin" usage records --config "$demo/cloud2.toml" --peer broker@cloud1.test --output json 2>/dev/null | python3 -c "
import json, sys
sys.exit(0 if any(r['state'] == 'countersigned' for r in json.load(sys.stdin)) else 1)" 2>/dev/null; then break; fi
    sleep 1
done
"$bin" usage records --config "$demo/cloud2.toml" --peer broker@cloud1.test
echo; echo "== cloud2's bill to cloud1"
"$bin" usage report --config "$demo/cloud2.toml" --peer broker@cloud1.test --from "$(date -u +%Y-%m-%d)" --to now

echo; echo "== stopping cloud2 (SIGTERM) =="
kill -TERM "$(cat "$demo/cloud2.pid")"; wait "$(cat "$demo/cloud2.pid")" 2>/dev/null || true
wait_for "$demo/cloud1.toml" broker@cloud2.test False
"$bin" peers --config "$demo/cloud1.toml"
echo; echo "== cloud1's audit log (trust decisions, the agreement)"
"$bin" audit --config "$demo/cloud1.toml" | head -10
echo; echo "logs and state: $demo"

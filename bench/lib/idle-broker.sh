# Sourced by the scripts that start an idle broker (bench/xmpp/run.sh, bench/xmpp/idle-rss.sh,
# scripts/startup-order.sh): the one configuration of a broker started as an operator would,
# connected to a private Prosody and in one exchange room, with nothing else to do.
#
#   idle_broker_toml CLOUD JID PORT CA_FILE > FILE
idle_broker_toml() {
    cat <<TOML
[broker]
cloud = "$1"
regions = ["r"]
database = "$1.sqlite"
[xmpp]
jid = "$2"
password = "pw"
host = "127.0.0.1"
port = $3
ca_file = "$4"
[discovery]
rooms = ["exchange@conference.cloud1.test"]
TOML
}

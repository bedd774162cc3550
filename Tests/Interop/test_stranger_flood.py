"""A stranger on our XMPP server (slixmpp, an implementation we did not write) floods a running
`intercloud serve`: its presence creates no peer, and two thousand unsigned catalog queries are each
refused `not-authorized` yet cost a bounded number of audit rows, with every refusal counted."""
import asyncio
import json
import subprocess
import time
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from conftest import _intercloud_binary, slix_session

ANNOUNCE_NS = "urn:intercloud:presence:0"
CATALOG_QUERY = "<query xmlns='urn:intercloud:catalog:0'>SELECT * WHERE { ?s ?p ?o }</query>"


def _cli(broker, *arguments):
    return json.loads(subprocess.run(
        [_intercloud_binary(), *arguments, "--config", broker["config"], "--output", "json"],
        check=True, capture_output=True, text=True).stdout)


async def _stranger(prosody, account, body):
    jid, password = account("cloud2.test")
    return await slix_session(prosody, jid, password, "flood", lambda client: body(client, jid))


def test_stranger_presence_creates_no_peer(prosody, broker, account):
    async def body(client, jid):
        # A well-formed announcement, sent straight to the broker: exactly what a peer would send.
        for _ in range(20):
            presence = client.make_presence(pto=broker["jid"])
            presence.append(ET.fromstring(
                f"<announce xmlns='{ANNOUNCE_NS}' cloud='evil' regions='r1' load='0.1' fingerprint=''/>"))
            presence.send()
        await asyncio.sleep(1.5)
        return jid
    stranger = asyncio.run(_stranger(prosody, account, body))
    peers = _cli(broker, "peers")
    assert all(peer["jid"] != stranger for peer in peers), peers
    # Refused and audited, once per window for the twenty presences.
    audit = _cli(broker, "audit", "--peer", stranger)
    assert [event["kind"] for event in audit] == ["discovery.stranger"], audit


def test_unsigned_query_flood_costs_bounded_audit_rows(prosody, broker, account):
    total = 2000

    async def body(client, jid):
        conditions = {}

        async def one():
            iq = client.make_iq(ito=broker["jid"], itype="get")
            iq.append(ET.fromstring(CATALOG_QUERY))
            try:
                await iq.send(timeout=30)
                conditions["answered"] = conditions.get("answered", 0) + 1
            except IqError as error:
                condition = error.iq["error"]["condition"]
                conditions[condition] = conditions.get(condition, 0) + 1

        for start in range(0, total, 100):
            await asyncio.gather(*(one() for _ in range(start, min(total, start + 100))))
        return jid, conditions

    started = time.time()
    stranger, conditions = asyncio.run(_stranger(prosody, account, body))
    # Each is refused: not-authorized (unsigned), or resource-constraint past the 16 requests one
    # sender may have in progress (the per-sender share of the request slots).
    assert set(conditions) <= {"not-authorized", "resource-constraint"}, conditions
    assert sum(conditions.values()) == total and conditions.get("not-authorized", 0) > 0, conditions
    # Every refusal is counted: the first row at once, the rest in summaries when windows end.
    deadline = time.time() + 15
    while True:
        audit = _cli(broker, "audit", "--peer", stranger, "--outcome", "refused")
        if sum(event["count"] for event in audit) == total or time.time() > deadline:
            break
        time.sleep(0.5)
    assert sum(event["count"] for event in audit) == total, audit
    # One window is 3 s here: at most one first row and one summary per window of the flood.
    windows = int((time.time() - started) / 3) + 2
    assert len(audit) <= 2 * windows, (len(audit), windows)
    assert len(audit) < total / 20, len(audit)

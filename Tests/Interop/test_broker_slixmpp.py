"""slixmpp, an XMPP implementation we did not write, talks to a running broker and checks the
RFC 6120 / XEP answers: disco#info, ping, unknown IQ, malformed federation IQ, IQ with two
payloads, a stranger asking for status, and an oversized stanza."""
import asyncio
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from conftest import slix_session

ANNOUNCE_NS = "urn:intercloud:presence:0"


async def _with_client(prosody, account, body):
    jid, password = account()
    return await slix_session(prosody, jid, password, "slix", body)


def run(prosody, account, body):
    return asyncio.run(_with_client(prosody, account, body))


async def _raw_iq(client, to, itype, payload_xml):
    iq = client.make_iq(ito=to, itype=itype)
    for element in payload_xml:
        iq.append(ET.fromstring(element))
    return await iq.send(timeout=10)


def _error_of(excinfo):
    iq = excinfo.value.iq
    return iq["error"]["condition"], iq["error"]["type"]


def test_disco_info_names_the_broker_and_its_features(prosody, broker, account):
    async def body(client):
        return await client.plugin["xep_0030"].get_info(jid=broker["jid"], timeout=10)
    info = run(prosody, account, body)
    identities = info["disco_info"]["identities"]
    features = info["disco_info"]["features"]
    assert any(category == "automation" and kind == "intercloud-broker" for category, kind, *_ in identities)
    for feature in (ANNOUNCE_NS, "urn:xmpp:ping", "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/caps"):
        assert feature in features


def test_ping_is_answered(prosody, broker, account):
    async def body(client):
        return await client.plugin["xep_0199"].ping(jid=broker["jid"], timeout=10)
    rtt = run(prosody, account, body)
    assert rtt < 5


def test_unknown_iq_gets_service_unavailable(prosody, broker, account):
    async def body(client):
        with pytest.raises(IqError) as excinfo:
            await _raw_iq(client, broker["jid"], "get", ["<query xmlns='urn:nobody:unknown:0'/>"])
        return _error_of(excinfo)
    assert run(prosody, account, body) == ("service-unavailable", "cancel")


def test_malformed_federation_iq_gets_bad_request(prosody, broker, account):
    async def body(client):
        with pytest.raises(IqError) as excinfo:
            await _raw_iq(client, broker["jid"], "get", [f"<status xmlns='{ANNOUNCE_NS}'><garbage>&lt;x&gt;</garbage></status>"])
        return _error_of(excinfo)
    assert run(prosody, account, body) == ("bad-request", "modify")


def test_iq_with_two_payloads_gets_bad_request(prosody, broker, account):
    async def body(client):
        with pytest.raises(IqError) as excinfo:
            await _raw_iq(client, broker["jid"], "get", [f"<status xmlns='{ANNOUNCE_NS}'/>", "<ping xmlns='urn:xmpp:ping'/>"])
        return _error_of(excinfo)
    assert run(prosody, account, body) == ("bad-request", "modify")


def test_status_from_a_stranger_is_forbidden(prosody, broker, account):
    async def body(client):
        with pytest.raises(IqError) as excinfo:
            await _raw_iq(client, broker["jid"], "get", [f"<status xmlns='{ANNOUNCE_NS}'/>"])
        return _error_of(excinfo)
    assert run(prosody, account, body) == ("forbidden", "auth")


def test_oversized_stanza_gets_not_acceptable_and_broker_survives(prosody, broker, account):
    async def body(client):
        with pytest.raises(IqError) as excinfo:
            await _raw_iq(client, broker["jid"], "get", ["<query xmlns='urn:intercloud:big:0'>" + "x" * 100_000 + "</query>"])
        condition = _error_of(excinfo)
        rtt = await client.plugin["xep_0199"].ping(jid=broker["jid"], timeout=10)
        return condition, rtt
    condition, rtt = run(prosody, account, body)
    assert condition == ("not-acceptable", "modify")
    assert rtt < 5
    assert "refused oversized stanza" in broker["log"].read_text()


@pytest.mark.parametrize("payload", [
    "<negotiation xmlns='urn:intercloud:negotiation:0'>{\"negotiationID\":\"neg-1\",\"messageID\":\"neg-1/consumer/1\",\"body\":{\"accept\":{}}}</negotiation>",
    "<usage xmlns='urn:intercloud:metering:0' record='Zm9ybWF0PXVybjppbnRlcmNsb3VkOnVzYWdlOjAK' signature='AA=='/>",
])
def test_unsigned_negotiation_and_usage_records_are_refused_and_audited(prosody, broker, account, payload):
    """Federation namespaces accept only envelopes signed by a trusted peer: a plain message from
    an XMPP client we did not write is refused `not-authorized` and lands in the audit log."""
    async def body(client):
        with pytest.raises(IqError) as excinfo:
            await _raw_iq(client, broker["jid"], "set", [payload])
        return _error_of(excinfo)
    assert run(prosody, account, body) == ("not-authorized", "auth")
    namespace = ET.fromstring(payload).tag.split("}")[0].lstrip("{")
    import json
    import subprocess
    from conftest import _intercloud_binary
    audit = json.loads(subprocess.run(
        [_intercloud_binary(), "audit", "--config", broker["config"], "--outcome", "refused", "--output", "json"],
        check=True, capture_output=True, text=True).stdout)
    assert any(event["action"] == namespace for event in audit), audit

"""A peer written from docs/protocol alone (independent_peer.py: slixmpp + cryptography) against
the documents' own examples and against a running `intercloud serve` over a real Prosody: it
completes the trust handshake, sends a signed catalog query, verifies the signed answer and its
binding to the request, makes a session and queries under it, negotiates with the broker's
requests signed or under the session it offered, and gets the refusals the documents promise."""
import asyncio
import datetime
import json
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import independent_peer as peer
from conftest import intercloud_cli, slix_session

DOCS = Path(__file__).resolve().parents[2] / "docs/protocol"
OWN_NAME = "https://intercloud.example.org/ontology#name"
OWN_ADDRESS = "https://intercloud.example.org/ontology#xmppAddress"


# --- A PKI of the peer's own, made with `cryptography` -----------------------------------------

class PeerCA:
    """A root and an intermediate CA, and broker leaves under them with an XmppAddr."""

    def __init__(self, name):
        now = datetime.datetime.now(datetime.timezone.utc)
        self.validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")]), self.root_key, None, None)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = self._ca(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")]), self.ca_key, self.root, self.root_key)

    def _builder(self, subject, issuer, key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(self.validity[0]).not_valid_after(self.validity[1])
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))

    def _ca(self, subject, key, issuer, issuer_key):
        builder = (self._builder(subject, issuer.subject if issuer else subject, key)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True))
        return builder.sign(issuer_key or key, hashes.SHA256())

    @property
    def root_pem(self):
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue(self, jid):
        """A broker identity for `jid`: leaf (digitalSignature, clientAuth+serverAuth, XmppAddr) + intermediate."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = jid.encode()
        leaf = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, jid)]), self.ca.subject, key)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.OtherName(peer.XMPP_ADDR, bytes([0x0C, len(name)]) + name)]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        return peer.Identity(key, [c.public_bytes(serialization.Encoding.DER) for c in (leaf, self.ca)])


@pytest.fixture(scope="module")
def peer_ca():
    return PeerCA("independent peer")


@pytest.fixture(scope="module")
def broker(trusted_broker_factory, peer_ca):
    """A broker that trusts the peer's root (and nothing else but its own)."""
    return trusted_broker_factory([peer_ca.root_pem])


def run_peer(prosody, account, identity_for, anchors, body):
    """Logs a fresh account in with slixmpp and runs `body(peer)` with an identity issued for it."""
    jid, password = account()
    identity = identity_for(jid)

    async def session(client):
        return await body(peer.IndependentPeer(client, identity, anchors))
    return asyncio.run(slix_session(prosody, jid, password, "peer", session)), jid, identity


# --- The documents' examples, checked with this implementation ---------------------------------

def examples(document):
    text = (DOCS / f"{document}.md").read_text()
    return [ET.fromstring(block) for block in re.findall(r"```xml\n(.*?)```", text, re.S)
            if not block.lstrip().startswith("<!-- invalid:")]


def hex_dumps(document):
    text = (DOCS / f"{document}.md").read_text()
    return [bytes.fromhex("".join(line.split(None, 1)[1] for line in block.strip().splitlines()))
            for block in re.findall(r"```hex\n(.*?)```", text, re.S)]


def invalid_examples(document):
    text = (DOCS / f"{document}.md").read_text()
    return [block for block in re.findall(r"```xml\n(.*?)```", text, re.S) if block.lstrip().startswith("<!-- invalid:")]


def invalid_payload(document, reason):
    """The bytes of the document's invalid example whose comment starts with `reason`, comment removed."""
    block = next(b for b in invalid_examples(document) if b.lstrip().startswith(f"<!-- invalid: {reason}"))
    return re.sub(r"^\s*<!--.*?-->\s*", "", block, flags=re.S).strip().encode()


def hex_table(document):
    """The rows of a document's table whose value is one hex string: {name: bytes}."""
    text = (DOCS / f"{document}.md").read_text()
    return {name: bytes.fromhex(value) for name, value in re.findall(r"^\| ([a-zA-Z ]+) \| `([0-9a-f]+)` \|$", text, re.M)}


def raw_examples(document):
    """The valid XML examples as bytes, exactly as written."""
    text = (DOCS / f"{document}.md").read_text()
    return [block.strip().encode() for block in re.findall(r"```xml\n(.*?)```", text, re.S)
            if not block.lstrip().startswith("<!-- invalid:")]


def example_certificates():
    certificates = {}
    for name in ("broker-cloud1.example.pem", "broker-cloud2.example.pem"):
        certificate = x509.load_pem_x509_certificate((DOCS / "examples" / name).read_bytes())
        certificates[peer.xmpp_addrs(certificate)[0]] = certificate
    root = x509.load_pem_x509_certificate((DOCS / "examples/example-root.pem").read_bytes())
    return certificates, root


EXAMPLE_TIME = datetime.datetime(2026, 6, 1, 12, tzinfo=datetime.timezone.utc)


def test_trust_examples_verify_with_this_implementation():
    certificates, root = example_certificates()
    stanzas = examples("trust")
    hello_iq = next(s for s in stanzas if s.find(f"{{{peer.TRUST_NS}}}hello") is not None)
    result_iq = next(s for s in stanzas if s.find(f"{{{peer.TRUST_NS}}}result") is not None)
    finish_iq = next(s for s in stanzas if s.find(f"{{{peer.TRUST_NS}}}finish") is not None)
    hello = hello_iq.find(f"{{{peer.TRUST_NS}}}hello")
    initiator, responder = hello_iq.get("from"), hello_iq.get("to")
    na = peer.unb64(hello.get("nonce"), 16, 64)
    initiator_chain = [peer.unb64(c.text) for c in hello.findall(f"{{{peer.TRUST_NS}}}cert")]
    nb, echo, responder_chain, responder_proof = peer.parse_result(result_iq.find(f"{{{peer.TRUST_NS}}}result"))
    assert echo == na
    initiator_leaf = peer.verify_chain(initiator_chain, initiator, [root], EXAMPLE_TIME)
    responder_leaf = peer.verify_chain(responder_chain, responder, [root], EXAMPLE_TIME)
    assert initiator_leaf == certificates[peer.bare(initiator)] and responder_leaf == certificates[peer.bare(responder)]
    signed = peer.transcript("responder", initiator, responder, na, nb, initiator_chain[0], responder_chain[0])
    assert hex_dumps("trust") == [signed]
    assert peer.verify(responder_leaf.public_key(), responder_proof, signed)
    finish = finish_iq.find(f"{{{peer.TRUST_NS}}}finish")
    initiator_proof = peer.unb64(finish.find(f"{{{peer.TRUST_NS}}}signature").text)
    as_initiator = peer.transcript("initiator", initiator, responder, na, nb, initiator_chain[0], responder_chain[0])
    assert peer.verify(initiator_leaf.public_key(), initiator_proof, as_initiator)
    # Each proof is bound to its role, its JIDs and its certificates.
    assert not peer.verify(responder_leaf.public_key(), responder_proof, as_initiator)
    assert not peer.verify(responder_leaf.public_key(), responder_proof,
                           peer.transcript("responder", "broker@cloud3.example", responder, na, nb, initiator_chain[0], responder_chain[0]))
    # The chains are refused for the wrong JID, without the anchor, and before their validity.
    with pytest.raises(peer.Refusal, match="xmppAddrMismatch"):
        peer.verify_chain(initiator_chain, responder, [root], EXAMPLE_TIME)
    with pytest.raises(peer.Refusal, match="unknownCA"):
        peer.verify_chain(initiator_chain, initiator, [], EXAMPLE_TIME)
    with pytest.raises(peer.Refusal, match="notYetValid"):
        peer.verify_chain(initiator_chain, initiator, [root], datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc))


def test_envelope_examples_verify_with_this_implementation():
    certificates, _ = example_certificates()
    stanzas = [s for s in examples("envelope") if s.find(f"{{{peer.ENVELOPE_NS}}}signed") is not None
               and s.find(f"{{{peer.ENVELOPE_NS}}}signed").get("sig") is not None]
    request_iq, answer_iq = stanzas
    pins = {jid: peer.Pin(jid, certificate, certificate.public_bytes(serialization.Encoding.DER)) for jid, certificate in certificates.items()}
    request = peer.decode_envelope(request_iq.find(f"{{{peer.ENVELOPE_NS}}}signed"))
    answer = peer.decode_envelope(answer_iq.find(f"{{{peer.ENVELOPE_NS}}}signed"))
    assert hex_dumps("envelope") == [request.signed_bytes(request_iq.get("from"), request_iq.get("to")),
                                     answer.signed_bytes(answer_iq.get("from"), answer_iq.get("to"))]
    window = peer.ReplayWindow()
    opened = peer.open_envelope(request_iq.find(f"{{{peer.ENVELOPE_NS}}}signed"), request_iq.get("from"), request_iq.get("to"),
                                peer.CATALOG_NS, pins[peer.bare(request_iq.get("from"))], window, now_ms=request.timestamp_ms)
    assert opened.payload.startswith(b"<query xmlns='urn:intercloud:catalog:0'>")
    answer_element = answer_iq.find(f"{{{peer.ENVELOPE_NS}}}signed")
    answer_pin = pins[peer.bare(answer_iq.get("from"))]
    arguments = (answer_iq.get("from"), answer_iq.get("to"), peer.CATALOG_NS, answer_pin)
    # The answer opens only as the answer to its request, once, within the window.
    with pytest.raises(peer.Refusal, match="notThisExchange"):
        peer.open_envelope(answer_element, *arguments, peer.ReplayWindow(), answering=None, now_ms=answer.timestamp_ms)
    with pytest.raises(peer.Refusal, match="notThisExchange"):
        peer.open_envelope(answer_element, *arguments, peer.ReplayWindow(), answering=bytes(16), now_ms=answer.timestamp_ms)
    with pytest.raises(peer.Refusal, match="stale"):
        peer.open_envelope(answer_element, *arguments, peer.ReplayWindow(), answering=request.nonce, now_ms=answer.timestamp_ms + 121_000)
    opened = peer.open_envelope(answer_element, *arguments, window, answering=request.nonce, now_ms=answer.timestamp_ms)
    # The request opens once: the same envelope again is a replay.
    with pytest.raises(peer.Refusal, match="replayed"):
        peer.open_envelope(request_iq.find(f"{{{peer.ENVELOPE_NS}}}signed"), request_iq.get("from"), request_iq.get("to"),
                           peer.CATALOG_NS, pins[peer.bare(request_iq.get("from"))], window, now_ms=request.timestamp_ms)
    results = peer.parse_results(opened.payload)
    assert results["rows"] == [{"cloud": ("uri", "urn:intercloud:cloud:cloud2", None), "name": ("literal", "cloud2", None)}]
    # Redirected to another broker, or signed by the other one, it does not verify.
    with pytest.raises(peer.Refusal, match="badSignature"):
        peer.open_envelope(answer_element, answer_iq.get("from"), "broker@cloud3.example", peer.CATALOG_NS, answer_pin,
                           peer.ReplayWindow(), answering=request.nonce, now_ms=answer.timestamp_ms)
    with pytest.raises(peer.Refusal, match="badSignature"):
        wrong = pins[peer.bare(request_iq.get("from"))]
        peer.open_envelope(answer_element, answer_iq.get("from"), answer_iq.get("to"), peer.CATALOG_NS,
                           peer.Pin(answer_pin.jid, wrong.leaf, wrong.leaf_der), peer.ReplayWindow(), answering=request.nonce,
                           now_ms=answer.timestamp_ms)
    # The documents' invalid envelopes are refused here too.
    for block in invalid_examples("envelope"):
        with pytest.raises(peer.Refusal, match="malformed"):
            peer.decode_envelope(ET.fromstring(block))


def test_session_test_vector_and_mac_from_the_documents():
    """session.md's test vector, reproduced from RFC 7748's private keys, and envelope.md's request
    under that session opened with the derived key."""
    vector = hex_table("session")
    requester_private = x25519.X25519PrivateKey.from_private_bytes(vector["requester private key"])
    responder_private = x25519.X25519PrivateKey.from_private_bytes(vector["responder private key"])
    requester_key, responder_key = peer.raw_public(requester_private), peer.raw_public(responder_private)
    # The offer and accept examples carry those public keys.
    payloads = {ET.fromstring(raw).tag.split("}")[1]: raw for raw in raw_examples("session") if raw.startswith(b"<offer") or raw.startswith(b"<accept")}
    assert peer.parse_offer(payloads["offer"]) == requester_key
    accepted_key, accepted_id, seconds = peer.parse_accept(payloads["accept"])
    assert accepted_key == responder_key and seconds == 3600
    # Both sides compute the document's shared secret.
    shared = peer.x25519_shared(requester_private, responder_key)
    assert shared == vector["shared secret"] == peer.x25519_shared(responder_private, requester_key)
    # The exchange is the one of envelope.md's request under this session: its routed JIDs are the
    # requester (from) and the responder (to).
    session_iq = next(s for s in examples("envelope")
                      if s.find(f"{{{peer.ENVELOPE_NS}}}signed") is not None and s.find(f"{{{peer.ENVELOPE_NS}}}signed").get("session"))
    requester, responder = session_iq.get("from"), session_iq.get("to")
    assert hex_dumps("session") == [peer.session_info(requester, responder, requester_key, responder_key)]
    key, session_id = peer.derive_session(shared, requester, responder, requester_key, responder_key)
    assert (key, session_id) == (vector["MAC key"], vector["session id"]) and accepted_id == session_id
    # The roles, the JIDs and the keys are all bound: swapping any gives another key and id.
    for other in (peer.derive_session(shared, responder, requester, requester_key, responder_key),
                  peer.derive_session(shared, requester, responder, responder_key, requester_key),
                  peer.derive_session(shared, requester, "broker@cloud3.example", requester_key, responder_key)):
        assert other[0] != key and other[1] != session_id
    # A low-order public key (here the zero point) gives an all-zero secret, which is refused.
    with pytest.raises(peer.Malformed, match="low order"):
        peer.derive_session(peer.x25519_shared(requester_private, bytes(32)), requester, responder, requester_key, bytes(32))

    # envelope.md's request under the session: its MAC is the HMAC of its signed bytes under the key.
    element = session_iq.find(f"{{{peer.ENVELOPE_NS}}}signed")
    envelope = peer.decode_envelope(element)
    assert envelope.signature is None and envelope.session == session_id
    assert envelope.mac == peer.session_mac(key, envelope.signed_bytes(requester, responder))
    signed_request = next(s for s in examples("envelope") if s.find(f"{{{peer.ENVELOPE_NS}}}signed") is not None
                          and s.find(f"{{{peer.ENVELOPE_NS}}}signed").get("sig") and s.get("type") == "get")
    assert envelope.payload == peer.decode_envelope(signed_request.find(f"{{{peer.ENVELOPE_NS}}}signed")).payload
    # It opens at the responder that holds the session, made under the requester's current pin...
    certificates, _ = example_certificates()
    certificate = certificates[peer.bare(requester)]
    pin = peer.Pin(peer.bare(requester), certificate, certificate.public_bytes(serialization.Encoding.DER))

    def store(**changes):
        values = dict(id=session_id, key=key, peer=peer.bare(requester), pin_fingerprint=pin.fingerprint,
                      expires_ms=envelope.timestamp_ms + 3_600_000) | changes
        sessions = peer.SessionStore()
        sessions.keep(peer.Session(**values))
        return sessions

    def opened(sessions, sender=requester, recipient=responder):
        return peer.open_envelope(element, sender, recipient, peer.CATALOG_NS, pin, peer.ReplayWindow(),
                                  now_ms=envelope.timestamp_ms, sessions=sessions)
    assert opened(store()).payload == envelope.payload
    # ...and is refused unknownSession without it, when it expired, was made with another broker or
    # under another pin; badSignature under another key or redirected.
    for sessions in (peer.SessionStore(), store(expires_ms=envelope.timestamp_ms), store(peer="broker@cloud3.example"),
                     store(pin_fingerprint="0" * 64)):
        with pytest.raises(peer.Refusal, match="unknownSession"):
            opened(sessions)
    with pytest.raises(peer.Refusal, match="badSignature"):
        opened(store(key=bytes(32)))
    with pytest.raises(peer.Refusal, match="badSignature"):
        opened(store(), recipient="broker@cloud3.example")

    # session.md's invalid payloads are refused, and the refusal of an offer with content carries
    # the text the document shows.
    with pytest.raises(peer.Malformed, match="32-byte key"):
        peer.parse_offer(invalid_payload("session", "a key of 31 bytes"))
    with pytest.raises(peer.Malformed, match="seconds"):
        peer.parse_accept(invalid_payload("session", "a session kept longer than an hour"))
    error_iq = next(s for s in examples("session") if s.get("type") == "error")
    condition, error_type, text, _ = peer.stanza_error(error_iq)
    assert (condition, error_type) == ("bad-request", "modify")
    with pytest.raises(peer.Malformed) as caught:
        peer.parse_offer(invalid_payload("session", "an offer with content"))
    assert str(caught.value) == text


def test_negotiation_examples_verify_with_this_implementation():
    certificates, _ = example_certificates()
    text = (DOCS / "negotiation.md").read_text()
    canonical = re.findall(r"```canonical\n(.*?)```", text, re.S)
    messages = {}
    for stanza in examples("negotiation"):
        element = stanza.find(f"{{{peer.ENVELOPE_NS}}}signed")
        if element is None:
            continue
        sender, recipient = stanza.get("from"), stanza.get("to")
        leaf = certificates[peer.bare(sender)]
        pin = peer.Pin(peer.bare(sender), leaf, leaf.public_bytes(serialization.Encoding.DER))
        envelope = peer.decode_envelope(element)
        opened = peer.open_envelope(element, sender, recipient, peer.NEGOTIATION_NS, pin, peer.ReplayWindow(),
                                    answering=envelope.answered, now_ms=envelope.timestamp_ms)
        if opened.answered is None:
            message, signature = peer.parse_negotiation(opened.payload)
            messages[peer.kind_of(message)] = (message, signature, leaf)
    assert sorted(messages) == ["agreement", "finalize", "request", "verify"]
    agreement_message, provider_signature, provider_leaf = messages["agreement"]
    agreement = agreement_message["body"]["agreement"]["_0"]
    # The canonical text this peer computes is the document's, and both signatures verify over it.
    assert [peer.canonical_agreement(agreement).decode()] == canonical
    assert peer.verify(provider_leaf.public_key(), provider_signature, peer.canonical_agreement(agreement))
    _, countersignature, consumer_leaf = messages["verify"]
    assert peer.verify(consumer_leaf.public_key(), countersignature, peer.canonical_agreement(agreement))
    assert not peer.verify(consumer_leaf.public_key(), provider_signature, peer.canonical_agreement(agreement))
    # The agreement is over exactly the terms requested.
    request, _, _ = messages["request"]
    assert peer.normalized_terms(agreement["terms"]) == peer.normalized_terms(request["body"]["request"]["_0"])


# --- Against a running broker ------------------------------------------------------------------

SELF_QUERY = (f"SELECT ?cloud ?name ?address WHERE {{ GRAPH <urn:intercloud:graph:self> "
              f"{{ ?cloud <{OWN_NAME}> ?name ; <{OWN_ADDRESS}> ?address }} }}")


def test_handshake_then_signed_catalog_query_with_a_verified_answer(prosody, broker, account, peer_ca):
    anchors = [x509.load_pem_x509_certificate(broker["root_pem"])]

    async def body(independent):
        pin = await independent.handshake(broker["jid"])
        results = await independent.catalog_query(broker["jid"], SELF_QUERY)
        return pin, results, independent.last

    (pin, results, exchange), jid, identity = run_peer(prosody, account, peer_ca.issue, anchors, body)
    # The broker we pinned is the one that announces this fingerprint.
    assert f"announcing fingerprint {pin.fingerprint}" in broker["log"].read_text()
    # The answer: signed by it, bound to our request, the rows of its self-description.
    assert exchange.answer.answered == exchange.request.nonce and exchange.answer.namespace == peer.CATALOG_NS
    assert peer.bare(exchange.sender) == broker["bare"]
    assert results["variables"] == ["cloud", "name", "address"]
    assert results["rows"] == [{"cloud": ("uri", f"urn:intercloud:cloud:{broker['cloud']}", None),
                                "name": ("literal", broker["cloud"], None),
                                "address": ("literal", broker["bare"], None)}]
    # The signature covers the binding: any other request nonce, the request direction, another
    # payload or another recipient does not verify.
    key, answer = pin.leaf.public_key(), exchange.answer
    assert peer.verify(key, answer.signature, answer.signed_bytes(exchange.sender, exchange.recipient))
    for changed in (dict(answered=bytes(16)), dict(answered=None), dict(payload=answer.payload + b" ")):
        values = dict(namespace=answer.namespace, timestamp_ms=answer.timestamp_ms, nonce=answer.nonce,
                      answered=answer.answered, payload=answer.payload) | changed
        assert not peer.verify(key, answer.signature, peer.envelope_bytes(exchange.sender, exchange.recipient, **values))
    assert not peer.verify(key, answer.signature, answer.signed_bytes(exchange.sender, "someone@cloud2.test"))
    # And the broker pinned us: our leaf, trusted.
    listing = intercloud_cli("trust", "list", "--config", broker["config"])
    line = next(line for line in listing.splitlines() if jid in line)
    assert "trusted" in line and peer.fingerprint(identity.leaf_der)[:16] in line, listing


def test_broker_refuses_what_the_documents_say_it_refuses(prosody, broker, account, peer_ca):
    anchors = [x509.load_pem_x509_certificate(broker["root_pem"])]

    async def refusal(independent, payload, itype="get"):
        with pytest.raises(peer.PeerError) as caught:
            await independent.iq(broker["jid"], itype, payload)
        return caught.value.condition, caught.value.type, caught.value.text

    async def body(independent):
        target, me = broker["jid"], independent.jid
        outcomes = {}
        # Before the handshake: a correctly signed envelope from an unpinned sender.
        envelope = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"))
        outcomes["unpinned"] = await refusal(independent, envelope.element())
        await independent.handshake(target)
        # Signed requests the documents say are refused.
        envelope = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"))
        answer = await independent.iq(target, "get", envelope.element())
        assert answer.find(f"{{{peer.ENVELOPE_NS}}}signed").get("re") == peer.b64(envelope.nonce)
        outcomes["replayed"] = await refusal(independent, envelope.element())
        forged = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"))
        forged.payload = peer.query_payload("ASK { ?s ?p ?o }")
        outcomes["badSignature"] = await refusal(independent, forged.element())
        old = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"),
                        timestamp_ms=envelope.timestamp_ms - 300_000)
        outcomes["stale"] = await refusal(independent, old.element())
        as_answer = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"), answered=envelope.nonce)
        outcomes["notThisExchange"] = await refusal(independent, as_answer.element())
        redirected = peer.seal(independent.identity, me, "someone@cloud1.test", peer.CATALOG_NS, peer.query_payload("ASK {}"))
        outcomes["redirected"] = await refusal(independent, redirected.element())
        unsigned = ET.fromstring(peer.query_payload("ASK {}"))
        outcomes["unsigned"] = await refusal(independent, unsigned)
        nothing = peer.seal(independent.identity, me, target, "urn:intercloud:nothing:0", b"<x xmlns='urn:intercloud:nothing:0'/>")
        outcomes["unserved"] = await refusal(independent, nothing.element())
        syntax = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("SELECT ?x WHERE { ?x ?y }"))
        outcomes["syntax"] = await refusal(independent, syntax.element())
        child = peer.seal(independent.identity, me, target, peer.CATALOG_NS,
                          b"<query xmlns='urn:intercloud:catalog:0'>ASK {}<limit>1</limit></query>")
        outcomes["child"] = await refusal(independent, child.element())
        # And still a good query afterwards: none of this broke the pin.
        outcomes["ask"] = await independent.catalog_query(target, "ASK { GRAPH ?g { ?s ?p ?o } }")
        return outcomes

    outcomes, _, _ = run_peer(prosody, account, peer_ca.issue, anchors, body)
    for name in ("unpinned", "replayed", "badSignature", "stale", "notThisExchange", "redirected", "unsigned"):
        assert outcomes[name][:2] == ("not-authorized", "auth"), (name, outcomes[name])
    assert outcomes["unpinned"][2].startswith("untrustedSender: ")
    assert outcomes["replayed"][2].startswith("replayed: nonce already seen from ")
    assert outcomes["badSignature"][2].startswith("badSignature: ")
    assert outcomes["stale"][2].startswith("stale: ")
    assert outcomes["notThisExchange"][2] == "notThisExchange: an answer presented as a request"
    assert outcomes["redirected"][2].startswith("badSignature: ")
    assert outcomes["unsigned"][2] == "unsigned: payload <query> in urn:intercloud:catalog:0 is not signed"
    assert outcomes["unserved"] == ("service-unavailable", "cancel", "no signed service in urn:intercloud:nothing:0")
    assert outcomes["syntax"][:2] == ("bad-request", "modify")
    assert re.match(r"line 1, column \d+: ", outcomes["syntax"][2]), outcomes["syntax"]
    assert outcomes["child"] == ("bad-request", "modify",
                                 "expected <query xmlns='urn:intercloud:catalog:0'>SPARQL</query> of at most 32768 bytes")
    assert outcomes["ask"] == {"boolean": True}


def test_session_then_catalog_query_under_it_and_its_refusals(prosody, broker, account, peer_ca):
    """session.md against the broker: a signed offer, a signed accept whose id we derive too, then a
    query under the session answered under it; and the refusals envelope.md and session.md promise."""
    anchors = [x509.load_pem_x509_certificate(broker["root_pem"])]

    async def refusal(independent, payload, itype="get"):
        with pytest.raises(peer.PeerError) as caught:
            await independent.iq(broker["jid"], itype, payload)
        return caught.value.condition, caught.value.type, caught.value.text

    async def body(independent):
        target, me = broker["jid"], independent.jid
        pin = await independent.handshake(target)
        session = await independent.make_session(target)
        offered = independent.last
        results = await independent.catalog_query(target, SELF_QUERY, session=session)
        under = independent.last
        outcomes = {}
        # A session the broker never made.
        unknown = peer.Session(bytes(16), bytes(32), peer.bare(target), pin.fingerprint, 0)
        envelope = peer.seal_under(unknown, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"))
        outcomes["unknownSession"] = await refusal(independent, envelope.element())
        # Our session, a MAC with one bit changed.
        envelope = peer.seal_under(session, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"))
        envelope.mac = bytes([envelope.mac[0] ^ 1]) + envelope.mac[1:]
        outcomes["tampered"] = await refusal(independent, envelope.element())
        # Signed and under the session at once.
        envelope = peer.seal(independent.identity, me, target, peer.CATALOG_NS, peer.query_payload("ASK {}"))
        both = peer.seal_under(session, me, target, peer.CATALOG_NS, envelope.payload, timestamp_ms=envelope.timestamp_ms, nonce=envelope.nonce)
        envelope.session, envelope.mac = both.session, both.mac
        outcomes["both"] = await refusal(independent, envelope.element())
        # session.md's invalid offers, signed as offers are, and an offer that is not an IQ set.
        for name, reason in (("short key", "a key of 31 bytes"), ("content", "an offer with content")):
            envelope = peer.seal(independent.identity, me, target, peer.SESSION_NS, invalid_payload("session", reason))
            outcomes[name] = await refusal(independent, envelope.element(), "set")
        envelope = peer.seal(independent.identity, me, target, peer.SESSION_NS, peer.offer_payload(peer.raw_public(x25519.X25519PrivateKey.generate())))
        outcomes["get"] = await refusal(independent, envelope.element(), "get")
        # None of this spoiled the session, and a signed request still gets a signed answer.
        outcomes["after"] = await independent.catalog_query(target, "ASK { GRAPH ?g { ?s ?p ?o } }", session=session)
        outcomes["after under"] = independent.last
        outcomes["signed"] = await independent.catalog_query(target, "ASK { GRAPH ?g { ?s ?p ?o } }")
        outcomes["signed answer"] = independent.last
        # Under a session the broker does not hold, the peer is refused, forgets it and signs instead.
        independent.sessions.keep(unknown)
        outcomes["fallback"] = await independent.catalog_query(target, "ASK { GRAPH ?g { ?s ?p ?o } }", session=unknown)
        outcomes["fallback exchange"] = independent.last
        outcomes["forgotten"] = unknown.id not in independent.sessions.by_id
        return session, offered, results, under, outcomes

    (session, offered, results, under, outcomes), jid, _ = run_peer(prosody, account, peer_ca.issue, anchors, body)
    # The offer went signed and its accept came back signed, bound to it.
    assert offered.request.signature is not None and offered.request.session is None
    assert offered.answer.signature is not None and offered.answer.session is None
    assert offered.answer.answered == offered.request.nonce and offered.answer.namespace == peer.SESSION_NS
    _, accepted_id, seconds = peer.parse_accept(offered.answer.payload)
    assert accepted_id == session.id and 1 <= seconds <= 3600
    # The query went under the session (no signature), and so did its answer: the same session, a
    # MAC that verifies with the key we derived, bound to our request's nonce.
    assert under.request.signature is None and under.request.session == session.id
    answer = under.answer
    assert answer.signature is None and answer.session == session.id
    assert answer.answered == under.request.nonce and answer.namespace == peer.CATALOG_NS
    assert answer.mac == peer.session_mac(session.key, answer.signed_bytes(under.sender, under.recipient))
    for changed in (dict(answered=bytes(16)), dict(answered=None), dict(payload=answer.payload + b" ")):
        values = dict(namespace=answer.namespace, timestamp_ms=answer.timestamp_ms, nonce=answer.nonce,
                      answered=answer.answered, payload=answer.payload) | changed
        assert answer.mac != peer.session_mac(session.key, peer.envelope_bytes(under.sender, under.recipient, **values))
    assert results["rows"] == [{"cloud": ("uri", f"urn:intercloud:cloud:{broker['cloud']}", None),
                                "name": ("literal", broker["cloud"], None),
                                "address": ("literal", broker["bare"], None)}]
    # The refusals.
    assert outcomes["unknownSession"][:2] == ("not-authorized", "auth")
    assert outcomes["unknownSession"][2].startswith("unknownSession"), outcomes["unknownSession"]
    assert outcomes["tampered"][:2] == ("not-authorized", "auth")
    assert outcomes["tampered"][2].startswith("badSignature"), outcomes["tampered"]
    assert outcomes["both"][:2] == ("not-authorized", "auth")
    assert outcomes["both"][2].startswith("malformed"), outcomes["both"]
    assert outcomes["short key"][:2] == ("bad-request", "modify"), outcomes["short key"]
    assert outcomes["content"] == ("bad-request", "modify", "<offer/> has content")
    assert outcomes["get"] == ("bad-request", "modify", "a session offer is an IQ set")
    assert outcomes["after"] == {"boolean": True} and outcomes["after under"].answer.session == session.id
    assert outcomes["signed"] == {"boolean": True}
    signed = outcomes["signed answer"]
    assert signed.request.session is None and signed.answer.session is None and signed.answer.signature is not None
    fallback = outcomes["fallback exchange"]
    assert outcomes["fallback"] == {"boolean": True} and outcomes["forgotten"]
    assert fallback.request.signature is not None and fallback.answer.signature is not None


def test_handshake_refusals_both_ways(prosody, broker, account, peer_ca):
    broker_root = x509.load_pem_x509_certificate(broker["root_pem"])
    stranger_ca = PeerCA("a CA the broker does not know")

    async def refused_by_broker(independent):
        with pytest.raises(peer.Refusal) as caught:
            await independent.handshake(broker["jid"])
        return caught.value

    # The broker refuses a chain that does not end at one of its anchors, and a leaf for another JID.
    unknown, _, _ = run_peer(prosody, account, stranger_ca.issue, [broker_root], refused_by_broker)
    assert unknown.reason == "peerRefused" and unknown.detail.startswith("unknownCA: "), unknown
    other_jid, _, _ = run_peer(prosody, account, lambda jid: peer_ca.issue("someone-else@cloud2.test"), [broker_root],
                               refused_by_broker)
    assert other_jid.reason == "peerRefused" and other_jid.detail.startswith("xmppAddrMismatch: "), other_jid

    # We refuse a broker whose chain does not end at one of ours, and tell it (it answers an empty result).
    async def refusing(independent):
        with pytest.raises(peer.Refusal) as caught:
            await independent.handshake(broker["jid"])
        return caught.value, independent.pins

    (ours, pins), jid, _ = run_peer(prosody, account, peer_ca.issue, [stranger_ca.root], refusing)
    assert ours.reason == "unknownCA" and pins == {}
    # The broker had verified us and answered; it pinned nothing, as the handshake never finished.
    assert jid not in intercloud_cli("trust", "list", "--config", broker["config"])


# --- Negotiation to FINALIZED ------------------------------------------------------------------

POLICY = """
version = 1

[[peer]]
name = "independent peers"
match = ["*@cloud2.test"]
entitlements = ["query", "migrate-in"]

[peer.quota]
instances = 4
vcpu = 8
memory_gib = 16
storage_gib = 100
transfer_gb = "50.5"

[peer.rates]
currency = "EUR"
per_gb_transferred = "0.02"
per_gb_month_stored = "0.04"

[peer.rates.instance_hour]
"m1.small" = "0.0450"

[peer.sla_offered]
availability_percent = "99.9"
max_migration_downtime_seconds = 300
support = "24x7"

[peer.placement]
regions = ["eu-west"]
jurisdictions = ["EU"]
"""


@pytest.fixture(scope="module")
def provider(trusted_broker_factory, peer_ca):
    """A broker whose policy lets brokers at cloud2.test query and migrate in, at its prices."""
    return trusted_broker_factory([peer_ca.root_pem], policy=POLICY)


def requested_terms(entitlements=("query",), price="0.03"):
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    D = peer.Decimal
    return {
        "resources": {"instances": 2, "vcpu": 4, "memoryGiB": D("8"), "storageGiB": D("40"), "transferGB": D("10.5")},
        "instanceTypes": ["m1.small"],
        "period": {"from": now - 60, "until": now + 86_400},
        "rates": {"currency": "EUR", "instanceHour": {"m1.small": D(price)}, "perGBTransferred": D("0.02"),
                  "perGBMonthStored": D("0.04"), "perThousandCalls": D("0")},
        "sla": {"availabilityPercent": D("99"), "maxMigrationDowntimeSeconds": 600, "support": ""},
        "entitlements": list(entitlements),
        "placement": {"regions": ["eu-west"], "jurisdictions": ["EU"]},
    }


def negotiate(prosody, account, peer_ca, provider, terms, served=None, session_responder=False, **options):
    """Negotiates as consumer with `provider`; `served`, a list, gets what the provider asked the peer
    (IndependentPeer.served_log); `session_responder`: whether the peer accepts session offers."""
    anchors = [x509.load_pem_x509_certificate(provider["root_pem"])]

    async def body(independent):
        independent.session_responder = session_responder
        if served is not None:
            independent.served_log = served
        await independent.handshake(provider["jid"])
        try:
            return await independent.negotiate(provider["jid"], terms, **options)
        except (peer.PeerError, peer.Refusal):
            return next(iter(independent.negotiations.values()))
    return run_peer(prosody, account, peer_ca.issue, anchors, body)


def test_negotiation_to_finalized_with_a_counter_offer(prosody, provider, account, peer_ca, tmp_path):
    served = []
    negotiation, jid, _ = negotiate(prosody, account, peer_ca, provider, requested_terms(price="0.03"), served=served)
    assert negotiation.state == "FINALIZED", negotiation.reason
    # The provider offered a session when it first sent us a request; this peer serves no sessions
    # and answered as for any namespace it does not serve (session.md), once: the provider went on
    # signing and did not offer again.
    offers = [entry for entry in served if entry[0] == peer.SESSION_NS]
    assert offers == [(peer.SESSION_NS, "signed", f"service-unavailable: no signed service in {peer.SESSION_NS}")], served
    assert {entry for entry in served if entry[0] != peer.SESSION_NS} == {(peer.NEGOTIATION_NS, "signed", "result")}, served
    # Our price was too low: the provider countered at its rate card, we accepted, it agreed.
    assert [peer.kind_of(m) for m in negotiation.received] == ["offer", "agreement", "finalize"]
    offer = negotiation.received[0]["body"]["offer"]["_0"]
    assert offer["rates"]["instanceHour"] == {"m1.small": peer.Decimal("0.045")}
    assert offer["sla"] == {"availabilityPercent": peer.Decimal("99.9"), "maxMigrationDowntimeSeconds": 300, "support": "24x7"}
    agreement = negotiation.agreement
    assert (agreement["consumer"], agreement["provider"]) == (jid, provider["bare"])
    # The broker holds it FINALIZED, with our countersignature, and its own tool verifies both
    # signatures and both chains in the exported file.
    rows = json.loads(intercloud_cli("negotiations", "--config", provider["config"], "--output", "json"))
    assert any(row.get("state") == "FINALIZED" and negotiation.id in json.dumps(row) for row in rows), rows
    exported = tmp_path / "agreement.json"
    intercloud_cli("agreement", "export", "--config", provider["config"], "--out", str(exported), agreement["id"])
    report = intercloud_cli("agreement", "verify", str(exported), "--anchors", str(Path(provider["config"]).parent / "anchors"),
                            "--output", "json")
    assert json.loads(report)["valid"] is True, report
    # The text both signed is the one this peer computed from the documents.
    document = json.loads(exported.read_text())
    assert peer.b64(negotiation.countersignature) in exported.read_text()
    assert peer.verify(negotiation.provider_pin.leaf.public_key(), negotiation.provider_signature, peer.canonical_agreement(agreement))
    assert document["agreement"]["id"] == agreement["id"]


def test_negotiation_under_the_session_the_provider_offered(prosody, provider, account, peer_ca):
    """The broker as session requester: this peer accepts its offer (deriving as responder), and
    the provider's later negotiation messages come under that session, their MACs verified here."""
    served = []
    negotiation, _, _ = negotiate(prosody, account, peer_ca, provider, requested_terms(price="0.03"), served=served,
                                  session_responder=True)
    assert negotiation.state == "FINALIZED", negotiation.reason
    assert all(outcome == "result" for _, _, outcome in served), served
    offers = [entry for entry in served if entry[0] == peer.SESSION_NS]
    assert offers == [(peer.SESSION_NS, "signed", "result")], served
    # Messages sent before the session was made went signed; at least the last one, after it, not.
    messages = [how for namespace, how, _ in served if namespace == peer.NEGOTIATION_NS]
    assert messages[-1] == "session", served


def test_negotiation_terminated_by_the_provider_policy(prosody, provider, account, peer_ca):
    negotiation, _, _ = negotiate(prosody, account, peer_ca, provider, requested_terms(entitlements=("federate",)))
    assert negotiation.state == "TERMINATED"
    assert "not-entitled" in negotiation.reason, negotiation.reason


def test_a_bad_countersignature_ends_the_negotiation(prosody, provider, account, peer_ca):
    negotiation, _, _ = negotiate(prosody, account, peer_ca, provider, requested_terms(price="0.05"),
                                  countersign=lambda text: peer.sign(ec.generate_private_key(ec.SECP256R1()), text))
    assert negotiation.state == "TERMINATED"
    assert "not-acceptable" in negotiation.reason and "countersignature" in negotiation.reason, negotiation.reason

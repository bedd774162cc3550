"""An Intercloud peer written from docs/protocol alone: slixmpp for XMPP, `cryptography` for keys,
certificates and signatures, and nothing from the Swift sources.

It implements what a peer needs to query a broker's catalog:
- the trust handshake as initiator (docs/protocol/trust.md): hello, result (chain verified against
  our anchors, responder's proof checked), finish, ok; a refusal of ours is sent as the document says;
- signed envelopes (docs/protocol/envelope.md): sealing requests and opening answers, with the
  pinned key, the answer binding (`re`, direction), the namespace, the time window and the nonces;
- sessions (docs/protocol/session.md): the X25519 offer as requester, the HKDF derivation, and
  envelopes authenticated by HMAC under a session instead of a signature, both ways;
- the catalog query (docs/protocol/catalog.md): the <query/> payload and SPARQL Query Results XML;
- contract negotiation as consumer (docs/protocol/negotiation.md): the JSON messages, answering the
  provider's signed requests with signed acknowledgements, the agreement's canonical text, checking
  the provider's signature over it and countersigning it, to FINALIZED.

Chain verification follows trust.md, "Verifying a chain", rules 1 to 5; this peer has no CRLs and
no anchor scopes, so rules 6 and 7 have nothing to check.
"""
import asyncio
import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import struct
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field as dataclass_field
from decimal import Decimal
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, ObjectIdentifier

PRESENCE_NS = "urn:intercloud:presence:0"
TRUST_NS = "urn:intercloud:trust:0"
ENVELOPE_NS = "urn:intercloud:envelope:0"
SESSION_NS = "urn:intercloud:session:0"
CATALOG_NS = "urn:intercloud:catalog:0"
NEGOTIATION_NS = "urn:intercloud:negotiation:0"
SPARQL_RESULTS_NS = "http://www.w3.org/2005/sparql-results#"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CLIENT_NS = "jabber:client"

XMPP_ADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
TRANSCRIPT_LABEL = b"urn:intercloud:trust:0 proof"
ENVELOPE_LABEL = b"urn:intercloud:envelope:0"
REPLAY_WINDOW_MS = 120_000
SESSION_SALT = b"urn:intercloud:session:0"
SESSION_PAYLOAD_LIMIT = 512
SESSION_MAX_SECONDS = 3600


# --- Conventions (README.md) -------------------------------------------------------------------

class Malformed(Exception):
    pass


def b64(data: bytes) -> str:
    """RFC 4648 section 4, padded, no line breaks."""
    return base64.b64encode(data).decode("ascii")


def unb64(text, minimum=0, maximum=None, what="value") -> bytes:
    """Strict base64: the standard alphabet, padded, nothing else; and a length in bytes."""
    if text is None:
        raise Malformed(f"missing {what}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise Malformed(f"{what} is not base64: {error}") from None
    if b64(data) != text:
        raise Malformed(f"{what} is not in canonical padded base64")
    if len(data) < minimum or (maximum is not None and len(data) > maximum):
        raise Malformed(f"{what} has {len(data)} bytes, not {minimum} to {maximum}")
    return data


def field(data: bytes) -> bytes:
    """A length-prefixed field: 4 bytes big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def bare(jid: str) -> str:
    """The bare JID, lowercase, as it goes into signed bytes."""
    return str(jid).split("/", 1)[0].lower()


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}


def sign(private_key, data: bytes) -> bytes:
    """The scheme follows from the key type: ECDSA with the curve's hash (DER), or Ed25519."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(_HASHES[private_key.curve.name]()))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    raise ValueError(f"unsupported key {type(private_key).__name__}")


def verify(public_key, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _HASHES:
            public_key.verify(signature, data, ec.ECDSA(_HASHES[public_key.curve.name]()))
            return True
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return True
    except InvalidSignature:
        return False
    return False


# --- Trust (trust.md) --------------------------------------------------------------------------

class Refusal(Exception):
    """A refusal with its reason code from trust.md's table (or envelope.md's codes)."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def transcript(role, initiator, responder, initiator_nonce, responder_nonce, initiator_leaf_der, responder_leaf_der) -> bytes:
    """The bytes both proofs of possession sign (trust.md, "The transcript")."""
    return b"".join(field(part) for part in [
        TRANSCRIPT_LABEL, role.encode("ascii"), bare(initiator).encode(), bare(responder).encode(),
        initiator_nonce, responder_nonce,
        hashlib.sha256(initiator_leaf_der).digest(), hashlib.sha256(responder_leaf_der).digest()])


def _der_utf8string(value: bytes) -> str:
    """The UTF8String an XmppAddr otherName holds (DER: tag 0x0C, length, bytes)."""
    if len(value) < 2 or value[0] != 0x0C:
        raise ValueError("not a UTF8String")
    length, offset = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(value[2:2 + count], "big"), 2 + count
    if offset + length != len(value):
        raise ValueError("bad UTF8String length")
    return value[offset:].decode("utf-8")


def xmpp_addrs(certificate: x509.Certificate):
    try:
        names = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for other in names.get_values_for_type(x509.OtherName):
        if other.type_id == XMPP_ADDR:
            try:
                found.append(_der_utf8string(other.value))
            except (ValueError, UnicodeDecodeError):
                pass
    return found


_HANDLED_CRITICAL = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.KEY_USAGE,
                     ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME}


def _issued_by(certificate, issuer) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _extension(certificate, oid):
    try:
        return certificate.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def verify_chain(chain_der, peer_jid, anchors, now=None) -> x509.Certificate:
    """trust.md, "Verifying a chain": returns the leaf, or raises Refusal with the reason code."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not 1 <= len(chain_der) <= 8:
        raise Refusal("malformed", f"chain has {len(chain_der)} certificates")
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as error:
        raise Refusal("malformed", f"undecodable certificate: {error}") from None
    leaf = chain[0]
    key = leaf.public_key()
    if not ((isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _HASHES)
            or isinstance(key, ed25519.Ed25519PublicKey)):
        raise Refusal("unsupportedKey", f"leaf key {type(key).__name__}")
    for extension in leaf.extensions:
        if extension.critical and extension.oid not in _HANDLED_CRITICAL:
            raise Refusal("invalidChain", f"leaf has unhandled critical extension {extension.oid.dotted_string}")
    # Rule 3: a path from the leaf through the sent intermediates to one of our anchors.
    path, current, pool = [leaf], leaf, list(chain[1:])
    while True:
        anchor = next((a for a in anchors if a.subject == current.issuer and _issued_by(current, a)), None)
        if anchor is not None:
            path.append(anchor)
            break
        issuer = next((c for c in pool if c.subject == current.issuer and _issued_by(current, c)), None)
        if issuer is None or len(path) > 8:
            raise Refusal("unknownCA", f"no chain from {current.issuer.rfc4514_string()} to a configured anchor")
        pool.remove(issuer)
        path.append(issuer)
        current = issuer
    # Rule 2: every certificate of the path, the anchor included, is valid now.
    for index, certificate in enumerate(path):
        role = "leaf" if index == 0 else f"CA {certificate.subject.rfc4514_string()}"
        if now < certificate.not_valid_before_utc:
            raise Refusal("notYetValid", f"{role} valid from {certificate.not_valid_before_utc}")
        if now > certificate.not_valid_after_utc:
            raise Refusal("expired", f"{role} expired at {certificate.not_valid_after_utc}")
    # Rule 3, RFC 5280: every issuer is a CA, within its path length, allowed to sign certificates.
    for index, issuer in enumerate(path[1:], start=1):
        constraints = _extension(issuer, ExtensionOID.BASIC_CONSTRAINTS)
        if constraints is None or not constraints.ca:
            raise Refusal("invalidChain", f"{issuer.subject.rfc4514_string()} is not a CA")
        intermediates_below = index - 1
        if constraints.path_length is not None and intermediates_below > constraints.path_length:
            raise Refusal("invalidChain", f"path length of {issuer.subject.rfc4514_string()} exceeded")
        usage = _extension(issuer, ExtensionOID.KEY_USAGE)
        if usage is not None and not usage.key_cert_sign:
            raise Refusal("invalidChain", f"{issuer.subject.rfc4514_string()} may not sign certificates")
    leaf_constraints = _extension(leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if leaf_constraints is not None and leaf_constraints.ca:
        raise Refusal("invalidChain", "the leaf is a CA")
    # Rule 4: key usage.
    usage = _extension(leaf, ExtensionOID.KEY_USAGE)
    if usage is None or not usage.digital_signature:
        raise Refusal("wrongKeyUsage", "leaf keyUsage lacks digitalSignature")
    extended = _extension(leaf, ExtensionOID.EXTENDED_KEY_USAGE)
    allowed = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if extended is not None and not any(usage_oid in allowed for usage_oid in extended):
        raise Refusal("wrongKeyUsage", "leaf extendedKeyUsage allows neither clientAuth nor serverAuth")
    # Rule 5: the XmppAddr is the routed bare JID.
    addresses = xmpp_addrs(leaf)
    if not addresses:
        raise Refusal("missingXmppAddr", "leaf has no XmppAddr")
    if bare(peer_jid) not in {bare(address) for address in addresses}:
        raise Refusal("xmppAddrMismatch", f"leaf is for {', '.join(addresses)}, peer is {bare(peer_jid)}")
    return leaf


@dataclass
class Identity:
    """Our leaf's private key and our chain (leaf first, DER)."""
    private_key: object
    chain_der: list

    @property
    def leaf_der(self) -> bytes:
        return self.chain_der[0]

    @staticmethod
    def from_pem(key_pem: bytes, chain_pem: bytes) -> "Identity":
        key = serialization.load_pem_private_key(key_pem, password=None)
        chain = [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(chain_pem)]
        return Identity(key, chain)


@dataclass
class Pin:
    jid: str
    leaf: x509.Certificate
    leaf_der: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.leaf_der)


def _element(name, namespace, attributes=None, children=(), text=None) -> ET.Element:
    element = ET.Element(f"{{{namespace}}}{name}", attributes or {})
    for child in children:
        element.append(child)
    if text is not None:
        element.text = text
    return element


def _child(namespace, name, text):
    child = ET.Element(f"{{{namespace}}}{name}")
    child.text = text
    return child


def hello_element(nonce, identity):
    return _element("hello", TRUST_NS, {"nonce": b64(nonce)}, [_child(TRUST_NS, "cert", b64(der)) for der in identity.chain_der])


def finish_element(session, echo, signature):
    return _element("finish", TRUST_NS, {"session": b64(session), "echo": b64(echo)}, [_child(TRUST_NS, "signature", b64(signature))])


def refused_element(reason, detail, session):
    attributes = {"reason": reason}
    if session is not None:
        attributes["session"] = b64(session)
    return _element("refused", TRUST_NS, attributes, text=detail)


def parse_result(element):
    """A <result/>: (nonce, echo, chain DER list, signature); raises Refusal("malformed")."""
    try:
        nonce = unb64(element.get("nonce"), 16, 64, "nonce")
        echo = unb64(element.get("echo"), 16, 64, "echo")
        chain = [unb64((cert.text or "").strip(), 1, None, "cert") for cert in element.findall(f"{{{TRUST_NS}}}cert")]
        signature_element = element.find(f"{{{TRUST_NS}}}signature")
        signature = unb64((signature_element.text or "").strip() if signature_element is not None else None, 1, 1024, "signature")
    except Malformed as error:
        raise Refusal("malformed", str(error)) from None
    if not 1 <= len(chain) <= 8:
        raise Refusal("malformed", f"chain has {len(chain)} certificates")
    return nonce, echo, chain, signature


# --- Envelopes (envelope.md) -------------------------------------------------------------------

def envelope_bytes(sender, recipient, namespace, timestamp_ms, nonce, answered, payload) -> bytes:
    """The nine signed fields (envelope.md, "The signed bytes")."""
    return b"".join(field(part) for part in [
        ENVELOPE_LABEL, bare(sender).encode(), bare(recipient).encode(), namespace.encode(),
        struct.pack(">q", timestamp_ms), nonce, b"answer" if answered is not None else b"request",
        answered if answered is not None else b"", payload])


@dataclass
class Envelope:
    """A signed envelope (`signature`), or one under a session (`session` and `mac`, no signature)."""
    namespace: str
    timestamp_ms: int
    nonce: bytes
    signature: bytes
    payload: bytes
    answered: bytes = None
    session: bytes = None
    mac: bytes = None

    def element(self) -> ET.Element:
        attributes = {"ns": self.namespace, "ts": str(self.timestamp_ms), "nonce": b64(self.nonce)}
        if self.signature is not None:
            attributes["sig"] = b64(self.signature)
        if self.session is not None:
            attributes["session"] = b64(self.session)
        if self.mac is not None:
            attributes["mac"] = b64(self.mac)
        if self.answered is not None:
            attributes["re"] = b64(self.answered)
        return _element("signed", ENVELOPE_NS, attributes, text=b64(self.payload))

    def signed_bytes(self, sender, recipient) -> bytes:
        return envelope_bytes(sender, recipient, self.namespace, self.timestamp_ms, self.nonce, self.answered, self.payload)


def seal(identity, sender, recipient, namespace, payload, answered=None, timestamp_ms=None, nonce=None) -> Envelope:
    timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    nonce = os.urandom(16) if nonce is None else nonce
    envelope = Envelope(namespace, timestamp_ms, nonce, b"", payload, answered)
    envelope.signature = sign(identity.private_key, envelope.signed_bytes(sender, recipient))
    return envelope


def seal_under(session, sender, recipient, namespace, payload, answered=None, timestamp_ms=None, nonce=None) -> Envelope:
    """envelope.md, "Under a session": the same signed bytes, authenticated by HMAC under the session's key."""
    timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    nonce = os.urandom(16) if nonce is None else nonce
    envelope = Envelope(namespace, timestamp_ms, nonce, None, payload, answered, session=session.id)
    envelope.mac = session_mac(session.key, envelope.signed_bytes(sender, recipient))
    return envelope


def decode_envelope(element) -> Envelope:
    """envelope.md, "Opening an envelope", step 1; raises Refusal("unsigned" / "malformed")."""
    if element is None or element.tag != f"{{{ENVELOPE_NS}}}signed":
        raise Refusal("unsigned", "the payload is not an envelope")
    try:
        namespace = element.get("ns")
        if not namespace:
            raise Malformed("missing ns")
        text = element.get("ts")
        if text is None or not text.lstrip("-").isdigit():
            raise Malformed("ts is not an integer")
        nonce = unb64(element.get("nonce"), 8, 64, "nonce")
        # A signature, or a session and its MAC: never both, never half of a session.
        signature = session = mac = None
        if element.get("session") is not None or element.get("mac") is not None:
            if element.get("sig") is not None:
                raise Malformed("both sig and a session MAC")
            session = unb64(element.get("session"), 16, 16, "session")
            mac = unb64(element.get("mac"), 32, 32, "mac")
        else:
            signature = unb64(element.get("sig"), 1, None, "sig")
        payload = unb64((element.text or "").strip(), 0, None, "payload")
        answered = unb64(element.get("re"), 8, 64, "re") if element.get("re") is not None else None
    except Malformed as error:
        raise Refusal("malformed", str(error)) from None
    return Envelope(namespace, int(text), nonce, signature, payload, answered, session, mac)


class ReplayWindow:
    """Nonces of requests accepted per sender bare JID, remembered for twice the window."""

    def __init__(self):
        self.seen = {}

    def admit(self, sender, nonce, timestamp_ms, now_ms, record=True):
        if abs(timestamp_ms - now_ms) > REPLAY_WINDOW_MS:
            raise Refusal("stale", f"timestamp {timestamp_ms} is more than 120 s from {now_ms}")
        if not record:
            return  # an answer: bound to our request's nonce instead
        self.seen = {key: at for key, at in self.seen.items() if at >= now_ms - 2 * REPLAY_WINDOW_MS}
        key = (bare(sender), nonce)
        if key in self.seen:
            raise Refusal("replayed", f"nonce already seen from {bare(sender)}")
        self.seen[key] = timestamp_ms


def open_envelope(element, sender, recipient, namespace, pin, window, answering=None, now_ms=None, sessions=None,
                  answering_session=None) -> Envelope:
    """envelope.md, "Opening an envelope", steps 1 to 7. `answering`: our request's nonce; `sessions`:
    the sessions we hold (a SessionStore); `answering_session`: the session id our request went under
    (None if we signed it), as an answer must come the same way (envelope.md, "Under a session")."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    envelope = decode_envelope(element)
    if answering is None and envelope.answered is not None:
        raise Refusal("notThisExchange", "an answer presented as a request")
    if answering is not None and envelope.answered is None:
        raise Refusal("notThisExchange", "a request where the answer to ours was expected")
    if answering is not None and envelope.answered != answering:
        raise Refusal("notThisExchange", "the answer to another request")
    if envelope.namespace != namespace:
        raise Refusal("wrongNamespace", f"envelope for {envelope.namespace} arrived on {namespace}")
    if pin is None or pin.jid != bare(sender):
        raise Refusal("untrustedSender", f"{bare(sender)} is not pinned")
    if answering is not None and envelope.session is not None and envelope.session != answering_session:
        # envelope.md, "Under a session": an answer goes under its request's session, or signed if
        # the responder no longer holds it; a signed request gets a signed answer. The document
        # names no code for another session; it is this exchange's binding.
        raise Refusal("notThisExchange", "the answer is under another session than its request")
    if envelope.session is None:
        if not verify(pin.leaf.public_key(), envelope.signature, envelope.signed_bytes(sender, recipient)):
            raise Refusal("badSignature", f"signature does not verify with the pinned key {pin.fingerprint}")
    else:
        session = (sessions or SessionStore()).find(envelope.session, sender, pin, now_ms)
        if not hmac.compare_digest(session_mac(session.key, envelope.signed_bytes(sender, recipient)), envelope.mac):
            raise Refusal("badSignature", f"MAC does not verify with the key of session {b64(session.id)}")
    window.admit(sender, envelope.nonce, envelope.timestamp_ms, now_ms, record=answering is None)
    return envelope


# --- Sessions (session.md) ---------------------------------------------------------------------

def session_mac(key: bytes, signed_bytes: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of an envelope's signed bytes under a session's MAC key."""
    return hmac.new(key, signed_bytes, hashlib.sha256).digest()


def session_info(requester, responder, requester_key: bytes, responder_key: bytes) -> bytes:
    """HKDF `info`: both routed bare JIDs and both public keys, so the key is bound to this exchange."""
    return b"".join(field(part) for part in [bare(requester).encode(), bare(responder).encode(), requester_key, responder_key])


def derive_session(shared: bytes, requester, responder, requester_key: bytes, responder_key: bytes):
    """session.md, "Deriving the session": (MAC key, session id); raises Malformed on a low-order key."""
    if shared == bytes(32):
        raise Malformed("the public key is of low order (all-zero shared secret)")
    output = HKDF(algorithm=hashes.SHA256(), length=48, salt=SESSION_SALT,
                  info=session_info(requester, responder, requester_key, responder_key)).derive(shared)
    return output[:32], output[32:]


def x25519_shared(private_key: x25519.X25519PrivateKey, public_key: bytes) -> bytes:
    """The X25519 shared secret; an all-zero one (a low-order point) comes back as zeros, for
    derive_session to refuse, whether or not the library refuses it itself."""
    try:
        return private_key.exchange(x25519.X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        return bytes(32)


def raw_public(private_key: x25519.X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def offer_payload(public_key: bytes) -> bytes:
    return f"<offer xmlns='{SESSION_NS}' key='{b64(public_key)}'/>".encode("ascii")


def accept_payload(public_key: bytes, session_id: bytes, seconds: int) -> bytes:
    return f"<accept xmlns='{SESSION_NS}' key='{b64(public_key)}' id='{b64(session_id)}' seconds='{seconds}'/>".encode("ascii")


def _session_element(payload: bytes, name: str) -> ET.Element:
    if len(payload) > SESSION_PAYLOAD_LIMIT:
        raise Malformed(f"<{name}/> of {len(payload)} bytes, over {SESSION_PAYLOAD_LIMIT}")
    try:
        element = ET.fromstring(payload)
    except ET.ParseError as error:
        raise Malformed(f"not XML: {error}") from None
    if element.tag != f"{{{SESSION_NS}}}{name}":
        raise Malformed(f"expected <{name} xmlns='{SESSION_NS}'/>")
    if len(element) or (element.text or ""):
        raise Malformed(f"<{name}/> has content")
    return element


def parse_offer(payload: bytes) -> bytes:
    """The requester's public key of an <offer/>; raises Malformed."""
    element = _session_element(payload, "offer")
    try:
        return unb64(element.get("key"), 32, 32, "key")
    except Malformed:
        raise Malformed("<offer/> without a 32-byte key") from None


def parse_accept(payload: bytes):
    """(public key, session id, seconds) of an <accept/>; raises Malformed."""
    element = _session_element(payload, "accept")
    key = unb64(element.get("key"), 32, 32, "key")
    session_id = unb64(element.get("id"), 16, 16, "id")
    seconds = element.get("seconds") or ""
    if not seconds.isascii() or not seconds.isdigit() or not 1 <= int(seconds) <= SESSION_MAX_SECONDS:
        raise Malformed(f"seconds {seconds!r} is not 1 to {SESSION_MAX_SECONDS}")
    return key, session_id, int(seconds)


@dataclass
class Session:
    id: bytes
    key: bytes
    peer: str  # the other broker's bare JID
    pin_fingerprint: str  # its pin when the session was made
    expires_ms: int
    made_ms: int = 0


class SessionStore:
    """The sessions held, by id (session.md, "Keeping sessions"): at most 2 per peer, the newest."""

    PER_PEER = 2

    def __init__(self):
        self.by_id = {}

    def keep(self, session: Session):
        self.by_id[session.id] = session
        mine = sorted((s for s in self.by_id.values() if s.peer == session.peer), key=lambda s: s.made_ms)
        for old in mine[:-self.PER_PEER]:
            del self.by_id[old.id]

    def forget(self, session_id):
        self.by_id.pop(session_id, None)

    def newest(self, peer, now_ms=None):
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        live = [s for s in self.by_id.values() if s.peer == bare(peer) and s.expires_ms > now_ms]
        return max(live, key=lambda s: s.made_ms, default=None)

    def find(self, session_id, sender, pin, now_ms) -> Session:
        """envelope.md, "Opening an envelope", step 5 under a session: held, unexpired, made with the
        sender while its pin was the one it has now; else `unknownSession`."""
        session = self.by_id.get(session_id)
        if session is None or session.peer != bare(sender) or session.expires_ms <= now_ms:
            raise Refusal("unknownSession", f"no session {b64(session_id)} with {bare(sender)}")
        if session.pin_fingerprint != pin.fingerprint:
            raise Refusal("unknownSession", f"session {b64(session_id)} was made under another pin of {bare(sender)}")
        return session


# --- Catalog (catalog.md) ----------------------------------------------------------------------

def query_payload(sparql: str) -> bytes:
    return f"<query xmlns='{CATALOG_NS}'>{escape(sparql)}</query>".encode("utf-8")


def parse_results(payload: bytes):
    """SPARQL Query Results XML: {"variables": [...], "rows": [{name: (kind, value, tag)}]} or {"boolean": b}."""
    root = ET.fromstring(payload)
    if root.tag != f"{{{SPARQL_RESULTS_NS}}}sparql":
        raise Malformed(f"answer root is {root.tag}, not SPARQL results")
    ns = f"{{{SPARQL_RESULTS_NS}}}"
    boolean = root.find(f"{ns}boolean")
    if boolean is not None:
        return {"boolean": boolean.text.strip() == "true"}
    variables = [v.get("name") for v in root.find(f"{ns}head").findall(f"{ns}variable")]
    rows = []
    for result in root.find(f"{ns}results").findall(f"{ns}result"):
        row = {}
        for binding in result.findall(f"{ns}binding"):
            term = binding[0]
            kind = term.tag[len(ns):]
            extra = term.get("{http://www.w3.org/XML/1998/namespace}lang") or term.get("datatype")
            row[binding.get("name")] = (kind, term.text or "", extra)
        rows.append(row)
    return {"variables": variables, "rows": rows}


# --- The peer over XMPP ------------------------------------------------------------------------

def payload_of(iq_element, namespace, name):
    return iq_element.find(f"{{{namespace}}}{name}")


def stanza_error(iq_element):
    """(condition, type, text, application element) of an IQ error."""
    error = iq_element.find(f"{{{CLIENT_NS}}}error")
    if error is None:
        return None
    condition = next((c.tag.split("}", 1)[1] for c in error if c.tag.startswith(f"{{{STANZAS_NS}}}") and not c.tag.endswith("}text")), None)
    text = error.find(f"{{{STANZAS_NS}}}text")
    application = next((c for c in error if not c.tag.startswith(f"{{{STANZAS_NS}}}")), None)
    return condition, error.get("type"), text.text if text is not None else None, application


class PeerError(Exception):
    """The broker answered an IQ error."""

    def __init__(self, condition, type_, text, application=None):
        super().__init__(f"{condition} ({type_}): {text}")
        self.condition, self.type, self.text, self.application = condition, type_, text, application


@dataclass
class Exchange:
    """One signed request and its verified answer, kept for inspection."""
    request: Envelope
    answer: Envelope
    answer_element: ET.Element
    sender: str
    recipient: str


# --- Negotiation (negotiation.md) ---------------------------------------------------------------

def to_json(value) -> str:
    """JSON with sorted keys; Decimal numbers in plain notation, so no digit is lost."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key, ensure_ascii=False)}:{to_json(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    raise TypeError(f"no JSON for {type(value).__name__}")


def from_json(text):
    """Numbers as Decimal (or int), so prices and sizes are exact."""
    return json.loads(text, parse_float=Decimal)


def normalized_terms(terms):
    """Terms compared by meaning: numbers as Decimal, entitlements as a set, optional fields filled in."""
    def numbers(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, Decimal)):
            return Decimal(value)
        if isinstance(value, dict):
            return {key: numbers(item) for key, item in value.items()}
        if isinstance(value, list):
            return [numbers(item) for item in value]
        return value
    result = numbers(terms)
    result["entitlements"] = sorted(set(result["entitlements"]))
    result["rates"].setdefault("perThousandCalls", Decimal(0))
    return result


def _canonical_decimal(value) -> str:
    text = format(Decimal(value), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _canonical_seconds(value) -> str:
    return str(int(Decimal(str(value)).to_integral_value(rounding="ROUND_FLOOR")))


def _canonical_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=")


def canonical_agreement(agreement) -> bytes:
    """The text both brokers sign (negotiation.md, "The agreement's canonical text")."""
    terms = agreement["terms"]
    resources, rates, sla = terms["resources"], terms["rates"], terms["sla"]
    period, placement = terms["period"], terms["placement"]
    lines = [
        ("format", "urn:intercloud:agreement:0"),
        ("id", agreement["id"]),
        ("negotiation", agreement["negotiationID"]),
        ("consumer", agreement["consumer"]),
        ("provider", agreement["provider"]),
        ("created", _canonical_seconds(agreement["createdAt"])),
        ("period.from", _canonical_seconds(period["from"]) if period.get("from") is not None else "-"),
        ("period.until", _canonical_seconds(period["until"]) if period.get("until") is not None else "-"),
        ("resources.instances", str(int(resources["instances"]))),
        ("resources.vcpu", str(int(resources["vcpu"]))),
        ("resources.memory_gib", _canonical_decimal(resources["memoryGiB"])),
        ("resources.storage_gib", _canonical_decimal(resources["storageGiB"])),
        ("resources.transfer_gb", _canonical_decimal(resources["transferGB"])),
        ("instance_types", ",".join(sorted(terms["instanceTypes"]))),
        ("entitlements", ",".join(sorted(set(terms["entitlements"])))),
        ("placement.regions", ",".join(sorted(placement["regions"]))),
        ("placement.jurisdictions", ",".join(sorted(placement["jurisdictions"]))),
        ("rates.currency", rates["currency"]),
        ("rates.per_gb_transferred", _canonical_decimal(rates["perGBTransferred"])),
        ("rates.per_gb_month_stored", _canonical_decimal(rates["perGBMonthStored"])),
    ]
    if Decimal(rates.get("perThousandCalls", 0)) != 0:
        lines.append(("rates.per_1000_calls", _canonical_decimal(rates["perThousandCalls"])))
    for name in sorted(rates["instanceHour"]):
        lines.append((f"rates.instance_hour.{_canonical_escape(name)}", _canonical_decimal(rates["instanceHour"][name])))
    lines += [
        ("sla.availability_percent", _canonical_decimal(sla["availabilityPercent"])),
        ("sla.max_migration_downtime_seconds", str(int(sla["maxMigrationDowntimeSeconds"]))),
        ("sla.support", sla["support"]),
    ]
    return "".join(f"{key}={_canonical_escape(value)}\n" for key, value in lines).encode("utf-8")


def negotiation_payload(message, signature=None) -> bytes:
    attributes = f" signature='{b64(signature)}'" if signature is not None else ""
    return f"<negotiation xmlns='{NEGOTIATION_NS}'{attributes}>{escape(to_json(message))}</negotiation>".encode("utf-8")


def parse_negotiation(payload: bytes):
    """(message, signature or None) of a <negotiation/> payload; raises Malformed."""
    try:
        element = ET.fromstring(payload)
    except ET.ParseError as error:
        raise Malformed(f"not XML: {error}") from None
    if element.tag != f"{{{NEGOTIATION_NS}}}negotiation" or len(element):
        raise Malformed("expected <negotiation/> with JSON text")
    signature = element.get("signature")
    try:
        message = from_json(element.text or "")
    except ValueError as error:
        raise Malformed(f"malformed negotiation message: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("body"), dict) or len(message["body"]) != 1:
        raise Malformed("a message has one body of one kind")
    return message, unb64(signature, 1, None, "signature") if signature is not None else None


def ack_payload(message_id) -> bytes:
    return f"<ack xmlns='{NEGOTIATION_NS}' message='{escape(message_id, {chr(39): '&apos;'})}'/>".encode("utf-8")


def parse_ack(payload: bytes):
    element = ET.fromstring(payload)
    return element.get("message") if element.tag == f"{{{NEGOTIATION_NS}}}ack" else None


def kind_of(message) -> str:
    return next(iter(message["body"]))


# Consumer's view of the provider's messages: the states each may arrive in, and where it leads.
PROVIDER_MESSAGES = {"offer": {"INITIAL", "REQUESTED"}, "agreement": {"REQUESTED", "ACCEPTED"}, "finalize": {"VERIFIED"}}
TARGETS = {"request": "REQUESTED", "offer": "OFFERED", "accept": "ACCEPTED", "agreement": "AGREED", "verify": "VERIFIED",
           "finalize": "FINALIZED", "terminate": "TERMINATED"}
FINAL = {"FINALIZED", "TERMINATED"}


class ConsumerNegotiation:
    """One negotiation, this peer as consumer (negotiation.md, "States")."""

    def __init__(self, negotiation_id, consumer, provider, provider_pin):
        self.id, self.consumer, self.provider, self.provider_pin = negotiation_id, consumer, provider, provider_pin
        self.state = "INITIAL"
        self.sent = 0
        self.last_received = None
        self.pending = None
        self.terms = None
        self.agreement = None
        self.provider_signature = None
        self.reason = None
        self.inbox = asyncio.Queue()
        self.received = []

    def propose(self, body):
        self.sent += 1
        message = {"negotiationID": self.id, "messageID": f"{self.id}/consumer/{self.sent}", "body": body}
        if self.last_received is not None:
            message["inReplyTo"] = self.last_received
        self.pending = message
        return message

    def _apply(self, message):
        kind = kind_of(message)
        value = message["body"][kind]
        if kind in ("request", "offer"):
            self.terms = value["_0"]
        elif kind == "agreement":
            self.agreement = value["_0"]
        self.state = TARGETS[kind]

    def acknowledged(self, message_id):
        if self.pending is not None and self.pending["messageID"] == message_id and self.state not in FINAL:
            self._apply(self.pending)
            self.pending = None

    def _end(self, reason):
        self.state, self.reason, self.pending = "TERMINATED", reason, None
        self.inbox.put_nowait(None)
        return reason

    def receive(self, message, signature):
        """Applies a provider's message; returns None to acknowledge it, or the reason to refuse it."""
        if message.get("negotiationID") != self.id:
            return f"unknown negotiation {message.get('negotiationID')}"
        if message.get("messageID") == self.last_received:
            return None  # a retransmission: our acknowledgement was lost
        kind = kind_of(message)
        if kind == "terminate":
            if self.state == "FINALIZED":
                return "negotiation is FINALIZED"
            self.last_received = message["messageID"]
            self._end(f"peer terminated: {message['body']['terminate'].get('reason', '')}")
            return None
        if self.state in FINAL:
            return f"negotiation is {self.state}"
        if self.pending is not None and message.get("inReplyTo") == self.pending["messageID"]:
            self.acknowledged(self.pending["messageID"])
        if self.pending is not None:
            return self._end(f"received {kind} while waiting for the result of {kind_of(self.pending)}")
        if kind not in PROVIDER_MESSAGES:
            return self._end(f"a provider cannot send {kind}")
        if self.state not in PROVIDER_MESSAGES[kind]:
            return self._end(f"unexpected {kind} in state {self.state}")
        if kind == "agreement":
            agreement = message["body"]["agreement"]["_0"]
            if agreement.get("negotiationID") != self.id or (agreement.get("consumer"), agreement.get("provider")) != (self.consumer, self.provider):
                return self._end("agreement does not match: parties or negotiation")
            if normalized_terms(agreement["terms"]) != normalized_terms(self.terms):
                return self._end("agreement does not match: terms differ from those on the table")
            if signature is None or not verify(self.provider_pin.leaf.public_key(), signature, canonical_agreement(agreement)):
                return self._end("agreement signature does not verify with the provider's pinned certificate")
            self.provider_signature = signature
        self.last_received = message["messageID"]
        self._apply(message)
        self.received.append(message)
        self.inbox.put_nowait(message)
        return None


@dataclass
class IndependentPeer:
    client: object  # a connected slixmpp.ClientXMPP
    identity: Identity
    anchors: list
    pins: dict = dataclass_field(default_factory=dict)
    window: ReplayWindow = dataclass_field(default_factory=ReplayWindow)
    last: Exchange = None
    negotiations: dict = dataclass_field(default_factory=dict)
    served: bool = False
    sessions: SessionStore = dataclass_field(default_factory=SessionStore)
    # Whether we answer the brokers' session offers (session.md: sessions are optional; without
    # them an offer is answered service-unavailable, as any namespace we do not serve).
    session_responder: bool = False
    # What the brokers asked us, in order: (namespace, how it was authenticated, our answer).
    served_log: list = dataclass_field(default_factory=list)

    @property
    def jid(self) -> str:
        return bare(self.client.boundjid.bare)

    async def iq(self, to, itype, payload, timeout=10):
        """Sends one IQ with `payload` and returns the answer's XML, or raises PeerError."""
        from slixmpp.exceptions import IqError
        iq = self.client.make_iq(ito=to, itype=itype)
        iq.append(payload)
        try:
            answer = await iq.send(timeout=timeout)
        except IqError as error:
            raise PeerError(*stanza_error(error.iq.xml)) from None
        return answer.xml

    async def handshake(self, broker) -> Pin:
        """trust.md as initiator, with the broker's full JID; pins and returns the broker's leaf."""
        initiator_nonce = os.urandom(32)
        try:
            answer = await self.iq(broker, "set", hello_element(initiator_nonce, self.identity))
        except PeerError as error:
            if error.application is not None and error.application.tag == f"{{{TRUST_NS}}}refused":
                raise Refusal("peerRefused", f"{error.application.get('reason')}: {error.application.text or ''}") from None
            raise
        result = payload_of(answer, TRUST_NS, "result")
        try:
            if result is None:
                raise Refusal("unexpectedMessage", "the hello was not answered with a result")
            responder_nonce, echo, chain, signature = parse_result(result)
            if echo != initiator_nonce:
                raise Refusal("replayedNonce", "result answers another handshake's nonce")
            if responder_nonce == initiator_nonce:
                raise Refusal("replayedNonce", "responder reflected our nonce")
            leaf = verify_chain(chain, broker, self.anchors)
            signed = transcript("responder", self.jid, broker, initiator_nonce, responder_nonce, self.identity.leaf_der, chain[0])
            if not verify(leaf.public_key(), signature, signed):
                raise Refusal("badSignature", "responder's proof of possession does not verify")
        except Refusal as refusal:
            # Tell the responder, so it can drop the handshake now; it answers with an empty result.
            await self.iq(broker, "set", refused_element(refusal.reason, refusal.detail, initiator_nonce))
            raise
        proof = sign(self.identity.private_key, transcript(
            "initiator", self.jid, broker, initiator_nonce, responder_nonce, self.identity.leaf_der, chain[0]))
        try:
            answer = await self.iq(broker, "set", finish_element(initiator_nonce, responder_nonce, proof))
        except PeerError as error:
            if error.application is not None and error.application.tag == f"{{{TRUST_NS}}}refused":
                raise Refusal("peerRefused", f"{error.application.get('reason')}: {error.application.text or ''}") from None
            raise
        ok = payload_of(answer, TRUST_NS, "ok")
        if ok is None or unb64(ok.get("session"), 16, 64, "session") != initiator_nonce:
            raise Refusal("replayedNonce", "ok for another handshake")
        pin = Pin(bare(broker), leaf, chain[0])
        self.pins[pin.jid] = pin
        self.serve_signed()
        return pin

    async def request(self, broker, namespace, payload, itype="get", session=None) -> bytes:
        """A request, signed or under `session`; returns the verified payload of the answer. Under a
        session the broker does not hold (`unknownSession`), the session is forgotten and the same
        payload sent again signed, as session.md says (it was not acted on)."""
        if session is None:
            envelope = seal(self.identity, self.jid, broker, namespace, payload)
        else:
            envelope = seal_under(session, self.jid, broker, namespace, payload)
        try:
            answer = await self.iq(broker, itype, envelope.element())
        except PeerError as error:
            if session is not None and error.condition == "not-authorized" and (error.text or "").startswith("unknownSession"):
                self.sessions.forget(session.id)
                return await self.request(broker, namespace, payload, itype)
            raise
        element = payload_of(answer, ENVELOPE_NS, "signed")
        sender = answer.get("from") or broker
        if bare(sender) != bare(broker):
            raise Refusal("untrustedSender", f"answer from {sender}, asked {broker}")
        opened = open_envelope(element, sender, self.jid, namespace, self.pins.get(bare(broker)), self.window,
                               answering=envelope.nonce, sessions=self.sessions, answering_session=envelope.session)
        self.last = Exchange(envelope, opened, element, sender, self.jid)
        return opened.payload

    async def make_session(self, broker) -> Session:
        """session.md as requester: a signed <offer/> with a fresh X25519 key, the signed <accept/>
        opened as any answer, the key and id derived; kept only if the id is the derived one."""
        private_key = x25519.X25519PrivateKey.generate()
        own_key = raw_public(private_key)
        started_ms = int(time.time() * 1000)
        answer = await self.request(broker, SESSION_NS, offer_payload(own_key), itype="set")
        their_key, session_id, seconds = parse_accept(answer)
        key, derived_id = derive_session(x25519_shared(private_key, their_key), self.jid, broker, own_key, their_key)
        if derived_id != session_id:
            raise Malformed(f"accepted id {b64(session_id)} is not the derived {b64(derived_id)}: no session kept")
        pin = self.pins[bare(broker)]
        # The broker counts its seconds from its answer; counting from before our offer errs early.
        session = Session(session_id, key, bare(broker), pin.fingerprint, started_ms + seconds * 1000, made_ms=started_ms)
        self.sessions.keep(session)
        return session

    async def catalog_query(self, broker, sparql, session=None):
        return parse_results(await self.request(broker, CATALOG_NS, query_payload(sparql), session=session))

    # Requests from the brokers: negotiation messages (the provider sends its own as requests), and
    # session offers if we are a session responder; every other namespace is not served.

    def serve_signed(self):
        """Answers the brokers' envelopes (envelope.md), from the first pin on."""
        if self.served:
            return
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        self.client.register_handler(Callback(
            "intercloud signed request", MatchXPath(f"{{{CLIENT_NS}}}iq/{{{ENVELOPE_NS}}}signed"), self._on_signed))
        self.served = True

    def _error(self, iq, condition, type_, text, namespace=None, how=None):
        self.served_log.append((namespace, how, f"{condition}: {text}"))
        reply = iq.reply(clear=True)
        reply["type"] = "error"
        reply["error"]["condition"] = condition
        reply["error"]["type"] = type_
        reply["error"]["text"] = text
        reply.send()

    def _on_signed(self, iq):
        if iq["type"] not in ("get", "set"):
            return
        sender = iq["from"].full
        element = iq.xml.find(f"{{{ENVELOPE_NS}}}signed")
        namespace = element.get("ns")
        how = "session" if element.get("session") is not None else "signed"
        served = {NEGOTIATION_NS} | ({SESSION_NS} if self.session_responder else set())
        if namespace not in served:
            # envelope.md: checked before the signature, so the nonce is not used up.
            return self._error(iq, "service-unavailable", "cancel", f"no signed service in {namespace}", namespace, how)

        def error(condition, type_, text):
            return self._error(iq, condition, type_, text, namespace, how)
        try:
            envelope = open_envelope(element, sender, self.jid, namespace, self.pins.get(bare(sender)), self.window,
                                     sessions=self.sessions)
        except Refusal as refusal:
            return error("not-authorized", "auth", f"{refusal.reason}: {refusal.detail}")
        if namespace == SESSION_NS:
            answer = self._accept_offer(iq, envelope, sender, error)
        else:
            answer = self._negotiation_message(iq, envelope, sender, error)
        if answer is None:
            return
        # An answer goes the way its request came: under the same session (if still held), or signed.
        session = self.sessions.by_id.get(envelope.session) if envelope.session is not None else None
        if session is not None:
            sealed = seal_under(session, self.jid, bare(sender), namespace, answer, answered=envelope.nonce)
        else:
            sealed = seal(self.identity, self.jid, bare(sender), namespace, answer, answered=envelope.nonce)
        self.served_log.append((namespace, how, "result"))
        reply = iq.reply(clear=True)
        reply.append(sealed.element())
        reply.send()

    def _accept_offer(self, iq, envelope, sender, error):
        """session.md as responder: the <accept/> payload, the session kept; None after a refusal."""
        if envelope.session is not None:
            return error("bad-request", "modify", "a session offer is a signed request")
        if iq["type"] != "set":
            return error("bad-request", "modify", "a session offer is an IQ set")
        try:
            their_key = parse_offer(envelope.payload)
            private_key = x25519.X25519PrivateKey.generate()
            own_key = raw_public(private_key)
            key, session_id = derive_session(x25519_shared(private_key, their_key), sender, self.jid, their_key, own_key)
        except Malformed as problem:
            return error("bad-request", "modify", str(problem))
        now_ms = int(time.time() * 1000)
        seconds = SESSION_MAX_SECONDS
        self.sessions.keep(Session(session_id, key, bare(sender), self.pins[bare(sender)].fingerprint,
                                   now_ms + seconds * 1000, made_ms=now_ms))
        return accept_payload(own_key, session_id, seconds)

    def _negotiation_message(self, iq, envelope, sender, error):
        """negotiation.md as consumer: the acknowledgement's payload; None after a refusal."""
        if iq["type"] != "set":
            return error("bad-request", "modify", "negotiation messages are IQ sets")
        try:
            message, signature = parse_negotiation(envelope.payload)
        except Malformed as problem:
            return error("bad-request", "modify", str(problem))
        negotiation = self.negotiations.get(message.get("negotiationID"))
        if negotiation is None:
            return error("item-not-found", "cancel", f"unknown negotiation {message.get('negotiationID')}")
        if negotiation.provider != bare(sender):
            return error("forbidden", "auth", f"negotiation {negotiation.id} is not with {bare(sender)}")
        refusal = negotiation.receive(message, signature)
        if refusal is not None:
            return error("not-acceptable", "modify", refusal)
        return ack_payload(message["messageID"])

    async def _send(self, broker, negotiation, body, signature=None):
        message = negotiation.propose(body)
        try:
            answer = await self.request(broker, NEGOTIATION_NS, negotiation_payload(message, signature), itype="set")
        except PeerError as error:
            negotiation._end(f"peer refused {kind_of(message)}: {error.condition}: {error.text}")
            raise
        if parse_ack(answer) != message["messageID"]:
            negotiation._end(f"answer is not an acknowledgement of {message['messageID']}")
            raise Refusal("unexpectedMessage", negotiation.reason)
        negotiation.acknowledged(message["messageID"])

    async def negotiate(self, broker, terms, negotiation_id=None, timeout=30, countersign=None):
        """Negotiates as consumer with a pinned broker (full JID): request, then accept the offer
        if there is one, check and countersign the agreement, wait for FINALIZED. `countersign`
        (tests): makes the countersignature from the agreement's canonical text instead of us."""
        self.serve_signed()
        negotiation = ConsumerNegotiation(
            negotiation_id or f"neg-py-{os.urandom(6).hex()}", self.jid, bare(broker), self.pins[bare(broker)])
        self.negotiations[negotiation.id] = negotiation
        await self._send(broker, negotiation, {"request": {"_0": terms}})
        while negotiation.state not in FINAL:
            message = await asyncio.wait_for(negotiation.inbox.get(), timeout)
            if message is None or negotiation.state in FINAL:
                continue
            kind = kind_of(message)
            if kind == "offer" and negotiation.state == "OFFERED":
                await self._send(broker, negotiation, {"accept": {}})
            elif kind == "agreement" and negotiation.state == "AGREED":
                text = canonical_agreement(negotiation.agreement)
                countersignature = countersign(text) if countersign else sign(self.identity.private_key, text)
                negotiation.countersignature = countersignature
                await self._send(broker, negotiation, {"verify": {}}, countersignature)
        return negotiation

"""XEP-0065 relay throughput through Prosody's proxy65, for the channel choice: two raw SOCKS5
connections to the proxy (initiator and target), activated by the initiator's XMPP session,
then SIZE_MIB of bytes pumped through. No TLS inside: this is the relay's ceiling, before any
encryption or hashing an authenticated channel would add on top.

    python3 socks5_relay.py HOST C2S_PORT PROXY_PORT JID PASSWORD SIZE_MIB
"""
import asyncio
import hashlib
import socket
import sys
import threading
import time
import xml.etree.ElementTree as ET

import slixmpp


def socks5_connect(host, port, address):
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00", "proxy refused no-auth"
    name = address.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x00\x00")
    reply = b""
    while len(reply) < 7 + len(name):
        reply += sock.recv(7 + len(name) - len(reply))
    assert reply[1] == 0, f"proxy refused connect: {reply[1]}"
    return sock


async def main():
    host, c2s_port, proxy_port, jid, password, size_mib = sys.argv[1:7]
    client = slixmpp.ClientXMPP(jid, password)
    client.enable_plaintext = True
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.plugin["feature_mechanisms"].unencrypted_scram = True
    ready = asyncio.Event()
    client.add_event_handler("session_start", lambda _: ready.set())
    client.connect(host=host, port=int(c2s_port))
    await asyncio.wait_for(ready.wait(), 15)

    sid = "bench-sid"
    target = "target@" + client.boundjid.domain + "/bench"
    address = hashlib.sha1((sid + client.boundjid.full + target).encode()).hexdigest()
    loop = asyncio.get_running_loop()
    target_sock = await loop.run_in_executor(None, socks5_connect, host, int(proxy_port), address)
    initiator_sock = await loop.run_in_executor(None, socks5_connect, host, int(proxy_port), address)

    iq = client.make_iq_set(ito="proxy." + client.boundjid.domain)
    query = ET.fromstring(
        f"<query xmlns='http://jabber.org/protocol/bytestreams' sid='{sid}'><activate>{target}</activate></query>")
    iq.append(query)
    await iq.send(timeout=10)

    total = int(size_mib) * 1024 * 1024
    block = bytes(4 * 1024 * 1024)
    received = 0

    def pump_out():
        sent = 0
        while sent < total:
            n = min(len(block), total - sent)
            initiator_sock.sendall(block[:n])
            sent += n

    def pump_in():
        nonlocal received
        buffer = bytearray(1024 * 1024)
        while received < total:
            n = target_sock.recv_into(buffer)
            if n == 0:
                break
            received += n

    start = time.perf_counter()
    threads = [threading.Thread(target=pump_out), threading.Thread(target=pump_in)]
    for t in threads:
        t.start()
    await loop.run_in_executor(None, lambda: [t.join() for t in threads])
    elapsed = time.perf_counter() - start
    print(f"relay_bytes={received} seconds={elapsed:.3f} mib_per_s={received / 2**20 / elapsed:.1f}")
    initiator_sock.close()
    target_sock.close()
    client.disconnect()


asyncio.run(main())

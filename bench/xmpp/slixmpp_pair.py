"""slixmpp baseline for bench-xmpp: B answers ping (XEP-0199 plugin), A measures sequential
round trips and pipelined throughput with WINDOW in flight. Plaintext, no stream management,
like the other two pairs.

    python3 slixmpp_pair.py HOST PORT JID_A PASS_A JID_B PASS_B SEQUENTIAL PIPELINED WINDOW
"""
import asyncio
import sys
import time

import slixmpp


async def main():
    host, port, jid_a, pass_a, jid_b, pass_b = sys.argv[1:7]
    sequential, pipelined, window = map(int, sys.argv[7:10])
    clients = []
    for jid, password in ((jid_a, pass_a), (jid_b, pass_b)):
        client = slixmpp.ClientXMPP(jid, password)
        client.register_plugin("xep_0199")
        client.register_plugin("xep_0030")
        # Plaintext on loopback like the other pairs: no STARTTLS, no direct TLS, and SCRAM
        # without TLS, which slixmpp refuses unless told.
        client.enable_plaintext = True
        client.enable_starttls = False
        client.enable_direct_tls = False
        client.plugin["feature_mechanisms"].unencrypted_scram = True
        ready = asyncio.Event()
        client.add_event_handler("session_start", lambda _, r=ready, c=client: (c.send_presence(), r.set()))
        client.connect(host=host, port=int(port))
        await asyncio.wait_for(ready.wait(), 15)
        clients.append(client)
    a, _ = clients
    await asyncio.sleep(0.2)

    async def one():
        await a.plugin["xep_0199"].send_ping(jid_b, timeout=10)

    latencies = []
    for _ in range(sequential):
        start = time.perf_counter()
        await one()
        latencies.append((time.perf_counter() - start) * 1e6)
    remaining = pipelined

    async def worker():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    elapsed = time.perf_counter() - start
    print("seq_us " + " ".join(f"{v:.1f}" for v in latencies))
    print(f"pipelined_rps {pipelined / elapsed:.1f}")
    for client in clients:
        client.disconnect()


asyncio.run(main())

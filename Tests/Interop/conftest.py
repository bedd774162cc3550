"""Fixtures for interop tests: a private Prosody and a running `intercloud serve`, both real."""
import os
import random
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port_triple():
    for _ in range(200):
        base = random.randint(46000, 60000)
        ok = True
        for offset in range(3):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + offset))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no free ports")


def _intercloud_binary():
    explicit = os.environ.get("INTERCLOUD_BIN")
    if explicit:
        return explicit
    for candidate in (ROOT / ".build/debug/intercloud", ROOT / ".build/release/intercloud"):
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("build intercloud first (swift build --product intercloud) or set INTERCLOUD_BIN")


class Server:
    def __init__(self, directory, port):
        self.directory = directory
        self.port = port
        self.ca = str(directory / "certs/ca.crt")

    def register(self, user, host, password):
        subprocess.run([str(ROOT / "scripts/prosody.sh"), "register", str(self.directory), user, host, password], check=True)
        return f"{user}@{host}"


@pytest.fixture(scope="session")
def prosody(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prosody")
    port = _free_port_triple()
    environment = dict(os.environ, PROSODY_WATCH_PID=str(os.getpid()))  # dies with this test run
    subprocess.run([str(ROOT / "scripts/prosody.sh"), "start", str(directory), str(port)], check=True, capture_output=True, env=environment)
    yield Server(directory, port)
    subprocess.run([str(ROOT / "scripts/prosody.sh"), "stop", str(directory)], check=False)


def broker_config(path, prosody, cloud, jid, password, extra=""):
    """A minimal broker configuration for `cloud` on the test Prosody (verified TLS), plus `extra`."""
    path.write_text(f"""
[broker]
cloud = "{cloud}"
regions = ["eu-west"]
database = "{cloud}.sqlite"

[xmpp]
jid = "{jid}/broker"
password = "{password}"
host = "127.0.0.1"
port = {prosody.port}
ca_file = "{prosody.ca}"
{extra}""")
    return path


@pytest.fixture(scope="session")
def broker(prosody, tmp_path_factory):
    """A broker for cloud1.test, started with the CLI as an operator would."""
    directory = tmp_path_factory.mktemp("broker")
    password = uuid.uuid4().hex
    jid = prosody.register("broker", "cloud1.test", password)
    config = broker_config(directory / "cloud1.toml", prosody, "cloud1", jid, password, extra="""max_stanza_bytes = 65536

[audit]
# Short windows so the flood tests see the aggregated summaries within seconds.
aggregate_seconds = 3
""")
    log = open(directory / "broker.log", "w")
    process = subprocess.Popen([_intercloud_binary(), "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline and "session started" not in (directory / "broker.log").read_text():
        time.sleep(0.1)
    assert "session started" in (directory / "broker.log").read_text(), (directory / "broker.log").read_text()
    yield {"jid": f"{jid}/broker", "config": str(config), "log": directory / "broker.log"}
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture
def account(prosody):
    def make(host="cloud2.test"):
        user = "slix-" + uuid.uuid4().hex[:8]
        password = uuid.uuid4().hex
        return prosody.register(user, host, password), password
    return make


async def slix_session(prosody, jid, password, resource, body):
    """Runs `body(client)` with a slixmpp client logged in as `jid`/`resource` over verified TLS."""
    import asyncio
    import slixmpp
    client = slixmpp.ClientXMPP(f"{jid}/{resource}", password)
    client.register_plugin("xep_0030")
    client.register_plugin("xep_0199")
    client.ca_certs = prosody.ca
    ready = asyncio.Event()
    client.add_event_handler("session_start", lambda _: ready.set())
    client.connect(host="127.0.0.1", port=prosody.port)
    await asyncio.wait_for(ready.wait(), 15)
    try:
        return await body(client)
    finally:
        client.disconnect()


def intercloud_cli(*arguments):
    """Runs the `intercloud` CLI as an operator would; returns its output, fails the test on an error."""
    done = subprocess.run([_intercloud_binary(), *arguments], capture_output=True, text=True)
    assert done.returncode == 0, f"intercloud {' '.join(arguments)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def trusted_broker_factory(prosody, tmp_path_factory):
    """Starts brokers with a [trust] section on the test Prosody, set up with the CLI as an operator
    would: a root and an intermediate CA and the broker's certificate from `intercloud certs`. Its
    anchors are its own root plus the PEM certificates the test passes in (the CAs of the peers it
    should trust). `start(anchors)` returns the broker's full and bare JID, configuration, log and
    the PEM of its root (for peers to anchor)."""
    started = []

    def start(anchors, cloud="cloud1", policy=None):
        """`policy`: the text of a policy file (policies/README.md) for the broker's [policy] section."""
        directory = tmp_path_factory.mktemp("trusted-broker")
        password = uuid.uuid4().hex
        jid = prosody.register("broker-" + uuid.uuid4().hex[:8], f"{cloud}.test", password)
        pki = directory / "pki"
        intercloud_cli("certs", "init-ca", "--dir", str(pki / "root"), "--cn", f"{cloud} test root")
        intercloud_cli("certs", "init-ca", "--dir", str(pki / "ca"), "--cn", f"{cloud} CA", "--parent", str(pki / "root"))
        intercloud_cli("certs", "issue", "--ca", str(pki / "ca"), "--jid", jid, "--out", str(directory / "identity"))
        (directory / "anchors").mkdir()
        (directory / "anchors/own-root.pem").write_bytes((pki / "root/ca.pem").read_bytes())
        for index, pem in enumerate(anchors):
            (directory / f"anchors/peer-{index}.pem").write_bytes(pem)
        config = broker_config(directory / f"{cloud}.toml", prosody, cloud, jid, password, extra="""
[trust]
key = "identity/broker.key"
chain = "identity/broker-chain.pem"
anchors = ["anchors"]
""" + ("" if policy is None else """
[policy]
files = ["peers.toml"]
"""))
        if policy is not None:
            (directory / "peers.toml").write_text(policy)
        log_path = directory / "broker.log"
        log = open(log_path, "w")
        process = subprocess.Popen([_intercloud_binary(), "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log))
        deadline = time.time() + 20
        while time.time() < deadline and "session started" not in log_path.read_text():
            time.sleep(0.1)
        assert "session started" in log_path.read_text(), log_path.read_text()
        return {"jid": f"{jid}/broker", "bare": jid, "config": str(config), "log": log_path, "cloud": cloud,
                "root_pem": (pki / "root/ca.pem").read_bytes()}

    yield start
    for process, log in started:
        process.terminate()
        process.wait(timeout=10)
        log.close()

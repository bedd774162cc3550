"""A running `intercloud serve` with libstrophe's stanza debug log on (INTERCLOUD_STROPHE_DEBUG=1)
logs in over a real Prosody and never prints its SASL exchange or its password."""
import base64
import os
import subprocess
import time
import uuid

from conftest import _intercloud_binary, broker_config


def test_stanza_debug_log_never_prints_sasl(prosody, tmp_path):
    password = uuid.uuid4().hex
    jid = prosody.register("debugbroker", "cloud1.test", password)
    config = broker_config(tmp_path / "debug.toml", prosody, "debugcloud", jid, password)
    log_path = tmp_path / "debug.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [_intercloud_binary(), "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, INTERCLOUD_STROPHE_DEBUG="1"))
        try:
            deadline = time.time() + 20
            while time.time() < deadline and "session started" not in log_path.read_text():
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=10)
    text = log_path.read_text()
    assert "session started" in text, text[-2000:]
    assert "SENT" in text or "RECV" in text, "the debug log printed no stanzas at all"
    assert "redacted" in text, "no SASL line was redacted: was there no login?"
    assert "urn:ietf:params:xml:ns:xmpp-sasl" not in text
    assert password not in text
    assert base64.b64encode(f"\0debugbroker\0{password}".encode()).decode() not in text

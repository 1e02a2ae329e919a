"""`asrflow serve`'s demo page in a real headless Chromium, its microphone a fake device fed
from a spoken WAV (`--use-fake-device-for-media-stream --use-file-for-fake-audio-capture`),
driven over the DevTools protocol: Record, partial transcripts while it listens, Stop, the
final transcript with its word times; then a file uploaded through the page's file input.

The served model was trained in the fixture until it gives back the sentences it heard
(:func:`serve_fixtures.make_trained_checkpoint`), so the page must show the words spoken,
and it must show what `POST /transcribe` gives for the very samples the page streamed.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from base64 import b64decode
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from asrflow.serve.package import package_model
from mlflow_browser import _chromium_cmd, _stop, artifacts_dir, chromium_binary, free_port, serving
from serve_fixtures import SENTENCES, SETTINGS, make_lm, make_trained_checkpoint, speak
from test_server import TOKEN, post

SPOKEN = "the cat sat on the mat and the dog sat on the log"  # what the microphone says


class Page:
    """One tab of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout_s: float = 60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}; page says: {self.js('document.body.innerText')}")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`asrflow serve` with a model that learned SPOKEN (also in a second voice and after
    0.3 s of silence) and the LM's other sentences, the LM knowing them all."""
    d = tmp_path_factory.mktemp("demo-server")
    utterances = [(speak(s, d / f"{i}.wav"), s) for i, s in enumerate(sorted(set(SENTENCES)))]
    utterances += [(speak(SPOKEN, d / "speech.wav"), SPOKEN), (speak(SPOKEN, d / "us.wav", "en-us"), SPOKEN)]
    utterances += [(speak(SPOKEN, d / "padded.wav", pad="0.3"), SPOKEN)]
    lm = make_lm(d / "lm", SENTENCES + [SPOKEN])
    pkg = package_model(d / "pkg", make_trained_checkpoint(d / "model.pt", utterances), lm, SETTINGS)
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "asrflow"), "serve", "--model", str(pkg), "--port", str(port),
           "--token", TOKEN]
    with serving(cmd, d, port, timeout_s=120) as url:
        yield {"url": url, "speech": d / "speech.wav"}


@pytest.fixture
def browser(server):
    d = Path(tempfile.mkdtemp(prefix="asrflow-demo-"))
    wav = d / "mic.wav"  # what the fake microphone hears (Chromium loops it): SPOKEN, then 3 s of silence
    subprocess.run(["sox", str(server["speech"]), "-r", "48000", str(wav), "pad", "0.3", "3"], check=True)
    port = free_port()
    cmd = _chromium_cmd(chromium_binary(), str(d / "profile"), 0, (1000, 800))
    cmd = [c for c in cmd if not c.startswith(("--virtual-time-budget", "--mute-audio"))]
    cmd += [f"--remote-debugging-port={port}", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(d / "chromium.log", "wb"),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                tabs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2).read())
                target = next(t for t in tabs if t.get("type") == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Chromium did not open its DevTools port: {(d / 'chromium.log').read_text()}")
                time.sleep(0.2)
        page = Page(target["webSocketDebuggerUrl"])
        yield page
        page.ws.close()
    finally:
        _stop(proc)


def test_the_demo_page_transcribes_the_microphone_and_a_file(server, browser):
    page, out = browser, artifacts_dir()
    page.call("Page.enable")
    page.call("Page.navigate", url=f"{server['url']}/?token={TOKEN}")
    page.wait("document.readyState === 'complete' && !!document.getElementById('record')")
    # the microphone: partials while it listens, then the final transcript with word times
    # what the page streams, kept to decode it again below (the page itself keeps nothing)
    page.js("""window.sent = []; const send = WebSocket.prototype.send;
               WebSocket.prototype.send = function (d) {
                 if (d instanceof ArrayBuffer) window.sent.push(...new Int16Array(d));
                 return send.call(this, d); }""")
    page.js("""window.partials = 0; new MutationObserver(() => window.partials++)
               .observe(document.getElementById('partial'), {childList: true, characterData: true, subtree: true});
               document.getElementById('record').click()""")
    page.wait("document.getElementById('status').textContent === 'listening'")
    # partials while it listens, until the whole sentence has been heard (it ends 0.3 + ~3 s in)
    page.wait(f"window.partials >= 2 && document.getElementById('partial').textContent === {json.dumps(SPOKEN)}",
              timeout_s=20)
    page.screenshot(out / "asrflow-serve-demo-listening.png")
    page.js("document.getElementById('stop').click()")
    status = page.wait("document.getElementById('status').textContent.startsWith('done') && "
                       "document.getElementById('status').textContent")
    seconds = float(status.split()[1])
    assert seconds > 1.0, status
    final = page.js("document.getElementById('final').textContent")
    rows = page.js("[...document.querySelectorAll('#words tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert final == SPOKEN and [r[0] for r in rows] == final.split(), (final, rows)
    assert all(float(r[1]) <= float(r[2]) <= seconds + 0.05 for r in rows), rows
    page.screenshot(out / "asrflow-serve-demo-final.png")
    # the transcript shown is the one the model gives for what the microphone streamed, decoded
    # again whole by POST /transcribe: Chromium resampled the 48 kHz capture to 16 kHz itself
    assert page.js("ctx.sampleRate") == 16000
    heard = np.array(page.js("window.sent"), dtype=np.int16)
    assert abs(len(heard) / 16000 - seconds) < 0.01, (len(heard), seconds)
    wav = io.BytesIO()
    sf.write(wav, heard, 16000, format="WAV", subtype="PCM_16")
    again = post(server["url"], wav.getvalue())[1]
    assert again["text"] and final == again["text"] and [r[0] for r in rows] == [w["word"] for w in again["words"]]
    metrics = urllib.request.urlopen(server["url"] + "/metrics").read().decode()
    assert 'asrflow_requests_total{endpoint="stream",status="200"}' in metrics
    # a file through the page's file input: its words, the transcript POST /transcribe gives for it
    want = post(server["url"], server["speech"].read_bytes())[1]
    assert want["text"] == SPOKEN
    page.js("document.getElementById('status').textContent = 'choosing a file'")
    doc = page.call("DOM.getDocument")
    node = page.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")["nodeId"]
    page.call("DOM.setFileInputFiles", files=[str(server["speech"])], nodeId=node)
    page.js("document.getElementById('file').dispatchEvent(new Event('change'))")
    assert page.wait("document.getElementById('status').textContent.startsWith('done') && "
                     "document.getElementById('status').textContent") == f"done: {want['duration']} s of audio"
    assert page.js("document.getElementById('final').textContent") == (want["text"] or "(nothing recognised)")
    rows = page.js("[...document.querySelectorAll('#words tbody tr')].map(r => r.cells[0].textContent)")
    assert rows == [w["word"] for w in want["words"]]
    page.screenshot(out / "asrflow-serve-demo-file.png")
    # the same file with hotwords typed into the page: what ?hotwords= gives
    req = urllib.request.Request(server["url"] + "/transcribe?hotwords=cat%2Chotdog",
                                 data=server["speech"].read_bytes(), headers={"Authorization": f"Bearer {TOKEN}"})
    want = json.loads(urllib.request.urlopen(req, timeout=60).read())
    page.js("document.getElementById('hotwords').value = 'cat,hotdog';"
            "document.getElementById('status').textContent = 'choosing a file'")
    page.call("DOM.setFileInputFiles", files=[str(server["speech"])], nodeId=node)
    page.js("document.getElementById('file').dispatchEvent(new Event('change'))")
    page.wait("document.getElementById('status').textContent.startsWith('done')")
    assert page.js("document.getElementById('final').textContent") == (want["text"] or "(nothing recognised)")

"""`asrflow serve`: the real server (uvicorn, started by the console script) over 127.0.0.1,
driven by HTTP requests and WebSocket clients (the websockets library).

The model is a seeded DeepSpeech2 packaged as the register stage packages it (its
transcripts are not English, but they are deterministic, which is what is compared: the
server's answers against the model's own `transcribe` on the same audio)."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asrflow.serve.loading import load_transcriber
from asrflow.serve.package import package_model
from mlflow_browser import free_port, serving
from serve_fixtures import SETTINGS, make_checkpoint, make_lm, sox

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("server")
    pkg = package_model(d / "pkg", make_checkpoint(d / "model.pt"), make_lm(d / "lm"), SETTINGS)
    subprocess.run(["espeak-ng", "-w", str(d / "speech22k.wav"), "the cat sat on the mat and the dog sat on the log"],
                   check=True)
    sox(str(d / "speech22k.wav"), "-r", "16000", "-c", "1", "-b", "16", str(d / "speech.wav"))
    port = free_port()
    asrflow = str(Path(sys.executable).parent / "asrflow")
    cmd = [asrflow, "serve", "--model", str(pkg), "--port", str(port), "--token", TOKEN, "--max-upload-mb", "1",
           "--max-stream-s", "20", "--max-streams", "4"]
    with serving(cmd, d, port, timeout_s=120) as url:
        yield {"url": url, "ws": url.replace("http://", "ws://"), "pkg": pkg, "speech": d / "speech.wav", "dir": d}


@pytest.fixture(scope="module")
def uni_server(server):
    """The same, serving a unidirectional model with a lookahead (it streams for real)."""
    d = server["dir"] / "uni"
    d.mkdir()
    pkg = package_model(d / "pkg", make_checkpoint(d / "model.pt", bidirectional=False, lookahead=3, rnn_layers=2),
                        make_lm(d / "lm"), SETTINGS)
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "asrflow"), "serve", "--model", str(pkg), "--port", str(port), "--token",
           TOKEN]
    with serving(cmd, d, port, timeout_s=120) as url:
        yield {**server, "url": url, "ws": url.replace("http://", "ws://"), "pkg": pkg}


def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/transcribe", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pcm_chunks(path: Path, seconds: float = 0.25) -> list[bytes]:
    samples, rate = sf.read(str(path), dtype="int16")
    step = int(seconds * rate)
    return [samples[i:i + step].astype("<i2").tobytes() for i in range(0, len(samples), step)]


def stream(ws_url: str, chunks: list[bytes], token: str = TOKEN) -> list[dict]:
    with connect(f"{ws_url}/stream?sample_rate=16000&token={token}") as ws:
        for c in chunks:
            ws.send(c)
        ws.send(json.dumps({"eof": True}))
        out = []
        try:
            while True:
                out.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            return out


def test_a_file_and_a_stream_give_the_models_transcript_with_word_times(server):
    want = load_transcriber(server["pkg"]).transcribe([server["speech"]])[0].text
    status, got = post(server["url"], server["speech"].read_bytes())
    assert status == 200 and got["text"] == want, got
    duration = sf.info(str(server["speech"])).duration
    assert got["duration"] == pytest.approx(duration, abs=1e-3)
    assert [w["word"] for w in got["words"]] == want.split()
    times = [t for w in got["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= duration + 0.05, got["words"]
    assert all(0 <= w["confidence"] <= 1 for w in got["words"])
    # a stream of the same samples, in 0.25 s chunks: partials while it arrives, the same final
    msgs = stream(server["ws"], pcm_chunks(server["speech"]))
    partials = [m for m in msgs if m["type"] == "partial"]
    assert len(partials) >= int(duration / 0.5) - 1 and msgs[-1]["type"] == "final", msgs
    assert [p["duration"] for p in partials] == sorted(p["duration"] for p in partials)
    assert {k: msgs[-1][k] for k in ("text", "words", "duration")} == got
    # an odd-length chunk split is reassembled
    joined = b"".join(pcm_chunks(server["speech"]))
    odd = [joined[i:i + 3333] for i in range(0, len(joined), 3333)]
    assert stream(server["ws"], odd)[-1]["text"] == want


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server):
    url, ws_url = server["url"], server["ws"]
    assert post(url, b"\x00garbage bytes, not audio")[0] == 400
    status, body = post(url, b"\x00garbage bytes, not audio")
    assert status == 400 and body["error"].startswith("uploaded audio: not a readable audio file"), body
    assert post(url, b"") == (400, {"error": "empty request body: send the audio file as the body"})
    # too large: said up front (answered before the body is read), or found while reading a
    # chunked body without a length
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
        s.sendall(f"POST /transcribe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Length: 5000000\r\n\r\n".encode())
        s.settimeout(30)
        answer = ""
        while "}" not in answer:  # the headers, then the JSON body
            chunk = s.recv(4096).decode()
            if not chunk:
                break
            answer += chunk
    assert answer.startswith("HTTP/1.1 413") and "--max-upload-mb" in answer, answer
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
    conn.request("POST", "/transcribe", body=iter([bytes(65536)] * 18), encode_chunked=True,
                 headers={"Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    assert r.status == 413 and "--max-upload-mb" in json.loads(r.read())["error"]
    assert post(url, server["speech"].read_bytes(), token=None)[0] == 401
    assert post(url, server["speech"].read_bytes(), token="wrong")[0] == 401
    # a stream: wrong rate, a text message that is not eof, too long, no token
    with connect(f"{ws_url}/stream?sample_rate=8000&token={TOKEN}") as ws:
        assert "16000 Hz PCM, not 8000 Hz" in json.loads(ws.recv(timeout=30))["error"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1008
    with connect(f"{ws_url}/stream?token={TOKEN}") as ws:
        ws.send("hello")
        assert json.loads(ws.recv(timeout=30))["error"] == 'text messages must be {"eof": true}'
    with connect(f"{ws_url}/stream?token={TOKEN}") as ws:
        for _ in range(21):  # 21 s against --max-stream-s 20
            ws.send(bytes(32000))
        msgs = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                msgs.append(json.loads(ws.recv(timeout=30)))
        assert closed.value.rcvd.code == 1009 and "--max-stream-s" in msgs[-1]["error"], msgs[-1:]
    with connect(f"{ws_url}/stream") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1008
    # a client that goes away mid-stream
    ws = connect(f"{ws_url}/stream?token={TOKEN}")
    ws.send(pcm_chunks(server["speech"])[0])
    ws.socket.close()
    deadline = time.monotonic() + 30
    while json.loads(urllib.request.urlopen(url + "/health").read())["streams_open"] and time.monotonic() < deadline:
        time.sleep(0.1)
    health = json.loads(urllib.request.urlopen(url + "/health").read())
    assert health["streams_open"] == 0 and post(url, server["speech"].read_bytes())[0] == 200
    metrics = urllib.request.urlopen(url + "/metrics").read().decode()
    assert 'asrflow_requests_total{endpoint="transcribe",status="413"} 2' in metrics
    assert 'asrflow_requests_total{endpoint="stream",status="499"}' in metrics, metrics


def rss_mb(url: str) -> float:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return int(re.search(r"^process_resident_memory_bytes (\d+)$", text, re.M).group(1)) / 1e6


def test_a_hundred_connections_at_once(server):
    """100 streams opened together against --max-streams 4, three times: each either streams
    to a final result or is refused with 1013 (try again later); none hangs, the server stays
    up, and its memory after the third wave is within 20 MB of after the first."""
    chunks = pcm_chunks(server["speech"], seconds=1.0)[:2]
    hold = threading.Barrier(100)

    def one(_: int) -> str:
        try:
            with connect(f"{server['ws']}/stream?token={TOKEN}", open_timeout=60) as ws:
                hold.wait(timeout=60)
                for c in chunks:
                    ws.send(c)
                ws.send(json.dumps({"eof": True}))
                while True:
                    if json.loads(ws.recv(timeout=120))["type"] == "final":
                        return "final"
        except ConnectionClosed as e:
            return f"closed {e.rcvd.code if e.rcvd else None}"

    memory = []
    for _ in range(3):
        with ThreadPoolExecutor(100) as pool:
            outcomes = list(pool.map(one, range(100)))
        counts = {o: outcomes.count(o) for o in set(outcomes)}
        assert set(counts) <= {"final", "closed 1013"} and counts.get("final", 0) >= 4, counts
        memory.append(rss_mb(server["url"]))
    print(f"server RSS (MB) after each wave of 100: {memory}")
    assert memory[2] - memory[0] < 20, memory
    assert json.loads(urllib.request.urlopen(server["url"] + "/health").read())["streams_open"] == 0
    assert post(server["url"], server["speech"].read_bytes())[0] == 200


def test_mlflow_models_serve_scores_a_batch(server):
    """What MLflow users try first: `mlflow models serve` on the package, a batch of paths in,
    a transcript or an error per path out."""
    venv_bin = Path(sys.executable).parent
    port = free_port()
    cmd = ["env", f"PATH={venv_bin}:{os.environ.get('PATH', '')}", str(venv_bin / "mlflow"), "models", "serve",
           "-m", str(server["pkg"]), "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    want = load_transcriber(server["pkg"]).transcribe([server["speech"]])[0].text
    with serving(cmd, server["dir"] / "mlflow-serve", port, timeout_s=120) as url:
        body = {"dataframe_split": {"columns": ["path"], "data": [[str(server["speech"])], ["/no/such.wav"]]}}
        req = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            got = json.loads(r.read())["predictions"]
    assert got == [{"path": str(server["speech"]), "text": want, "error": None},
                   {"path": "/no/such.wav", "text": None, "error": "/no/such.wav: no such file"}]


def test_hotwords_are_boosted_per_request(server):
    """?hotwords= on a file and a stream: the answer is the model's beam search with those
    words boosted (tests/decode/test_hotwords.py shows the boost fixing a word); a word the
    model cannot spell is a 400, or an error and close on a stream."""
    model = load_transcriber(server["pkg"])
    wav = sf.read(str(server["speech"]), dtype="float32")[0]
    want = model.search.decode_aligned(model.logprobs(wav), ["hotdog", "the cat"], 100.0)[0]
    assert "cat" in want.split() and want != model.transcribe([server["speech"]])[0].text  # (a random model)
    req = urllib.request.Request(server["url"] + "/transcribe?hotwords=hotdog,the%20cat&boost=100",
                                 data=server["speech"].read_bytes(), headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["text"] == want
    chunks = pcm_chunks(server["speech"])
    with connect(f"{server['ws']}/stream?token={TOKEN}&hotwords=hotdog,the%20cat&boost=100") as ws:
        for c in chunks:
            ws.send(c)
        ws.send(json.dumps({"eof": True}))
        msgs = []
        with pytest.raises(ConnectionClosed):
            while True:
                msgs.append(json.loads(ws.recv(timeout=60)))
    assert msgs[-1]["type"] == "final" and msgs[-1]["text"] == want
    bad = urllib.request.Request(server["url"] + "/transcribe?hotwords=cat9", data=server["speech"].read_bytes(),
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=60)
    assert e.value.code == 400 and "cannot spell: 9" in json.loads(e.value.read())["error"]
    with connect(f"{server['ws']}/stream?token={TOKEN}&hotwords=cat9") as ws:
        assert "cannot spell: 9" in json.loads(ws.recv(timeout=30))["error"]


def test_a_unidirectional_model_streams_for_real_to_the_files_result(uni_server):
    """Partials from the incremental model and beam search as audio arrives; the final result
    equals the file's (the offline model's) to 1e-4 in each word's confidence."""
    status, want = post(uni_server["url"], uni_server["speech"].read_bytes())
    assert status == 200
    msgs = stream(uni_server["ws"], pcm_chunks(uni_server["speech"]))
    final = msgs[-1]
    assert final["type"] == "final" and sum(m["type"] == "partial" for m in msgs) >= 3, msgs
    assert (final["text"], final["duration"]) == (want["text"], want["duration"])
    assert [(w["word"], w["start"], w["end"]) for w in final["words"]] == \
        [(w["word"], w["start"], w["end"]) for w in want["words"]]
    assert [w["confidence"] for w in final["words"]] == pytest.approx([w["confidence"] for w in want["words"]],
                                                                      abs=1e-4)

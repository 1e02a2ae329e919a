"""`asrflow serve` under load: N concurrent WebSocket streams of real test utterances over loopback.

    python bench/bench_serve.py [--dataset synth] [--streams 1,2,4,8,16,24,32,48] [--finals 16] [--chunk-ms 100]

The server is the real one (`asrflow serve` on 127.0.0.1, the dataset's registered package
`models/<d>_mlflow`, made first if missing: `snakemake models/<d>_mlflow`), on this
machine's cores, alongside the clients (threads of this process, which mostly sleep). Each
client streams test-split utterances one after another as a microphone would: 16-bit PCM in
--chunk-ms chunks paced in real time, then `{"eof": true}`; clients start 0-0.5 s apart
(seeded). For each N, rounds are run until at least --finals final results are in.

- final_p50_ms / final_p95_ms at each N: from sending eof to receiving the final result.
- partial_p95_ms at each N: from sending the chunk that completed the audio a partial
  covers to receiving that partial.
- serve_p95_final_ms_at_8: final_p95_ms with 8 streams (goal <= 300).
- serve_max_streams_p95_under_500ms: the largest N tried whose final_p95_ms stays under 500.
- serve_rtf: the server's decoding time (partials included: each re-decodes all the audio
  so far) over the audio it finished, from its /metrics, at N = 1: what one stream costs.

The default model is bidirectional, so every partial re-decodes the stream's whole audio,
and decoding is one utterance at a time (the beam search is not re-entrant): latency grows
with N as requests queue. Prints one JSON object as its last line and writes
reports/bench/serve.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from corpus import REPO, emit

import numpy as np
import pandas as pd
import soundfile as sf
from websockets.sync.client import connect

sys.path.insert(0, str(REPO / "tests"))
from mlflow_browser import free_port, serving  # noqa: E402


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95)) if xs else float("nan")


def client(ws_url: str, utterances: list[np.ndarray], rate: int, chunk: int, delay: float,
           out: dict[str, list[float]]) -> None:
    time.sleep(delay)
    for pcm in utterances:
        sent: dict[int, float] = {}
        with connect(ws_url, open_timeout=60, max_size=None) as ws:
            partials: list[tuple[float, dict]] = []
            done = threading.Event()

            def reader() -> None:
                while True:
                    m = json.loads(ws.recv(timeout=300))
                    partials.append((time.perf_counter(), m))
                    if m["type"] in ("final", "error"):
                        done.set()
                        return

            t = threading.Thread(target=reader)
            t.start()
            start = time.perf_counter()
            for i in range(0, len(pcm), chunk):
                piece = pcm[i:i + chunk]
                due = start + (i + len(piece)) / rate  # real time: a chunk is sent once it has been "spoken"
                time.sleep(max(0.0, due - time.perf_counter()))
                ws.send(piece.astype("<i2").tobytes())
                sent[i + len(piece)] = time.perf_counter()
            eof_at = time.perf_counter()
            ws.send(json.dumps({"eof": True}))
            done.wait(300)
            t.join(5)
        for at, m in partials:
            if m["type"] == "final":
                out["final"].append((at - eof_at) * 1000)
            elif m["type"] == "partial":
                samples = round(m["duration"] * rate)
                if samples in sent:
                    out["partial"].append((at - sent[samples]) * 1000)
            else:
                out["errors"].append(m.get("error", "?"))


def metrics(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return {k: float(v) for k, v in re.findall(r"^(asrflow_\w+_seconds_total) (\S+)$", text, re.M)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synth")
    ap.add_argument("--streams", default="1,2,4,8,16,24,32,48")
    ap.add_argument("--finals", type=int, default=16)
    ap.add_argument("--chunk-ms", type=int, default=100)
    args = ap.parse_args()
    d = args.dataset
    package = REPO / f"models/{d}_mlflow"
    if not package.exists():
        subprocess.run(["snakemake", "-j", "2", f"models/{d}_mlflow"], cwd=REPO, check=True)
    rows = pd.read_parquet(REPO / f"data/{d}/manifests/test.parquet", columns=["audio_filepath", "duration"])
    audio = [sf.read(str(REPO / p), dtype="int16")[0] for p in rows["audio_filepath"]]
    rate = sf.info(str(REPO / rows["audio_filepath"].iloc[0])).samplerate
    chunk = rate * args.chunk_ms // 1000
    port, rng = free_port(), random.Random(0)
    asrflow = str(Path(sys.executable).parent / "asrflow")
    results: dict[str, dict[str, float]] = {}
    with serving([asrflow, "serve", "--model", str(package), "--port", str(port), "--max-streams", "256"],
                 REPO / "reports" / "bench", port, timeout_s=180) as url:
        ws_url = url.replace("http://", "ws://") + "/stream"
        for n in [int(x) for x in args.streams.split(",")]:
            rounds = math.ceil(args.finals / n)
            before = metrics(url)
            out: dict[str, list[float]] = {"final": [], "partial": [], "errors": []}
            threads = [threading.Thread(target=client, args=(
                ws_url, [audio[rng.randrange(len(audio))] for _ in range(rounds)], rate, chunk, rng.uniform(0, 0.5),
                out)) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = metrics(url)
            compute = after["asrflow_compute_seconds_total"] - before["asrflow_compute_seconds_total"]
            heard = after["asrflow_audio_seconds_total"] - before["asrflow_audio_seconds_total"]
            results[str(n)] = {"final_p50_ms": round(statistics.median(out["final"]), 1),
                               "final_p95_ms": round(p95(out["final"]), 1),
                               "partial_p50_ms": round(statistics.median(out["partial"]), 1),
                               "partial_p95_ms": round(p95(out["partial"]), 1),
                               "finals": len(out["final"]), "partials": len(out["partial"]),
                               "errors": len(out["errors"]), "compute_rtf": round(compute / heard, 5)}
            print(f"N={n}: {results[str(n)]}", flush=True)
    under = [int(n) for n, r in results.items() if r["final_p95_ms"] < 500 and not r["errors"]]
    emit("serve", {
        "serve_p95_final_ms_at_8": results.get("8", {}).get("final_p95_ms"),
        "serve_max_streams_p95_under_500ms": max(under) if under else 0,
        "serve_rtf": results.get("1", {}).get("compute_rtf"),
        "by_streams": results, "model": f"models/{d}_mlflow", "utterances_in_pool": len(audio),
        "mean_utterance_s": round(float(rows["duration"].mean()), 3), "chunk_ms": args.chunk_ms})


if __name__ == "__main__":
    main()

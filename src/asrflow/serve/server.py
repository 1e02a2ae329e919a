"""`asrflow serve`: a recognizer over HTTP and WebSocket (FastAPI on uvicorn).

- ``POST /transcribe``: the request body is one audio file (any container, rate or channel
  count sox reads: WAV, FLAC, MP3, ...); the answer is JSON: ``text``, ``duration`` (s) and
  ``words``, each with ``start``/``end`` (s) and a ``confidence`` (0..1).
- ``WS /stream``: binary messages are 16-bit little-endian mono PCM at the model's sample
  rate (``GET /health`` says which); the server answers ``{"type": "partial", "text": ...}``
  as audio arrives (every ``partial_every_s`` of new audio) and, after the client's text
  message ``{"eof": true}``, ``{"type": "final", ...}`` with the words as for a file, then
  closes. A unidirectional model (a DeepSpeech2 with ``bidirectional: false``) streams for real: its
  recurrent layers and the beam search go on from where they were
  (:mod:`asrflow.serve.streaming`); the default model is bidirectional, so a partial
  re-decodes the whole audio so far (its cost grows with the stream; ``max_stream_s``
  bounds it).
- hotwords: ``?hotwords=word,a phrase,...`` on either (``&boost=``, default 10: added to
  each word's LM log-score before alpha scales it) makes the beam search favour those
  words, spelling any the lexicon lacks (:meth:`asrflow.decode.beam.BeamSearch.hotword_decoder`).
- ``GET /health`` (model, sample rate, decoding mode) and ``GET /metrics`` (Prometheus text:
  requests by endpoint and status; ``asrflow_compute_seconds_total``, the time spent decoding,
  partials included, not waiting; ``asrflow_audio_seconds_total``, the audio of files and
  finished streams; open streams; ``process_resident_memory_bytes``).

Limits: a bearer token when one is set (``Authorization: Bearer ...``; a WebSocket may
pass ``?token=`` since browsers cannot set headers on one), ``max_upload_mb`` per file,
``max_stream_s`` of audio per stream, ``max_streams`` open at once (the next is closed
with code 1013, try again later). A bad request gets a status and a one-line ``error``;
the server keeps serving the others. Decoding runs in worker threads, one utterance at a
time (the beam search is not re-entrant), so the event loop keeps accepting.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from asrflow.data.audio import AudioError, prepare_audio
from asrflow.serve.model import AsrflowModel
from asrflow.serve.streaming import RedecodeStream, open_stream

TRY_AGAIN_LATER, POLICY_VIOLATION, TOO_BIG = 1013, 1008, 1009
MAX_HOTWORDS = 100


@dataclass(frozen=True)
class ServerSettings:
    """What `asrflow serve` enforces; the command line sets each."""

    token: str | None = None
    max_upload_mb: float = 20.0
    max_stream_s: float = 120.0
    max_streams: int = 8
    partial_every_s: float = 0.5


class Recognizer:
    """The loaded model behind a lock: log-probs and beam search for one waveform at a time,
    with word times in seconds."""

    def __init__(self, model: AsrflowModel, name: str):
        self.model, self.name = model, name
        self.sample_rate = int(model.sample_rate)
        self._lock = threading.Lock()
        self.compute_seconds = 0.0  # decoding time, partials included (not the wait for the lock)

    def recognize(self, wav: np.ndarray, hotwords: list[str] | None = None, boost: float = 10.0) -> dict[str, Any]:
        """One whole waveform: a stream of it that re-decodes, finished at once."""
        stream = RedecodeStream(self.model, hotwords, boost)
        stream.push(wav)
        return self.finish(stream, len(wav) / self.sample_rate)

    def open_stream(self, hotwords: list[str] | None, boost: float) -> Any:
        """A stream of this model (:func:`asrflow.serve.streaming.open_stream`)."""
        with self._lock:
            return open_stream(self.model, hotwords, boost)

    def push(self, stream: Any, samples: np.ndarray, partial: bool) -> str | None:
        """Audio into ``stream``; its partial transcript when ``partial``."""
        with self._lock:
            t0 = time.perf_counter()
            stream.push(samples)
            text = stream.partial() if partial else None
            self.compute_seconds += time.perf_counter() - t0
        return text

    def finish(self, stream: Any, duration: float) -> dict[str, Any]:
        with self._lock:
            t0 = time.perf_counter()
            text, words, frames = stream.finish()
            self.compute_seconds += time.perf_counter() - t0
        return self.result(text, words, frames, duration)

    def result(self, text: str, words: list[Any], frames: int, duration: float) -> dict[str, Any]:
        """The answer for ``duration`` s of audio decoded to ``frames`` log-prob frames."""
        step = duration / max(frames, 1)  # seconds per output frame
        return {"text": text, "duration": round(duration, 3),
                "words": [{"word": w.word, "start": round(w.first_frame * step, 3) if w.first_frame >= 0 else None,
                           "end": round((w.last_frame + 1) * step, 3) if w.last_frame >= 0 else None,
                           "confidence": None if w.confidence is None else round(w.confidence, 4)}
                          for w in words]}


def parse_hotwords(query: Any, rec: Recognizer) -> tuple[list[str], float]:
    """``?hotwords=word,a phrase,...&boost=10`` as (hotwords, boost); ValueError naming what is wrong."""
    hotwords = [h.strip() for h in (query.get("hotwords") or "").split(",") if h.strip()]
    try:
        boost = float(query.get("boost", "10"))
    except ValueError:
        raise ValueError(f"boost must be a number, not {query.get('boost')!r}") from None
    if len(hotwords) > MAX_HOTWORDS or not 0 <= boost <= 100:
        raise ValueError(f"at most {MAX_HOTWORDS} hotwords, and a boost from 0 to 100")
    if hotwords:
        with rec._lock:  # checks the words and builds (and keeps) the decoder before any audio
            rec.model.search.hotword_decoder(hotwords, boost)
    return hotwords, boost


class Stats:
    """Counters for ``/metrics``."""

    def __init__(self, rec: Recognizer) -> None:
        self.rec = rec
        self.requests: Counter[tuple[str, int]] = Counter()
        self.audio_seconds = 0.0  # of files and finished streams
        self.streams = 0

    def prometheus(self) -> str:
        lines = ["# TYPE asrflow_requests_total counter"]
        lines += [f'asrflow_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                  for (e, s), n in sorted(self.requests.items())]
        lines += ["# TYPE asrflow_audio_seconds_total counter", f"asrflow_audio_seconds_total {self.audio_seconds:.3f}",
                  "# TYPE asrflow_compute_seconds_total counter",
                  f"asrflow_compute_seconds_total {self.rec.compute_seconds:.3f}",
                  "# TYPE asrflow_streams_open gauge", f"asrflow_streams_open {self.streams}",
                  "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {_rss_bytes()}"]
        return "\n".join(lines) + "\n"


def create_app(model: AsrflowModel, name: str, settings: ServerSettings) -> FastAPI:
    """The FastAPI application serving ``model`` (named ``name`` in ``/health``)."""
    rec = Recognizer(model, name)
    stats = Stats(rec)
    app = FastAPI(title="asrflow", docs_url=None, redoc_url=None)
    limit = int(settings.max_upload_mb * 1e6)

    def authorised(header: str | None, query: str | None) -> bool:
        if not settings.token:
            return True
        given = query if header is None else (header[7:] if header.startswith("Bearer ") else "")
        return given is not None and secrets.compare_digest(given.encode(), settings.token.encode())

    def error(endpoint: str, status: int, message: str) -> JSONResponse:
        stats.requests[(endpoint, status)] += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": rec.name, "sample_rate": rec.sample_rate,
                "decoding": model.settings.mode, "streams_open": stats.streams, "max_streams": settings.max_streams}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return stats.prometheus()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (Path(__file__).with_name("demo.html").read_text()
                .replace("__SAMPLE_RATE__", str(rec.sample_rate)).replace("__MODEL__", rec.name))

    @app.post("/transcribe")
    async def transcribe(request: Request) -> JSONResponse:
        if not authorised(request.headers.get("authorization"), None):
            return error("transcribe", 401, "missing or wrong bearer token")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error("transcribe", 413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes "
                                            "(asrflow serve --max-upload-mb)")
        body, received = bytearray(), 0
        async for chunk in request.stream():
            received += len(chunk)
            if received <= limit:
                body += chunk
            elif received > 8 * limit:  # read on so the client can read the answer, but not forever
                break
        if received > limit:
            return error("transcribe", 413, f"upload is over the limit of {limit} bytes "
                                            "(asrflow serve --max-upload-mb)")
        if not body:
            return error("transcribe", 400, "empty request body: send the audio file as the body")
        try:
            hotwords, boost = await run_in_threadpool(parse_hotwords, request.query_params, rec)
        except ValueError as e:
            return error("transcribe", 400, str(e))
        try:
            result = await run_in_threadpool(_recognize_bytes, rec, bytes(body), hotwords, boost)
        except AudioError as e:
            return error("transcribe", 400, str(e))
        stats.audio_seconds += result["duration"]
        stats.requests[("transcribe", 200)] += 1
        return JSONResponse(result)

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        if not authorised(ws.headers.get("authorization"), ws.query_params.get("token")):
            stats.requests[("stream", 401)] += 1
            await ws.close(POLICY_VIOLATION, "missing or wrong bearer token")
            return
        rate = ws.query_params.get("sample_rate")
        if rate is not None and rate != str(rec.sample_rate):
            stats.requests[("stream", 400)] += 1
            await ws.send_json({"type": "error", "error": f"this model takes {rec.sample_rate} Hz PCM, not {rate} Hz"})
            await ws.close(POLICY_VIOLATION, "wrong sample rate")
            return
        try:
            hotwords, boost = await run_in_threadpool(parse_hotwords, ws.query_params, rec)
        except ValueError as e:
            stats.requests[("stream", 400)] += 1
            await ws.send_json({"type": "error", "error": str(e)})
            await ws.close(POLICY_VIOLATION, "bad hotwords")
            return
        if stats.streams >= settings.max_streams:
            stats.requests[("stream", 503)] += 1
            await ws.close(TRY_AGAIN_LATER, f"{settings.max_streams} streams open: try again later")
            return
        stats.streams += 1
        stream = await run_in_threadpool(rec.open_stream, hotwords, boost)
        pcm, odd, pushed = bytearray(), b"", 0
        max_bytes = int(settings.max_stream_s * rec.sample_rate) * 2
        every = int(settings.partial_every_s * rec.sample_rate) * 2
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    stats.requests[("stream", 499)] += 1
                    return
                if msg.get("bytes") is not None:
                    data = odd + msg["bytes"]
                    keep = len(data) - len(data) % 2
                    pcm += data[:keep]
                    odd = data[keep:]
                    if len(pcm) > max_bytes:
                        stats.requests[("stream", 413)] += 1
                        await ws.send_json({"type": "error", "error": f"stream longer than {settings.max_stream_s} s "
                                                                      "(asrflow serve --max-stream-s)"})
                        await ws.close(TOO_BIG, "stream too long")
                        return
                    if len(pcm) - pushed >= every:  # the new audio into the stream, and its partial
                        text = await run_in_threadpool(rec.push, stream, _samples(pcm[pushed:]), True)
                        pushed = len(pcm)
                        await ws.send_json({"type": "partial", "text": text,
                                            "duration": round(pushed / 2 / rec.sample_rate, 3)})
                elif msg.get("text") is not None:
                    try:
                        eof = json.loads(msg["text"]).get("eof") is True
                    except (ValueError, AttributeError):
                        eof = False
                    if not eof:
                        stats.requests[("stream", 400)] += 1
                        await ws.send_json({"type": "error", "error": 'text messages must be {"eof": true}'})
                        await ws.close(POLICY_VIOLATION, "bad message")
                        return
                    await run_in_threadpool(rec.push, stream, _samples(pcm[pushed:]), False)
                    final = await run_in_threadpool(rec.finish, stream, len(pcm) / 2 / rec.sample_rate)
                    stats.audio_seconds += final["duration"]
                    stats.requests[("stream", 200)] += 1
                    await ws.send_json({"type": "final", **final})
                    await ws.close()
                    return
        except WebSocketDisconnect:
            stats.requests[("stream", 499)] += 1
        finally:
            stats.streams -= 1

    app.state.stats = stats
    return app


def _rss_bytes() -> int:
    """This process' resident memory (Linux /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _samples(pcm: bytearray) -> np.ndarray:
    return np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float32) / 32768.0


def _recognize_bytes(rec: Recognizer, body: bytes, hotwords: list[str], boost: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="asrflow-serve-") as work:
        path = Path(work) / "upload"
        path.write_bytes(body)
        try:
            wav = prepare_audio(path, rec.sample_rate, work)
        except AudioError as e:  # name the upload, not the temporary file
            raise AudioError(str(e).replace(str(path), "uploaded audio")) from None
        return rec.recognize(wav, hotwords, boost)


def serve(model: str, host: str, port: int, settings: ServerSettings) -> None:
    """Load ``model`` and serve it until interrupted."""
    import uvicorn

    from asrflow.serve.loading import load_transcriber

    app = create_app(load_transcriber(model), model, settings)
    print(f"asrflow serve: {model} on http://{host}:{port}/ (POST /transcribe, WS /stream, GET /health, /metrics)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=4 * 1024 * 1024)

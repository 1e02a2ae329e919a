"""The README's screenshot of `asrflow serve`'s demo page: a model served, headless Chromium's
fake microphone playing one utterance (with 0.3 s of silence before it), Record, Stop once
it has played, a screenshot of the final transcript.

    .venv/bin/python tests/serve/demo_screenshot.py --model models/synth_mlflow \\
        --audio data/synth/raw/LibriSpeech/test/1006/3/1006-3-0007.flac --out docs/images/asrflow-serve-demo.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from mlflow_browser import _chromium_cmd, _stop, chromium_binary, free_port, serving  # noqa: E402
from test_demo_page import Page  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="asrflow-shot-"))
    mic = d / "mic.wav"
    subprocess.run(["sox", str(Path(args.audio).resolve()), "-r", "48000", str(mic), "pad", "0.3", "3"], check=True)
    seconds = float(subprocess.run(["soxi", "-D", str(mic)], capture_output=True, text=True, check=True).stdout)
    port, cport = free_port(), free_port()
    asrflow = str(Path(sys.executable).parent / "asrflow")
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    with serving([asrflow, "serve", "--model", model, "--port", str(port)], d, port) as url:
        cmd = [c for c in _chromium_cmd(chromium_binary(), str(d / "profile"), 0, (900, 560))
               if not c.startswith(("--virtual-time-budget", "--mute-audio"))]
        cmd += [f"--remote-debugging-port={cport}", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}%noloop", "about:blank"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(300):
                try:
                    tabs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{cport}/json", timeout=2).read())
                    break
                except OSError:
                    time.sleep(0.2)
            page = Page(next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"])
            page.call("Page.enable")
            page.call("Page.navigate", url=url + "/")
            page.wait("!!document.getElementById('record')")
            page.js("document.getElementById('record').click()")
            page.wait("document.getElementById('status').textContent === 'listening'")
            time.sleep(seconds + 0.3)
            page.js("document.getElementById('stop').click()")
            page.wait("document.getElementById('status').textContent.startsWith('done')")
            print(page.js("document.getElementById('final').textContent"))
            page.screenshot(args.out)
        finally:
            _stop(proc)


if __name__ == "__main__":
    main()

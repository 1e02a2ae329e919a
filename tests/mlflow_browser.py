"""Real-browser checks of the MLflow UI: a local ``mlflow server`` plus Debian's headless Chromium.

``make system-deps`` installs the browser (Debian package ``chromium-headless-shell``, binary
``/usr/bin/chromium-headless-shell``). The server comes from the interpreter's own environment
(``<venv>/bin/mlflow``), listens on 127.0.0.1 only and is told not to reach the internet.

MLflow 3.17's web UI is a React single-page app routed on the URL fragment (react-router
``createHashRouter``); the routes used here are in its ``server/js/build/static/js/main.*.js``
bundle (``experimentPageTabRuns`` = ``/experiments/:experimentId/runs``, ``runPageRoute`` =
``/experiments/:experimentId/runs/:runUuid``):

* ``#/experiments/<experiment_id>/runs?workflowType=machine_learning``: the runs table.
  ``#/experiments/<id>`` alone opens the GenAI "Overview" (traces) tab with no run on it, so
  the ``/runs`` tab is asked for; ``workflowType=machine_learning`` switches the sidebar to the
  "Model training" view. Each row's name is ``<a href="#/experiments/<id>/runs/<run_id>">``.
* ``#/experiments/<experiment_id>/runs/<run_id>?workflowType=machine_learning``: the run's
  overview, with a "Metrics (N)" table of name (a link to ``.../model-metrics``) and latest
  value, unrounded, as JavaScript prints the number (``4.5678``, ``0.3333333333333333``).

Nested runs: the runs table folds each parent run's children under it (``mlflow.parentRunId``)
and opens them only for the parents in its ``runsExpanded`` state, which the app keeps in the
browser's localStorage (key ``MLflowLocalStorage-1.1-ExperimentPage-["<experiment_id>"]-ReactComponentState``;
a shared view, ``viewStateShareKey``, leaves ``runsExpanded`` out). :func:`expanded_origin`
serves the app through a small same-origin proxy whose first page writes that state and then
opens the runs table, so a headless Chromium can render the children expanded.

Chromium renders with ``--virtual-time-budget``: virtual time stands still while the app's
requests to the server are in flight, so the budget is not eaten by a slow machine.

:func:`check_pipeline_runs_in_ui` strings these together for a store the pipeline wrote.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable, Iterator

#: Browser binaries tried in order; Debian's ``chromium-headless-shell`` package gives the first.
CHROMIUM_CANDIDATES = ("chromium-headless-shell", "chrome-headless-shell", "chromium", "chromium-browser",
                       "google-chrome")
INSTALL_HINT = "`make system-deps` installs it (Debian package chromium-headless-shell)"

#: Environment for the server: no telemetry, no background job runners, nothing that goes online.
SERVER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}

REPO = Path(__file__).resolve().parents[1]

#: The UI's "Model training" view (``?workflowType=machine_learning``): its sidebar and labels
#: are about runs; without it MLflow 3 opens experiments in the GenAI view.
WORKFLOW = "machine_learning"


class BrowserMissing(RuntimeError):
    """No headless Chromium on PATH."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no server log)"


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace_s)


@contextmanager
def mlflow_server(backend_store_uri: str, artifact_root: str, cwd: str | Path,
                  timeout_s: float = 90.0, workers: int = 1) -> Iterator[str]:
    """Run ``mlflow server`` on a free 127.0.0.1 port; yield its base URL, e.g. ``http://127.0.0.1:41234``.

    Waits until ``GET /health`` answers 200 (raises ``RuntimeError`` with the tail of the
    server's output after ``timeout_s``). The server's stdout/stderr go to
    ``<cwd>/mlflow-server.log``. On exit the server's whole process group is terminated.
    """
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        raise RuntimeError(f"{mlflow_bin} not found: the mlflow server comes from the project's venv (make install)")
    port = free_port()
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", backend_store_uri, "--default-artifact-root", artifact_root]
    with serving(cmd, cwd, port, timeout_s) as base_url:
        yield base_url


@contextmanager
def serving(cmd: list[str], cwd: str | Path, port: int, timeout_s: float = 90.0) -> Iterator[str]:
    """Run ``cmd`` (a server that will listen on 127.0.0.1:``port``, e.g. ``make mlflow-server``)
    in its own process group; yield its base URL once ``GET /health`` answers 200. Output goes to
    ``<cwd>/mlflow-server.log``; on exit the whole process group is terminated."""
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}"
    log_path = cwd / "mlflow-server.log"
    env = {**os.environ, **SERVER_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)  # the server serves its own store, whatever the caller's shell says
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode} before answering /health; "
                                   f"{log_path}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not answer {base_url}/health within {timeout_s:.0f} s; "
                                   f"{log_path}:\n{_tail(log_path)}")
            time.sleep(0.25)
        yield base_url
    finally:
        _stop(proc)


def chromium_binary() -> str:
    """Path of the headless Chromium; raises :class:`BrowserMissing` naming ``make system-deps``."""
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing(f"no headless Chromium on PATH (tried {', '.join(CHROMIUM_CANDIDATES)}): {INSTALL_HINT}")


def _chromium_cmd(binary: str, profile: str, budget_ms: int, window: tuple[int, int]) -> list[str]:
    cmd = [binary]
    if "headless-shell" not in Path(binary).name:
        cmd.append("--headless")  # the full browser needs it; the headless shell is nothing else
    cmd += [
        "--no-sandbox",  # Chromium refuses to run as root with its sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a small /dev/shm
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--mute-audio",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        # Virtual time runs only while no request is in flight: the page gets budget_ms of
        # (virtual) time after its fetches to the server, enough for React to render them.
        f"--virtual-time-budget={budget_ms}",
        "--run-all-compositor-stages-before-draw",
    ]
    return cmd


def render(url: str, screenshot: Path | None = None, budget_ms: int = 15000,
           window: tuple[int, int] = (1600, 1300), timeout_s: float = 120.0) -> str:
    """Load ``url`` in headless Chromium and return the DOM after scripts ran (``--dump-dom``).

    With ``screenshot``, the same invocation also writes a PNG of the window there
    (``--screenshot``; a browser that does not honour both flags at once gets a second run for
    it). ``budget_ms`` is Chromium's ``--virtual-time-budget``. Raises :class:`BrowserMissing`
    without a browser and ``RuntimeError`` if Chromium fails or prints no DOM.
    """
    binary = chromium_binary()
    shot_args: list[str] = []
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        shot_args = [f"--screenshot={screenshot}"]
    with tempfile.TemporaryDirectory(prefix="asrflow-chromium-") as profile:
        base = _chromium_cmd(binary, profile, budget_ms, window)
        proc = subprocess.run(base + ["--dump-dom", *shot_args, url], capture_output=True, text=True,
                              timeout=timeout_s)
        if proc.returncode != 0 or "<html" not in proc.stdout:
            raise RuntimeError(f"{binary} --dump-dom {url} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        if screenshot is not None and not screenshot.exists():
            shot = subprocess.run(base + [*shot_args, url], capture_output=True, text=True, timeout=timeout_s)
            if shot.returncode != 0 or not screenshot.exists():
                raise RuntimeError(f"{binary} --screenshot {url} failed ({shot.returncode}):\n{shot.stderr[-3000:]}")
    return proc.stdout


def visible_text(dom: str) -> str:
    """The DOM's text with scripts, styles and tags stripped and whitespace collapsed."""
    dom = re.sub(r"(?is)<(script|style|noscript|svg)\b.*?</\1\s*>", " ", dom)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"(?s)<[^>]+>", " ", dom))).strip()


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table, in the "Model training" view (not the app's default tab)."""
    return f"{base_url}/#/experiments/{experiment_id}/runs?workflowType={WORKFLOW}"


def ui_state_key(experiment_id: str) -> str:
    """The localStorage key under which the app keeps an experiment page's UI state."""
    return f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([str(experiment_id)])}-ReactComponentState"


SEED_PAGE = "/__asrflow_seed.html"


@contextmanager
def expanded_origin(base_url: str, experiment_id: str, parent_run_ids: Iterable[str]) -> Iterator[str]:
    """A proxy to the MLflow server at ``base_url`` on another 127.0.0.1 port; yields the URL
    to render: a page of the proxy's origin that stores the experiment page's UI state with
    ``parent_run_ids`` expanded in localStorage and then opens the runs table there (same
    origin, so the app reads that state)."""
    state = json.dumps({"runsExpanded": {r: True for r in parent_run_ids}})
    port = free_port()
    target = experiment_url(f"http://127.0.0.1:{port}", experiment_id)
    page = (f"<!doctype html><html><body><script>localStorage.setItem({json.dumps(ui_state_key(experiment_id))},"
            f"{json.dumps(state)});location.replace({json.dumps(target)});</script></body></html>").encode()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            if self.path == SEED_PAGE:
                self._reply(200, [("Content-Type", "text/html")], page)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            req = urllib.request.Request(base_url + self.path, data=body, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    self._reply(r.status, r.getheaders(), r.read())
            except urllib.error.HTTPError as e:
                self._reply(e.code, e.headers.items(), e.read())

        def _reply(self, status: int, headers, data: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}{SEED_PAGE}"
    finally:
        server.shutdown()
        server.server_close()


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """One run's overview page (about, tags, metrics and parameters tables)."""
    return f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}?workflowType={WORKFLOW}"


def run_links(dom: str, experiment_id: str) -> dict[str, str]:
    """``{run_id: run name}`` of the run links in a rendered runs table.

    Each row's name cell is ``<a href="#/experiments/<id>/runs/<run_id>"><span>NAME</span></a>``.
    """
    pattern = rf'<a\b[^>]*href="#/experiments/{re.escape(experiment_id)}/runs/([0-9a-f]{{32}})"[^>]*>(.*?)</a>'
    return {m.group(1): html.unescape(re.sub(r"<[^>]+>", "", m.group(2))).strip()
            for m in re.finditer(pattern, dom, flags=re.S)}


def metric_rows(dom: str) -> dict[str, str]:
    """``{metric name: value as displayed}`` from a rendered run page's "Metrics" table.

    A row is ``<div role="row"><div role="cell"><span><a href=".../runs/<id>/model-metrics">NAME</a>
    </span></div><div role="cell"><span title="VALUE">VALUE</span></div></div>``.
    """
    rows: dict[str, str] = {}
    for chunk in re.split(r'role="row"', dom)[1:]:
        name = re.search(r'<a\b[^>]*href="#/experiments/[^"]*/model-metrics"[^>]*>([^<]+)</a>', chunk)
        if not name:
            continue
        value = re.search(r'role="cell"[^>]*>\s*<span\b[^>]*>([^<]*)</span>', chunk[name.end():])
        if value:
            rows[html.unescape(name.group(1)).strip()] = html.unescape(value.group(1)).strip()
    return rows


def displayed_metric(value: float) -> str:
    """``value`` as the run page shows it: unrounded, as JavaScript's ``String(number)`` prints it.

    (``4.5678`` -> ``"4.5678"``, ``12.0`` -> ``"12"``, ``1/3`` -> ``"0.3333333333333333"``,
    ``5e-05`` -> ``"0.00005"``, ``1e-07`` -> ``"1e-7"``.)
    """
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-tripping digits, as JavaScript does; only the layout differs.
    _, digits_t, exp = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0")
    exp += len(digits_t) - len(digits)
    k, n = len(digits), int(exp) + len(digits)  # value = 0.digits * 10**n
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        out = (digits[0] + ("." + digits[1:] if k > 1 else "")) + f"e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + out


def render_until(url: str, done: Callable[[str], bool], screenshot: Path | None = None, budget_ms: int = 15000,
                 attempts: int = 2) -> str:
    """:func:`render` until ``done(dom)`` holds (at most ``attempts`` times, doubling the budget).

    Returns the last DOM either way; the screenshot is of that same page load.
    """
    dom = ""
    for i in range(attempts):
        dom = render(url, screenshot, budget_ms * 2 ** i)
        if done(dom):
            break
    return dom


def runs_visible(base_url: str, experiment_id: str, run_names: Iterable[str], screenshot: Path | None = None,
                 budget_ms: int = 15000, expand: Iterable[str] = ()) -> tuple[dict[str, str], str]:
    """Render the experiment's runs table; return (``{run_id: name}`` of its run links, its DOM).

    ``expand``: parent run ids whose nested runs are shown (see :func:`expanded_origin`);
    without it the table shows parents folded. Re-renders once with a longer budget if a name
    in ``run_names`` is missing.
    """
    wanted = set(run_names)
    expand = list(expand)
    with expanded_origin(base_url, experiment_id, expand) if expand else nullcontext(None) as seed:
        dom = render_until(seed or experiment_url(base_url, experiment_id),
                           lambda d: wanted <= set(run_links(d, experiment_id).values()), screenshot, budget_ms)
    return run_links(dom, experiment_id), dom


def metrics_visible(base_url: str, experiment_id: str, run_id: str, metric_names: Iterable[str],
                    screenshot: Path | None = None, budget_ms: int = 15000) -> tuple[dict[str, str], str]:
    """Render one run's page; return (its metrics table ``{name: displayed value}``, its DOM)."""
    wanted = set(metric_names)
    dom = render_until(run_url(base_url, experiment_id, run_id), lambda d: wanted <= set(metric_rows(d)),
                       screenshot, budget_ms)
    return metric_rows(dom), dom


def artifacts_dir() -> Path:
    """Where browser tests put screenshots: ``$ASRFLOW_TEST_ARTIFACTS`` or ``<repo>/test-artifacts``."""
    return Path(os.environ.get("ASRFLOW_TEST_ARTIFACTS") or REPO / "test-artifacts")


def assert_png(path: Path, min_bytes: int = 10_000) -> tuple[int, int]:
    """Check ``path`` is a PNG of some substance; return its (width, height)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) >= min_bytes, f"{path} is only {len(data)} bytes: a blank page?"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 200 and height >= 200, f"{path} is {width}x{height}"
    return width, height


def check_pipeline_runs_in_ui(store_uri: str, artifact_root: str, experiment_name: str, run_names: Iterable[str],
                              metric_name: str, metric_value: float, artifacts_dir: Path,
                              metric_run: str | None = None, budget_ms: int = 15000,
                              server_url: str | None = None) -> dict[str, Path]:
    """Assert the MLflow UI, served from ``store_uri``, shows a pipeline's runs and one metric.

    Starts ``mlflow server`` on the store, opens ``experiment_name``'s runs table in headless
    Chromium with every parent run expanded and asserts every name in ``run_names`` is a run
    link there (with the run id the store has for it); then opens the page of the run ``metric_run`` (default: the newest run
    that has ``metric_name``) and asserts its metrics table has ``metric_name`` with
    ``metric_value`` as MLflow displays it (:func:`displayed_metric`).

    Screenshots ``<experiment>-runs.png`` and ``<experiment>-run-<name>.png`` and the server's
    log ``<experiment>-mlflow-server.log`` are written to ``artifacts_dir``; returns their paths.
    ``server_url``: use that running server (on the same store) instead of starting one.
    """
    from mlflow.tracking import MlflowClient

    run_names = list(run_names)
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name(experiment_name)
    assert exp is not None, f"no experiment {experiment_name!r} in {store_uri}"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    candidates = [r for r in runs if metric_name in r.data.metrics
                  and (metric_run is None or r.info.run_name == metric_run)]
    assert candidates, f"no run {metric_run or '(any name)'} with metric {metric_name} in {experiment_name}"
    target = candidates[0]
    ids_by_name: dict[str, set[str]] = {}
    for r in runs:
        ids_by_name.setdefault(r.info.run_name, set()).add(r.info.run_id)
    parents = sorted({r.data.tags["mlflow.parentRunId"] for r in runs if "mlflow.parentRunId" in r.data.tags})

    out = {"runs": artifacts_dir / f"{experiment_name}-runs.png",
           "run": artifacts_dir / f"{experiment_name}-run-{target.info.run_name}.png",
           "log": artifacts_dir / f"{experiment_name}-mlflow-server.log"}
    with tempfile.TemporaryDirectory(prefix="asrflow-mlflow-server-") as server_dir:
        try:
            server = nullcontext(server_url) if server_url else mlflow_server(store_uri, artifact_root, server_dir)
            with server as base_url:
                links, dom = runs_visible(base_url, exp.experiment_id, run_names, out["runs"], budget_ms,
                                          expand=parents)
                where = experiment_url(base_url, exp.experiment_id)
                shown = set(links.values())
                missing = [n for n in run_names if n not in shown]
                assert not missing, f"runs {missing} not on {where}; runs linked: {links}; " \
                                    f"page text: {visible_text(dom)[:3000]}"
                for run_id, name in links.items():
                    assert run_id in ids_by_name.get(name, ()), f"{where} links {name!r} to run {run_id}, " \
                                                                f"the store has {ids_by_name.get(name)}"
                assert_png(out["runs"])

                metrics, dom = metrics_visible(base_url, exp.experiment_id, target.info.run_id, [metric_name],
                                               out["run"], budget_ms)
                where = run_url(base_url, exp.experiment_id, target.info.run_id)
                assert metric_name in metrics, f"metric {metric_name} not on {where}; metrics table: {metrics}; " \
                                               f"page text: {visible_text(dom)[:3000]}"
                want = displayed_metric(metric_value)
                assert metrics[metric_name] == want, \
                    f"{where} shows {metric_name} = {metrics[metric_name]}, expected {want}"
                assert_png(out["run"])
        finally:
            log = Path(server_dir) / "mlflow-server.log"
            if log.exists():
                shutil.copy(log, out["log"])
    return out

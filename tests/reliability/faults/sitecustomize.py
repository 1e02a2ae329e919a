"""Fault injection for the reliability tests: Python imports this at start-up when this
directory is on PYTHONPATH (every process of a stage, torchrun's workers included).

``ASRFLOW_FAULT`` (JSON) ``{"event": E, "match": REGEX, "nth": N}`` sends SIGKILL to the
process itself at the N-th audit event E (``open`` for a file opened for writing,
``os.rename`` for os.rename/os.replace) whose path matches REGEX: a kill -9 at an exact
point of the real code, without changing that code.

Optional keys: ``"reads": true`` counts files opened for reading too, and
``"action": "stop"`` sends SIGSTOP instead of SIGKILL: the process freezes at that point
until the test, having changed the world under it, sends SIGCONT.

The signal goes to the thread that hit the event (``pthread_kill``), not to the process:
a process-directed SIGSTOP is taken by the main thread, and until it is scheduled the
thread that hit the event runs on. MLflow copies artifacts on a thread pool, so on a busy
machine that thread could finish reading the file the test then deletes "under" it.
"""

import json
import os
import re
import signal
import sys
import threading

_spec = os.environ.get("ASRFLOW_FAULT")
if _spec:
    _fault = json.loads(_spec)
    _pattern, _seen = re.compile(_fault["match"]), [0]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def _writes(args) -> bool:
        mode, flags = args[1], args[2]
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return isinstance(flags, int) and bool(flags & _WRITE)

    def _hook(event, args):
        if event != _fault["event"] or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if event == "open" and not (_fault.get("reads") or _writes(args)):
            return
        if _pattern.search(os.fsdecode(args[0])):
            _seen[0] += 1
            if _seen[0] == _fault["nth"]:
                signal.pthread_kill(threading.get_ident(),
                                    signal.SIGSTOP if _fault.get("action") == "stop" else signal.SIGKILL)

    sys.addaudithook(_hook)

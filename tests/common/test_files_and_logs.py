"""The low-level helpers: atomic writes and a stage's log file."""

import io
import json
import time

import pytest

from asrflow.common.files import atomic_open, write_csv, write_json, write_text
from asrflow.common.logfile import LogTee


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write('{"a": 2')
            raise RuntimeError("killed half-way")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
    write_csv(tmp_path / "t.csv", [{"x": 1, "y": 2}, {"x": 3, "y": 4}])
    assert (tmp_path / "t.csv").read_bytes() == b"x,y\r\n1,2\r\n3,4\r\n"  # csv's own line ends, as DVC plots read
    write_text(tmp_path / "u.txt", "é\n")
    assert (tmp_path / "u.txt").read_bytes() == "é\n".encode()
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_the_log_gets_timestamped_lines_not_progress_frames(tmp_path):
    term = io.StringIO()
    log = LogTee(term, tmp_path / "logs/stage.log", frame_every_s=3600)
    log.write("[stage] starting\n")
    for i in range(1, 101):  # a progress bar redrawing its line
        log.write(f"\rtrain: {i}/100")
    log.write("\n[stage] done\n")
    log.file_only("Traceback (most recent call last):\n  ...\n")
    log.close()
    assert term.getvalue().count("\r") == 100 and "Traceback" not in term.getvalue()  # the terminal as before
    lines = (tmp_path / "logs/stage.log").read_text().splitlines()
    stamp = time.strftime("%Y-%m-%d")
    assert all(line.startswith(stamp) for line in lines)
    texts = [line[20:] for line in lines]
    assert texts == ["[stage] starting", "train: 1/100", "train: 100/100", "[stage] done",
                     "Traceback (most recent call last):", "  ..."]


def test_the_log_stream_outlives_its_file(tmp_path):
    """A logger set up during the stage keeps the stream: after close() it reaches the terminal only."""
    term = io.StringIO()
    log = LogTee(term, tmp_path / "s.log")
    log.write("during\n")
    log.close()
    log.write("after\n")
    log.flush()
    log.close()
    assert term.getvalue() == "during\nafter\n" and "after" not in (tmp_path / "s.log").read_text()

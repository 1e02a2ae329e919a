"""The benchmarks page is rendered from the benchmarks' JSON, provenance included."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from page import render  # noqa: E402


def test_page_names_each_figure_with_where_it_was_measured():
    prov = {"commit": "abc1234567", "date": "2026-11-29 20:00 UTC", "cpu": "Some CPU @ 2.0GHz", "cores": 2,
            "machine": "x86_64"}
    page = render({"decode": {"grid_speedup_vs_pyctcdecode_same_cores": 2.1234, "runs": {"ours_s": 65.5},
                              "provenance": prov},
                   "old": {"figure": 3}})
    assert "## decode" in page and "| `grid_speedup_vs_pyctcdecode_same_cores` | 2.123 |" in page
    assert "| `runs.ours_s` | 65.5 |" in page
    assert "Measured at commit `abc1234567` on 2026-11-29 20:00 UTC, Some CPU @ 2.0GHz, 2 cores (x86_64)." in page
    assert "## old" in page and "Provenance not recorded" in page
    assert "No benchmark has been run yet" in render({})


def test_emit_records_provenance(tmp_path, monkeypatch):
    import corpus

    monkeypatch.setattr(corpus, "REPO", tmp_path)
    corpus.emit("x", {"figure": 1.5})
    import json
    saved = json.loads((tmp_path / "reports/bench/x.json").read_text())
    assert saved["figure"] == 1.5 and saved["provenance"]["cores"] >= 1 and saved["provenance"]["cpu"]

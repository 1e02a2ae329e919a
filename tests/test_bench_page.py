"""The benchmarks page is rendered from the benchmarks' JSON, provenance included."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from page import README_BEGIN, README_END, readme_block, render, replace_block  # noqa: E402


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


def test_readme_block_quotes_the_page():
    prov = {"commit": "abc1234567", "date": "2026-11-29 20:00 UTC", "cpu": "Some CPU", "cores": 2, "machine": "x86_64"}
    results = {"decode": {"grid_speedup_vs_pyctcdecode_same_cores": 1.87654, "provenance": prov}}
    block = readme_block(results)
    assert "| decode | `grid_speedup_vs_pyctcdecode_same_cores` | 1.877 |" in block
    assert "`abc1234567`, 2026-11-29, Some CPU, 2 cores" in block
    text = f"intro\n{README_BEGIN}\nold\n{README_END}\noutro"
    assert replace_block(text, block) == f"intro\n{block}\noutro"


def test_readme_figures_are_the_benchmarks_pages():
    """Every figure in the README's generated block is on docs/BENCHMARKS.md with the same value
    and the same commit: the README quotes figures only from there."""
    import re

    readme, page = (REPO / "README.md").read_text(), (REPO / "docs" / "BENCHMARKS.md").read_text()
    block = readme[readme.index(README_BEGIN):readme.index(README_END)]
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^## (\w+)\n(.*?)(?=^## |\Z)", page, re.M | re.S)}
    rows = re.findall(r"^\| (\w+) \| `([\w.]+)` \| ([^|]+) \| [^|]+ \| `(\w+(?:-dirty)?)`", block, re.M)
    assert rows, "no figures in the README's generated block"
    for bench, fig, value, commit in rows:
        assert f"| `{fig}` | {value.strip()} |" in sections[bench], (bench, fig, value)
        assert f"Measured at commit `{commit}`" in sections[bench], (bench, commit)
    # bench_models' families table: every cell is the page's families.<family>.<figure>
    from page import FAMILY_COLUMNS

    pattern = r"^\| (\w+) \| " + r" \| ".join(["([^|]+)"] * len(FAMILY_COLUMNS)) + r" \|$"
    families = [r for r in re.findall(pattern, block, re.M) if r[0] != "family"]  # not the heading
    if "models" in sections:
        assert families, "bench_models ran but the README shows no family rows"
    for fam, *cells in families:
        for (fig, _), value in zip(FAMILY_COLUMNS, cells):
            assert f"| `families.{fam}.{fig}` | {value.strip()} |" in sections["models"], (fam, fig, value)

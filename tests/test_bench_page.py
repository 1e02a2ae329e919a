"""The benchmarks page is rendered from the benchmarks' JSON, provenance included."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from page import README_BEGIN, README_END, page_sections, readme_block, render, replace_block  # noqa: E402


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
    sections = page_sections(page)
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


def test_one_benchmark_rerun_keeps_the_others_figures(tmp_path):
    """page.py run with only one benchmark's JSON (a fresh clone that ran one benchmark) renders
    that one anew and keeps every other section of the page and its README rows as they were."""
    import json
    import subprocess

    prov = {"commit": "feedface00", "date": "2026-12-02 06:00 UTC", "cpu": "Some CPU", "cores": 2, "machine": "x86_64"}
    fam = {"params": 10, "lr": 0.006, "epoch_minutes": 3.1, "epochs": 3, "budget_minutes": 10, "train_minutes": 9.5,
           "train_audio_s_per_s": 99.0, "dev_greedy_wer": 12.0, "test_greedy_wer": 13.0, "test_greedy_cer": 3.0, "test_beam_wer": 7.0,
           "test_beam_cer": 2.5}
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "serve.json").write_text(json.dumps(
        {"serve_p95_final_ms_at_8": 123.4, "serve_max_streams_p95_under_500ms": 16, "provenance": prov}))
    readme, page = tmp_path / "README.md", tmp_path / "BENCHMARKS.md"
    readme.write_text((REPO / "README.md").read_text())
    page.write_text((REPO / "docs" / "BENCHMARKS.md").read_text())
    before = page_sections(page.read_text())
    subprocess.run([sys.executable, str(REPO / "bench" / "page.py"), "--bench-dir", str(tmp_path / "bench"),
                    "--out", str(page), "--readme", str(readme)], check=True, capture_output=True)
    after = page_sections(page.read_text())
    assert set(after) == set(before) | {"serve"}
    assert all(after[k] == before[k] for k in before if k != "serve")
    assert "| `serve_p95_final_ms_at_8` | 123.4 |" in after["serve"] and "`feedface00`" in after["serve"]
    old_rows = [r for r in (REPO / "README.md").read_text().splitlines() if r.startswith("| ")
                and not r.startswith("| serve |")]
    new = readme.read_text()
    assert all(r in new for r in old_rows)  # every other benchmark's rows and the families table
    assert "| serve | `serve_p95_final_ms_at_8` | 123.4 |" in new and "`feedface00`, 2026-12-02" in new
    # and the models JSON alone replaces the families table
    (tmp_path / "bench" / "models.json").write_text(json.dumps(
        {"families": {"jasper": fam, "jasper_old": {**fam, "family": "jasper", "lr": 0.001}}, "best_family": "jasper",
         "best_test_greedy_wer": 13.0,
         "greedy_cer_vs_deepspeech2": 0.4, "provenance": prov}))
    subprocess.run([sys.executable, str(REPO / "bench" / "page.py"), "--bench-dir", str(tmp_path / "bench"),
                    "--out", str(page), "--readme", str(readme)], check=True, capture_output=True)
    new = readme.read_text()
    assert new.count("Model families, each trained for") == 1 and "| jasper | 10 | 0.006 | 3.1 | 3 | 9.5 |" in new
    assert "| deepspeech2 | 5035517" not in new
    assert "| jasper_old | 10 | 0.001 |" in new and "`jasper_old` is jasper trained with another recipe" in new
    # a re-run of another benchmark keeps that table and its sentence, a blank line apart
    (tmp_path / "bench" / "models.json").unlink()
    subprocess.run([sys.executable, str(REPO / "bench" / "page.py"), "--bench-dir", str(tmp_path / "bench"),
                    "--out", str(page), "--readme", str(readme)], check=True, capture_output=True)
    assert readme.read_text() == new

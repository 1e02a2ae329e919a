"""The stage kit as a person meets it: a failing stage says one line on the terminal and keeps
the traceback in its log."""

from conftest import REPO, run


def test_a_failing_stage_prints_one_line_and_logs_the_traceback(tmp_path):
    log = tmp_path / "logs" / "stats.log"
    proc = run(["python", "stages/stats.py", "--params", "params.yaml", "--dataset", "synth", "--log-file", str(log),
                "--manifests", str(tmp_path / "no-manifests"), "--out", str(tmp_path / "stats.json"),
                "--metrics", str(tmp_path / "stats-metrics.json")], cwd=REPO, check=False,
               env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("[stats] error: ") and f"(traceback in {log})" in errors[0], \
        proc.stderr
    assert "Traceback" not in proc.stderr
    text = log.read_text()
    assert "Traceback (most recent call last):" in text and "[stats] error: " in text
    assert "stages/stats.py --params params.yaml" in text.splitlines()[0]
    assert not (tmp_path / "stats.json").exists() and not (tmp_path / "stats-metrics.json").exists()


def test_metrics_keep_figures_the_rest_goes_to_the_lineage_record():
    from asrflow.pipeline.stagekit import split_figures

    figures, other = split_figures({"wer": 12.5, "steps": 3, "stopped_early": False, "device": "cpu",
                                    "splits": ["test"], "test": {"beam_wer": 1.0, "rtf_acoustic": None},
                                    "dev": {"name": "dev"}})
    assert figures == {"wer": 12.5, "steps": 3, "stopped_early": False, "test": {"beam_wer": 1.0}}
    assert other == {"device": "cpu", "splits": ["test"], "test": {"rtf_acoustic": None}, "dev": {"name": "dev"}}

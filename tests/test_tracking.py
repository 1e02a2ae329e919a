import subprocess
import sys
import textwrap

from mlflow.tracking import MlflowClient

from asrflow.tracking import flatten


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_eight_parallel_stage_processes_lose_no_run(tmp_path):
    """8 processes write to one SQLite store at once: all 8 runs land, none fails with 'locked'."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    code = textwrap.dedent(f"""
        import sys
        from asrflow.tracking import StageRun
        r = StageRun(f"stage{{sys.argv[1]}}", "synth", {{"tracking_uri": "{uri}", "artifact_root": "{tmp_path}/art"}})
        r.log_params({{"i": sys.argv[1]}})
        r.log_metrics({{"x": float(sys.argv[1])}})
        r.flush()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE, text=True,
                              env={"ASRFLOW_INVOCATION": "inv-1", "PATH": ""}) for i in range(8)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert not any("locked" in e for e in errs)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("asrflow-synth")
    runs = client.search_runs([exp.experiment_id], "tags.asrflow_invocation = 'inv-1'")
    assert sorted(r.info.run_name for r in runs) == [f"stage{i}" for i in range(8)]
    assert sorted(r.data.metrics["x"] for r in runs) == [float(i) for i in range(8)]

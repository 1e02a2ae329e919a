"""Snakefile and dvc.yaml are one pipeline: dvc.yaml is generated and current, and
Snakemake's resolved rules equal DVC's resolved stages (commands, deps, outs)."""

import re

import pytest

from asrflow.pipeline import definition as P
from conftest import PARAMS, REPO, run


def test_dvc_yaml_is_current():
    assert (REPO / "dvc.yaml").read_text() == P.render_dvc_yaml(), \
        "dvc.yaml is stale: run `python -m asrflow.pipeline > dvc.yaml`"


def test_dvc_tracks_archives_not_extracted_trees():
    """LibriSpeech-960 extracts to ~290k files: DVC tracks the archives and Parquet instead."""
    outs = [o for s in P.STAGES for o in s.all_outs]
    deps = [d for s in P.STAGES for d in s.all_deps]
    assert "data/{dataset}/archives/" in outs and "data/{dataset}/manifests/" in outs
    assert not [p for p in outs + deps if "/raw" in p]


def snakemake_jobs() -> dict[str, dict]:
    out = run(["snakemake", "-n", "-p", "--forceall", "reports/synth_wer.md"], cwd=REPO).stdout
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        fields = dict(re.findall(r"^    (input|output): (.*)$", block, re.M))
        shell = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
        jobs[m.group(1)] = {"deps": set(fields.get("input", "").split(", ")) - {""},
                            "outs": set(fields["output"].split(", ")),
                            "cmd": shell}
    return jobs


def dvc_stages() -> dict[str, dict]:
    from dvc.repo import Repo
    stages = {}
    with Repo(str(REPO)) as repo:
        for s in repo.index.stages:
            stages[s.name] = {
                "cmd": s.cmd,
                "deps": {d.def_path for d in s.deps if not hasattr(d, "params") or d.def_path != "params.yaml"},
                "outs": {o.def_path for o in s.outs},
                "params": sorted(p for d in s.deps if d.def_path == "params.yaml" for p in (d.params or [])),
            }
    return stages


def test_snakemake_and_dvc_agree():
    smk, dvc = snakemake_jobs(), dvc_stages()
    assert set(smk) == set(dvc) == {s.name for s in P.STAGES}
    for name in smk:
        # the same launcher and template; Snakemake passes its wildcard, DVC's launcher reads params.yaml's dataset
        assert smk[name]["cmd"].replace(f"{P.LAUNCH} --dataset synth ", f"{P.LAUNCH} ", 1) == dvc[name]["cmd"], name
        assert smk[name]["deps"] == dvc[name]["deps"], name
        assert smk[name]["outs"] == dvc[name]["outs"], name
        # the keys it reads, of the dataset it runs on only (DVC fills ${dataset} in from params.yaml)
        assert dvc[name]["params"] == sorted(P.stage(name).keys("synth", PARAMS)), name
        assert not [k for k in dvc[name]["params"] if "librispeech" in k], name


def test_every_rule_has_its_log_benchmark_and_threads():
    """The rules are generated in one loop over the stages, so none can lose a directive."""
    out = run(["snakemake", "-n", "-p", "--forceall", "-c", "2", "reports/synth_wer.md"], cwd=REPO).stdout
    jobs = {m.group(1): m.group(2) for m in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=^Shell command)", out,
                                                           re.M | re.S)}
    assert set(jobs) == {s.name for s in P.STAGES}
    for name, block in jobs.items():
        assert f"log: logs/synth/{name}.log" in block, block
        assert f"benchmark: benchmarks/synth/{name}.tsv" in block, block
        assert ("threads: 2" in block) == P.stage(name).all_cores, block


@pytest.mark.parametrize("stage", [s.name for s in P.STAGES])
def test_stage_entry_point_exists_and_validates(stage, tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text((REPO / "params.yaml").read_text().replace("seed: 1234", "seed: 1234\nsede: 1"))
    proc = run(["python", f"stages/{stage}.py", "--params", str(bad), "--dataset", "synth"] + _dummy_args(stage),
               cwd=REPO, check=False)
    assert proc.returncode == 2 and "unknown key" in proc.stderr and "sede" in proc.stderr, proc.stderr


def _dummy_args(stage: str) -> list[str]:
    opts = re.findall(r"--([a-z-]+) ", P.stage(stage).cmd.split(f"stages/{stage}.py")[1] + " ")
    return [x for o in opts if o not in ("params", "dataset", "log-file") for x in (f"--{o}", str(REPO / "nonexistent"))]


def test_snakemake_config_overrides_are_refused_not_ignored(tmp_path):
    """Stages read params.yaml from disk, so --config/--configfile would be planned but not
    applied: Snakemake stops, naming the keys."""
    over = tmp_path / "over.yaml"
    over.write_text("train:\n  lr: 0.002\n")
    for extra in (["--configfile", str(over)], ["--config", "seed=5"]):
        proc = run(["snakemake", "-n", "reports/synth_wer.md", *extra], cwd=REPO, check=False)
        assert proc.returncode != 0, proc.stdout
        key = "train.lr" if "--configfile" in extra else "seed"
        assert f"--config/--configfile change {key}, but every stage reads params.yaml" in proc.stdout + proc.stderr


def test_no_stage_option_is_taken_by_torchrun():
    """torchrun parses the train stage's command line first, abbreviations included: an option
    of ours that starts one of torchrun's (--log would be --log-dir) makes it fail."""
    from torch.distributed.run import get_args_parser

    theirs = [o for o in get_args_parser()._option_string_actions if o.startswith("--")]
    ours = re.findall(r"(--[a-z-]+)", P.stage("train").cmd.split("stages/train.py", 1)[1])
    assert ours and not [(o, t) for o in ours for t in theirs if t.startswith(o)]

"""asrflow.pipeline.launch: placeholders filled word by word, and torchrun's shape from a Slurm allocation."""

import shlex
import subprocess
import sys

import pytest

from asrflow.pipeline import definition as P
from asrflow.pipeline.config import ParamsError, load_params
from asrflow.pipeline.launch import expand_hostlist, render, slurm_overrides
from conftest import REPO


def test_render_keeps_each_value_one_argument():
    p = load_params(REPO / "params.yaml")
    p["lm"]["tmp_dir"] = "a b; touch x"
    assert render("lmplz -T {lm.tmp_dir}/lmplz- --x={dataset}", p, "synth") == \
        ["lmplz", "-T", "a b; touch x/lmplz-", "--x=synth"]
    with pytest.raises(ParamsError, match="'train.nosuch'"):
        render("x {train.nosuch}", p, "synth")
    with pytest.raises(ParamsError, match="single value for 'train'"):
        render("x {train}", p, "synth")


def test_hostlists():
    assert expand_hostlist("gpu[01-03,07],login2") == ["gpu01", "gpu02", "gpu03", "gpu07", "login2"]
    assert expand_hostlist("n7") == ["n7"] and expand_hostlist("a[8-10]") == ["a8", "a9", "a10"]


def test_torchrun_takes_nodes_gpus_and_endpoint_from_the_allocation():
    p = load_params(REPO / "params.yaml")
    assert slurm_overrides(p, {}) == {}  # not in a Slurm job: params.yaml decides
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8",
           "SLURM_JOB_NODELIST": "gpu[07-08]"}
    o = slurm_overrides(p, env)
    assert o == {"train.nnodes": "2", "train.nproc_per_node": "8", "train.rdzv_endpoint": "gpu07:29400"}
    argv = render(P.stage("train").cmd, p, "librispeech", o)
    assert argv[:5] == ["torchrun", "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=asrflow",
                        "--rdzv-endpoint=gpu07:29400"]
    one = slurm_overrides(p, {"SLURM_JOB_ID": "43", "SLURM_JOB_NUM_NODES": "1"})
    assert one == {"train.nnodes": "1"}  # processes per node from params.yaml, local rendezvous


def test_multi_node_launch_runs_one_torchrun_per_node_through_srun(tmp_path):
    """The launcher's real argv, with srun a script that prints its arguments."""
    fake = tmp_path / "srun"
    fake.write_text("#!/bin/sh\necho SRUN \"$@\"\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    proc = subprocess.run([sys.executable, "-m", "asrflow.pipeline.launch", "--dataset", "librispeech",
                           P.stage("train").cmd], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout)
    assert words[:5] == ["SRUN", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "torchrun"]
    assert "--nproc-per-node=4" in words and "--rdzv-endpoint=gpu07:29400" in words
    assert "from the Slurm allocation: train.nnodes=2" in proc.stderr

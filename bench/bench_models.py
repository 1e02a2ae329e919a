"""Model families side by side: each trained on the same corpus for the same time budget on
the same cores, then tuned and evaluated by the pipeline's own stages.

    python bench/bench_models.py [--minutes 10] [--families deepspeech2,jasper,quartznet,conformer]
                                 [--dataset synth]

Inputs are the default chain's products for --dataset (run `make run` first): its manifests,
feature statistics, vocabulary and LMs, shared by every family, so only the acoustic model
differs. For each family (params.yaml's `model.<family>` block, as a `dvc exp run -S
model.family=...` would train it: the train block with the family's own `train_per_family`
entry over it, and the dataset's `train_per_dataset` entry over both):

1. the epoch count that fits the budget, measured by the train stage itself: it trains the
   family for one epoch (its wall time includes start-up, loading, the epoch's steps and the
   dev pass after it), and epochs = floor(budget / that time), at least 1. An earlier version
   timed a few steps inside this process instead; for the convolutional families it
   overestimated the step twofold (Jasper 0.94 s calibrated, 0.49 s in the train stage at
   d115707), which left half their budget unused. Giving each family the budget as a number
   of epochs keeps its learning-rate schedule whole (a run cut by time would stop mid-decay);
   a family that fits one epoch keeps the calibration run itself;
2. stages/train.py, stages/tune.py and stages/evaluate.py as the pipeline runs them (a
   params.yaml copy with model.family and train.epochs set; MLflow into a temporary store).

A baseline is trained the same way beside the families: ``deepspeech2_as_filed``, DeepSpeech2
with the recipe params.yaml had before model families existed (commit 056b638, whose default
run scored test greedy WER ~38 %): GRU layers, lr 0.0015, batches of 8000 frames, 60 warm-up
steps; every other key as today. It runs on today's code, corpus, cores and budget, so the
figure ``greedy_cer_vs_deepspeech2_as_filed`` measures what changed in the recipe and the
family since then; it is never ``best_family``.

Figures per family (and baseline): family, parameters, lr (the peak learning rate it trained at), epochs,
epoch_minutes (the one-epoch run's wall time), train_minutes (the counted run's wall time;
later epochs can run slower than the first, which SortaGrad takes in duration order, so it
may exceed the budget: it says by how much), train_audio_s_per_s, greedy dev and test
WER/CER, beam+LM (tuned alpha/beta) dev and test WER/CER, and the acoustic model's real-time
factor on the test split. Headline figures: best_family (lowest test greedy CER), and for it
greedy_cer_vs_deepspeech2 (its test greedy CER / DeepSpeech2's), greedy_cer_vs_deepspeech2_as_filed
(the same over the baseline's) and its test greedy WER. One
run per family (training is minutes long; a repeat would double the hour this takes): the
figures are single measurements, and the benchmark says so. Prints one JSON object as its
last line and writes reports/bench/models.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from corpus import REPO, emit

FAMILIES = ("deepspeech2", "jasper", "quartznet", "conformer")
#: name -> (family, its model block's keys, train keys): recipes trained beside the families
BASELINES = {
    "deepspeech2_as_filed": ("deepspeech2", {"rnn_type": "gru"},
                             {"lr": 0.0015, "batch_frames": 8000, "warmup_steps": 60}),
}


def entry_params(name: str, base: dict, dataset: str) -> dict:
    """params for one benchmark entry: a family as params.yaml trains it, or a baseline's recipe."""
    p = json.loads(json.dumps(base))
    if name in FAMILIES:
        p["model"]["family"] = name
        return p
    if name not in BASELINES:
        raise SystemExit(f"unknown family or baseline {name!r}: {', '.join(FAMILIES + tuple(BASELINES))}")
    fam, model, recipe = BASELINES[name]
    p["model"]["family"] = fam
    p["model"][fam].update(model)
    p["train_per_dataset"][dataset].update(recipe)  # the dataset's entry wins over every other
    from asrflow.pipeline.config import validate_params
    return validate_params(p)


def stage(name: str, params_path: Path, args: dict[str, str], env: dict[str, str]) -> float:
    """Run stages/<name>.py as the pipeline does; its wall seconds."""
    cmd = [sys.executable, f"stages/{name}.py", "--params", str(params_path), "--dataset", env["BENCH_DATASET"]]
    for k, v in args.items():
        cmd += [f"--{k}", v]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def train(d: Path, params: dict, data: Path, env: dict[str, str]) -> float:
    """The train stage on params (written to d/params.yaml), outputs under d; its wall seconds."""
    d.mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return stage("train", d / "params.yaml", {
        "manifests": str(data / "manifests"), "stats": str(data / "stats.json"), "vocab": str(data / "vocab.txt"),
        "out": str(d / "model"), "checkpoints": str(d / "checkpoints"), "metrics": str(d / "train.json"),
        "plots": str(d / "curve.csv")}, env)


def one_family(fam: str, p: dict, data: Path, minutes: float, work: Path, dataset: str) -> dict:
    """Train, tune and evaluate entry ``fam`` on its params ``p`` (from entry_params; changed here)."""
    store = work / f"{fam}-mlflow"
    p["mlflow"] = {"tracking_uri": f"sqlite:///{store}.db", "artifact_root": str(store)}
    env = {**os.environ, "ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": p["mlflow"]["tracking_uri"],
           "BENCH_DATASET": dataset}
    recipe = p["train_per_dataset"][dataset]  # the dataset's own train settings win over the family's and block's
    recipe.update(epochs=1, patience=0, max_minutes=0, resume=False)
    epoch_s = train(work / f"{fam}-1", p, data, env)
    epochs = max(1, math.floor(minutes * 60 / epoch_s))
    print(f"{fam}: one epoch in {epoch_s / 60:.2f} min (the train stage) -> {epochs} epochs in {minutes} min",
          flush=True)
    d, train_s = work / f"{fam}-1", epoch_s
    if epochs > 1:
        recipe["epochs"] = epochs
        d = work / f"{fam}-{epochs}"
        train_s = train(d, p, data, env)
    man, lm, params_path = str(data / "manifests"), str(data / "lm"), d / "params.yaml"
    stage("tune", params_path, {"manifests": man, "model": str(d / "model"), "lm": lm, "cache": str(d / "cache"),
                                "out": str(d / "tune"), "metrics": str(d / "tune.json"),
                                "plots": str(d / "grid.csv")}, env)
    stage("evaluate", params_path, {"manifests": man, "model": str(d / "model"), "lm": lm, "tune": str(d / "tune"),
                                    "cache": str(d / "cache"), "out": str(d / "eval"),
                                    "metrics": str(d / "evaluate.json"), "plots": str(d / "dur.csv")}, env)
    tr, tu = json.loads((d / "train.json").read_text()), json.loads((d / "tune.json").read_text())
    test = json.loads((d / "evaluate.json").read_text())["test"]
    from asrflow.train.config import TrainConfig
    return {"family": p["model"]["family"], "params": tr["params"], "lr": TrainConfig.for_dataset(p, dataset).lr,
            "epochs": tr["epochs"], "budget_minutes": minutes,
            "epoch_minutes": round(epoch_s / 60, 2), "train_minutes": round(train_s / 60, 2),
            "train_audio_s_per_s": tr["train_audio_s_per_s"],
            "dev_greedy_wer": tu["greedy_dev_wer"], "dev_greedy_cer": tu["greedy_dev_cer"],
            "dev_beam_wer": tu["dev_wer"], "dev_beam_cer": tu["dev_cer"],
            "test_greedy_wer": test["greedy_wer"], "test_greedy_cer": test["greedy_cer"],
            "test_beam_wer": test["beam_wer"], "test_beam_cer": test["beam_cer"],
            "alpha": tu["alpha"], "beta": tu["beta"], "rtf_acoustic": round(test["rtf_acoustic"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="training budget per family (default 10; the default run's 2 epochs take 4.6-6.5 "
                         "on the machines measured)")
    ap.add_argument("--families", default=",".join(FAMILIES + tuple(BASELINES)),
                    help="families and baselines to train (default: all)")
    ap.add_argument("--dataset", default="synth")
    args = ap.parse_args()
    data = REPO / "data" / args.dataset
    missing = [str(p) for p in (data / "manifests/train.parquet", data / "stats.json", data / "vocab.txt",
                                data / "lm") if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make run` first")
    from asrflow.pipeline.config import load_params

    base = load_params(REPO / "params.yaml")
    base["dataset"] = args.dataset
    families = args.families.split(",")
    if not set(families) & set(FAMILIES):
        raise SystemExit(f"--families names no family: give one of {', '.join(FAMILIES)} beside any baseline")
    # every entry's params first: an unknown name or a baseline today's schema refuses fails now, not an hour in
    entries = {fam: entry_params(fam, base, args.dataset) for fam in families}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as work:
        per = {fam: one_family(fam, p, data, args.minutes, Path(work), args.dataset) for fam, p in entries.items()}
    best = min((f for f in per if f in FAMILIES), key=lambda f: per[f]["test_greedy_cer"])
    result = {"families": per, "best_family": best, "best_test_greedy_wer": per[best]["test_greedy_wer"],
              "best_test_greedy_cer": per[best]["test_greedy_cer"],
              "cores": len(os.sched_getaffinity(0)), "dataset": args.dataset, "repeats": 1}
    for ref in ("deepspeech2", *BASELINES):  # greedy_cer_vs_deepspeech2, greedy_cer_vs_<baseline>
        if ref in per:
            result[f"greedy_cer_vs_{ref}"] = round(per[best]["test_greedy_cer"] / per[ref]["test_greedy_cer"], 3)
    emit("models", result)


if __name__ == "__main__":
    main()

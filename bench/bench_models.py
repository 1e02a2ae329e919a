"""Model families side by side: each trained on the same corpus for the same time budget on
the same cores, then tuned and evaluated by the pipeline's own stages.

    python bench/bench_models.py [--minutes 10] [--families deepspeech2,jasper,quartznet,conformer]
                                 [--dataset synth]

Inputs are the default chain's products for --dataset (run `make run` first): its manifests,
feature statistics, vocabulary and LMs, shared by every family, so only the acoustic model
differs. For each family (params.yaml's `model.<family>` block, as a `dvc exp run -S
model.family=...` would train it; augmentation, learning rate and warm-up as params.yaml has
them, the same for all):

1. the epoch count that fits the budget: a TrainingRun built as the train stage builds it
   times --calibration-steps training steps, each with the loading of its batch (after two
   warm-up steps), over batches spread across the first epoch's order, and one timed greedy
   pass over dev (what the train stage runs after every epoch); epochs = floor(budget /
   (steps per epoch x seconds per step + dev pass seconds)), at least 1. Giving each
   family the budget as a number of epochs keeps its learning-rate schedule whole (a run
   cut by time would stop mid-decay);
2. stages/train.py, stages/tune.py and stages/evaluate.py as the pipeline runs them (a
   params.yaml copy with model.family and train.epochs set; MLflow into a temporary store).

Figures per family: parameters, epochs, train_minutes (the train stage's own wall time: the
budget is met within the calibration's accuracy, and the figure says by how much),
train_audio_s_per_s, greedy dev and test WER/CER, beam+LM (tuned alpha/beta) dev and test
WER/CER, and the acoustic model's real-time factor on the test split. Headline figures:
best_family (lowest test greedy CER), and for it greedy_cer_vs_deepspeech2 (its test greedy
CER / DeepSpeech2's) and its test greedy WER. One run per family (training is minutes
long; a repeat would double the hour this takes): the figures are single measurements, and
the benchmark says so. Prints one JSON object as its last line and writes
reports/bench/models.json.
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
from corpus import REPO, emit, median

FAMILIES = ("deepspeech2", "jasper", "quartznet", "conformer")


def calibrate(params_path: Path, data: Path, steps: int) -> dict:
    """Seconds per training step of the family params_path names, and steps per epoch."""
    import torch

    from asrflow.features.logmel import FeatureConfig
    from asrflow.models.families import selected
    from asrflow.pipeline.config import load_params
    from asrflow.train.batches import collate, epoch_batches
    from asrflow.train.config import TrainConfig, TrainPaths
    from asrflow.train.loop import TrainingRun, evaluate_greedy

    p = load_params(params_path)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        paths = TrainPaths(data / "manifests/train.parquet", data / "manifests/dev.parquet", data / "stats.json",
                           data / "vocab.txt", Path(tmp), Path(tmp) / "curve.csv", Path(tmp) / "ck")
        run = TrainingRun(paths, TrainConfig.from_params(p["train"]), selected(p["model"]),
                          FeatureConfig.from_params(p["features"]), p["seed"], log=lambda m: None)
    from asrflow.common.progress import bar

    run.progress = bar(None, "bench", show=False)
    order = epoch_batches(run.batches, 0, p["seed"], 0, 1)
    picked = [order[round(i * (len(order) - 1) / max(1, steps + 1))] for i in range(steps + 2)]
    loader = torch.utils.data.DataLoader(run.ds, batch_sampler=picked, collate_fn=collate)
    run.model.train()
    times = []
    t0 = time.perf_counter()
    for i, batch in enumerate(loader):  # a step's time includes loading its batch, as in the train stage
        run.step(*batch, epoch=0)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    t0 = time.perf_counter()
    evaluate_greedy(run.model, run.dev_loader, run.tokenizer, run.where.device)  # each epoch's dev pass
    return {"seconds_per_step": median(times), "steps_per_epoch": len(order), "dev_pass_seconds":
            time.perf_counter() - t0, "params": run.n_params}


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


def one_family(fam: str, base: dict, data: Path, minutes: float, work: Path, steps: int, dataset: str) -> dict:
    d = work / fam
    d.mkdir(parents=True)
    p = json.loads(json.dumps(base))
    p["model"]["family"] = fam
    p["mlflow"] = {"tracking_uri": f"sqlite:///{d}/mlflow.db", "artifact_root": str(d / "artifacts")}
    params_path = d / "params.yaml"
    params_path.write_text(yaml.safe_dump(p, sort_keys=False))
    cal = calibrate(params_path, data, steps)
    epoch_s = cal["steps_per_epoch"] * cal["seconds_per_step"] + cal["dev_pass_seconds"]
    epochs = max(1, math.floor(minutes * 60 / epoch_s))
    p["train"].update(epochs=epochs, patience=0, max_minutes=0, resume=False)
    params_path.write_text(yaml.safe_dump(p, sort_keys=False))
    print(f"{fam}: {cal['params']:,} parameters, {cal['seconds_per_step']:.2f} s/step x "
          f"{cal['steps_per_epoch']} steps/epoch + {cal['dev_pass_seconds']:.0f} s dev pass -> {epochs} epochs in "
          f"{minutes} min", flush=True)
    env = {**os.environ, "ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": p["mlflow"]["tracking_uri"],
           "BENCH_DATASET": dataset}
    man, lm = str(data / "manifests"), str(data / "lm")
    train_s = stage("train", params_path, {"manifests": man, "stats": str(data / "stats.json"),
                                           "vocab": str(data / "vocab.txt"), "out": str(d / "model"),
                                           "checkpoints": str(d / "checkpoints"), "metrics": str(d / "train.json"),
                                           "plots": str(d / "curve.csv")}, env)
    stage("tune", params_path, {"manifests": man, "model": str(d / "model"), "lm": lm, "cache": str(d / "cache"),
                                "out": str(d / "tune"), "metrics": str(d / "tune.json"),
                                "plots": str(d / "grid.csv")}, env)
    stage("evaluate", params_path, {"manifests": man, "model": str(d / "model"), "lm": lm, "tune": str(d / "tune"),
                                    "cache": str(d / "cache"), "out": str(d / "eval"),
                                    "metrics": str(d / "evaluate.json"), "plots": str(d / "dur.csv")}, env)
    tr, tu = json.loads((d / "train.json").read_text()), json.loads((d / "tune.json").read_text())
    test = json.loads((d / "evaluate.json").read_text())["test"]
    return {"params": tr["params"], "epochs": tr["epochs"], "budget_minutes": minutes,
            "train_minutes": round(train_s / 60, 2), "calibrated_seconds_per_step": round(cal["seconds_per_step"], 3),
            "train_audio_s_per_s": tr["train_audio_s_per_s"],
            "dev_greedy_wer": tu["greedy_dev_wer"], "dev_greedy_cer": tu["greedy_dev_cer"],
            "dev_beam_wer": tu["dev_wer"], "dev_beam_cer": tu["dev_cer"],
            "test_greedy_wer": test["greedy_wer"], "test_greedy_cer": test["greedy_cer"],
            "test_beam_wer": test["beam_wer"], "test_beam_cer": test["beam_cer"],
            "alpha": tu["alpha"], "beta": tu["beta"], "rtf_acoustic": round(test["rtf_acoustic"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="training budget per family (default 10; the default run's train stage takes ~6.5 of its 7 epochs)")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--dataset", default="synth")
    ap.add_argument("--calibration-steps", type=int, default=6)
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
    with tempfile.TemporaryDirectory(prefix="bench-models-") as work:
        per = {fam: one_family(fam, base, data, args.minutes, Path(work), args.calibration_steps, args.dataset)
               for fam in families}
    best = min(per, key=lambda f: per[f]["test_greedy_cer"])
    result = {"families": per, "best_family": best, "best_test_greedy_wer": per[best]["test_greedy_wer"],
              "best_test_greedy_cer": per[best]["test_greedy_cer"],
              "cores": len(os.sched_getaffinity(0)), "dataset": args.dataset, "repeats": 1}
    if "deepspeech2" in per:
        result["greedy_cer_vs_deepspeech2"] = round(per[best]["test_greedy_cer"] / per["deepspeech2"]["test_greedy_cer"],
                                                    3)
    emit("models", result)


if __name__ == "__main__":
    main()

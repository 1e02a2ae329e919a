"""Stage 'register': the trained model, its LM and tuned decoder settings as one MLflow model.

Saved as a pyfunc package directory (``models/<dataset>_mlflow``, usable by path), logged to
this stage's MLflow run and registered as ``asrflow-<dataset>`` (a new version per run), so
``asrflow transcribe --model models:/asrflow-<dataset>/<version>`` loads it by URI.
"""

import json
from pathlib import Path

from asrflow.serve.package import package_model
from asrflow.serve.settings import DecoderSettings
from asrflow.pipeline.stagekit import Context, main


def add_args(p):
    p.add_argument("--model", required=True, help="model directory holding model.pt")
    p.add_argument("--lm", required=True, help="LM directory")
    p.add_argument("--tune", required=True, help="tuning directory holding best.json")
    p.add_argument("--out", required=True, help="package directory to write")
    p.add_argument("--metrics", required=True)


def run(ctx: Context) -> dict:
    a = ctx.args
    best = json.loads(Path(a.tune, "best.json").read_text())
    # the decoding evaluate uses: params' decode block at the alpha/beta tuned on dev, in tune's mode
    settings = DecoderSettings.from_dict({**ctx.params["decode"], "alpha": best["alpha"], "beta": best["beta"],
                                          "mode": best["mode"]})
    pkg = package_model(a.out, f"{a.model}/model.pt", a.lm, settings)
    size = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
    name = f"asrflow-{ctx.dataset}"
    ctx.tracker.register_model(pkg, name)  # logged and registered with the run; the version joins the metrics
    ctx.log(f"packaged {ctx.final(pkg)} ({size / 1e6:.1f} MB); registering it as {name}")
    # the package, its registered name (version and URI join when the run is recorded) and the
    # decoder settings it carries: the lineage record; its size and the tuned weights: figures
    ctx.lineage.update({"package": ctx.final(a.out), "model_name": name, "decoder": settings.to_dict()})
    return {"package_mb": round(size / 1e6, 2), "alpha": settings.alpha, "beta": settings.beta}


if __name__ == "__main__":
    raise SystemExit(main("register", add_args, run))

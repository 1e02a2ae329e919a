"""Every model family: the output frame rate it declares is the one it computes, an utterance's
log-probs do not depend on its batch, a few steps lower the loss, published presets have their
published sizes, and (on the tiny corpus) each trains through the train stage, resumes bit for
bit after kill -9, trains under 2 gloo ranks, and transcribes once packaged."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from asrflow.features.geometry import conv_output_length
from asrflow.models.checkpoint import load_checkpoint
from asrflow.models.families import FAMILIES, build_model, count_parameters, family
from asrflow.models.frames import frame_geometry
from asrflow.pipeline.definition import stage
from asrflow.pipeline.launch import render
from conftest import PARAMS, REPO, edit_params, kill9_mid_epoch_and_resume, run, set_train, train_cmd
from sizes import TINY_FAMILIES, TINY_MODEL

TINY = {"deepspeech2": {**PARAMS["model"]["deepspeech2"], **TINY_MODEL}, **TINY_FAMILIES}
PRESETS = yaml.safe_load((REPO / "src/asrflow/models/presets.yaml").read_text())


def model_block(name: str, block: dict | None = None) -> dict:
    return {"family": name, name: copy.deepcopy(block if block is not None else TINY[name])}


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("size", ["tiny", "params.yaml"])
def test_output_lengths_match_the_declared_frame_rate_and_batching_changes_nothing(name, size):
    torch.manual_seed(0)
    block = model_block(name, None if size == "tiny" else PARAMS["model"][name])
    net = build_model(block, 40, 12).eval()
    lengths = torch.tensor([203, 150, 61])
    x = torch.randn(3, 203, 40)
    with torch.no_grad():
        y, out_lens = net(x, lengths)
        kernel, strides = frame_geometry(block)
        assert out_lens.tolist() == [conv_output_length(int(n), kernel, strides) for n in lengths], name
        assert y.shape == (3, int(out_lens[0]), 12)
        assert torch.allclose(y.exp().sum(-1), torch.ones(y.shape[:2]), atol=1e-4)   # log-probs
        # alone, unpadded: the same log-probs as in the padded batch. Not DeepSpeech2's: its
        # backward GRU runs over the padding (packing doubled its step time on CPU; batches are
        # bucketed by duration, so padding is short)
        for i in ((1, 2) if name != "deepspeech2" else ()):
            alone, _ = net(x[i:i + 1, :lengths[i]], lengths[i:i + 1])
            assert torch.allclose(alone[0], y[i, :out_lens[i]], atol=1e-4), (name, i)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_few_steps_lower_the_ctc_loss(name):
    torch.manual_seed(1)
    net = build_model(model_block(name), 40, 8)
    x, lengths = torch.randn(4, 120, 40), torch.tensor([120, 110, 100, 90])
    labels = torch.randint(1, 8, (4, 10))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    losses = []
    for _ in range(25):
        y, out_lens = net(x, lengths)
        loss = ctc(y.transpose(0, 1), labels, out_lens, torch.full((4,), 10))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], (name, losses)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_has_its_published_parameter_count(preset):
    p = PRESETS[preset]
    f = family(p["family"])
    n = count_parameters(f.build(f.config_from_params(p["block"], p["n_mels"], p["vocab_size"])))
    assert abs(n - p["published_params"]) <= 0.01 * p["published_params"], (preset, n)


def test_a_checkpoint_records_its_family_and_loads_as_it():
    import tempfile

    from asrflow.features.logmel import FeatureConfig
    from asrflow.models.checkpoint import model_checkpoint, save_checkpoint

    net = build_model(model_block("quartznet"), 80, 5)
    ckpt = model_checkpoint(net, list("abcde"), torch.zeros(80), torch.ones(80),
                            FeatureConfig.from_params(PARAMS["features"]))
    assert ckpt["model_family"] == "quartznet"
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(ckpt, Path(d, "m.pt"))
        loaded, *_ = load_checkpoint(Path(d, "m.pt"))
    assert loaded.family == "quartznet" and loaded.cfg.separable and not loaded.cfg.dense_residual
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


@pytest.fixture
def family_repo(data_repo, request):
    """data_repo with ``model.family`` set to the test's family at its tiny size (put back after)."""
    name = request.param
    before = (data_repo / "params.yaml").read_text()
    edit_params(data_repo, lambda p: p["model"].update(family=name, **{name: copy.deepcopy(TINY[name])}))
    set_train(data_repo, epochs=2, checkpoint_every_steps=2, patience=0, lr=0.003, nproc_per_node=1)
    yield data_repo, name
    (data_repo / "params.yaml").write_text(before)


@pytest.mark.parametrize("family_repo", ["jasper", "quartznet", "conformer"], indirect=True)
def test_a_family_trains_resumes_bit_for_bit_runs_under_ddp_and_transcribes(family_repo, tmp_path):
    repo, name = family_repo
    # the train stage's command: trained, then killed mid-epoch and resumed to the same weights
    killed = kill9_mid_epoch_and_resume(repo, f"{name}-whole", f"{name}-killed")
    metrics = json.loads((killed / "train.json").read_text())
    assert metrics["resumed_from_step"] > 0 and metrics["epochs"] == 2
    model, ckpt, *_ = load_checkpoint(killed / "model/model.pt")
    assert ckpt["model_family"] == name and model.family == name
    # 2 gloo ranks through the pipeline's torchrun line: every utterance once, ranks identical
    set_train(repo, nproc_per_node=2)
    launcher = render(stage("train").launcher, yaml.safe_load((repo / "params.yaml").read_text()), "synth")
    out = run(train_cmd(repo, f"{name}-ddp", launcher), cwd=repo,
              env={"ASRFLOW_INVOCATION": "", "MLFLOW_TRACKING_URI": ""}).stderr
    assert "each seen exactly once across 2 ranks" in out and "parameters identical across 2 ranks" in out, out
    # packaged with an LM and transcribed by the command users run
    from asrflow.serve.package import package_model
    from serve_fixtures import SETTINGS, make_lm

    pkg = package_model(tmp_path / "pkg", killed / "model/model.pt", make_lm(tmp_path / "lm"), SETTINGS)
    wav = sorted((repo / "data/synth/raw").rglob("*.flac"))[0]
    proc = subprocess.run([sys.executable, "-m", "asrflow.cli", "transcribe", str(wav), "--model", str(pkg),
                           "--format", "jsonl"],
                          capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.splitlines()[0])
    assert record["path"].endswith(wav.name) and record["error"] is None and isinstance(record["text"], str), record


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_exports_to_onnx_with_dynamic_batch_and_frames(name, tmp_path):
    """Traced on one utterance, the ONNX graph computes PyTorch's log-probs for a padded batch
    of other lengths (what `asrflow export` ships; its own check uses one input)."""
    from asrflow.serve.export import normalised_model, onnx_session, write_onnx

    torch.manual_seed(2)
    net = normalised_model(build_model(model_block(name), 40, 12).eval(), torch.zeros(40), torch.ones(40))
    write_onnx(net, torch.randn(1, 90, 40), torch.tensor([90]), tmp_path / "m.onnx")
    x, lengths = torch.randn(3, 157, 40), torch.tensor([157, 120, 41])
    with torch.no_grad():
        want, want_lens = net(x, lengths)
    got, got_lens = onnx_session(tmp_path / "m.onnx").run(None, {"features": x.numpy(), "lengths": lengths.numpy()})
    assert got_lens.tolist() == want_lens.tolist()
    for i, n in enumerate(want_lens.tolist()):
        assert abs(got[i, :n] - want[i, :n].numpy()).max() < 1e-4, (name, i)

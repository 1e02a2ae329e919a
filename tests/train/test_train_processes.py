"""Training in several processes: two DDP ranks on CPU through torchrun (gloo), the real
launcher; data-loading worker processes."""

import json

from conftest import TRAIN_ENV, run, set_train, train_cmd


def test_two_gloo_ranks_see_every_utterance_once_and_end_identical(data_repo):
    set_train(data_repo, epochs=2, nproc_per_node=2, checkpoint_every_steps=2, patience=0, lr=0.0015)
    launcher = ["torchrun", "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                "--rdzv-id=asrflow-test"]
    out = run(train_cmd(data_repo, "ddp", launcher), cwd=data_repo, env=TRAIN_ENV).stderr
    n = sum(1 for _ in open(data_repo / "data/synth/manifests/train.jsonl"))
    for epoch in (1, 2):  # checked by the training itself across ranks (all_gather), raising if not
        assert f"epoch {epoch}: {n} utterances, each seen exactly once across 2 ranks" in out, out
    assert "parameters identical across 2 ranks" in out, out
    assert "world size 2" in out
    metrics = json.loads((data_repo / "runs/ddp/train.json").read_text())
    assert metrics["epochs"] == 2 and (data_repo / "runs/ddp/model/model.pt").exists()


def test_loader_workers_change_nothing_but_speed(data_repo):
    """Loading in 2 worker processes (with augmentation drawing per utterance) trains the same weights."""
    import torch

    augment = [{"type": "speed", "prob": 0.5, "factors": [0.9, 1.1]}, {"type": "specaugment", "prob": 0.5}]
    for name, workers in (("inline", 0), ("workers", 2)):
        set_train(data_repo, epochs=1, nproc_per_node=1, loader_workers=workers, augment=augment, lr=0.0015)
        run(train_cmd(data_repo, name), cwd=data_repo, env=TRAIN_ENV)
    a, b = (torch.load(data_repo / f"runs/{n}/model/model.pt", weights_only=True)["state_dict"]
            for n in ("inline", "workers"))
    assert all(torch.equal(a[k], b[k]) for k in a)

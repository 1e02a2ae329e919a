"""The dev/test log-prob cache: a cache written for another checkpoint with the same manifest
and utterance count is detected by content hash and recomputed, never served."""

import numpy as np
import torch

from asrflow.decode.logprobs import compute_logprobs
from conftest import TRAIN_ENV, run, set_train, train_cmd


def test_logprob_cache_never_serves_another_checkpoint(data_repo, tmp_path):
    set_train(data_repo, epochs=1, checkpoint_every_steps=50, patience=0, lr=0.0015, augment=[], resume=True)
    run(train_cmd(data_repo, "cache"), cwd=data_repo, env=TRAIN_ENV)
    model, dev = data_repo / "runs/cache/model/model.pt", data_repo / "data/synth/manifests/dev.parquet"
    first, rows, seconds, cached = compute_logprobs(model, dev, tmp_path / "cache", limit=4)
    assert seconds > 0 and not cached and len(first) == len(rows) == 4
    again = compute_logprobs(model, dev, tmp_path / "cache", limit=4)
    assert again.cached and all(np.array_equal(a, b) for a, b in zip(first, again.logprobs))  # served from the cache
    assert again.seconds == seconds  # the compute time measured then, for the acoustic model's RTF
    # another checkpoint: one weight tensor changed, same architecture, manifest and count
    ckpt = torch.load(model, weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][name] = ckpt["state_dict"][name] * 1.5
    other = tmp_path / "model.pt"
    torch.save(ckpt, other)
    changed = compute_logprobs(other, dev, tmp_path / "cache", limit=4)
    assert not changed.cached and changed.seconds > 0 and len(changed.logprobs) == 4  # recomputed
    assert not all(np.array_equal(a, b) for a, b in zip(first, changed.logprobs))
    assert len(list((tmp_path / "cache").glob("logprobs-*.npz"))) == 2

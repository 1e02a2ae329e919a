"""CTC training of the DeepSpeech2-style model; runs alone or under torchrun (DDP).

DDP is detected from the environment torchrun sets (``WORLD_SIZE``/``RANK``); only rank 0
logs, evaluates and writes checkpoints. On CPU the gloo backend is used, NCCL on GPUs.
"""

from __future__ import annotations

import csv
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from asrflow.features import FeatureConfig, LogMel, read_stats
from asrflow.manifest import ManifestAudio, read_manifest
from asrflow.metrics import corpus_rates
from asrflow.model import DeepSpeech2, ModelConfig, count_parameters
from asrflow.text import Tokenizer, read_vocab


def utterance_features(wav: np.ndarray, fe: LogMel, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised log-mel features (frames, n_mels) of one decoded waveform."""
    return (fe(torch.from_numpy(wav)) - mean) / std


class UtteranceDataset(torch.utils.data.Dataset):
    """Features and labels of ``rows`` (a manifest slice whose index holds the row numbers
    in the Parquet file ``audio`` reads from)."""

    def __init__(self, rows: pd.DataFrame, audio: ManifestAudio, tokenizer: Tokenizer, fe: LogMel,
                 mean: torch.Tensor, std: torch.Tensor):
        self.audio, self.rows = audio, rows.index.tolist()
        self.texts = rows["text"].tolist()
        self.labels = [tokenizer.encode(t) for t in self.texts]
        self.fe, self.mean, self.std = fe, mean, std

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        wav = self.audio[self.rows[i]]
        return utterance_features(wav, self.fe, self.mean, self.std), torch.tensor(self.labels[i]), i


def collate(items: list[tuple[torch.Tensor, torch.Tensor, int]]):
    feats, labels, idx = zip(*items)
    flen = torch.tensor([f.shape[0] for f in feats])
    llen = torch.tensor([len(l) for l in labels])
    x = nn.utils.rnn.pad_sequence(feats, batch_first=True)
    y = nn.utils.rnn.pad_sequence(labels, batch_first=True)
    return x, flen, y, llen, list(idx)


def make_batches(durations: list[float], batch_seconds: float) -> list[list[int]]:
    """Indices grouped by duration so a padded batch holds at most ``batch_seconds`` of audio."""
    order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
    batches, cur, longest = [], [], 0.0
    for i in order:
        longest_new = max(longest, durations[i])
        if cur and longest_new * (len(cur) + 1) > batch_seconds:
            batches.append(cur)
            cur, longest_new = [], durations[i]
        cur.append(i)
        longest = longest_new
    if cur:
        batches.append(cur)
    return batches


def balance_batches(batches: list[list[int]], world: int) -> list[list[int]]:
    """Split the largest batches in two until their count divides by ``world``.

    Every rank then takes the same number of steps (DDP needs that) and no utterance is
    dropped or repeated. Deterministic: ties split the earliest batch.
    """
    out = list(batches)
    while len(out) % world:
        i = max(range(len(out)), key=lambda k: (len(out[k]), -k))
        if len(out[i]) < 2:
            raise ValueError(f"{sum(map(len, out))} utterances cannot fill {world} ranks equally")
        b = out[i]
        out[i:i + 1] = [b[: len(b) // 2], b[len(b) // 2:]]
    return out


def epoch_batches(batches: list[list[int]], epoch: int, seed: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches for ``epoch``: sorted order first (SortaGrad), then seeded shuffles.

    With several ranks the batches are balanced (:func:`balance_batches`) and dealt
    round-robin, so across ranks every utterance is seen exactly once per epoch.
    """
    order = list(range(len(batches)))
    if epoch > 0:
        random.Random(seed * 1000 + epoch).shuffle(order)
    ordered = [batches[j] for j in order]
    if world > 1:
        ordered = balance_batches(ordered, world)
    return ordered[rank::world]


@dataclass
class TrainResult:
    params: int
    epochs: int
    steps: int
    best_epoch: int
    best_dev_cer: float
    best_dev_wer: float
    train_seconds: float
    audio_hours: float
    device: str
    skipped_utterances: int
    padding_fraction: float
    train_audio_s_per_s: float


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """Model (eval mode), the checkpoint dict, feature extractor and stats.

    Loaded with ``weights_only=True``: a checkpoint carrying a pickled object is refused.
    """
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = DeepSpeech2(ModelConfig(**{**ckpt["model_config"],
                                       "conv_kernel": tuple(ckpt["model_config"]["conv_kernel"]),
                                       "conv_strides": [tuple(s) for s in ckpt["model_config"]["conv_strides"]]}))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    fe = LogMel(FeatureConfig(**ckpt["features"]))
    mean = torch.tensor(ckpt["stats"]["mean"], dtype=torch.float32)
    std = torch.tensor(ckpt["stats"]["std"], dtype=torch.float32)
    return model, ckpt, fe, mean, std


def checkpoint_vocab(path: str | Path) -> list[str]:
    """The vocabulary stored in a checkpoint (loaded with ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)["vocab"]


def evaluate_greedy(model: nn.Module, loader, tokenizer: Tokenizer, device: torch.device) -> dict[str, float]:
    model.eval()
    refs, hyps = [], []
    with torch.inference_mode():
        for x, flen, y, llen, _ in loader:
            lp, olen = model(x.to(device), flen)
            best = lp.argmax(-1).cpu()
            for b in range(x.shape[0]):
                hyps.append(tokenizer.greedy(best[b, : int(olen[b])].tolist()))
                refs.append(tokenizer.decode(y[b, : int(llen[b])].tolist()))
    model.train()
    return corpus_rates(refs, hyps)


def train(train_manifest: str | Path, dev_manifest: str | Path, stats_path: str | Path, vocab_path: str | Path,
          out_dir: str | Path, curve_path: str | Path, train_cfg: dict[str, Any], feat_cfg: FeatureConfig,
          seed: int, checkpoint_dir: str | Path, log=print) -> TrainResult:
    """Train, evaluate greedily on dev after each epoch, keep the best by dev CER.

    Writes ``out_dir/model.pt`` (config, vocab, stats and weights; loadable with
    ``weights_only=True``) and the learning curve CSV; per-epoch checkpoints go to
    ``checkpoint_dir``. Utterances whose transcript has a character outside the
    vocabulary are skipped and counted in the result, never dropped silently.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = train_cfg["device"]
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    master = rank == 0
    threads = train_cfg["threads"] or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(not use_cuda)

    tokens = read_vocab(vocab_path)
    tokenizer = Tokenizer(tokens)
    fe = LogMel(feat_cfg)
    mean, std = read_stats(stats_path)
    rows = read_manifest(train_manifest)
    ok = rows["text"].map(lambda t: not tokenizer.unknown_chars(t))
    skipped = int((~ok).sum())
    rows = rows[ok]  # the index keeps each row's number in the Parquet file
    dev_rows = read_manifest(dev_manifest)
    dev_rows = dev_rows[dev_rows["text"].map(lambda t: not tokenizer.unknown_chars(t))]
    if skipped and master:
        log(f"skipping {skipped} training utterances with characters outside the vocabulary")

    mcfg = ModelConfig.from_params(train_cfg, feat_cfg.n_mels, len(tokens))
    model = DeepSpeech2(mcfg).to(device)
    n_params = count_parameters(model)
    if master:
        log(f"model: {n_params:,} parameters; device {device}; world size {world}")
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    batch_seconds = train_cfg["batch_frames"] * feat_cfg.hop_ms / 1000
    durations = rows["duration"].tolist()
    batches = make_batches(durations, batch_seconds)
    padded = sum(max(durations[i] for i in b) * len(b) for b in batches)
    padding_fraction = 1.0 - float(sum(durations)) / padded if padded else 0.0
    if master:
        log(f"{len(batches)} batches of <= {batch_seconds:.0f} s audio; padding fraction {padding_fraction:.3f}")
    ds = UtteranceDataset(rows, ManifestAudio(train_manifest, feat_cfg.sample_rate), tokenizer, fe, mean, std)
    dev_ds = UtteranceDataset(dev_rows, ManifestAudio(dev_manifest, feat_cfg.sample_rate), tokenizer, fe, mean, std)
    dev_loader = torch.utils.data.DataLoader(
        dev_ds, batch_sampler=make_batches(dev_rows["duration"].tolist(), batch_seconds), collate_fn=collate)
    epochs = train_cfg["epochs"]
    steps_per_epoch = len(epoch_batches(batches, 0, seed, rank, world))
    total_steps = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, train_cfg["warmup_steps"], total_steps))
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    curve_path, out_dir, checkpoint_dir = Path(curve_path), Path(out_dir), Path(checkpoint_dir)
    curve = []
    best = (math.inf, math.inf, -1)
    step = 0
    t0 = time.perf_counter()
    budget = train_cfg["max_minutes"] * 60
    epochs_done = 0
    for epoch in range(epochs):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=epoch_batches(batches, epoch, seed, rank, world),
                                             collate_fn=collate)
        losses = []
        for x, flen, y, llen, _ in loader:
            lp, olen = ddp(x.to(device), flen)
            loss = ctc(lp.transpose(0, 1), y.to(device), olen, llen)
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), train_cfg["grad_clip"])
                opt.step()
                losses.append(float(loss.detach()))
            sched.step()
            step += 1
        epochs_done += 1
        elapsed = time.perf_counter() - t0
        if master:
            dev = evaluate_greedy(model, dev_loader, tokenizer, device)
            row = {"epoch": epoch + 1, "step": step, "train_loss": round(float(np.mean(losses)) if losses else math.nan, 5),
                   "dev_cer": round(dev["cer"], 4), "dev_wer": round(dev["wer"], 4),
                   "lr": round(sched.get_last_lr()[0], 8), "elapsed_s": round(elapsed, 1)}
            curve.append(row)
            log(" ".join(f"{k}={v}" for k, v in row.items()))
            ckpt = {"model_config": mcfg.to_dict(), "state_dict": model.state_dict(), "vocab": tokens,
                    "stats": {"mean": mean.tolist(), "std": std.tolist()}, "features": feat_cfg.__dict__,
                    "train": train_cfg, "epoch": epoch + 1, "dev_cer": dev["cer"], "dev_wer": dev["wer"]}
            atomic_save(ckpt, checkpoint_dir / f"epoch-{epoch + 1:03d}.pt")
            if dev["cer"] < best[0]:
                best = (dev["cer"], dev["wer"], epoch + 1)
                atomic_save(ckpt, out_dir / "model.pt")
        if budget and time.perf_counter() - t0 > budget:
            if master:
                log(f"stopping after epoch {epoch + 1}: train.max_minutes={train_cfg['max_minutes']} reached")
            break
    train_seconds = time.perf_counter() - t0
    if master:
        curve_path.parent.mkdir(parents=True, exist_ok=True)
        with open(curve_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(curve[0]))
            w.writeheader()
            w.writerows(curve)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    audio_seconds = float(sum(durations)) * epochs_done
    return TrainResult(params=n_params, epochs=epochs_done, steps=step, best_epoch=best[2],
                       best_dev_cer=round(best[0], 4), best_dev_wer=round(best[1], 4),
                       train_seconds=round(train_seconds, 1),
                       audio_hours=round(audio_seconds / 3600, 4),
                       device=str(device), skipped_utterances=skipped,
                       padding_fraction=round(padding_fraction, 4),
                       train_audio_s_per_s=round(audio_seconds / max(train_seconds, 1e-9), 2))

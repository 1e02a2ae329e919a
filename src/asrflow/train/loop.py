"""CTC training of the DeepSpeech2-style model; runs alone or under torchrun (DDP).

DDP is detected from the environment torchrun sets (``WORLD_SIZE``/``RANK``); only rank 0
logs, evaluates and writes checkpoints. On CPU the gloo backend is used, NCCL on GPUs.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
import pickle
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from asrflow.features.augment import AugmentConfig, Augmenter, utterance_rng
from asrflow.features.logmel import FeatureConfig, LogMel, read_stats
from asrflow.data.manifest import ManifestAudio, read_manifest
from asrflow.scoring.metrics import corpus_rates
from asrflow.common.progress import bar
from asrflow.models.deepspeech2 import DeepSpeech2, ModelConfig, count_parameters
from asrflow.text.vocab import Tokenizer, read_vocab


def utterance_features(wav: np.ndarray, fe: LogMel, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised log-mel features (frames, n_mels) of one decoded waveform."""
    return fe(torch.from_numpy(wav)).sub_(mean).div_(std)


class UtteranceDataset(torch.utils.data.Dataset):
    """Features and labels of ``rows`` (a manifest slice whose index holds the row numbers
    in the Parquet file ``audio`` reads from).

    With an ``augmenter`` (training only), each utterance is augmented with randomness drawn
    from (``seed``, :attr:`epoch`, its row number): the same in every run, resumed or not,
    whatever process loads it.
    """

    def __init__(self, rows: pd.DataFrame, audio: ManifestAudio, tokenizer: Tokenizer, fe: LogMel,
                 mean: torch.Tensor, std: torch.Tensor, augmenter: Augmenter | None = None, seed: int = 0):
        self.audio, self.rows = audio, rows.index.tolist()
        self.texts = rows["text"].tolist()
        self.labels = [tokenizer.encode(t) for t in self.texts]
        self.fe, self.mean, self.std = fe, mean, std
        self.augmenter = augmenter if augmenter is not None and augmenter.enabled else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        wav = self.audio[self.rows[i]]
        if self.augmenter is None:
            return utterance_features(wav, self.fe, self.mean, self.std), torch.tensor(self.labels[i]), i
        rng = utterance_rng(self.seed, self.epoch, self.rows[i])
        feats = utterance_features(self.augmenter.wave(wav, rng), self.fe, self.mean, self.std)
        return self.augmenter.spec(feats, rng), torch.tensor(self.labels[i]), i


def _loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a loader process decodes and computes features; the trainer owns the cores


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
    nonfinite_steps: int        # steps skipped because the loss was NaN/inf
    resumed_from_step: int      # 0 = trained from scratch
    stopped_early: bool         # early stopping on dev CER (train.patience)
    step_log: list[dict[str, float]] = field(default_factory=list)  # per-step loss, lr, throughput (MLflow)


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, rename.

    Whatever happens, ``path`` holds either the previous file or the new one. A full disk
    is reported as such (torch's own error for it is an unreadable 'unexpected pos').
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _out_of_space(e):
            free = shutil.disk_usage(path.parent).free
            kept = f"the previous {path} is unchanged" if path.exists() else "nothing was written"
            raise OSError(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing {path.name} "
                                        f"({free / 1e6:.1f} MB free); {kept}: free space there or point the "
                                        "checkpoint directory at a bigger disk") from e
        raise


def _out_of_space(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


# train params that change how a run is checkpointed, stopped or launched but not the weights it reaches
OPERATIONAL = ("threads", "loader_workers", "max_minutes", "checkpoint_every_steps", "keep_checkpoints", "patience", "resume",
               "log_every_steps", "rdzv_endpoint")

CODE = ("train/loop.py", "models/deepspeech2.py", "features/logmel.py", "text/vocab.py")


def run_fingerprint(train_cfg: dict[str, Any], feat_cfg: FeatureConfig, seed: int, inputs: list[Path]) -> str:
    """What a resumable checkpoint must match to be resumed: the params that shape training,
    the seed, the input files (train/dev manifests, stats, vocab) and the training code."""
    h = hashlib.sha256()
    h.update(json.dumps({"train": {k: v for k, v in train_cfg.items() if k not in OPERATIONAL},
                         "features": feat_cfg.__dict__, "seed": seed}, sort_keys=True).encode())
    here = Path(__file__).parents[1]
    for f in [*inputs, *(here / c for c in CODE)]:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    """Every RNG training draws from, as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "random": [version, torch.tensor(internal, dtype=torch.int64), py_gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["random"]
    random.setstate((version, tuple(internal.tolist()), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_epoch_coverage(seen: list[int], n: int, world: int, epoch: int, log=None) -> None:
    """Across ranks, every training utterance was seen exactly once this epoch (else raise)."""
    if world == 1:
        everyone = seen
    else:
        gathered: list[list[int]] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, seen)
        everyone = [i for part in gathered for i in part]
    if len(everyone) != n or len(set(everyone)) != n:
        raise RuntimeError(f"epoch {epoch + 1}: {len(everyone)} utterances seen ({len(set(everyone))} distinct) "
                           f"across {world} ranks, expected each of {n} exactly once")
    if log and world > 1:
        log(f"epoch {epoch + 1}: {n} utterances, each seen exactly once across {world} ranks")


def check_ranks_agree(model: nn.Module, log=None) -> None:
    """DDP invariant: every rank ends with bit-identical parameters (else raise).

    Parameters only: batch-norm running statistics are rank-local between forward passes
    (DDP broadcasts rank 0's at the start of each one), and rank 0's are the ones saved.
    """
    h = hashlib.sha256()
    for t in model.parameters():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different parameters: {digests}")
    if log:
        log(f"parameters identical across {len(digests)} ranks (sha256 {digests[0][:16]})")


def epoch_checkpoint(checkpoint_dir: Path, epoch: int) -> Path:
    """The per-epoch checkpoint of ``epoch`` (1-based)."""
    return checkpoint_dir / f"epoch-{epoch:03d}.pt"


def _prune_epoch_checkpoints(checkpoint_dir: Path, keep: int, best_epoch: int) -> None:
    """Keep the last ``keep`` per-epoch checkpoints and the best one."""
    files = sorted(checkpoint_dir.glob("epoch-*.pt"))
    for f in files[:-keep]:
        if f != epoch_checkpoint(checkpoint_dir, best_epoch):
            f.unlink()


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that carries Python objects other than tensors and plain values."""


def load_safely(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: asrflow's checkpoints hold only tensors and
    plain values, so a file whose pickle would import or call anything else is refused
    (and nothing in it runs); a truncated or foreign file gets an error naming it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((l for l in first if "Unsupported" in l or "GLOBAL" in l), first[0] if first else "")
        raise UnsafeCheckpoint(f"{path}: refused to load: it carries pickled Python objects that are not tensors or "
                               f"plain values ({detail.strip()}); asrflow never writes such files, so it was made "
                               "elsewhere or tampered with. Nothing in it was run.") from None
    except (RuntimeError, EOFError, KeyError) as e:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or not written by torch.save?): {e}") from e


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """Model (eval mode), the checkpoint dict, feature extractor and stats.

    Loaded with ``weights_only=True``: a checkpoint carrying a pickled object is refused.
    """
    ckpt = load_safely(path, device)
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
    return load_safely(path)["vocab"]


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
    augmenter = Augmenter(AugmentConfig.from_params(train_cfg["augment"]), feat_cfg.sample_rate)
    if augmenter.enabled and master:
        log("augmentation: " + ", ".join(f"{e['type']} p={e['prob']}" for e in train_cfg["augment"] if e["prob"]))
    ds = UtteranceDataset(rows, ManifestAudio(train_manifest, feat_cfg.sample_rate), tokenizer, fe, mean, std,
                          augmenter, seed)
    dev_ds = UtteranceDataset(dev_rows, ManifestAudio(dev_manifest, feat_cfg.sample_rate), tokenizer, fe, mean, std)
    dev_loader = torch.utils.data.DataLoader(
        dev_ds, batch_sampler=make_batches(dev_rows["duration"].tolist(), batch_seconds), collate_fn=collate)
    epochs = train_cfg["epochs"]
    steps_per_epoch = len(epoch_batches(batches, 0, seed, rank, world))
    total_steps = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, train_cfg["warmup_steps"], total_steps))
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    bf16 = use_cuda and train_cfg["precision"] == "bf16"  # bf16 needs no loss scaler

    curve_path, out_dir, checkpoint_dir = Path(curve_path), Path(out_dir), Path(checkpoint_dir)
    last_path = checkpoint_dir / "last.pt"
    inputs = [Path(m).with_suffix(".jsonl") if Path(m).with_suffix(".jsonl").exists() else Path(m)
              for m in (train_manifest, dev_manifest)] + [Path(stats_path), Path(vocab_path)]
    fingerprint = run_fingerprint(train_cfg, feat_cfg, seed, inputs)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "losses": [], "curve": [],
                             "best": [math.inf, math.inf, -1], "since_best": 0, "nonfinite": 0, "in_row": 0,
                             "seconds": 0.0, "seen": [], "step_log": [], "window_audio": 0.0}
    resumed_from = 0
    pending_rng = None  # RNG states to restore at the exact point they were saved (see the epoch loop)
    if master:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for leftover in checkpoint_dir.glob(".*.tmp"):  # a checkpoint write killed half-way
            leftover.unlink()
    if last_path.exists() and train_cfg["resume"]:
        ckpt = load_safely(last_path)
        if ckpt.get("fingerprint") == fingerprint and ckpt.get("world") == world:
            model.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            state = ckpt["state"]
            pending_rng = ckpt["rng"][rank]
            resumed_from = state["step"]
            if master:
                log(f"resuming from {last_path}: step {state['step']}, epoch {state['epoch'] + 1}, "
                    f"batch {state['batch']} of {steps_per_epoch}")
        elif master:
            log(f"not resuming {last_path}: it was written by a run with other params, inputs, code or world size; "
                "starting afresh")
            for old in [last_path, *checkpoint_dir.glob("epoch-*.pt")]:
                old.unlink()
    if world > 1:
        dist.barrier()  # nobody reads checkpoints rank 0 is about to replace

    def save_last() -> None:
        rngs = [None] * world
        if world > 1:
            dist.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if master:
            atomic_save({"fingerprint": fingerprint, "world": world, "state_dict": model.state_dict(),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "state": state,
                         "rng": rngs}, last_path)
            log(f"checkpoint step={state['step']} epoch={state['epoch'] + 1} batch={state['batch']}")

    def all_finite(loss: torch.Tensor) -> bool:
        ok = torch.tensor([1.0 if torch.isfinite(loss) else 0.0], device=device)
        if world > 1:  # every rank skips together, or DDP's gradient all-reduce would wait forever
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    t0 = time.perf_counter() - state["seconds"]
    budget = train_cfg["max_minutes"] * 60
    stopped_early = False
    log_every = train_cfg["log_every_steps"]
    progress = bar(epochs * steps_per_epoch, "train", unit="step", initial=state["step"], show=master)
    window_t = time.perf_counter()
    while state["epoch"] < epochs:
        epoch = state["epoch"]
        order = epoch_batches(batches, epoch, seed, rank, world)
        ds.epoch = epoch
        workers = train_cfg["loader_workers"]
        loader = torch.utils.data.DataLoader(ds, batch_sampler=order[state["batch"]:], collate_fn=collate,
                                             num_workers=workers, worker_init_fn=_loader_worker_init,
                                             prefetch_factor=4 if workers else None)
        # Starting an epoch's loader draws from torch's RNG. An epoch-end checkpoint was saved
        # before that draw, a mid-epoch one after it: restore the RNGs on the same side.
        if pending_rng is not None and state["batch"] == 0:
            _set_rng_state(pending_rng)
            pending_rng = None
        batches_iter = iter(loader)
        if pending_rng is not None:
            _set_rng_state(pending_rng)
            pending_rng = None
        for x, flen, y, llen, ids in batches_iter:
            state["seen"].extend(ds.rows[i] for i in ids)
            state["window_audio"] += float(flen.sum()) * feat_cfg.hop_ms / 1000  # audio seconds since the last log
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                lp, olen = ddp(x.to(device), flen)
            loss = ctc(lp.float().transpose(0, 1), y.to(device), olen, llen)
            opt.zero_grad(set_to_none=True)
            if all_finite(loss):
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), train_cfg["grad_clip"])
                opt.step()
                state["losses"].append(float(loss.detach()))
                state["in_row"] = 0
            else:
                state["nonfinite"] += 1
                state["in_row"] += 1
                if master:
                    log(f"step {state['step']}: non-finite loss, step skipped ({state['nonfinite']} so far)")
                if state["in_row"] >= train_cfg["max_nonfinite_in_row"]:
                    raise TrainingDiverged(
                        f"{state['in_row']} non-finite losses in a row (train.max_nonfinite_in_row="
                        f"{train_cfg['max_nonfinite_in_row']}) at step {state['step']}, epoch {epoch + 1}: lower "
                        f"train.lr (now {train_cfg['lr']}) or check the data (last batch: rows "
                        f"{[ds.rows[i] for i in ids][:8]} of {train_manifest})")
            sched.step()
            state["step"] += 1
            state["batch"] += 1
            progress.update(1)
            if master and state["step"] % log_every == 0:
                now = time.perf_counter()
                state["step_log"].append({"step": state["step"], "loss": state["losses"][-1] if state["losses"] else
                                          math.nan, "lr": sched.get_last_lr()[0],
                                          "audio_s_per_s": world * state["window_audio"] / max(now - window_t, 1e-9)})
                progress.set_postfix(loss=f"{state['step_log'][-1]['loss']:.3f}", refresh=False)  # drawn at the bar's pace
                state["window_audio"], window_t = 0.0, now
            if state["batch"] < len(order) and state["step"] % train_cfg["checkpoint_every_steps"] == 0:
                state["seconds"] = time.perf_counter() - t0
                save_last()
        check_epoch_coverage(state["seen"], len(ds), world, epoch, log if master else None)
        elapsed = time.perf_counter() - t0
        if master:
            dev = evaluate_greedy(model, dev_loader, tokenizer, device)
            losses = state["losses"]
            row = {"epoch": epoch + 1, "step": state["step"],
                   "train_loss": round(float(np.mean(losses)) if losses else math.nan, 5),
                   "dev_cer": round(dev["cer"], 4), "dev_wer": round(dev["wer"], 4),
                   "lr": round(sched.get_last_lr()[0], 8), "elapsed_s": round(elapsed, 1)}
            state["curve"].append(row)
            log(" ".join(f"{k}={v}" for k, v in row.items()))
            ckpt = {"model_config": mcfg.to_dict(), "state_dict": model.state_dict(), "vocab": tokens,
                    "stats": {"mean": mean.tolist(), "std": std.tolist()}, "features": feat_cfg.__dict__,
                    "train": train_cfg, "epoch": epoch + 1, "dev_cer": dev["cer"], "dev_wer": dev["wer"]}
            atomic_save(ckpt, epoch_checkpoint(checkpoint_dir, epoch + 1))
            if dev["cer"] < state["best"][0]:
                state["best"], state["since_best"] = [dev["cer"], dev["wer"], epoch + 1], 0
            else:
                state["since_best"] += 1
            _prune_epoch_checkpoints(checkpoint_dir, train_cfg["keep_checkpoints"], state["best"][2])
        if world > 1:  # every rank learns the early-stopping decision rank 0 made
            flag = torch.tensor([state["since_best"] if master else 0], device=device)
            dist.broadcast(flag, 0)
            state["since_best"] = int(flag.item())
        state.update(epoch=epoch + 1, batch=0, losses=[], seen=[], seconds=time.perf_counter() - t0)
        save_last()
        patience = train_cfg["patience"]
        if patience and state["since_best"] >= patience and state["epoch"] < epochs:
            stopped_early = True
            if master:
                log(f"early stop after epoch {state['epoch']}: dev CER has not improved for {patience} epochs "
                    f"(best {state['best'][0]:.2f}% at epoch {state['best'][2]}; train.patience={patience})")
            break
        if budget and time.perf_counter() - t0 > budget:
            if master:
                log(f"stopping after epoch {state['epoch']}: train.max_minutes={train_cfg['max_minutes']} reached")
            break
    progress.close()
    train_seconds = time.perf_counter() - t0
    if world > 1:
        check_ranks_agree(model, log if master else None)
    curve, best, step = state["curve"], state["best"], state["step"]
    epochs_done = state["epoch"]
    if master:
        # the best epoch's checkpoint is the model (written at the end: the orchestrators clear
        # out_dir before re-running a killed stage, while checkpoint_dir survives)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".model.pt.tmp"
        shutil.copyfile(epoch_checkpoint(checkpoint_dir, best[2]), tmp)
        os.replace(tmp, out_dir / "model.pt")
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
                       nonfinite_steps=state["nonfinite"], resumed_from_step=resumed_from, stopped_early=stopped_early,
                       step_log=state["step_log"],
                       best_dev_cer=round(best[0], 4), best_dev_wer=round(best[1], 4),
                       train_seconds=round(train_seconds, 1),
                       audio_hours=round(audio_seconds / 3600, 4),
                       device=str(device), skipped_utterances=skipped,
                       padding_fraction=round(padding_fraction, 4),
                       train_audio_s_per_s=round(audio_seconds / max(train_seconds, 1e-9), 2))

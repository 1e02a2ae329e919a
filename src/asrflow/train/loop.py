"""CTC training of the acoustic model; runs alone or under torchrun (DDP).

:func:`train` reads top to bottom: set up (placement, data, model, optimiser, resume), then
per epoch one pass over this rank's batches, evaluation on dev and checkpoints, until the
epochs, early stopping or the time budget end it; then the best epoch's checkpoint is
published as the model. Only rank 0 logs, evaluates and writes; on CPU the gloo backend is
used, NCCL on GPUs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from asrflow.common.files import copy_file, write_csv
from asrflow.common.progress import bar
from asrflow.data.manifest import ManifestAudio, read_manifest
from asrflow.features.augment import Augmenter
from asrflow.features.augment_config import AugmentConfig
from asrflow.features.logmel import FeatureConfig, LogMel, read_stats
from asrflow.models.checkpoint import load_safely, model_checkpoint, save_checkpoint
from asrflow.models.families import build_model, count_parameters
from asrflow.scoring.metrics import corpus_rates
from asrflow.text.vocab import Tokenizer, read_vocab
from asrflow.train.batches import UtteranceDataset, collate, epoch_batches, loader_worker_init, make_batches, \
    padding_fraction, weighted_rows
from asrflow.train.checkpoints import epoch_checkpoint, fresh_state, prune_epoch_checkpoints, run_fingerprint
from asrflow.train.config import TrainConfig, TrainPaths
from asrflow.train.distributed import Placement, all_finite, check_epoch_coverage, check_ranks_agree, \
    gather_rng_states, place, set_rng_state


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
    skipped_utterances: int     # training utterances with characters outside the vocabulary
    dev_utterances: int         # dev utterances scored (every one)
    padding_fraction: float
    train_audio_s_per_s: float
    nonfinite_steps: int        # steps skipped because the loss was NaN/inf
    resumed_from_step: int      # 0 = trained from scratch
    stopped_early: bool         # early stopping on dev CER (train.patience)
    step_log: list[dict[str, float]] = field(default_factory=list)  # per-step loss, lr, throughput (MLflow)


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def train(paths: TrainPaths, cfg: TrainConfig, model: dict[str, Any], features: FeatureConfig, seed: int,
          log=print) -> TrainResult:
    """Train, evaluate greedily on dev after each epoch, keep the best by dev CER.

    Writes ``paths.out_dir/model.pt`` (config, vocab, stats and weights; loadable with
    ``weights_only=True``) and the learning curve CSV; per-epoch checkpoints and ``last.pt``
    go to ``paths.checkpoint_dir``. Utterances whose transcript has a character outside the
    vocabulary are skipped and counted in the result, never dropped silently. Raises
    :class:`TrainingDiverged` after ``train.max_nonfinite_in_row`` non-finite losses in a row.
    """
    run = TrainingRun(paths, cfg, model, features, seed, log)
    run.resume_if_possible()
    t0 = time.perf_counter() - run.state["seconds"]
    stopped_early = False
    while run.state["epoch"] < cfg.epochs:
        run.one_epoch(t0)
        run.evaluate_and_checkpoint(t0)
        if run.patience_exhausted():
            stopped_early = True
            break
        if cfg.max_minutes and time.perf_counter() - t0 > cfg.max_minutes * 60:
            run.say(f"stopping after epoch {run.state['epoch']}: train.max_minutes={cfg.max_minutes} reached")
            break
    return run.finish(time.perf_counter() - t0, stopped_early)


class TrainingRun:
    """One training run's moving parts, set up in the order their random draws happen
    (so a run is reproducible bit for bit), with one method per phase of :func:`train`.
    bench/bench_train.py times its :meth:`step` on its dataset's batches."""

    def __init__(self, paths: TrainPaths, cfg: TrainConfig, model: dict[str, Any], features: FeatureConfig, seed: int,
                 log) -> None:
        self.paths, self.cfg, self.features, self.seed, self.log = paths, cfg, features, seed, log
        self.model_params = model  # params.yaml's model block: the family and its sizes
        self.where: Placement = place(cfg.device, cfg.threads, seed)
        self._load_data()
        self._build_model()
        self.steps_per_epoch = len(epoch_batches(self.batches, 0, seed, self.where.rank, self.where.world))
        total_steps = cfg.epochs * self.steps_per_epoch
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg.warmup_steps, total_steps))
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        self.bf16 = self.where.device.type == "cuda" and cfg.precision == "bf16"  # bf16 needs no loss scaler
        self.state = fresh_state()
        self.resumed_from = 0
        self.pending_rng = None  # RNG states to restore at the exact point they were saved (see one_epoch)

    def say(self, msg: str) -> None:
        if self.where.master:
            self.log(msg)

    # ------------------------------------------------------------------ setup

    def _load_data(self) -> None:
        cfg, fcfg, p = self.cfg, self.features, self.paths
        self.tokens = read_vocab(p.vocab)
        self.tokenizer = Tokenizer(self.tokens)
        fe = LogMel(fcfg)
        self.mean, self.std = read_stats(p.stats)
        known = lambda t: not self.tokenizer.unknown_chars(t)  # noqa: E731
        rows = read_manifest(p.train_manifest)
        ok = rows["text"].map(known)
        self.skipped = int((~ok).sum())
        rows = rows[ok]  # the index keeps each row's number in the Parquet file
        dev_rows = read_manifest(p.dev_manifest)
        if self.skipped:
            self.say(f"skipping {self.skipped} training utterances with characters outside the vocabulary")
        unheard = int((~dev_rows["text"].map(known)).sum())
        if unheard:  # kept: scored against their whole transcripts, as tune and evaluate score them
            self.say(f"{unheard} of {len(dev_rows)} dev utterances hold characters outside the vocabulary: "
                     "the dev error rates count them as errors")
        listed = len(rows)
        rows, copies = weighted_rows(rows, self.seed)
        if len(rows) != listed:
            self.say(f"weighted: {listed} training utterances are {len(rows)} per epoch (datasets.<name>.weights)")
        batch_seconds = cfg.batch_frames * fcfg.hop_ms / 1000
        self.durations = rows["duration"].tolist()
        self.batches = make_batches(self.durations, batch_seconds)
        self.padding = padding_fraction(self.durations, self.batches)
        self.say(f"{len(self.batches)} batches of <= {batch_seconds:.0f} s audio; padding fraction {self.padding:.3f}")
        augmenter = Augmenter(AugmentConfig.from_params(cfg.augment), fcfg.sample_rate)
        if augmenter.enabled:
            self.say("augmentation: " + ", ".join(f"{e['type']} p={e['prob']}" for e in cfg.augment if e["prob"]))
        self.ds = UtteranceDataset(rows, ManifestAudio(p.train_manifest, fcfg.sample_rate), self.tokenizer, fe,
                                   self.mean, self.std, augmenter, self.seed, copies)
        dev_ds = UtteranceDataset(dev_rows, ManifestAudio(p.dev_manifest, fcfg.sample_rate), None, fe,
                                  self.mean, self.std)
        self.dev_loader = torch.utils.data.DataLoader(
            dev_ds, batch_sampler=make_batches(dev_rows["duration"].tolist(), batch_seconds), collate_fn=collate)

    def _build_model(self) -> None:
        self.model = build_model(self.model_params, self.features.n_mels, len(self.tokens)).to(self.where.device)
        self.n_params = count_parameters(self.model)
        self.say(f"model: {self.model_params['family']}, {self.n_params:,} parameters; device {self.where.device}; world size {self.where.world}")
        self.ddp = nn.parallel.DistributedDataParallel(self.model) if self.where.world > 1 else self.model

    def resume_if_possible(self) -> None:
        """Continue from ``last.pt`` when it was written by this run (same fingerprint and
        world size); otherwise start afresh, removing checkpoints of another run."""
        ckdir, last = self.paths.checkpoint_dir, self.paths.checkpoint_dir / "last.pt"
        inputs = [m.with_suffix(".jsonl") if m.with_suffix(".jsonl").exists() else m
                  for m in (self.paths.train_manifest, self.paths.dev_manifest)] + [self.paths.stats, self.paths.vocab]
        self.fingerprint = run_fingerprint(self.cfg, self.model_params, self.features, self.seed, inputs)
        if self.where.master:
            ckdir.mkdir(parents=True, exist_ok=True)
            for leftover in ckdir.glob(".*.tmp"):  # a checkpoint write killed half-way
                leftover.unlink()
        if last.exists() and self.cfg.resume:
            ckpt = load_safely(last)
            if ckpt.get("fingerprint") == self.fingerprint and ckpt.get("world") == self.where.world:
                self.model.load_state_dict(ckpt["state_dict"])
                self.opt.load_state_dict(ckpt["optimizer"])
                self.sched.load_state_dict(ckpt["scheduler"])
                self.state = ckpt["state"]
                self.pending_rng = ckpt["rng"][self.where.rank]
                self.resumed_from = self.state["step"]
                self.say(f"resuming from {last}: step {self.state['step']}, epoch {self.state['epoch'] + 1}, "
                         f"batch {self.state['batch']} of {self.steps_per_epoch}")
            elif self.where.master:
                self.log(f"not resuming {last}: it was written by a run with other params, inputs, code or world "
                         "size; starting afresh")
                for old in [last, *ckdir.glob("epoch-*.pt")]:
                    old.unlink()
        if self.where.world > 1:
            dist.barrier()  # nobody reads checkpoints rank 0 is about to replace
        self.progress = bar(self.cfg.epochs * self.steps_per_epoch, "train", unit="step", initial=self.state["step"],
                            show=self.where.master)

    # ------------------------------------------------------------------ one epoch

    def one_epoch(self, t0: float) -> None:
        """This rank's batches of the current epoch, from where the state says it stopped."""
        cfg, state, world = self.cfg, self.state, self.where.world
        epoch = state["epoch"]
        order = epoch_batches(self.batches, epoch, self.seed, self.where.rank, world)
        self.ds.epoch = epoch
        workers = cfg.loader_workers
        loader = torch.utils.data.DataLoader(self.ds, batch_sampler=order[state["batch"]:], collate_fn=collate,
                                             num_workers=workers, worker_init_fn=loader_worker_init,
                                             prefetch_factor=4 if workers else None)
        # Starting an epoch's loader draws from torch's RNG. An epoch-end checkpoint was saved
        # before that draw, a mid-epoch one after it: restore the RNGs on the same side.
        if self.pending_rng is not None and state["batch"] == 0:
            set_rng_state(self.pending_rng)
            self.pending_rng = None
        batches_iter = iter(loader)
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None
        window_t = time.perf_counter()
        for x, flen, y, llen, ids in batches_iter:
            state["seen"].extend(ids)  # dataset positions: a weighted row's copies count apart
            state["window_audio"] += float(flen.sum()) * self.features.hop_ms / 1000  # audio seconds since the last log
            self.step(x, flen, y, llen, ids, epoch)
            if self.where.master and state["step"] % cfg.log_every_steps == 0:
                now = time.perf_counter()
                state["step_log"].append({"step": state["step"], "loss": state["losses"][-1] if state["losses"] else
                                          math.nan, "lr": self.sched.get_last_lr()[0],
                                          "audio_s_per_s": world * state["window_audio"] / max(now - window_t, 1e-9)})
                # drawn at the bar's pace
                self.progress.set_postfix(loss=f"{state['step_log'][-1]['loss']:.3f}", refresh=False)
                state["window_audio"], window_t = 0.0, now
            if state["batch"] < len(order) and state["step"] % cfg.checkpoint_every_steps == 0:
                state["seconds"] = time.perf_counter() - t0
                self.save_last()
        check_epoch_coverage(state["seen"], len(self.ds), world, epoch, self.log if self.where.master else None)

    def step(self, x, flen, y, llen, ids, epoch: int) -> None:
        """One optimiser step; a non-finite loss skips it (on every rank) and is counted."""
        cfg, state = self.cfg, self.state
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            lp, olen = self.ddp(x.to(self.where.device), flen)
        loss = self.ctc(lp.float().transpose(0, 1), y.to(self.where.device), olen, llen)
        self.opt.zero_grad(set_to_none=True)
        if all_finite(loss, self.where.world):
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            state["losses"].append(float(loss.detach()))
            state["in_row"] = 0
        else:
            state["nonfinite"] += 1
            state["in_row"] += 1
            self.say(f"step {state['step']}: non-finite loss, step skipped ({state['nonfinite']} so far)")
            if state["in_row"] >= cfg.max_nonfinite_in_row:
                raise TrainingDiverged(
                    f"{state['in_row']} non-finite losses in a row (train.max_nonfinite_in_row="
                    f"{cfg.max_nonfinite_in_row}) at step {state['step']}, epoch {epoch + 1}: lower "
                    f"train.lr (now {cfg.lr}) or check the data (last batch: rows "
                    f"{[self.ds.rows[i] for i in ids][:8]} of {self.paths.train_manifest})")
        self.sched.step()
        state["step"] += 1
        state["batch"] += 1
        self.progress.update(1)

    # ------------------------------------------------------------------ evaluation and checkpoints

    def evaluate_and_checkpoint(self, t0: float) -> None:
        """After an epoch: greedy dev CER/WER, the epoch's checkpoint, retention, the learning
        curve row (rank 0); every rank learns the early-stopping count; ``last.pt``."""
        state, master = self.state, self.where.master
        epoch = state["epoch"]
        if master:
            dev = evaluate_greedy(self.model, self.dev_loader, self.tokenizer, self.where.device)
            losses = state["losses"]
            row = {"epoch": epoch + 1, "step": state["step"],
                   "train_loss": round(float(np.mean(losses)) if losses else math.nan, 5),
                   "dev_cer": round(dev["cer"], 4), "dev_wer": round(dev["wer"], 4),
                   "lr": round(self.sched.get_last_lr()[0], 8), "elapsed_s": round(time.perf_counter() - t0, 1)}
            state["curve"].append(row)
            self.log(" ".join(f"{k}={v}" for k, v in row.items()))
            ckpt = model_checkpoint(self.model, self.tokens, self.mean, self.std, self.features,
                                    train=self.cfg.to_params(), epoch=epoch + 1, dev_cer=dev["cer"], dev_wer=dev["wer"])
            save_checkpoint(ckpt, epoch_checkpoint(self.paths.checkpoint_dir, epoch + 1))
            if dev["cer"] < state["best"][0]:
                state["best"], state["since_best"] = [dev["cer"], dev["wer"], epoch + 1], 0
            else:
                state["since_best"] += 1
            prune_epoch_checkpoints(self.paths.checkpoint_dir, self.cfg.keep_checkpoints, state["best"][2])
        if self.where.world > 1:  # every rank learns the early-stopping decision rank 0 made
            flag = torch.tensor([state["since_best"] if master else 0], device=self.where.device)
            dist.broadcast(flag, 0)
            state["since_best"] = int(flag.item())
        state.update(epoch=epoch + 1, batch=0, losses=[], seen=[], seconds=time.perf_counter() - t0)
        self.save_last()

    def save_last(self) -> None:
        """``last.pt``: weights, optimiser, scheduler, position and every rank's RNG states."""
        rngs = gather_rng_states(self.where.world)
        if self.where.master:
            save_checkpoint({"fingerprint": self.fingerprint, "world": self.where.world,
                             "state_dict": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                             "scheduler": self.sched.state_dict(), "state": self.state, "rng": rngs},
                            self.paths.checkpoint_dir / "last.pt")
            self.log(f"checkpoint step={self.state['step']} epoch={self.state['epoch'] + 1} "
                     f"batch={self.state['batch']}")

    def patience_exhausted(self) -> bool:
        patience, state = self.cfg.patience, self.state
        if patience and state["since_best"] >= patience and state["epoch"] < self.cfg.epochs:
            self.say(f"early stop after epoch {state['epoch']}: dev CER has not improved for {patience} epochs "
                     f"(best {state['best'][0]:.2f}% at epoch {state['best'][2]}; train.patience={patience})")
            return True
        return False

    # ------------------------------------------------------------------ the end

    def finish(self, train_seconds: float, stopped_early: bool) -> TrainResult:
        """Check the ranks agree, publish the best epoch's checkpoint as the model and the
        learning curve (rank 0), leave the process group; the run's figures."""
        self.progress.close()
        world, state = self.where.world, self.state
        if world > 1:
            check_ranks_agree(self.model, self.log if self.where.master else None)
        best = state["best"]
        if self.where.master:
            # the best epoch's checkpoint is the model (written at the end: the orchestrators clear
            # out_dir before re-running a killed stage, while checkpoint_dir survives)
            copy_file(epoch_checkpoint(self.paths.checkpoint_dir, best[2]), self.paths.out_dir / "model.pt")
            write_csv(self.paths.curve, state["curve"])
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()
        audio_seconds = float(sum(self.durations)) * state["epoch"]
        return TrainResult(params=self.n_params, epochs=state["epoch"], steps=state["step"], best_epoch=best[2],
                           nonfinite_steps=state["nonfinite"], resumed_from_step=self.resumed_from,
                           stopped_early=stopped_early, step_log=state["step_log"],
                           best_dev_cer=round(best[0], 4), best_dev_wer=round(best[1], 4),
                           train_seconds=round(train_seconds, 1), audio_hours=round(audio_seconds / 3600, 4),
                           device=str(self.where.device), skipped_utterances=self.skipped,
                           dev_utterances=len(self.dev_loader.dataset),
                           padding_fraction=round(self.padding, 4),
                           train_audio_s_per_s=round(audio_seconds / max(train_seconds, 1e-9), 2))


def evaluate_greedy(model: nn.Module, loader, tokenizer: Tokenizer, device: torch.device) -> dict[str, float]:
    """Corpus WER/CER (%) of greedy decoding over ``loader``'s batches, against the manifest's
    transcripts (``loader.dataset.texts``: characters outside the vocabulary included, as the
    tune and evaluate stages score them)."""
    model.eval()
    refs, hyps = [], []
    with torch.inference_mode():
        for x, flen, _, _, idx in loader:
            lp, olen = model(x.to(device), flen)
            best = lp.argmax(-1).cpu()
            for b in range(x.shape[0]):
                hyps.append(tokenizer.greedy(best[b, : int(olen[b])].tolist()))
                refs.append(loader.dataset.texts[idx[b]])
    model.train()
    return corpus_rates(refs, hyps)

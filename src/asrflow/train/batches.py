"""What a training step eats: utterances bucketed by duration into batches of bounded audio,
each rank's share of an epoch, and the dataset that turns rows into features and labels."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import torch
from torch import nn

from asrflow.data.manifest import ManifestAudio
from asrflow.features.augment import Augmenter, utterance_rng
from asrflow.features.logmel import LogMel, utterance_features
from asrflow.text.vocab import Tokenizer


class UtteranceDataset(torch.utils.data.Dataset):
    """Features and labels of ``rows`` (a manifest slice whose index holds the row numbers
    in the Parquet file ``audio`` reads from).

    With an ``augmenter`` (training only), each utterance is augmented with randomness drawn
    from (``seed``, :attr:`epoch`, its row number): the same in every run, resumed or not,
    whatever process loads it.
    """

    def __init__(self, rows: pd.DataFrame, audio: ManifestAudio, tokenizer: Tokenizer | None, fe: LogMel,
                 mean: torch.Tensor, std: torch.Tensor, augmenter: Augmenter | None = None, seed: int = 0,
                 copies: list[int] | None = None):
        self.audio, self.rows = audio, rows.index.tolist()
        # a row that appears more than once (weighted_rows) is augmented afresh each time
        self.copies = copies or [0] * len(self.rows)
        self.texts = rows["text"].tolist()
        # no tokenizer: no labels (decoding scored against self.texts, which may hold characters
        # outside the vocabulary)
        self.labels = [tokenizer.encode(t) if tokenizer else [] for t in self.texts]
        self.fe, self.mean, self.std = fe, mean, std
        self.augmenter = augmenter if augmenter is not None and augmenter.enabled else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        wav = self.audio[self.rows[i]]
        if self.augmenter is None:
            return utterance_features(wav, self.fe, self.mean, self.std), torch.tensor(self.labels[i]), i
        rng = utterance_rng(self.seed, self.epoch, self.rows[i], self.copies[i])
        feats = utterance_features(self.augmenter.wave(wav, rng), self.fe, self.mean, self.std)
        return self.augmenter.spec(feats, rng), torch.tensor(self.labels[i]), i


def weighted_rows(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, list[int]]:
    """``rows`` as training sees them each epoch, by their ``weight`` (a combined dataset's part
    weight; 1 elsewhere): weight 2 -> twice, 0.5 -> a seeded half of them (the same half every
    epoch, so an epoch's batches stay fixed and resuming stays exact), 2.5 -> twice, plus once more
    for a seeded half. Returns the rows (index: their row numbers in the Parquet file, repeated)
    and each one's copy number (0 for the first)."""
    if "weight" not in rows or bool((rows["weight"] == 1).all()):
        return rows, [0] * len(rows)
    draw = np.random.default_rng([seed, 0x5EED]).random(len(rows))
    positions, copies = [], []
    for pos, (w, u) in enumerate(zip(rows["weight"].tolist(), draw)):
        n = math.floor(w) + (u < w - math.floor(w))
        positions += [pos] * n
        copies += list(range(n))
    if not positions:
        raise ValueError(f"the weights leave none of the {len(rows)} training utterances in an epoch: raise the "
                         "dataset's weights (datasets.<name>.weights)")
    return rows.iloc[positions], copies


def loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a loader process decodes and computes features; the trainer owns the cores


def collate(items: list[tuple[torch.Tensor, torch.Tensor, int]]):
    """Padded (features, feature lengths, labels, label lengths, dataset indices)."""
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


def padding_fraction(durations: list[float], batches: list[list[int]]) -> float:
    """Share of the padded batches' audio that is padding."""
    padded = sum(max(durations[i] for i in b) * len(b) for b in batches)
    return 1.0 - float(sum(durations)) / padded if padded else 0.0


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

"""Shared by the LM and decoding tests: a character vocabulary, a tiny repetitive text and
peaky CTC emissions that spell a given text."""

import numpy as np

from asrflow.text.vocab import BLANK, SPACE

TOKENS = [BLANK, SPACE] + list("abcdefghijklmnopqrstuvwxyz'")
ALPHABET = set(TOKENS[2:])
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat ate the rat", "hello world",
             "the world is round", "hello there cat"] * 5


def emissions(text: str, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Peaky CTC log-probs spelling ``text`` (each char 2 frames, blanks between)."""
    rng = np.random.default_rng(seed)
    ids = [TOKENS.index(SPACE if c == " " else c) for c in text]
    frames = []
    for i in ids:
        frames += [i, i, 0]
    logits = rng.normal(0, noise, (len(frames), len(TOKENS))) if noise else np.zeros((len(frames), len(TOKENS)))
    logits[np.arange(len(frames)), frames] += 8.0
    return (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(np.float32)

"""Scoring hypotheses against references: word/character alignment with S/D/I counts, corpus
error rates, and the per-utterance result files (icefall-style). Knows no decoder or model."""

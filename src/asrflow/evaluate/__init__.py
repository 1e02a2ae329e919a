"""Evaluating a trained model on the test splits (decode + score + result files), and the
report: reports/<dataset>_wer.md with its figures."""

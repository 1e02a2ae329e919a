"""Acoustic models (one module per family) and checkpoint I/O (weights-only loading).
Knows no trainer, decoder or tracker."""

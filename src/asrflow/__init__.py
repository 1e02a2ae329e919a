"""asrflow: a speech dataset to a trained CTC recognizer and a benchmark report."""

__version__ = "0.1.0"

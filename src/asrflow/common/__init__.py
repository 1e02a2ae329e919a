"""Low-level helpers every package may use: atomic file writes (with a clear out-of-disk error),
file digests and progress bars. Imports nothing else from asrflow."""

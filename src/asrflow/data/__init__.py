"""Corpora in, manifests out: one module per source (synth, librispeech), safe archive download
and extraction, audio decoding, and the manifest stage's JSON lines + Parquet with the rejects table."""

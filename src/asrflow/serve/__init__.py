"""Using a trained model: the self-contained MLflow package, loading it by path or URI,
and transcribing audio files of any format."""

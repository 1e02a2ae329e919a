"""From a waveform to the acoustic model's input: log-mel features and their statistics, on-the-fly
augmentation, and the frame arithmetic (samples -> frames -> frames after subsampling)."""

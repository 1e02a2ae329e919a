"""Model sizes shared by the tests and the benchmarks (one place, so they cannot drift apart)."""

# The acoustic model of tests/conftest.py::tiny_params and bench/bench_train.py --config small:
# trains a whole chain in well under a minute on 2 cores.
TINY_MODEL = {"conv_channels": 4, "rnn_layers": 1, "rnn_hidden": 32}

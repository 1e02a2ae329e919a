"""Model sizes shared by the tests and the benchmarks (one place, so they cannot drift apart)."""

# The acoustic model of tests/conftest.py::tiny_params and bench/bench_train.py --config small:
# trains a whole chain in well under a minute on 2 cores.
TINY_MODEL = {"conv_channels": 4, "rnn_layers": 1, "rnn_hidden": 32}

# Each other family at a size that trains on the tiny corpus in seconds (tests/models/test_families.py)
TINY_FAMILIES = {
    "jasper": {"prolog": 16, "subsampling": {"kernel": 11, "stride": 2}, "blocks": [[16, 11], [24, 13]], "repeat": 2,
               "epilog": [[32, 15, 2], [32, 1, 1]], "dense_residual": True, "dropout": 0.1},
    "quartznet": {"prolog": 16, "subsampling": {"kernel": 33, "stride": 2}, "blocks": [[16, 33], [24, 39]], "repeat": 2,
                  "epilog": [[32, 43, 2], [32, 1, 1]], "dropout": 0.1},
    "conformer": {"d_model": 32, "layers": 2, "heads": 2, "ff_expansion": 2, "conv_kernel": 15, "subsampling": 2,
                  "dropout": 0.1},
}

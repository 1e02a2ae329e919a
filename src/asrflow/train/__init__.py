"""CTC training: duration-bucketed batches and the dataset, DDP checks, and the training loop
with exact resume. Reads a typed config built from params.yaml."""

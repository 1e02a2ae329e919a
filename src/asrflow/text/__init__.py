"""Text on the data path: normalisation, the token vocabulary and tokenizer, and KenLM n-gram
language models (building, perplexity)."""

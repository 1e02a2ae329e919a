"""From acoustic log-probs to text: greedy and KenLM beam-search decoding (flashlight), the
content-addressed log-prob cache, and the alpha/beta search on dev."""

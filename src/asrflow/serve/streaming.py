"""Streaming recognition: audio pushed as it arrives, a partial transcript at any point.

A unidirectional DeepSpeech2 (``model.deepspeech2.bidirectional: false``, with or without a lookahead)
streams for real (:class:`IncrementalAcoustic`): the recurrent layers carry their state from
chunk to chunk and see each frame once, the lookahead waits only for its few future frames,
and the beam search steps through the new frames only (:class:`asrflow.decode.beam.StreamDecoder`).
The log-mel features and the conv front end are recomputed over the audio so far at each
chunk (cheap next to the recurrent layers; only frames no later audio can change are taken),
so the log-probs equal the offline model's and the final transcript the offline one.

A bidirectional model needs the whole utterance for every frame: its stream re-decodes all
the audio so far for each partial (:class:`RedecodeStream`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asrflow.features.logmel import utterance_features
from asrflow.serve.model import AsrflowModel


class IncrementalAcoustic:
    """A unidirectional DeepSpeech2 over a growing waveform: :meth:`push` returns the CTC
    log-prob frames that the audio so far settles (all remaining ones with ``final``)."""

    def __init__(self, model: AsrflowModel):
        import torch

        self.net, self.fe, self.mean, self.std = model.model, model.fe, model.mean, model.std
        if self.net.cfg.bidirectional:
            raise ValueError("a bidirectional model cannot stream incrementally")
        self.torch = torch
        self.wav = np.zeros(0, dtype=np.float32)
        self.hidden: Any = None
        self.conv_done = 0        # conv frames already through the recurrent layers
        self.tail: Any = None     # the last `lookahead` recurrent frames, waiting for their future
        self.frames = 0           # log-prob frames given out

    def _settled_conv(self, n_feats: int) -> int:
        """Conv output frames that depend only on the first ``n_feats`` feature frames."""
        n = n_feats
        kt = self.net.cfg.conv_kernel[1]
        for _, st in self.net.cfg.conv_strides:
            n = (n - kt + kt // 2) // st + 1 if n - kt + kt // 2 >= 0 else 0
        return n

    def push(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        torch = self.torch
        self.wav = np.concatenate([self.wav, np.asarray(samples, dtype=np.float32)])
        if self.wav.size <= self.fe.n_fft // 2:  # the centred STFT cannot pad so short a signal
            return np.zeros((0, self.net.cfg.vocab_size), dtype=np.float32)
        with torch.inference_mode():
            feats = utterance_features(self.wav, self.fe, self.mean, self.std)
            x = self.net.conv(feats.transpose(0, 1)[None, None])            # (1, C, F', T')
            _, c, f, t = x.shape
            x = x.permute(0, 3, 1, 2).reshape(1, t, c * f)
            if final:
                until = int(self.net.output_lengths(torch.tensor([feats.shape[0]]))[0].clamp(max=t))
            else:  # feature frames whose window no later sample reaches (the centred STFT pads the end)
                settled = min(feats.shape[0], (self.wav.size - self.fe.n_fft // 2) // self.fe.cfg.hop_length + 1)
                until = min(t, self._settled_conv(settled))
            new = x[:, self.conv_done:until]
            self.conv_done = max(self.conv_done, until)
            if new.shape[1]:
                new, self.hidden = self.net.rnn(new, self.hidden)
            look = self.net.cfg.lookahead
            if self.net.lookahead is not None:
                seq = new if self.tail is None else torch.cat([self.tail, new], 1)
                if final:  # the end: the future is zeros, as offline
                    ready = self.net.lookahead(torch.nn.functional.pad(seq.transpose(1, 2), (0, look))).transpose(1, 2)
                    self.tail = seq[:, :0]
                else:
                    ready = (self.net.lookahead(seq.transpose(1, 2)).transpose(1, 2) if seq.shape[1] > look
                             else seq[:, :0])
                    self.tail = seq[:, max(0, seq.shape[1] - look):]
                new = ready
            lp = self.net.out(self.net.dropout(self.net.norm(new))).log_softmax(-1)[0].numpy().astype(np.float32)
        self.frames += lp.shape[0]
        return lp


class IncrementalStream:
    """One stream through a unidirectional model: incremental acoustic model and beam search."""

    incremental = True

    def __init__(self, model: AsrflowModel, hotwords: list[str] | None, boost: float):
        self.acoustic = IncrementalAcoustic(model)
        self.decoder = model.search.stream_decoder(hotwords, boost)

    def push(self, samples: np.ndarray) -> None:
        self.decoder.feed(self.acoustic.push(samples))

    def partial(self) -> str:
        return self.decoder.partial()

    def finish(self) -> tuple[str, list[Any], int]:
        """The transcript, its aligned words and the number of log-prob frames."""
        self.decoder.feed(self.acoustic.push(np.zeros(0, dtype=np.float32), final=True))
        text, words = self.decoder.finish()
        return text, words, self.acoustic.frames


class RedecodeStream:
    """One stream through a bidirectional model: each partial decodes all the audio so far."""

    incremental = False

    def __init__(self, model: AsrflowModel, hotwords: list[str] | None, boost: float):
        self.model, self.hotwords, self.boost = model, hotwords, boost
        self.wav = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> None:
        self.wav = np.concatenate([self.wav, np.asarray(samples, dtype=np.float32)])

    def _decode(self) -> tuple[str, list[Any], int]:
        if self.wav.size < self.model.min_samples:
            return "", [], 0
        lp = self.model.logprobs(self.wav)
        if not lp.shape[0]:
            return "", [], 0
        text, words = self.model.search.decode_aligned(lp, self.hotwords, self.boost)
        return text, words, lp.shape[0]

    def partial(self) -> str:
        return self._decode()[0]

    def finish(self) -> tuple[str, list[Any], int]:
        return self._decode()


def open_stream(model: AsrflowModel, hotwords: list[str] | None = None, boost: float = 10.0) -> Any:
    """The stream kind ``model`` allows: incremental for a PyTorch model that streams (a
    unidirectional DeepSpeech2), re-decoding otherwise (a bidirectional model, a convolutional
    or attention family, or an ONNX export)."""
    net = getattr(model, "model", None)
    if net is not None and net.streamable:
        return IncrementalStream(model, hotwords, boost)
    return RedecodeStream(model, hotwords, boost)

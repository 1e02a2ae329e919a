"""Subword units (vocab.units: bpe): SentencePiece trains the pieces, asrflow's own encoder
(the piece list, merged in order) spells exactly what SentencePiece's encoder does, and the
lexicon spelled in pieces decodes with the word KenLM through flashlight, hotwords included."""

import io

import numpy as np
import pytest
import sentencepiece as spm

from asrflow.data.synth_text import SentenceGenerator
from asrflow.decode.beam import BeamConfig, BeamSearch, DecodeSetupError, greedy_decode
from asrflow.text.lm import LMConfig, build_lm
from asrflow.text.vocab import BLANK, SPACE, WORD_START, Tokenizer, build_bpe_vocab, read_vocab, write_vocab
from conftest import config

gen = SentenceGenerator(7)
TEXTS = [gen.sentence() for _ in range(600)]
HELD = [gen.sentence() for _ in range(200)]  # text the pieces were not trained on


def reference(texts, size):
    """SentencePiece's own processor, trained as build_bpe_vocab trains it."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=size, model_type="bpe", character_coverage=1.0,
        normalization_rule_name="identity", bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, input_sentence_size=0,
        shuffle_input_sentence=False, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def peaky(ids, n_tokens):
    """CTC log-probs that spell ``ids``: each token 2 frames, then a blank."""
    frames = [f for i in ids for f in (i, i, 0)]
    logits = np.zeros((len(frames), n_tokens))
    logits[np.arange(len(frames)), frames] += 8.0
    return (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def tokens():
    return build_bpe_vocab(TEXTS, 120)


def test_pieces_encode_as_sentencepiece_encodes_and_decode_back(tokens, tmp_path):
    assert tokens[:2] == [BLANK, SPACE] and len(tokens) == 2 + 119  # SentencePiece's <unk> is left out
    assert build_bpe_vocab(TEXTS, 120) == tokens  # same transcripts, same file
    write_vocab(tokens, tmp_path / "vocab.txt")
    tok = Tokenizer(read_vocab(tmp_path / "vocab.txt"))
    assert tok.subword and not Tokenizer([BLANK, SPACE, "a"]).subword
    sp = reference(TEXTS, 120)
    for text in TEXTS + HELD:
        ids = tok.encode(text)
        assert [tok.tokens[i] for i in ids] == sp.encode(text, out_type=str), text
        assert tok.decode(ids) == text
        assert len(ids) < len(text)  # fewer tokens than characters: what subwords are for
    path = [i for i in tok.encode(HELD[0]) for i in (i, i, 0)]  # CTC: repeats collapse, blanks drop
    assert tok.greedy(path) == HELD[0]
    with pytest.raises(KeyError, match="'7'"):
        tok.encode("route 7")
    with pytest.raises(ValueError, match="SentencePiece could not train"):
        build_bpe_vocab(TEXTS, 10)  # fewer pieces than characters


def test_lexicon_in_pieces_decodes_with_the_word_lm_and_hotwords(tokens, tmp_path):
    tok = Tokenizer(tokens)
    m = build_lm(TEXTS, tok.alphabet, tmp_path, config(LMConfig, "lm", order=3, char_order=6), spell=tok.spell)
    assert not (tmp_path / "char.bin").exists() and "char_order" not in m  # no character LM for pieces
    lexicon = dict(line.split("\t") for line in (tmp_path / "lexicon.txt").read_text().splitlines())
    word = max(lexicon, key=len)
    assert lexicon[word] == " ".join(tok.spell(word)) and lexicon[word].startswith(WORD_START)
    assert SPACE not in lexicon[word].split()
    search = BeamSearch(tokens, tmp_path, config(BeamConfig, "decode", beam_size=20))
    search.set_weights(0.5, 0.0)
    sentence = next(s for s in HELD if set(s.split()) <= set(lexicon))
    em = peaky(tok.encode(sentence), len(tokens))
    assert greedy_decode(em, tok) == sentence
    assert search.decode(em) == sentence
    text, words = search.decode_aligned(em)
    assert text == sentence and [w.word for w in words] == sentence.split()
    assert all(0 <= w.first_frame <= w.last_frame for w in words)
    # a word the lexicon lacks: the lexicon decoder cannot say it until a hotword adds it
    new = "zebrafish"
    em = peaky(tok.encode(f"{sentence} {new}"), len(tokens))
    assert new not in search.decode(em).split()
    assert search.decode_aligned(em, hotwords=[new])[0] == f"{sentence} {new}"
    with pytest.raises(DecodeSetupError, match="vocab.units: bpe"):
        BeamSearch(tokens, tmp_path, config(BeamConfig, "decode", mode="lexicon_free"))

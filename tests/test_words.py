"""minibert.words: one vector per word from its subword pieces.

References (tests/reference/words.npz) are transformers' hidden states pooled
by a plain loop over transformers' own word_ids / sequence_ids
(tests/reference/generate_words.py); the word strings and piece counts below
were checked by hand against the tokenizers' vocabularies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

import minibert
from minibert import MinibertError

TESTS = Path(__file__).resolve().parent
REFERENCE = TESTS / "reference"
# Observed max abs diff vs transformers: 3.4e-6 (real model), 1.2e-6 (tiny BPE model), float32.
ATOL = 5e-5


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE / "words.npz")


def encode_case(model, ref, case):
    texts = [str(t) for t in ref[f"{case}__texts"]]
    pairs = [str(t) for t in ref[f"{case}__pairs"]] if f"{case}__pairs" in ref else None
    enc = model.encode(texts, pairs)
    np.testing.assert_array_equal(enc.input_ids, ref[f"{case}__input_ids"], err_msg=f"{case}: token ids")
    return enc


def check_against_reference(enc, ref, case):
    """Every rule, every stored layer, every word, vs the transformers loop."""
    layers = [int(i) for i in ref[f"{case}__layers"]]
    as_asked = layers[:-1] + [-1]  # the last one by its negative index
    first, last = ref[f"{case}__first"], ref[f"{case}__last"]
    several = ref[f"{case}__pieces"] > 1
    # the rules must differ where a word has several pieces, or this test could not fail
    assert np.abs(first[:, several] - last[:, several]).max() > 100 * ATOL
    expected = {"first": first, "last": last, "mean": ref[f"{case}__mean"]}
    expected["first_last"] = np.concatenate([first, last], axis=-1)
    for how, want in expected.items():
        got = minibert.words(enc, how, layers=as_asked)
        assert got.layers == tuple(layers)
        assert got.vectors.dtype == np.float32
        assert_allclose(got.vectors, want, rtol=0, atol=ATOL, err_msg=f"{case} {how}")
        np.testing.assert_array_equal(got.segments, ref[f"{case}__segments"])
        np.testing.assert_array_equal(np.diff(got.token_spans, axis=1)[:, 0], ref[f"{case}__pieces"])
        np.testing.assert_array_equal(np.repeat(np.arange(len(got)), np.diff(got.offsets)),
                                      ref[f"{case}__text_of_word"])  # fmt: skip


def read_back(w, enc):
    """Each word's string as its span reads in its segment's text."""
    out = []
    for i, ((a, b), s) in enumerate(zip(w.spans.tolist(), w.segments.tolist(), strict=True)):
        b_text = int(np.searchsorted(w.offsets, i, side="right") - 1)
        source = enc.texts[b_text] if s == 0 else enc.text_pairs[b_text]
        out.append(source[a:b])
    return out


@pytest.mark.real
def test_wordpiece_words_one_two_many_pieces_unk_and_cjk(real_model, ref):
    enc = encode_case(real_model, ref, "real_single")
    w = minibert.words(enc, "first")
    assert w.words == [
        ["The", "tokenizer", "split", "unaffable", "hyperparameterization", "☃", "🙂",
         "北", "京", "大", "学", "playing", "."],
        ["ok"],
    ]  # fmt: skip
    pieces = {word: enc.tokens[0][a:b] for word, (a, b) in zip(w.words[0], w.token_spans[:13], strict=True)}
    assert pieces["split"] == ["split"]  # 1 piece
    assert pieces["tokenizer"] == ["token", "##izer"]  # 2 pieces
    assert pieces["unaffable"] == ["una", "##ffa", "##ble"]  # many
    assert pieces["hyperparameterization"] == ["hyper", "##para", "##meter", "##ization"]
    assert pieces["☃"] == ["[UNK]"] and pieces["🙂"] == ["[UNK]"]  # a word that is all [UNK]
    assert [pieces[c] for c in "北京大学"] == [["北"], ["京"], ["大"], ["学"]]  # CJK: a word per character
    assert read_back(w, enc) == w.words[0] + w.words[1]
    check_against_reference(enc, ref, "real_single")


@pytest.mark.real
def test_wordpiece_pairs_keep_segments_apart(real_model, ref):
    enc = encode_case(real_model, ref, "real_pair")
    w = minibert.words(enc, "mean")
    # word ids restart at 0 in the second segment: "Who" and "The" are both word 0
    assert w.words == [
        ["Who", "split", "it", "?", "The", "tokenizer", "did", "."],
        ["Short", ".", "A", "longer", "second", "segment", "pads", "it", "."],
    ]
    assert w.segments.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert read_back(w, enc) == w.words[0] + w.words[1]
    check_against_reference(enc, ref, "real_pair")


def test_byte_level_bpe_leading_space_belongs_to_the_word(bpe_model, ref):
    enc = encode_case(bpe_model, ref, "bpe_single")
    w = minibert.words(enc, "last")
    assert w.words == [
        ["Hello", "world", ",", "tokenizers", "split", "words", "!", "北京", "x"],
        ["Long", "documents"],
    ]
    a, b = w.token_spans[1]
    assert enc.tokens[0][a:b] == ["Ġwor", "l", "d"]  # the space before "world" is in its first piece
    assert enc.offsets[0][a] == (5, 9)  # ... and in that piece's span: " wor"
    assert w.spans[1].tolist() == [6, 11]  # the word's span is trimmed of it
    a, b = w.token_spans[7]
    assert len(enc.tokens[0][a:b]) > 2  # 北京: one word of many byte pieces (no CJK split in byte-level BPE)
    assert read_back(w, enc) == w.words[0] + w.words[1]
    assert not any(t in word for word in w.words[0] for t in ("<s>", "</s>"))
    check_against_reference(enc, ref, "bpe_single")


def test_byte_level_bpe_pairs_told_apart_by_sequence_ids_not_type_ids(bpe_model, ref):
    enc = encode_case(bpe_model, ref, "bpe_pair")
    assert not enc.token_type_ids.any()  # RoBERTa-style: type ids are all 0 for both segments
    w = minibert.words(enc, "first_last")
    assert w.words == [["Hello", "world", "A", "pair", "here", "."], ["Windows", "read", "the", "pieces"]]
    # text 1: "Windows" and "read" are both word 0 and, the specials between them left out, adjacent
    assert w.segments.tolist() == [0, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    assert w.vectors.shape == (3, 10, 64)  # first_last is 2H wide
    check_against_reference(enc, ref, "bpe_pair")


def test_getitem_gives_one_texts_words_and_vectors(bpe_model):
    enc = bpe_model.encode(["Hello world", "Long documents are cut"])
    w = minibert.words(enc, "mean", layers=[0, -1])
    strings, vectors = w[1]
    assert strings == ["Long", "documents", "are", "cut"]
    assert vectors.shape == (2, 4, 32)
    np.testing.assert_array_equal(vectors, w.vectors[:, 2:6])
    assert len(w) == 2


def test_per_text_access_counts_from_the_end_iterates_and_refuses_what_is_not_a_text(bpe_model):
    enc = bpe_model.encode(["Hello world", "", "Long documents are cut"])
    w = minibert.words(enc, "first", layers=[-1])
    assert w.vectors.shape == (1, 6, 32)  # (layers, all words of the batch, H)
    last = w[-1]
    assert last.words == ["Long", "documents", "are", "cut"] and last.vectors.shape == (1, 4, 32)
    np.testing.assert_array_equal(last.vectors, w[2].vectors)
    assert w[1].words == [] and w[1].vectors.shape == (1, 0, 32)
    assert [t.words for t in w] == w.words
    np.testing.assert_array_equal(np.concatenate([t.vectors for t in w], axis=1), w.vectors)
    # w[-1] was rows offsets[-1]:offsets[0], nothing, and w[3] an IndexError of numpy's
    for bad, message in [
        (3, "text 3 out of range"),
        (-4, "text -4 out of range"),
        ("0", "must be an integer"),
    ]:
        with pytest.raises(MinibertError, match=message):
            w[bad]


def test_words_repr_is_a_summary(bpe_model):
    w = minibert.words(bpe_model.encode(["Hello world", "Long documents are cut"]), "first_last")
    assert repr(w) == (
        "Words(2 texts, 6 words in all, how='first_last', layers=(0, 1, 2), vectors (3, 6, 64) float32: "
        "(layers, all words of the batch, H); text b: w[b])"
    )


def test_a_texts_words_do_not_depend_on_its_batch(bpe_model):
    alone = minibert.words(bpe_model.encode(["Hello world, tokenizers split words!"]), "mean")
    batched = minibert.words(bpe_model.encode(["x", "Hello world, tokenizers split words!"]), "mean")
    assert batched.words[1] == alone.words[0]
    # observed 0 or float rounding (~1e-7): padding is masked out
    assert_allclose(batched[1][1], alone[0][1], rtol=0, atol=1e-5)


def test_truncated_text_keeps_the_pieces_that_survived(bpe_model):
    enc = bpe_model.encode(["Hello world, tokenizers"], max_length=12)
    w = minibert.words(enc, "first")
    # <s> Ġ Hel l o Ġwor l d , Ġt oken </s>: "tokenizers" is cut after its second piece
    assert enc.tokens[0][-3:] == ["Ġt", "oken", "</s>"]
    assert w.words == [["Hello", "world", ",", "token"]]


def test_words_follow_the_tokenizers_own_pre_tokenizer(bpe_model):
    text = "Long documents are cut into overlapping windows, and every window is read on its own."
    enc = bpe_model.encode([text])
    pre = bpe_model.tokenizer.backend.pre_tokenizer.pre_tokenize_str(text)
    assert minibert.words(enc).words[0] == [text[a:b].strip() for _, (a, b) in pre]


def test_empty_inputs_give_no_words(bpe_model):
    for texts in ([], [""]):
        w = minibert.words(bpe_model.encode(texts), "first_last")
        assert w.vectors.shape == (3, 0, 64)
        assert w.words == [[] for _ in texts]
        assert w.offsets.tolist() == [0] * (len(texts) + 1)


def test_bad_arguments_name_the_problem(bpe_model):
    enc = bpe_model.encode(["Hello"])
    with pytest.raises(MinibertError, match="how must be one of first, last, mean, first_last"):
        minibert.words(enc, "max")
    with pytest.raises(MinibertError, match=r"layers \[0, 3\]: index 3 is out of range: valid are 0\.\.2"):
        minibert.words(enc, layers=[0, 3])
    with pytest.raises(MinibertError, match="layers -4: index -4 is out of range"):
        minibert.words(enc, layers=-4)

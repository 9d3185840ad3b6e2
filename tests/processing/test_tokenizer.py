"""Tokenizer ids against transformers' CLIPTokenizer built from the same BPE merges file.

The hub is not needed: the oracle's vocab.json / merges.txt are derived here from the packaged
``bpe_simple_vocab_16e6.txt.gz`` the way OpenAI CLIP derives its vocabulary, independently of
``sam3lite.processing.tokenizer``.
"""

from __future__ import annotations

import time
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch
from oracles import clip_oracle

from sam3lite.processing.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, Tokenizer, load_bpe_vocab

# Samples of 14 public prompt lists (tests/data/prompts/README.md): names, synonyms, definitions,
# referring expressions, templates, non-ASCII names; the longest ones are truncated at 32 tokens.
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "data/prompts"


def reference_ids(texts: list[str], length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    enc = clip_oracle()(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def test_vocabulary_equals_clip(tok):
    vocab, merges = load_bpe_vocab()
    oracle = clip_oracle()
    assert len(vocab) == VOCAB_SIZE == len(oracle)
    assert vocab == oracle.get_vocab()
    assert len(merges) == 48894
    assert (oracle.bos_token_id, oracle.eos_token_id, oracle.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)


def test_prompt_corpus_matches_reference(tok):
    prompts: list[str] = []
    for path in sorted(PROMPTS_DIR.glob("*.txt")):
        prompts += path.read_text("utf-8").splitlines()
    assert len(prompts) > 2_000
    unique = sorted(set(prompts))  # ids depend only on the text

    start = time.perf_counter()
    with pytest.warns(UserWarning, match="truncated"):  # a few sample prompts exceed 32 tokens
        ids, mask = tok(unique)
    ours_s = time.perf_counter() - start
    ref_ids, ref_mask = reference_ids(unique)
    assert ids.dtype == mask.dtype == torch.int64
    mismatched = (ids != ref_ids).any(1).nonzero().flatten().tolist()
    assert not mismatched, [unique[i] for i in mismatched[:10]]
    assert torch.equal(mask, ref_mask)
    print(f"{len(unique)} unique prompts tokenized in {ours_s:.2f} s")


EDGE_CASES = [
    "a photo of a cat",
    "  Leading and   trailing\twhitespace\n\n",
    "UPPER lower MiXeD",
    "Café naïve Ünïcödé façade",
    "e\u0301 vs \u00e9",  # NFC
    "ﬁ ligature ＦＵＬＬＷＩＤＴＨ",
    "😀 🐱‍👤 👩‍👩‍👧‍👦 🇫🇷 emoji",
    "日本語のテキスト 中文 한국어",
    "Ελληνικά кириллица עברית العربية हिन्दी",
    "zero\u200bwidth nb\u00a0space ideographic\u3000space",
    "don't we'll it's they're I've I'm you'd",
    "!!!???... ,,, ;;; --- ((())) [x] {y} <z>",
    "a.b,c;d:e!f?g",
    "1234567890 3.14 1,000,000 2nd",
    "ß ẞ İ ı Σσς",
    "Ⅻ ½ ² ⅓",
    "tab\tnew\nline\rcarriage",
    "\x1cfile\x1dgroup\x1erecord\x1funit separators",
    "<|endoftext|>",
    "a<|startoftext|>b<|endoftext|>c",
    "<|ENDOFTEXT|> in capitals",
    "hello</w>world",
    "\ufffd replacement \U0001f600",
    "x",
    "a" * 300,
    "word " * 40,
    "the red car parked next to the tall building on the left side of the road near a tree and a bench",
]


def test_edge_cases_match_reference(tok):
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = tok(EDGE_CASES)
    ref_ids, ref_mask = reference_ids(EDGE_CASES)
    for i, text in enumerate(EDGE_CASES):
        assert ids[i].tolist() == ref_ids[i].tolist(), text
    assert torch.equal(mask, ref_mask)


def test_known_clip_ids(tok):
    # Literal ids of OpenAI CLIP for this prompt, independent of any oracle code.
    assert tok.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_single_string_and_layout(tok):
    ids, mask = tok("a photo of a cat")
    assert ids.shape == mask.shape == (1, 32)
    n = int(mask.sum())
    assert ids[0, 0] == BOS_ID and ids[0, n - 1] == EOS_ID
    assert (ids[0, n:] == PAD_ID).all() and (mask[0, n:] == 0).all() and (mask[0, :n] == 1).all()
    assert tok.encode("a photo of a cat") == ids[0, :n].tolist()


def test_truncation_keeps_eos_and_warns(tok):
    long = "one two three four five six seven eight nine ten " * 5
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = tok(["short", long])
    assert ids[1, -1] == EOS_ID and mask[1].all()
    assert ids[1].tolist() == tok.encode(long)[:31] + [EOS_ID]
    assert torch.equal(ids, reference_ids(["short", long])[0])


@pytest.mark.parametrize("length", [8, 16, 77])
def test_other_context_lengths(length):
    texts = ["a cat", "a very long prompt " * 10, "dog"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long prompt is truncated at 8 and 16
        ids, mask = Tokenizer(length)(texts)
    ref_ids, ref_mask = reference_ids(texts, length)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)


@pytest.mark.parametrize("text", ["", " ", "\t\n ", "\u3000\u00a0", "\n\r"])
def test_empty_prompts_raise(tok, text):
    with pytest.raises(ValueError, match=r"text\[1\] is empty"):
        tok(["fine", text])


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_string_prompts_raise(tok, bad):
    with pytest.raises(TypeError, match=r"text\[0\] must be a str"):
        tok([bad])


def test_bad_context_length():
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer(2)


def test_decode_round_trip(tok):
    for text in ["a photo of a cat", "café 😀 日本"]:
        ids, _ = tok(text)
        assert tok.decode(ids[0]) == text
    assert tok.decode(tok.encode("Mixed   CASE")) == "mixed case"


def test_vocabulary_is_packaged():
    # The runtime needs no network and no checkpoint files: the merges ship inside the package.
    asset = resources.files("sam3lite").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz")
    assert asset.is_file()
    assert resources.files("sam3lite").joinpath("assets", "LICENSE-bpe_simple_vocab.txt").is_file()

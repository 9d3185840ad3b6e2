"""``text_mode="original"`` tokenization against EfficientSAM3's ``SimpleTokenizer`` algorithm, written out
here from its source (sam3/model/tokenizer_ve.py): clean (ftfy if installed, HTML unescaped twice,
whitespace collapsed, lowercased), CLIP's word pattern, byte-level BPE, ``[BOS] + ids + [EOS]``
zero-padded to the context length, truncated with EOS in the last slot."""

from __future__ import annotations

import gzip
import html
from importlib import resources

import pytest
import regex
import torch

from sam3lite.processing.tokenizer import Tokenizer, original_clean

PROMPTS = [
    "ear",
    "yellow school bus",
    "  A   Dog\tand\na CAT  ",
    "salt &amp; pepper shaker",
    "&amp;lt;b&amp;gt; double escaped",
    "person's umbrella",
    "café crème brûlée",
    "3 red cars, 12 bikes!!",
    "the man in the blue shirt standing to the left of the tall woman holding a very small dog",
    "日本の猫",
    "emoji 🐶 dog",
]


class OriginalTokenizer:
    """The algorithm of EfficientSAM3's SimpleTokenizer (no ftfy: the tests run where it may be absent)."""

    def __init__(self) -> None:
        raw = resources.files("sam3lite").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz").read_bytes()
        merges = [tuple(m.split()) for m in gzip.decompress(raw).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]]
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        chars, extra = list(printable), 0
        for b in range(256):
            if b not in printable:
                printable.append(b)
                chars.append(256 + extra)
                extra += 1
        self.byte_encoder = dict(zip(printable, [chr(c) for c in chars], strict=True))
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<sot>", "<eot>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

    def bpe(self, token: str) -> list[str]:
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def __call__(self, texts: list[str], context_length: int) -> torch.Tensor:
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            text = regex.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip().lower()
            ids = [49406]
            for word in self.pattern.findall(text):
                mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                ids += [self.encoder[t] for t in self.bpe(mapped)]
            ids.append(49407)
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = 49407
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@pytest.fixture(scope="module")
def oracle():
    return OriginalTokenizer()


@pytest.fixture(autouse=True)
def no_ftfy(monkeypatch):
    """The oracle skips ftfy (as the original does without it); make ours skip it too (the cleaning lives in
    the torch-free ``sam3lite.portable.tokenizer``, shared with the ONNX runtime)."""
    from sam3lite.portable import tokenizer

    monkeypatch.setattr(tokenizer, "_ftfy_fix_text", lambda: None)


@pytest.mark.parametrize("length", [16, 8, 32])
def test_ids_equal_the_original_algorithm(oracle, length):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long prompt is truncated at 8 and 16
        ids, mask = Tokenizer(length, "original")(PROMPTS)
    assert torch.equal(ids, oracle(PROMPTS, length))
    assert torch.equal(mask, (ids != 0).long())  # the original detector's padding mask


def test_padding_is_zero_and_truncation_keeps_eos():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids, mask = Tokenizer(16, "original")(["ear", PROMPTS[8]])
    assert ids[0, :3].tolist() == [49406, ids[0, 1].item(), 49407] and ids[0, 3:].eq(0).all()
    assert ids[1, -1] == 49407 and mask[1].all()


def test_html_entities_are_unescaped_twice_only_in_original_mode():
    assert original_clean("&amp;lt;b&amp;gt;") == "<b>"
    ours, _ = Tokenizer(16, "original")(["a &amp; b"])
    theirs, _ = Tokenizer(16, "original")(["a & b"])
    plain, _ = Tokenizer(16)(["a &amp; b"])
    assert torch.equal(ours, theirs) and plain[0, 3] != theirs[0, 3]


def test_decode_stops_at_the_padding():
    tok = Tokenizer(16, "original")
    ids, _ = tok(["yellow school bus"])
    assert tok.decode(ids[0]) == "yellow school bus"

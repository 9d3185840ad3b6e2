"""CLIP's byte-level BPE on the ``tokenizers`` library, with numpy outputs (no torch).

Ids equal those of transformers' ``CLIPTokenizer``: text is NFC-normalized, runs of whitespace become one
space, everything is lowercased, split with CLIP's word pattern, mapped to byte characters and merged
by BPE with an ``</w>`` end-of-word marker. Each prompt becomes ``BOS ... EOS`` padded with ``pad_id``
to the context length. Nothing is downloaded: the vocabulary is derived from
``assets/bpe_simple_vocab_16e6.txt.gz`` the way CLIP derives it.

``sam3lite.processing.Tokenizer`` (torch tensors) and the ONNX runtime both use ``encode_batch``.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from importlib import resources

import numpy as np
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.models import BPE

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
PAD_ID = 49407  # CLIP pads with EOS; RepMixer text layers see pad tokens, so the exact id matters.
VOCAB_SIZE = 49408
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"

# CLIP keeps the first 49152 - 256 - 2 merges: 256 byte tokens, 256 byte+</w> tokens, the merges and
# two special tokens make 49408 ids.
_NUM_MERGES = 49152 - 256 - 2
# CLIP's pre-tokenization: special tokens, English contractions, letter runs, single digits, and runs of
# anything else that is not whitespace.
_WORD_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP).

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 and up, in byte order.
    The dict order (printable bytes first) is CLIP's order of the 256 byte tokens in the vocabulary.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def bpe_file_bytes() -> bytes:
    """The packaged merges file (gzip), as shipped with sam3lite."""
    return resources.files("sam3lite").joinpath("assets", BPE_FILE).read_bytes()


def load_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id, 49408 entries) and merge list (48894 pairs) from the packaged merges file."""
    lines = gzip.decompress(bpe_file_bytes()).decode("utf-8").split("\n")
    # Line 0 is a version header; CLIP then uses a fixed number of merges.
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab[BOS_TOKEN] != BOS_ID or vocab[EOS_TOKEN] != EOS_ID:
        raise RuntimeError(f"corrupt {BPE_FILE}: got {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def bpe_backend() -> _HFTokenizer:
    """The shared ``tokenizers.Tokenizer`` (built once per process, ~0.5 s; never mutated afterwards)."""
    vocab, merges = load_bpe_vocab()
    tok = _HFTokenizer(BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token=EOS_TOKEN))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="removed", invert=True),
            # use_regex=True adds GPT-2's split on top of CLIP's. It only changes anything for a literal
            # "<|endoftext|>" in other casing, and the reference tokenizer does the same.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    # Literal special-token strings in a prompt map to their ids, as in the reference.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS_TOKEN, EOS_TOKEN)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, BOS_ID), (EOS_TOKEN, EOS_ID)]
    )
    return tok


def encode_batch(
    texts: Sequence[str], context_length: int, pad_id: int = PAD_ID, backend: _HFTokenizer | None = None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Tokenize N prompts to ``BOS ... EOS`` padded with ``pad_id`` to ``context_length``.

    ``backend`` defaults to ``bpe_backend()``; the ONNX runtime passes the ``tokenizer.json`` it
    loaded from an export directory (the same tokenizer, saved).

    Returns:
        ``input_ids`` [N, L] int64, ``attention_mask`` [N, L] int64 (1 on BOS..EOS, 0 on padding), and
        the indices of the prompts that were longer than L and truncated (to L tokens ending in EOS).

    Raises:
        TypeError: a prompt is not a str.
        ValueError: a prompt is empty or whitespace only.
    """
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text[{i}] must be a str, got {type(text).__name__}")
    ids = np.full((len(texts), context_length), pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), context_length), dtype=np.int64)
    truncated: list[int] = []
    backend = backend or bpe_backend()
    for i, enc in enumerate(backend.encode_batch(list(texts))):
        row = enc.ids
        if len(row) <= 2:  # BOS + EOS only: nothing but whitespace
            raise ValueError(f"text[{i}] is empty or whitespace only: {texts[i]!r}")
        if len(row) > context_length:
            row = row[: context_length - 1] + [EOS_ID]  # keep EOS: the text encoders pool / end on it
            truncated.append(i)
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask, truncated


def truncation_warning(texts: Sequence[str], truncated: list[int], context_length: int) -> str:
    """The one-line warning for prompts cut to the context length."""
    first = truncated[0]
    return (
        f"{len(truncated)} prompt(s) longer than the context length {context_length} were truncated "
        f"(first: text[{first}] = {texts[first]!r})"
    )

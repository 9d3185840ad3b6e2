"""CLIP's byte-level BPE on the ``tokenizers`` library, with numpy outputs (no torch).

Ids equal those of transformers' ``CLIPTokenizer``: text is NFC-normalized, runs of whitespace become one
space, everything is lowercased, split with CLIP's word pattern, mapped to byte characters and merged
by BPE with an ``</w>`` end-of-word marker. Each prompt becomes ``BOS ... EOS`` padded with ``pad_id``
to the context length. Nothing is downloaded: the vocabulary is derived from
``assets/bpe_simple_vocab_16e6.txt.gz`` the way CLIP derives it.

``text_mode="original"`` tokenizes as EfficientSAM3's ``SimpleTokenizer`` (the LiteText training code):
the text is first cleaned as there (ftfy's ``fix_text`` when ftfy is installed, HTML entities unescaped
twice, stripped), then tokenized the same way, padded with id 0 instead of EOS, and the attention mask
is ``ids != 0`` (as the original detector masks).

``sam3lite.processing.Tokenizer`` (torch tensors) and the ONNX runtime both use ``encode_batch``.
"""

from __future__ import annotations

import functools
import gzip
import html
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
ORIGINAL_PAD_ID = 0  # EfficientSAM3 pads with 0 (the token "!"), and its detector masks ids == 0
VOCAB_SIZE = 49408
# sam3lite.runtime.TEXT_MODES, repeated here because this layer imports nothing of ours (a test checks).
TEXT_MODES = ("transformers", "original")
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


def pad_id_for(text_mode: str) -> int:
    """The padding id of a text mode: EOS for ``"transformers"``, 0 for ``"original"``."""
    if text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {', '.join(TEXT_MODES)}; got {text_mode!r}")
    return ORIGINAL_PAD_ID if text_mode == "original" else PAD_ID


def original_clean(text: str) -> str:
    """EfficientSAM3's text cleaning before BPE: ftfy (when installed), HTML unescaped twice, stripped.

    Lowercasing and whitespace collapsing follow in the shared normalizer. ftfy is optional: without it
    the original code also skips it (with a warning); its effect is limited to mojibake and odd Unicode.
    """
    fix = _ftfy_fix_text()
    if fix is not None:
        text = fix(text)
    return html.unescape(html.unescape(text)).strip()


@functools.lru_cache(maxsize=1)
def _ftfy_fix_text():  # -> Callable[[str], str] | None
    try:
        import ftfy
    except ImportError:
        return None
    return ftfy.fix_text


def encode_batch(
    texts: Sequence[str],
    context_length: int,
    text_mode: str = "transformers",
    backend: _HFTokenizer | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Tokenize N prompts to ``BOS ... EOS`` padded to ``context_length`` as ``text_mode`` pads.

    ``backend`` defaults to ``bpe_backend()``; the ONNX runtime passes the ``tokenizer.json`` it
    loaded from an export directory (the same tokenizer, saved).

    Returns:
        ``input_ids`` [N, L] int64, ``attention_mask`` [N, L] int64 (1 on BOS..EOS, 0 on padding; in
        ``original`` mode ``ids != 0``, as the original detector masks, which also drops a real "!"
        token, id 0), and the indices of the prompts that were longer than L and truncated (to L tokens
        ending in EOS).

    Raises:
        TypeError: a prompt is not a str.
        ValueError: a prompt is empty or whitespace only; an unknown ``text_mode``.
    """
    pad_id = pad_id_for(text_mode)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text[{i}] must be a str, got {type(text).__name__}")
    ids = np.full((len(texts), context_length), pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), context_length), dtype=np.int64)
    truncated: list[int] = []
    backend = backend or bpe_backend()
    cleaned = [original_clean(t) for t in texts] if text_mode == "original" else list(texts)
    for i, enc in enumerate(backend.encode_batch(cleaned)):
        row = enc.ids
        if len(row) <= 2:  # BOS + EOS only: nothing but whitespace
            raise ValueError(f"text[{i}] is empty or whitespace only: {texts[i]!r}")
        if len(row) > context_length:
            row = row[: context_length - 1] + [EOS_ID]  # keep EOS: the text encoders pool / end on it
            truncated.append(i)
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    if text_mode == "original":
        mask = (ids != ORIGINAL_PAD_ID).astype(np.int64)
    return ids, mask, truncated


def truncation_warning(texts: Sequence[str], truncated: list[int], context_length: int) -> str:
    """The one-line warning for prompts cut to the context length."""
    first = truncated[0]
    return (
        f"{len(truncated)} prompt(s) longer than the context length {context_length} were truncated "
        f"(first: text[{first}] = {preview(texts[first])!r})"
    )


def preview(text: str, limit: int = 40) -> str:
    """The start of a long prompt for a message, cut at a word: ``"a dog that runs ..."``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[:limit]
    return (head.rsplit(" ", 1)[0] if " " in head else head) + " ..."

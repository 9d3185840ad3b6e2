"""transformers-side oracles shared by several test files: CLIP's tokenizer built from the packaged
BPE merges (no hub), and the reference image pipeline (Sam3Processor + model + post-processing)."""

from __future__ import annotations

import gzip
import json
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch


def _clip_byte_table() -> dict[int, str]:
    # OpenAI CLIP's bytes_to_unicode: printable bytes keep their code point, the rest go to 256 + n.
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, [chr(c) for c in chars], strict=True))


def write_clip_vocab_files(directory: Path) -> Path:
    """vocab.json + merges.txt of CLIP, from the packaged merges file."""
    raw = resources.files("sam3lite").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    merges = gzip.decompress(raw).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(_clip_byte_table().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


@lru_cache(maxsize=1)
def clip_oracle():
    """transformers.CLIPTokenizer (the reference) on the CLIP vocabulary."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(write_clip_vocab_files(Path(tmp)))


def reference_pipeline(ref, image, prompt, threshold, boxes=None):
    from transformers import Sam3ImageProcessor, Sam3Processor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = Sam3Processor(Sam3ImageProcessor(size={"height": 112, "width": 112}), clip_oracle())
        inputs = processor(
            images=image, text=prompt, input_boxes=None if boxes is None else [boxes], return_tensors="pt"
        )
    with torch.no_grad():
        outputs = ref(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    return processor.post_process_instance_segmentation(
        outputs, threshold=threshold, mask_threshold=0.5, target_sizes=inputs["original_sizes"].tolist()
    )[0]

"""Export: a trained student plus a base SAM3 checkpoint's other parts -> a Sam3LiteText checkpoint directory.

The directory holds ``config.json`` + safetensors (``sam3lite.load`` and transformers' ``AutoModel`` both
load it), the processor files and CLIP tokenizer files (``vocab.json``, ``merges.txt``,
``tokenizer_config.json``), and ``distillation.json`` (teacher, run, validation metrics).

The base must be the checkpoint whose text encoder was the teacher: its DETR heads were trained on the
teacher's text features, which the student imitates. Export checks that on a few validation prompts
stored in the run checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoints import Sam3LiteTextModel, load_state_dict_strict, read_checkpoint, resolve, skip_weight_init
from ..modeling.config import Sam3LiteTextConfig, TextConfig
from ..processing.processor import PREPROCESSOR_CONFIG, PROCESSOR_CONFIG, Processor
from ..processing.tokenizer import BOS_TOKEN, EOS_TOKEN, load_bpe_vocab
from .tower import TEXT_PREFIXES, TextTower, text_state
from .train import load_run

TEACHER_MIN_COSINE = 0.99  # base vs cached teacher features on the probe prompts (fp16 targets, any base dtype)
_LITE_SUBCONFIG_TYPES = {
    "geometry_encoder_config": "sam3_lite_text_geometry_encoder",
    "detr_encoder_config": "sam3_lite_text_detr_encoder",
    "detr_decoder_config": "sam3_lite_text_detr_decoder",
    "mask_decoder_config": "sam3_lite_text_mask_decoder",
}


def export(run: str | Path, base: str | Path, out: str | Path, log=print) -> Path:
    """Write the Sam3LiteText checkpoint directory ``out`` (which must not exist or be empty)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not empty; export never overwrites: pick another directory")
    student, ckpt = load_run(run)
    base_path = resolve(base)
    base_config, base_state = read_checkpoint(base_path)
    width = base_config.detr_encoder_config.hidden_size
    if width != student.out_dim:
        raise ValueError(f"--base {base} has detector width {width}, the student outputs {student.out_dim}")
    check_base_is_teacher(base_config, base_state, ckpt["probe"], str(base))

    config = litetext_config(base_config, student.text_config)
    state = {k: v for k, v in base_state.items() if not k.startswith(TEXT_PREFIXES)}
    state.update(student.state_dict())  # float32, whatever the base's dtype: features stay the trained ones
    with skip_weight_init():
        model = Sam3LiteTextModel(config)
    load_state_dict_strict(model, state, source=f"{base} + student of {run}")
    model.save_pretrained(out)
    _processor_for(base_path, config).save_pretrained(out)
    write_tokenizer_files(out, student.text_config.max_position_embeddings)
    info = {"run": str(run), "base": str(base), "step": ckpt["step"], "cache": ckpt["cache"], "val": ckpt["val"]}
    (out / "distillation.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log(f"exported {out} (student of {run} at step {ckpt['step']} + {base})")
    return out


def litetext_config(base: Sam3LiteTextConfig, text_config: TextConfig) -> Sam3LiteTextConfig:
    """The base detector's config with the student's text encoder (model_type ``sam3_lite_text``)."""
    data = base.to_dict()
    data.pop("architectures", None)
    data["model_type"] = "sam3_lite_text"
    data["text_config"] = text_config.to_dict()
    for key, model_type in _LITE_SUBCONFIG_TYPES.items():
        data[key] = {**data[key], "model_type": model_type}
    return Sam3LiteTextConfig.from_dict(data)


@torch.no_grad()
def check_base_is_teacher(
    config: Sam3LiteTextConfig, state: dict[str, torch.Tensor], probe: dict[str, torch.Tensor], name: str
) -> float:
    """Token cosine between the base's text features and the cached teacher targets; an error below 0.99."""
    tower = TextTower(config.text_config, config.detr_encoder_config.hidden_size)
    load_state_dict_strict(tower, text_state(state), source=f"--base {name} (text encoder)")
    ids, mask, targets = probe["input_ids"], probe["attention_mask"], probe["targets"].float()
    features = tower.eval()(ids, mask)
    real = mask.bool()
    cosine = float(F.cosine_similarity(features, targets, dim=-1)[real].mean())
    if cosine < TEACHER_MIN_COSINE:
        raise ValueError(
            f"--base {name}'s text encoder is not the teacher the student learned from (token cosine {cosine:.3f} "
            f"on the run's probe prompts); its DETR heads expect the teacher's features: pass the teacher's checkpoint"
        )
    return cosine


def _processor_for(base_path: Path, config: Sam3LiteTextConfig) -> Processor:
    """The base's processor settings when it has them, else defaults at the model's image size."""
    if base_path.is_dir() and any((base_path / f).is_file() for f in (PROCESSOR_CONFIG, PREPROCESSOR_CONFIG)):
        return Processor.from_pretrained(base_path)
    return Processor(image_size=config.image_size)


def write_tokenizer_files(directory: Path, context_length: int) -> None:
    """CLIP tokenizer files in the transformers layout (``CLIPTokenizer``), from the vocabulary sam3lite ships."""
    vocab, merges = load_bpe_vocab()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": context_length,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,  # CLIP pads with EOS (49407); the RepMixer blocks see pad tokens
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")

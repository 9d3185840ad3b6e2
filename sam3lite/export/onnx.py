"""``to_onnx``: a loaded detector -> an ONNX export directory that runs without PyTorch.

Writes ``image_encoder.onnx``, ``text_encoder.onnx`` and ``heads.onnx`` (see ``graphs``; weights in
``<graph>.onnx.data`` beside each), ``tokenizer.json`` and the manifest ``sam3lite_onnx.json``.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export). It traces with fake tensors, so the
full-size model exports without running a forward pass (in any dtype, on any machine) and the
dynamic axes (images, prompts, boxes) are symbolic: a Python branch on one of them fails the export
instead of being baked in silently, as the TorchScript tracer would. The legacy TorchScript exporter
(``dynamo=False``) was about 20x faster on the tiny test model but is deprecated since PyTorch 2.9.
Only standard ONNX ops come out (the geometry encoder's ``roi_align`` becomes ``RoiAlign``); every
graph passes ``onnx.checker`` and shape inference.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..modeling.detector import Sam3Detector
from ..modeling.quantize import is_quantized
from ..portable.manifest import MANIFEST_NAME, TEXT_MODES, Graph, Manifest, Tensor
from ..portable.tokenizer import BOS_ID, EOS_ID, bpe_backend, pad_id_for
from .graphs import (
    BOX_PAD,
    HEADS_INPUTS,
    HEADS_OUTPUTS,
    IMAGE_INPUTS,
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    HeadsGraph,
    ImageEncoderGraph,
    TextEncoderGraph,
    image_outputs,
)

SUPPORTED_OPSETS = range(17, 24)  # LayerNormalization needs 17; 23 is the newest this exporter targets
DTYPES = {"float32": torch.float32, "float16": torch.float16}
TOKENIZER_FILE = "tokenizer.json"
# Constant folding of the exported graphs: large enough for the ViT's stacked q/k/v weights
# (3 x 1024 x 1024), which the exporter's own optimizer leaves as a Concat run on every call.
_FOLD_LIMIT = 1 << 26

Log = Callable[[str], None]


class ExportError(ValueError):
    """A model or option that cannot be exported (one line, saying what to do)."""


def to_onnx(
    model: Sam3Detector,
    directory: str | os.PathLike,
    opset: int = 18,
    dtype: str = "float32",
    quantize: str | None = None,
    context_length: int | None = None,
    log: Log | None = None,
) -> Manifest:
    """Export ``model`` to ``directory`` (created; it must not exist or be empty).

    Args:
        model: a loaded ``Sam3LiteTextModel`` (random or trained weights), neither int8-quantized nor
            RepMixer-folded. It is copied to the CPU in ``dtype`` for the export; yours is left alone.
        opset: ONNX opset, 17..23.
        dtype: "float32" (CPU and GPU) or "float16" (GPUs: CUDA / TensorRT execution providers).
        quantize: None, or "int8": ONNX Runtime dynamic quantization of the image encoder's MatMuls
            (int8 weights per output channel, uint8 activations per tensor at run time), for CPUs. Its
            error against float32 is measured on a random image and stored in the manifest.
        context_length: T, the tokens per prompt the text encoder takes; None: the model's text mode's
            (32 as transformers' processor pads, or the position table's length in ``original`` mode).
        log: progress messages (one line per step), e.g. ``print``.

    Returns:
        The manifest written to ``directory/sam3lite_onnx.json``.

    Raises:
        ExportError: an unsupported option or model, a non-empty ``directory``, or a missing
            ``onnx`` / ``onnxruntime`` package.
    """
    log = log or (lambda message: None)
    onnx_lib = _require_onnx(quantize)
    directory = Path(directory)
    if context_length is None and isinstance(model, Sam3Detector):
        context_length = model.config.text_context_length
    text_mode = _check(model, directory, opset, dtype, quantize, context_length)
    directory.mkdir(parents=True, exist_ok=True)
    exported = _export_copy(model, dtype)
    size = exported.config.image_size
    level_sizes = _level_sizes(exported)
    width = exported.config.detr_encoder_config.hidden_size
    pixels = torch.zeros(2, 3, size, size)
    ids = torch.full((2, context_length), pad_id_for(text_mode), dtype=torch.long)
    ids[:, :3] = torch.tensor([BOS_ID, 320, EOS_ID])
    mask = (torch.arange(context_length) < 3).long().expand(2, -1).contiguous()
    features = tuple(torch.zeros(1, width, h, w, dtype=exported.dtype) for h, w in level_sizes)
    tokens = torch.zeros(2, context_length, width, dtype=exported.dtype)
    boxes = torch.full((2, 2, 4), 0.5)
    labels = torch.tensor([[1, 0], [1, BOX_PAD]])
    batch, prompts, num_boxes = (torch.export.Dim(n) for n in ("batch", "prompts", "boxes"))
    jobs = [
        (
            "image_encoder",
            ImageEncoderGraph(exported),
            (pixels,),
            IMAGE_INPUTS,
            image_outputs(exported),
            ({0: batch},),
        ),
        ("text_encoder", TextEncoderGraph(exported), (ids, mask), TEXT_INPUTS, TEXT_OUTPUTS, ({0: prompts},) * 2),
        (
            "heads",
            HeadsGraph(exported, level_sizes),
            (*features, tokens, mask, boxes, labels),
            HEADS_INPUTS,
            HEADS_OUTPUTS,
            (None, None, None, {0: prompts}, {0: prompts}, {0: prompts, 1: num_boxes}, {0: prompts, 1: num_boxes}),
        ),
    ]
    graphs = {}
    for name, module, args, inputs, outputs, dynamic in jobs:
        start = time.perf_counter()
        graphs[name] = _export_graph(
            onnx_lib, module, args, inputs, outputs, dynamic, opset, directory / f"{name}.onnx"
        )
        log(f"exported {name}.onnx ({time.perf_counter() - start:.0f} s)")
    del exported, jobs
    manifest = Manifest(
        graphs=graphs,
        image=_image_settings(model, size),
        text=_text_settings(context_length, text_mode),
        dtype=dtype,
        quantize=quantize,
        opset=opset,
        config=model.config.to_dict(),
        exporter={"sam3lite": _version("sam3lite"), "torch": torch.__version__, "onnx": onnx_lib.__version__},
    )
    bpe_backend().save(str(directory / TOKENIZER_FILE))
    if quantize == "int8":
        from .quantize import quantize_image_encoder

        manifest.accuracy["int8_vs_float32"] = quantize_image_encoder(directory, manifest, log)
    manifest.write(directory)
    log(f"wrote {directory / MANIFEST_NAME}")
    return manifest


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def _require_onnx(quantize: str | None) -> Any:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter's translator)
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the onnx extra ({err.name} is missing): pip install sam3lite[onnx]"
        ) from err
    if quantize:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ExportError("--quantize int8 needs onnxruntime: pip install sam3lite[onnx]") from err
    return onnx


def _check(
    model: Sam3Detector, directory: Path, opset: int, dtype: str, quantize: str | None, context_length: int | None
) -> str:
    """Raise ExportError for anything that cannot be exported; returns the model's text mode."""
    if not isinstance(model, Sam3Detector):
        raise ExportError(f"model must be a loaded sam3lite model (sam3lite.load), got {type(model).__name__}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported; use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} (default 18)"
        )
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if quantize not in (None, "int8"):
        raise ExportError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize and dtype != "float32":
        raise ExportError("--quantize int8 quantizes a float32 export (CPUs); use --dtype float32")
    if is_quantized(model):
        raise ExportError(
            "this model's image encoder is int8-quantized in PyTorch (quantize_image_encoder), which ONNX cannot "
            "express; export the float model and use --quantize int8 (ONNX Runtime's int8) instead"
        )
    if any(".reparam_conv." in key for key in model.state_dict()):
        raise ExportError(
            "this model's RepMixer branches are folded (reparameterize()); export the model as loaded, "
            "before reparameterize() (the export folds nothing away: ONNX Runtime fuses the branches itself)"
        )
    text_mode = getattr(model, "text_mode", "transformers")
    if text_mode not in TEXT_MODES:
        raise ExportError(f"text_mode {text_mode!r} is not supported by the ONNX export yet ({', '.join(TEXT_MODES)})")
    if not isinstance(context_length, int) or context_length < 3:
        raise ExportError(f"context_length must be an int >= 3, got {context_length!r}")
    table = model.config.text_config.max_position_embeddings
    if text_mode == "original" and context_length > table:
        raise ExportError(
            f"context_length {context_length} is longer than the text position table ({table}), which original "
            f"text mode does not resize; use at most {table}"
        )
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not an empty folder; export never overwrites: pick another")
    return text_mode


# ----------------------------------------------------------------------------------------------
# Exporting one graph
# ----------------------------------------------------------------------------------------------


def _export_copy(model: Sam3Detector, dtype: str) -> Sam3Detector:
    """A CPU copy of ``model`` in ``dtype`` (eval mode); the caller's model is not touched."""
    import copy

    target = DTYPES[dtype]
    if model.device.type == "cpu" and model.dtype == target:
        return model.eval()  # nothing to change; the export never modifies the model
    return copy.deepcopy(model).to(device="cpu", dtype=target).eval()


def _level_sizes(model: Sam3Detector) -> list[tuple[int, int]]:
    """(h, w) of the three FPN levels the heads read: 4x, 2x and 1x the patch grid."""
    grid = model.config.vision_config.backbone_config.grid_size
    return [(grid * 4, grid * 4), (grid * 2, grid * 2), (grid, grid)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and known-harmless warnings (the RoiAlign sampling-ratio note:
    torchvision's -1 and ONNX's 0 both mean adaptive sampling) stay out of the user's terminal."""
    import logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                yield
        finally:
            logging.getLogger("torch.onnx").setLevel(level)


def _export_graph(
    onnx_lib: Any,
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    dynamic: tuple[Any, ...],
    opset: int,
    path: Path,
) -> Graph:
    """Export, fold constants, save (weights in ``<file>.data``), check; returns the manifest entry."""
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        _fold_large_constants(program.model)
        program.save(str(path), external_data=True)
    onnx_lib.checker.check_model(str(path), full_check=True)  # full_check runs strict shape inference
    return _describe(onnx_lib, path, inputs, outputs)


def _fold_large_constants(model: Any) -> None:
    """Fold constant subgraphs of any size (the exporter's optimizer stops at 8192 elements)."""
    import onnx_ir.passes.common as passes
    from onnxscript.optimizer import fold_constants_ir

    fold_constants_ir(model, input_size_limit=_FOLD_LIMIT, output_size_limit=_FOLD_LIMIT)
    passes.RemoveUnusedNodesPass()(model)
    passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1024)(model)


def _describe(onnx_lib: Any, path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> Graph:
    """Names, shapes (dynamic axes by name) and numpy dtypes of a saved graph's inputs and outputs."""
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx_lib.load(str(path), load_external_data=False)
    inferred = onnx_lib.shape_inference.infer_shapes(model)

    def tensors(values: Any, names: tuple[str, ...]) -> list[Tensor]:
        found = {v.name: v for v in values}
        if set(found) != set(names):
            raise ExportError(f"{path.name}: graph has {sorted(found)}, expected {sorted(names)}")
        out = []
        for name in names:
            kind = found[name].type.tensor_type
            shape = [d.dim_param or d.dim_value for d in kind.shape.dim]
            out.append(Tensor(name, shape, str(tensor_dtype_to_np_dtype(kind.elem_type))))
        return out

    return Graph(path.name, tensors(inferred.graph.input, inputs), tensors(inferred.graph.output, outputs))


# ----------------------------------------------------------------------------------------------
# Manifest contents
# ----------------------------------------------------------------------------------------------


def _image_settings(model: Sam3Detector, size: int) -> dict[str, Any]:
    return {
        "size": [size, size],
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 1 / 255,
        "layout": "pixel_values [B, 3, S, S] float32, RGB",
        "resize": "straight to S x S (no aspect keep, no padding), bilinear with antialias on uint8 (PIL's filter)",
        "normalize": "(x - image_mean / rescale_factor) / (image_std / rescale_factor), i.e. (x - 127.5) / 127.5",
    }


def _text_settings(context_length: int, text_mode: str) -> dict[str, Any]:
    original = text_mode == "original"
    return {
        "tokenizer": TOKENIZER_FILE,
        "context_length": context_length,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
        "pad_id": pad_id_for(text_mode),
        "text_mode": text_mode,
        "cleaning": (
            "before BPE: ftfy.fix_text (when installed), html.unescape twice, strip (EfficientSAM3's)"
            if original
            else "none (the tokenizer's normalizer: NFC, whitespace runs to one space, lowercase)"
        ),
        "truncation": "prompts longer than context_length keep their first context_length - 1 tokens, then EOS",
        "attention_mask": "input_ids != 0 (as the original detector masks)"
        if original
        else "1 on BOS..EOS, 0 on padding",
        "empty_box_prompt_text": "visual",
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

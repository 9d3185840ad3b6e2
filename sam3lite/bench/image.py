"""Side-by-side benchmark: sam3lite against transformers' reference on one checkpoint and one input.

Both implementations get the same weights (a checkpoint directory, or full-size random weights of
a variant) and the same inputs, in one process. Each measurement is the median of ``repeats`` runs
after a warm-up; ratios are reference time / sam3lite time. transformers is needed (it is the
reference): ``pip install transformers==5.23.0``.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import VARIANTS, Sam3LiteTextModel, load, load_state_dict_strict, skip_weight_init
from ..modeling.config import Sam3LiteTextConfig
from ..predictor import Predictor
from ..processing.tokenizer import Tokenizer
from ..runtime import resolve_dtype

OUTPUTS = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg")
PROMPTS = ["ear", "yellow school bus", "person", "a red car parked on the street", "dog", "tree", "cup", "window"]


@dataclass
class BenchSettings:
    checkpoint: str | None = None  # directory in HF layout; None = random weights of ``variant``
    variant: str = "s0"
    device: str = "cpu"
    dtype: str = "float32"  # sam3lite's dtype; the reference is timed in float32 and in this dtype
    repeats: int = 3
    prompts: int = 8
    batch: int = 4
    threads: int | None = None
    compile: bool = False  # torch.compile sam3lite's parts (the reference stays eager)
    quantize: str | None = None  # "int8": also time sam3lite float32 with the int8 image encoder
    skip: list[str] = field(default_factory=list)  # measurement names to leave out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one warm-up run (seconds)."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


class PeakMemory:
    """Peak memory a block adds, in MiB: CUDA's allocator peak on a GPU, resident-set growth on CPU.

    On CPU a thread samples the RSS every millisecond (torch releases the GIL in its kernels);
    ``mib`` is the highest sample minus the RSS when the block began, None where RSS is unreadable.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        gc.collect()
        _malloc_trim()  # hand freed heap back to the OS so earlier work does not hide this block's growth
        self._start = self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.mib = (self._peak - self._start) / 2**20 if self._start else None


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights with realistic scales (BatchNorm stats and layer scales included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 or "layer_scale" in name:
                base = 1.0 if name.endswith("weight") and "norm" in name.lower() else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / max(p[0].numel(), 1) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def build_pair(settings: BenchSettings) -> tuple[torch.nn.Module, Sam3LiteTextModel, float]:
    """(reference float32, sam3lite float32, seconds sam3lite took to load) on the same weights."""
    from transformers import AutoModel
    from transformers import Sam3LiteTextConfig as RefConfig

    if settings.checkpoint:
        ref = AutoModel.from_pretrained(settings.checkpoint).eval()
        start = time.perf_counter()
        ours = load(settings.checkpoint)
        return ref, ours, time.perf_counter() - start
    config = VARIANTS[settings.variant].config()
    if config.is_sam3:
        raise ValueError("random-weight benchmarks support the LiteText variants (s0, s1, l)")
    ref = AutoModel.from_config(RefConfig(**_ref_kwargs(config))).eval()
    _randomize(ref)
    start = time.perf_counter()
    with skip_weight_init():
        ours = Sam3LiteTextModel(Sam3LiteTextConfig.from_dict(config.to_dict()))
    load_state_dict_strict(ours, ref.state_dict(), source="reference weights")
    return ref, ours.eval(), time.perf_counter() - start


def _ref_kwargs(config: Sam3LiteTextConfig) -> dict[str, Any]:
    data = config.to_dict()
    return {k: v for k, v in data.items() if k.endswith("_config")}


def _inputs(settings: BenchSettings, processor_size: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(max(settings.batch, 1), 3, processor_size, processor_size, generator=gen)
    ids, mask = Tokenizer(32)(PROMPTS[: settings.prompts])
    return {"pixels": pixels, "ids": ids, "mask": mask}


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double().cpu(), ref.double().cpu()
    return ((ours - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def run(settings: BenchSettings) -> dict[str, Any]:
    """All measurements; returns a JSON-able report."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    dtype = resolve_dtype(settings.dtype)
    ref32, ours32, load_s = build_pair(settings)
    data = _inputs(settings, ours32.config.image_size)
    px1 = data["pixels"][:1].to(device)
    ids1, mask1 = data["ids"][:1].to(device), data["mask"][:1].to(device)
    ids, mask = data["ids"].to(device), data["mask"].to(device)

    # float32 reference outputs: the accuracy yardstick for every configuration.
    ref32 = ref32.to(device)
    with torch.inference_mode():
        expected = ref32(pixel_values=px1, input_ids=ids1, attention_mask=mask1)
    rows: list[dict[str, Any]] = []
    configs = [("float32", ref32, ours32.to(device))]
    if dtype != torch.float32:
        configs.append((settings.dtype, copy.deepcopy(ref32).to(dtype), copy.deepcopy(ours32).to(device, dtype)))
    if settings.quantize == "int8":
        # Against the float32 reference, whose timings are taken once and reused.
        configs.append(("float32 + int8 image encoder", ref32, copy.deepcopy(ours32).quantize_image_encoder()))
    reference_times: dict[str, dict[str, Any]] = {}
    for label, ref, ours in configs:
        ours.reparameterize()
        if settings.compile:
            ours.compile_parts()
        rows += _measure(
            label, ref, ours, px1, ids1, mask1, ids, mask, data["pixels"].to(device), settings, device, reference_times
        )
        with torch.inference_mode():
            got = ours(pixel_values=px1.to(ours.dtype), input_ids=ids1, attention_mask=mask1)
        errors = {name: _rel_err(getattr(got, name), getattr(expected, name)) for name in OUTPUTS}
        rows.append({"name": f"rel. error vs float32 reference ({label})", **errors})
        del ref, ours
        gc.collect()
    del configs, ours32
    if not any("load to first result".startswith(s) for s in settings.skip if s):
        rows.append(load_to_first_result(settings, ref32, px1, ids1, mask1))
    return {
        "settings": settings.__dict__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": _device_name(device),
        },
        "sam3lite_load_s": load_s,
        "rows": rows,
    }


def load_to_first_result(
    settings: BenchSettings, ref32: torch.nn.Module, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> dict[str, Any]:
    """Seconds from a checkpoint directory on disk to the first output (load + one forward), each
    implementation once, in the benchmark dtype; the directory is ``--checkpoint`` or the random
    weights saved to a temporary directory."""
    from transformers import AutoModel

    device, dtype = torch.device(settings.device), resolve_dtype(settings.dtype)
    row: dict[str, Any] = {"name": f"load to first result ({settings.dtype})"}
    with tempfile.TemporaryDirectory() as tmp:
        directory = settings.checkpoint or tmp
        if not settings.checkpoint:
            ref32.save_pretrained(tmp)
        del ref32
        gc.collect()

        def reference() -> Any:
            model = AutoModel.from_pretrained(directory, dtype=dtype).to(device).eval()
            with torch.inference_mode():
                return model(pixel_values=pixels.to(dtype), input_ids=ids, attention_mask=mask)

        def ours() -> Any:
            model = load(directory, device=device, dtype=dtype)
            with torch.inference_mode():
                return model(pixel_values=pixels.to(dtype), input_ids=ids, attention_mask=mask)

        for who, fn in (("reference", reference), ("sam3lite", ours)):
            with PeakMemory(device) as peak:
                start = time.perf_counter()
                fn()
                _sync(device)
                row[f"{who}_s"] = time.perf_counter() - start
            row[f"{who}_peak_mib"] = peak.mib
            gc.collect()
    row["speedup"] = row["reference_s"] / row["sam3lite_s"]
    return row


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or "cpu"


def _measure(
    label, ref, ours, px1, ids1, mask1, ids, mask, pixels, settings, device, reference_times
) -> list[dict[str, Any]]:
    """Timed pairs (reference, sam3lite) for one configuration; ``reference_times`` keeps the
    reference's results per (model, measurement) so a second configuration against the same
    reference model does not time it again."""
    rep = settings.repeats
    dt = ours.dtype
    px1_ref, px1_ours = px1.to(dt), px1.to(dt)
    rows = []

    def pair(name: str, ref_fn: Callable[[], Any], ours_fn: Callable[[], Any]) -> None:
        if any(name.startswith(s) for s in settings.skip if s):
            return
        row: dict[str, Any] = {"name": f"{name} ({label})"}
        with torch.inference_mode():
            for who, fn in (("reference", ref_fn), ("sam3lite", ours_fn)):
                key = f"{id(ref)}/{name}"
                if who == "reference" and key in reference_times:
                    row.update(reference_times[key])
                    continue
                with PeakMemory(device) as peak:
                    row[f"{who}_s"] = median_time(fn, rep, device)
                row[f"{who}_peak_mib"] = peak.mib
                if who == "reference":
                    reference_times[key] = {"reference_s": row["reference_s"], "reference_peak_mib": peak.mib}
        row["speedup"] = row["reference_s"] / row["sam3lite_s"]
        rows.append(row)

    with torch.inference_mode():
        ref_vision = ref.get_vision_features(pixel_values=px1_ref)
        our_vision = ours.get_vision_features(px1_ours)
        our_text = ours.get_text_features(ids1, mask1)
    pair(
        "image encoder",
        lambda: ref.get_vision_features(pixel_values=px1_ref),
        lambda: ours.get_vision_features(px1_ours),
    )
    pair(
        "text encoder (8 prompts)",
        lambda: ref.get_text_features(input_ids=ids, attention_mask=mask),
        lambda: ours.get_text_features(ids, mask),
    )
    pair(
        "heads, 1 prompt",
        lambda: ref(vision_embeds=ref_vision, input_ids=ids1, attention_mask=mask1),
        lambda: ours(vision_embeds=our_vision, text_embeds=our_text),
    )
    pair(
        "full forward, 1 image x 1 prompt",
        lambda: ref(pixel_values=px1_ref, input_ids=ids1, attention_mask=mask1),
        lambda: ours(pixel_values=px1_ours, input_ids=ids1, attention_mask=mask1),
    )
    pair(
        f"1 image x {ids.shape[0]} prompts (reference: features reused by hand; sam3lite: Predictor)",
        lambda: _reference_many_prompts(ref, px1_ref, ids, mask),
        lambda: _predictor_many_prompts(ours, px1_ours, ids, mask),
    )
    if pixels.shape[0] > 1:
        px = pixels.to(dt)
        ids_b, mask_b = ids1.expand(px.shape[0], -1), mask1.expand(px.shape[0], -1)
        pair(
            f"batch of {px.shape[0]} images x 1 prompt",
            lambda: ref(pixel_values=px, input_ids=ids_b, attention_mask=mask_b),
            lambda: ours(pixel_values=px, input_ids=ids_b, attention_mask=mask_b),
        )
    return rows


def _reference_many_prompts(ref, pixels, ids, mask) -> None:
    vision = ref.get_vision_features(pixel_values=pixels)
    for i in range(ids.shape[0]):
        ref(vision_embeds=vision, input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1])


def _predictor_many_prompts(model, pixels, ids, mask) -> None:
    predictor = Predictor(model, text_cache_size=0)
    predictor.set_pixel_values(pixels, (480, 640))
    predictor.predict(text=PROMPTS[: ids.shape[0]], threshold=0.5)


def format_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (times in seconds, medians)."""
    lines = [
        "| measurement | reference (s) | sam3lite (s) | speedup | peak MiB (ref / ours) |",
        "|---|---:|---:|---:|---:|",
    ]
    errors = []
    for row in report["rows"]:
        if "speedup" in row:
            peaks = (row.get("reference_peak_mib"), row.get("sam3lite_peak_mib"))
            peak = " / ".join("-" if p is None else f"{p:.0f}" for p in peaks)
            times = f"{row['reference_s']:.3f} | {row['sam3lite_s']:.3f} | {row['speedup']:.2f}x"
            lines.append(f"| {row['name']} | {times} | {peak} |")
        else:
            errors.append("| " + row["name"] + " | " + " | ".join(f"{row[n]:.1e}" for n in OUTPUTS) + " |")
    lines += ["", "| accuracy | " + " | ".join(OUTPUTS) + " |", "|---|" + "---:|" * len(OUTPUTS), *errors]
    lines += ["", f"sam3lite model load: {report['sam3lite_load_s']:.2f} s; machine: {json.dumps(report['machine'])}"]
    return "\n".join(lines)


def save(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")

"""``sam3lite segment``: label images with every instance of each prompt, on one or many ranks.

Order of work, the same on every rank:

1. check the arguments, list the images, check ``--box`` against their sizes, and check that the
   output folder is new, empty or an earlier run with the same settings (``outdir``): cheap, before
   anything is loaded or written, so mistakes fail fast and leave nothing behind;
2. load the model, compute the text features of all prompts once;
3. join the other ranks; rank 0 prepares the output folder (``run.json`` first) and decides which
   images are done;
4. process this rank's shard of the pending images: DataLoader workers decode ahead, a batch of images
   goes through the image encoder at once, all prompts of an image go through the heads together;
5. rank 0 waits for all ranks, merges ``results.json`` / ``images.json`` and writes ``summary.json``.

Exit code: 0 when every image has its outputs, 1 when some image failed (named on stderr and in
``errors.jsonl``), 2 for a usage error (raised as ``ValueError`` before anything is written).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import masks_to_boxes
from tqdm import tqdm

from .. import runtime
from ..modeling.vision import VisionFeatures
from ..onnx import OnnxPredictor
from ..predictor import Predictor, PromptResult
from . import distributed
from .coco import merge
from .data import Batch, ImageDataset, Sample, make_loader
from .dataset import OBJECT_PROMPT, ObjectSpec, Prompts, build_prompts, check_boxes, check_object, parse_object
from .distributed import ProgressCounter, Ranks
from .inputs import ImageItem, Inputs, discover, shard
from .outdir import (
    FolderState,
    add_to_manifest,
    compact_manifest,
    inspect_folder,
    model_fingerprint,
    write_run_file,
)
from .overlay import draw_overlay
from .summary import RankStats, summarize, summary_line
from .writer import (
    ErrorLog,
    atomic_write_json,
    done_mask,
    image_record,
    output_paths,
    remove_stale_temporaries,
    write_image_outputs,
)

PREFIX = "sam3lite segment"


@dataclass
class SegmentOptions:
    """Everything ``sam3lite segment`` was asked to do (see the CLI help for each option)."""

    inputs: list[str]
    out: Path
    prompts: list[str] = field(default_factory=list)
    prompts_file: str | None = None
    boxes: list[str] = field(default_factory=list)
    points: list[str] = field(default_factory=list)  # "x,y[,label]" clicks on one object
    object_box: str | None = None  # "x0,y0,x1,y1" around that object
    model: str = "s0"
    tracker: str | None = None  # where the clicked object's tracker comes from (None: the model's own)
    backend: str = "torch"  # "onnx": ``model`` is an ONNX export directory, run in ONNX Runtime
    threshold: float = 0.5
    mask_threshold: float = 0.5
    device: str = "auto"
    dtype: str = "auto"
    text_mode: str | None = None  # None: the checkpoint's own (see sam3lite.load)
    quantize: str | None = None  # "int8": int8 image encoder on a float32 CPU model
    batch_size: int | None = None
    workers: int | None = None
    prompt_batch_size: int | None = None  # None: the Predictor's default for the device
    overwrite: bool = False
    overlay: bool = True
    image_root: str | None = None
    progress: bool = True


@dataclass
class _Run:
    """What the processing loop needs, built once."""

    options: SegmentOptions
    ranks: Ranks
    inputs: Inputs
    prompts: Prompts
    predictor: Predictor | OnnxPredictor
    errors: ErrorLog
    settings: dict[str, Any]  # what shaped the outputs: run.json's "settings"
    model: dict[str, str]  # run.json's "model": the name asked for and the files it resolved to
    cpu: _CpuPlan


@dataclass
class _CpuPlan:
    """Torch threads and loader workers planned together (``runtime.cpu_budget``), and its inputs."""

    threads: int
    workers: int
    busy: float  # cores other processes used at the start
    ceiling: int  # torch's threads before the run: never more than that


def run(options: SegmentOptions) -> int:
    """Run the whole command; returns the exit code (usage errors raise ``ValueError``)."""
    busy = runtime.busy_cores()  # measured first, before anything of ours runs
    saved_threads = torch.get_num_threads()
    try:
        return _run(options, busy, saved_threads)
    finally:
        torch.set_num_threads(saved_threads)  # a caller in this process keeps its own setting


def _run(options: SegmentOptions, busy: float, ceiling: int) -> int:
    from ..checkpoints import resolve

    started = time.perf_counter()
    ranks = distributed.from_environment()
    _check_options(options)
    inputs = discover(options.inputs, options.out, options.image_root)
    obj = parse_object(options.points, options.object_box)
    prompts = build_prompts(options.prompts, options.prompts_file, options.boxes, inputs.categories, obj)
    _check_inputs_stay_untouched(options, inputs.items)
    check_object(prompts, [item.path for item in inputs.items])
    for warning in check_boxes(prompts, [item.path for item in inputs.items]):
        if ranks.main:
            print(f"{PREFIX}: warning: {warning}", file=sys.stderr)
    device, dtype = _device_and_dtype(options)
    threads, workers = runtime.cpu_budget(options.workers, device, _ranks_here(), busy, ceiling)
    torch.set_num_threads(threads)  # from here on: model loading and text features too
    model_path = resolve(options.model)
    tracker_path = resolve(options.tracker) if options.tracker and prompts.object else None
    settings = run_settings(options, prompts, dtype, model_path, tracker_path)
    model = {"name": str(options.model), "path": os.path.abspath(model_path)}
    folder = inspect_folder(options.out, inputs.items, settings, options.overwrite, model)
    predictor, run_info = _load(options, prompts, model_path, tracker_path, device, dtype)
    errors = ErrorLog(options.out / "errors.jsonl")
    cpu = _CpuPlan(threads, workers, busy, ceiling)
    work = _Run(options, ranks, inputs, prompts, predictor, errors, settings, model, cpu)
    distributed.start(ranks)
    try:
        own_mask = _prepare_output(work, folder) if ranks.main else None
        mask = distributed.share_done_mask(ranks, own_mask, _fingerprint(inputs.items))
        stats = _process(work, mask)
        everyone = distributed.gather(ranks, stats)
        if not ranks.main:
            return 0  # rank 0 reports for the whole run and carries its exit code
        return _finish(work, everyone, time.perf_counter() - started, run_info)
    finally:
        distributed.stop(ranks)


def run_settings(
    options: SegmentOptions, prompts: Prompts, dtype: torch.dtype, model_path: Path, tracker_path: Path | None = None
) -> dict[str, Any]:
    """Everything that shapes the outputs, as recorded in ``run.json`` (see ``outdir``); a rerun with
    other values is refused. A new option that changes results adds its key here (and, if older runs
    had it in effect implicitly, its value to ``outdir.SETTING_DEFAULTS``)."""
    return {
        "model": model_fingerprint(model_path),
        "dtype": str(dtype).removeprefix("torch."),
        "quantize": options.quantize,
        "backend": options.backend,
        "text_mode": options.text_mode,  # None: the checkpoint's own, which the model fingerprint covers
        "threshold": options.threshold,
        "mask_threshold": options.mask_threshold,
        "prompts": prompts.texts,
        "category_ids": prompts.category_ids,
        "boxes": prompts.boxes,
        "box_labels": prompts.box_labels,
        "object": asdict(prompts.object) if prompts.object else None,
        "tracker": model_fingerprint(tracker_path) if tracker_path else None,  # None: the model file's own
    }


# ----------------------------------------------------------------------------------------------
# Checks and set-up
# ----------------------------------------------------------------------------------------------


def _check_options(options: SegmentOptions) -> None:
    for name in ("threshold", "mask_threshold"):
        value = getattr(options, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    for name in ("batch_size", "prompt_batch_size"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if options.workers is not None and options.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {options.workers}")
    if options.out.exists() and not options.out.is_dir():
        raise ValueError(f"--out {options.out} exists and is not a folder")


def _check_inputs_stay_untouched(options: SegmentOptions, items: list[ImageItem]) -> None:
    """Refuse a run whose outputs would land on one of its input images (e.g. --out inside the input
    folder with a file named like an output)."""
    inputs = {os.path.abspath(item.path) for item in items}
    for path in output_paths(options.out, items, options.overlay):
        if os.path.abspath(path) in inputs:
            raise ValueError(f"output {path} would overwrite an input image; choose another --out folder")


def _ranks_here() -> int:
    """Ranks on this machine (torchrun's ``LOCAL_WORLD_SIZE``): they share its cores."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _device_and_dtype(options: SegmentOptions) -> tuple[torch.device, torch.dtype]:
    """This rank's device and the model's dtype (``auto`` resolved; float32 for ``--quantize``).

    With ``--backend onnx`` the export fixed the dtype, and the inputs are prepared on the CPU.
    """
    if options.backend == "onnx":
        from .onnx_backend import check_onnx_options

        return torch.device("cpu"), check_onnx_options(options)
    device = runtime.select_device(options.device)
    dtype = runtime.select_dtype(options.dtype, device)
    if options.quantize:
        if device.type != "cpu":
            raise ValueError(f"--quantize {options.quantize} runs on the CPU, not {device} (add --device cpu)")
        dtype = torch.float32 if options.dtype == "auto" else dtype  # int8 products take float32 inputs
    return device, dtype


def _load(
    options: SegmentOptions,
    prompts: Prompts,
    path: Path,
    tracker: Path | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Predictor | OnnxPredictor, dict[str, Any]]:
    """Model on this rank's device, folded for inference; text features computed once, here. The
    tracker is loaded only for a clicked / boxed object (``--point``, ``--object-box``)."""
    if options.backend == "onnx":
        from .onnx_backend import load_onnx

        return load_onnx(options, prompts.texts, torch.get_num_threads())
    from ..checkpoints import load

    wanted = tracker if prompts.object else False  # None: the model file's own tracker
    model = load(path, device=device, dtype=dtype, text_mode=options.text_mode, tracker=wanted).reparameterize()
    if prompts.object and not model.has_tracker:
        raise ValueError(
            f"--point/--object-box need SAM3's tracker, which {options.model} has none of: add --tracker sam3 "
            "(facebook/sam3's tracker fits every LiteText model) or --tracker CHECKPOINT"
        )
    if options.quantize:
        model.quantize_image_encoder()
    # Cache every prompt: a dataset with more categories than the default cache would re-encode all
    # of them for every image.
    predictor = Predictor(
        model, text_cache_size=max(1024, len(prompts.texts)), prompt_batch_size=options.prompt_batch_size
    )
    if prompts.texts:
        predictor.text_features(prompts.texts)
    info = {
        "model": str(options.model),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "text_mode": model.text_mode,
    }
    if options.quantize:
        info["quantize"] = options.quantize
    return predictor, info


def _prepare_output(work: _Run, folder: FolderState) -> list[bool]:
    """Rank 0, before anyone writes: create the folder, record the settings, clear leftovers, decide
    what is done."""
    from .. import __version__

    out = work.options.out
    out.mkdir(parents=True, exist_ok=True)
    write_run_file(out, work.settings, work.model, __version__)
    remove_stale_temporaries(out)
    work.errors.reset()
    if folder.changed:
        print(f"{PREFIX}: new settings ({'; '.join(folder.changed)}): every image is redone", file=sys.stderr)
    if work.options.overwrite:
        return [False] * len(work.inputs.items)
    return done_mask(out, work.inputs.items, work.options.overlay)


def _fingerprint(items: list[ImageItem]) -> str:
    """A digest of the image list (names and ids), equal on every rank that sees the same inputs."""
    digest = hashlib.sha1()
    for item in items:
        digest.update(f"{item.name}\0{item.image_id}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Processing this rank's shard
# ----------------------------------------------------------------------------------------------


def _process(work: _Run, mask: list[bool]) -> RankStats:
    ranks, options = work.ranks, work.options
    pending = [i for i, done in enumerate(mask) if not done]
    finished = [i for i, done in enumerate(mask) if done]
    mine = [work.inputs.items[i] for i in shard(pending, ranks.rank, ranks.world_size)]
    stats = RankStats(ranks.rank, skipped=len(shard(finished, ranks.rank, ranks.world_size)))
    device = _device(work.predictor)
    batch_size = options.batch_size or (8 if device.type == "cuda" else 1)
    cpu = work.cpu
    dataset = ImageDataset(mine, work.predictor.image_settings, keep_rgb=options.overlay)
    loader = make_loader(dataset, batch_size, cpu.workers, pin_memory=device.type == "cuda")
    if loader.num_workers < cpu.workers:  # one batch needs no worker: the threads take its core
        threads, _ = runtime.cpu_budget(loader.num_workers, device, _ranks_here(), cpu.busy, cpu.ceiling)
        torch.set_num_threads(threads)
    stats.threads, stats.workers = torch.get_num_threads(), loader.num_workers
    counter = ProgressCounter(ranks)
    bar = tqdm(
        total=len(mine),
        desc=f"rank {ranks.rank}" if ranks.world_size > 1 else "segment",
        unit="img",
        position=ranks.local_rank,
        disable=not options.progress or len(work.inputs.items) <= 1 or not mine,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    with bar:
        for batch in loader:
            _process_batch(work, batch, dataset.items, stats, bar)
            overall = counter.add(len(batch.samples))
            if ranks.world_size > 1 and ranks.main:
                bar.set_postfix_str(f"all ranks {overall}/{len(pending)}", refresh=False)
            bar.update(len(batch.samples))
    stats.seconds = time.perf_counter() - start
    return stats


def _process_batch(work: _Run, batch: Batch, items: list[ImageItem], stats: RankStats, bar: tqdm) -> None:
    for sample in batch.samples:
        if sample.error is not None:
            _fail(work, items[sample.position], sample.error, stats, bar)
    good = batch.ok
    features = _encode_batch(work.predictor, batch.pixel_values) if good else []
    for sample, vision in zip(good, features, strict=True):
        item = items[sample.position]
        if isinstance(vision, str):
            _fail(work, item, f"image encoder: {vision}", stats, bar)
            continue
        try:
            stats.detections += _segment_one(work, item, sample, vision)
            stats.done += 1
        except Exception as err:  # this image fails, the run goes on
            _fail(work, item, f"{type(err).__name__}: {err}", stats, bar)


def _encode_batch(predictor: Predictor | OnnxPredictor, pixel_values: torch.Tensor) -> list[Any]:
    """Features of each image of the batch from one image-encoder pass; if the batch fails (out of
    memory, say), each image is tried alone, and the ones that still fail get the error message."""
    try:
        return _encode(predictor, pixel_values)
    except Exception as err:
        if pixel_values.shape[0] == 1:
            return [f"{type(err).__name__}: {err}"]
    if _device(predictor).type == "cuda":
        torch.cuda.empty_cache()
    return [item for j in range(pixel_values.shape[0]) for item in _encode_batch(predictor, pixel_values[j : j + 1])]


@torch.inference_mode()
def _encode(predictor: Predictor | OnnxPredictor, pixel_values: torch.Tensor) -> list[Any]:
    """One image-encoder pass over the whole batch -> each image's features, for ``set_features``."""
    if isinstance(predictor, OnnxPredictor):
        return predictor.encode_images(pixel_values.numpy())
    model = predictor.model
    vision = model.get_vision_features(pixel_values.to(model.device, non_blocking=True))
    return [_take(vision, j) for j in range(pixel_values.shape[0])]


def _device(predictor: Predictor | OnnxPredictor) -> torch.device:
    """Where the model runs (ONNX Runtime's inputs come from CPU memory)."""
    return torch.device("cpu") if isinstance(predictor, OnnxPredictor) else predictor.model.device


def _take(vision: VisionFeatures, i: int) -> VisionFeatures:
    """Image ``i`` of a batch of features, as a batch of one (views, no copies)."""
    return VisionFeatures(
        fpn_hidden_states=tuple(t[i : i + 1] for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(t[i : i + 1] for t in vision.fpn_position_encoding),
        last_hidden_state=vision.last_hidden_state[i : i + 1],
    )


def _segment_one(work: _Run, item: ImageItem, sample: Sample, vision: Any) -> int:
    """All prompts on one image, outputs written; returns the number of detections."""
    options, prompts, predictor = work.options, work.prompts, work.predictor
    predictor.set_features(vision, sample.size)
    with warnings.catch_warnings():
        # Boxes that stick out were reported once for the whole run (``check_boxes``).
        warnings.filterwarnings("ignore", message=r".*box\(es\) extend outside")
        results = (
            predictor.predict(
                text=prompts.texts,
                boxes=prompts.boxes,
                box_labels=prompts.box_labels,
                threshold=options.threshold,
                mask_threshold=options.mask_threshold,
            )
            if prompts.texts
            else []
        )
    if prompts.object is not None:
        results.append(segment_object(predictor, prompts.object))
    record = image_record(item, sample.size, results, prompts)
    overlay = draw_overlay(sample.rgb.numpy(), results) if options.overlay and sample.rgb is not None else None
    add_to_manifest(options.out, item.name)  # before the files: whatever exists of them is listed
    write_image_outputs(options.out, item, record, overlay)
    return len(record["detections"])


def segment_object(predictor: Predictor, spec: ObjectSpec) -> PromptResult:
    """The clicked / boxed object on the current image as a ``PromptResult`` named "object": its best
    mask (by predicted IoU), that mask's box, and the predicted IoU as the score; no instance when the
    tracker says the object is absent (object score logit <= 0) or the mask is empty."""
    answer = predictor.predict_object(
        points=spec.points, point_labels=spec.point_labels, box=spec.box, multimask_output=spec.multimask
    )
    mask = answer.masks[answer.best].unsqueeze(0)
    score = answer.iou_scores[answer.best].reshape(1).cpu()
    if answer.object_score_logit <= 0 or not bool(mask.any()):
        height, width = mask.shape[-2:]
        return PromptResult(OBJECT_PROMPT, mask.new_zeros((0, height, width)), torch.zeros(0, 4), score[:0])
    box = masks_to_boxes(mask).float().cpu() + torch.tensor([0.0, 0.0, 1.0, 1.0])  # pixel edges, as COCO's bbox
    return PromptResult(OBJECT_PROMPT, mask.cpu(), box, score)


def _fail(work: _Run, item: ImageItem, message: str, stats: RankStats, bar: tqdm) -> None:
    stats.failed += 1
    bar.write(f"{PREFIX}: failed: {item.path}: {message}", file=sys.stderr)
    work.errors.append(
        {"image": item.path, "name": item.name, "image_id": item.image_id, "error": message, "rank": stats.rank}
    )


# ----------------------------------------------------------------------------------------------
# The end (rank 0)
# ----------------------------------------------------------------------------------------------


def _finish(work: _Run, stats: list[RankStats], wall_seconds: float, run_info: dict[str, Any]) -> int:
    options = work.options
    report = merge(options.out, work.inputs.items, work.prompts)
    compact_manifest(options.out)
    info = {**run_info, "prompts": work.prompts.names, "threshold": options.threshold}
    summary = summarize(stats, report, len(work.inputs.items), wall_seconds, info)
    atomic_write_json(options.out / "summary.json", summary)
    failed = summary["failed"]
    lost = len(report.missing) - failed  # no output and no error this run: a rank's folder not shared?
    if lost > 0:
        print(f"{PREFIX}: {lost} image(s) have no output (is --out on a file system all ranks share?)", file=sys.stderr)
    for path in report.unreadable:
        print(f"{PREFIX}: unreadable output {path}; delete it and rerun", file=sys.stderr)
    if report.stale_detections:
        print(
            f"{PREFIX}: {report.stale_detections} detection(s) in earlier outputs are for prompts not asked now "
            "and were left out of results.json; rerun with --overwrite to redo those images",
            file=sys.stderr,
        )
    print(f"{PREFIX}: {summary_line(summary, str(options.out))}")
    problems = failed or report.unreadable or lost > 0
    return 1 if problems else 0

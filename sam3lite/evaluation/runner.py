"""Run a predictor over a ground-truth dataset and collect COCO results, resumably.

Each image file is encoded once (``set_image``) and asked every phrase it is paired with (SA-Co) or
every category name (COCO). Every prediction scoring above a low floor (0.05 by default) is kept:
cgF1 applies its own 0.5 threshold, and AP needs the low-scoring tail.

Resuming: ``OUT/parts/<hash of file name>.json`` holds one image's predictions per prompt, written
atomically as soon as the image is done, so a rerun (same model and settings, checked against
``OUT/run.json``) only computes the images, or prompts, that are missing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import PIL.Image
import PIL.ImageOps
from tqdm import tqdm

from .io import Dataset, read_json, write_json

PROMPT_BATCH = 8  # prompts per predict() call: bounds the full-size masks held at once (COCO has 80)


class PromptResultLike(Protocol):
    masks: Any  # torch.BoolTensor [N, H, W]
    boxes: Any  # torch.Tensor [N, 4] xyxy pixels
    scores: Any  # torch.Tensor [N]

    def to_rle(self) -> list[dict[str, Any]]: ...


class PredictorLike(Protocol):
    """What the runner needs of ``sam3lite.Predictor``."""

    def set_image(self, image: Any) -> Any: ...

    def predict(self, text: list[str], threshold: float, mask_threshold: float) -> list[PromptResultLike]: ...


@dataclass(frozen=True)
class Target:
    """One evaluation pair of an image: the prompt asked, and the ids its results are filed under."""

    image_id: Any
    category_id: Any
    prompt: str


@dataclass(frozen=True)
class Job:
    """One image file and every pair that uses it."""

    file_name: str
    height: int
    width: int
    targets: tuple[Target, ...]

    @property
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(t.prompt for t in self.targets))  # unique, in order


@dataclass(frozen=True)
class RunSettings:
    """What the predictions depend on; a resumed run must match the one that wrote the parts."""

    model: str
    score_floor: float = 0.05
    mask_threshold: float = 0.5


def plan_jobs(gt: Dataset, image_ids: Sequence[Any]) -> list[Job]:
    """Group the pairs of ``image_ids`` by image file, in order of first appearance."""
    first_cat = next(iter(gt.categories))
    grouped: dict[str, list[Target]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for image_id in image_ids:
        image = gt.images[image_id]
        name, size = str(image["file_name"]), (int(image["height"]), int(image["width"]))
        if sizes.setdefault(name, size) != size:
            raise ValueError(f"{gt.path}: {name} is listed with two different sizes")
        if gt.is_saco:
            targets = [Target(image_id, first_cat, image["text_input"].strip())]
        else:
            targets = [Target(image_id, c, cat["name"].strip()) for c, cat in gt.categories.items()]
        grouped.setdefault(name, []).extend(targets)
    return [Job(name, *sizes[name], tuple(targets)) for name, targets in grouped.items()]


def open_image(path: Path, height: int, width: int) -> PIL.Image.Image:
    """The image as the annotations see it: as stored, or EXIF-rotated if that is what fits."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = PIL.Image.open(path)
    if image.size != (width, height):
        image = PIL.ImageOps.exif_transpose(image)
    if image.size != (width, height):
        raise ValueError(f"{path} is {image.size[0]}x{image.size[1]}, the ground truth says {width}x{height}")
    return image


def result_to_instances(result: PromptResultLike, height: int, width: int) -> list[dict[str, Any]]:
    """One prompt's result -> COCO result fields (``segmentation`` RLE, ``bbox`` xywh, ``score``)."""
    if tuple(result.masks.shape[-2:]) != (height, width):
        raise ValueError(f"masks are {tuple(result.masks.shape[-2:])}, expected the image size {(height, width)}")
    rles = result.to_rle()
    out = []
    for rle, box, score in zip(rles, result.boxes.tolist(), result.scores.tolist(), strict=True):
        x0, y0, x1, y1 = box
        bbox = [round(x0, 2), round(y0, 2), round(max(x1 - x0, 0.0), 2), round(max(y1 - y0, 0.0), 2)]
        out.append({"segmentation": rle, "bbox": bbox, "score": float(score)})
    return out


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def predict_prompts(
    predictor: PredictorLike, image: PIL.Image.Image, prompts: Sequence[str], settings: RunSettings
) -> dict[str, list[dict[str, Any]]]:
    """Encode ``image`` once and answer every prompt, a few at a time."""
    predictor.set_image(image)
    out: dict[str, list[dict[str, Any]]] = {}
    for batch in _batches(prompts, PROMPT_BATCH):
        results = predictor.predict(text=batch, threshold=settings.score_floor, mask_threshold=settings.mask_threshold)
        for prompt, result in zip(batch, results, strict=True):
            out[prompt] = result_to_instances(result, image.size[1], image.size[0])
    return out


def part_path(out_dir: Path, file_name: str) -> Path:
    """Where one image's predictions are kept (a hash: file names may hold folders)."""
    return out_dir / "parts" / (hashlib.sha1(file_name.encode("utf-8")).hexdigest()[:20] + ".json")


def _load_part(path: Path, file_name: str) -> dict[str, list[dict[str, Any]]]:
    if not path.is_file():
        return {}
    part = read_json(path)
    if not isinstance(part, dict) or part.get("file_name") != file_name:
        return {}  # a hash collision or a foreign file: recompute
    return dict(part.get("prompts", {}))


def check_settings(out_dir: Path, settings: RunSettings) -> None:
    """Record the settings in ``OUT/run.json``; refuse to mix parts made with other ones."""
    manifest = out_dir / "run.json"
    if manifest.is_file():
        previous = read_json(manifest)
        if previous != asdict(settings):
            raise ValueError(
                f"{out_dir} holds predictions made with {previous}, not {asdict(settings)}: use another --out"
            )
    else:
        write_json(manifest, asdict(settings))


def run_job(predictor: PredictorLike, job: Job, images_dir: Path, out_dir: Path, settings: RunSettings) -> list[dict]:
    """One image's COCO results, from its part file where possible, computing what is missing."""
    path = part_path(out_dir, job.file_name)
    answers = _load_part(path, job.file_name)
    missing = [p for p in job.prompts if p not in answers]
    if missing:
        image = open_image(images_dir / job.file_name, job.height, job.width)
        answers.update(predict_prompts(predictor, image, missing, settings))
        write_json(path, {"file_name": job.file_name, "prompts": answers})
    return [
        {"image_id": t.image_id, "category_id": t.category_id, **instance}
        for t in job.targets
        for instance in answers[t.prompt]
    ]


def run_dataset(
    predictor: PredictorLike,
    jobs: Sequence[Job],
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: RunSettings,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every job (resuming from ``out_dir/parts``) and return all COCO result dicts."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    check_settings(out_dir, settings)
    predictions: list[dict[str, Any]] = []
    for job in tqdm(jobs, desc="images", unit="img", disable=not progress):
        predictions.extend(run_job(predictor, job, images_dir, out_dir, settings))
    return predictions


def job_image_ids(jobs: Sequence[Job]) -> list[Any]:
    """The pair (image) ids the jobs cover, for restricting metrics to what was run."""
    return list(dict.fromkeys(t.image_id for job in jobs for t in job.targets))

"""Counts of a run: per rank while it works, merged into ``summary.json`` and one line at the end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .coco import MergeReport


@dataclass
class RankStats:
    """One rank's work in this run.

    done: images processed now; failed: images that could not be; skipped: complete from before.
    seconds: time spent on its shard (model loading excluded).
    threads, workers: torch's intra-op threads and the image-decoding processes it used.
    """

    rank: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    detections: int = 0
    seconds: float = 0.0
    threads: int = 0
    workers: int = 0

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def summarize(
    stats: Sequence[RankStats], report: MergeReport, total: int, wall_seconds: float, run: dict[str, Any]
) -> dict[str, Any]:
    """The ``summary.json`` content.

    ``images_per_second`` is images done in this run over the slowest rank's processing time, i.e.
    the throughput of the whole run once the model is loaded; ``wall_seconds`` includes start-up.
    """
    done = sum(s.done for s in stats)
    busiest = max((s.seconds for s in stats), default=0.0)
    return {
        "images": total,
        "done": done,
        "failed": sum(s.failed for s in stats),
        "skipped": sum(s.skipped for s in stats),
        "with_outputs": report.records,
        "detections": sum(report.detections_per_prompt.values()),
        "detections_per_prompt": report.detections_per_prompt,
        "images_per_second": round(done / busiest, 3) if busiest > 0 else 0.0,
        "processing_seconds": round(busiest, 3),
        "wall_seconds": round(wall_seconds, 3),
        "world_size": len(stats),
        "ranks": [{**asdict(s), "seconds": round(s.seconds, 3)} for s in stats],
        **run,
    }


def summary_line(summary: dict[str, Any], out_dir: str) -> str:
    """``12 images: 10 done, 1 skipped, 1 failed; 3.10 images/s; 25 detections (cat 20, ear 5) -> out/``"""
    per_prompt = ", ".join(f"{prompt} {count}" for prompt, count in summary["detections_per_prompt"].items())
    images = f"{summary['images']} image{'s' if summary['images'] != 1 else ''}"
    return (
        f"{images}: {summary['done']} done, {summary['skipped']} skipped, "
        f"{summary['failed']} failed; {summary['images_per_second']:.2f} images/s; "
        f"{summary['detections']} detections ({per_prompt}) -> {out_dir}"
    )

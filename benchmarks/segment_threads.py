"""``sam3lite segment`` on a few cores, idle or shared with busy processes: wall time by thread setting.

    python benchmarks/segment_threads.py --cores 0,1 --busy 0 1 --repeats 3
    python benchmarks/segment_threads.py --code before=/tmp/old_checkout --code after=.   # compare code

Every run is pinned to ``--cores`` (sched_setaffinity), with ``--busy`` N spinning processes pinned
to the same cores beside it; a tiny random checkpoint and 16 random 640x480 images are made once.
Runs of the variants are interleaved, and the median wall time (start to exit, as a user waits) and
the median images/s of ``summary.json`` (model load excluded) are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(work: Path, images: int) -> None:
    """A tiny random S0-shaped checkpoint (tests/reference.py's config) and random photos."""
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from PIL import Image
    from reference import randomize_, tiny_config_dict

    import sam3lite

    model = sam3lite.Sam3LiteTextModel(sam3lite.Sam3LiteTextConfig.from_dict(tiny_config_dict("s0")))
    randomize_(model, seed=0).save_pretrained(work / "tiny")
    rng = np.random.default_rng(0)
    (work / "imgs").mkdir()
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(work / "imgs" / f"{i:03d}.jpg")


def spin() -> None:
    while True:
        pass


def run_once(work: Path, code: Path, cores: set[int], env_extra: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, images/s) of one segment run on ``cores``."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", **env_extra}
    command = [sys.executable, "-m", "sam3lite", "segment", str(work / "imgs"), "--prompt", "cat", "--prompt", "dog"]
    command += ["--model", str(work / "tiny"), "--out", str(out), "--no-progress", "--device", "cpu"]
    start = time.perf_counter()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores)
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return wall, json.loads((out / "summary.json").read_text())["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="0,1", help="cores to pin every process to (0,1)")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="spinning processes beside the run")
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=DIR", help="sam3lite checkouts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    cores = {int(c) for c in args.cores.split(",")}
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code] or [("current", ROOT)]
    settings = [("default threads", {}), ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"})]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_inputs(work, args.images)
        for busy in args.busy:
            import multiprocessing

            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
            for p in spinners:
                p.start()
                os.sched_setaffinity(p.pid, cores)
            try:
                times: dict[tuple[str, str], list[tuple[float, float]]] = {}
                for _ in range(args.repeats):
                    for label, code in codes:
                        for setting, env in settings:
                            times.setdefault((label, setting), []).append(run_once(work, code, cores, env))
            finally:
                for p in spinners:
                    p.kill()
            for (label, setting), runs in times.items():
                wall = statistics.median(r[0] for r in runs)
                speed = statistics.median(r[1] for r in runs)
                rows.append(f"| {len(cores)} | {busy} | {label} | {setting} | {wall:.1f} s | {speed:.2f} img/s |")
    print(f"{args.images} images 640x480, 2 prompts, tiny S0 checkpoint; medians of {args.repeats} interleaved runs")
    print("| cores | busy processes | code | threads | wall time | images/s (load excluded) |")
    print("|---:|---:|---|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

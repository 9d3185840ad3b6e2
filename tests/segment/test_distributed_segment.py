"""``sam3lite segment`` under torchrun: 2 CPU ranks (gloo) on a folder of generated images.

Every image is processed exactly once, the merged results equal a single-process run, and reruns
after deleted outputs or a killed rank complete only what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reference import randomize_, tiny_config_dict

from sam3lite import Sam3LiteTextConfig, Sam3LiteTextModel

PROMPTS = ("--prompt", "ear", "--prompt", "yellow school bus")
THRESHOLD = "0.15"  # the tiny random model scores 0.12-0.2: some kept, some not
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # one thread per rank, as torchrun would set


def write_images(folder: Path, count: int, size_range: tuple[int, int], seed: int) -> list[str]:
    """Random images in two subfolders, one of them a corrupt file; returns the good names."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(*size_range, 2))
        rel = Path("even" if i % 2 == 0 else "odd") / f"img{i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / rel)
        names.append(f"{rel.parent}__{rel.stem}")
    return names


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    model = Sam3LiteTextModel(Sam3LiteTextConfig.from_dict(tiny_config_dict("s0")))
    randomize_(model, seed=11).save_pretrained(root / "tiny")
    names = write_images(root / "images", 12, (60, 160), seed=0)
    (root / "images/odd/broken.png").write_bytes(b"not an image")
    return root, names


def segment_args(root: Path, out: str, *extra: str) -> list[str]:
    return ["segment", str(root / "images"), *PROMPTS, "--model", str(root / "tiny"), "--out", str(root / out),
            "--threshold", THRESHOLD, *extra]  # fmt: skip


def torchrun(*args: str, entry: str = "module", nproc: int = 2) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node N`` on ``-m sam3lite`` or the ``sam3lite`` script."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    target = (
        ["-m", "sam3lite"] if entry == "module" else ["--no-python", str(Path(sys.executable).with_name("sam3lite"))]
    )
    return subprocess.Popen(
        [*launcher, *target, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **ENV}, start_new_session=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def read(root: Path, out: str, name: str):
    return json.loads((root / out / name).read_text())


def test_two_ranks_equal_one_process_and_resume_after_deletions(setup):
    root, names = setup
    single = subprocess.run(
        [sys.executable, "-m", "sam3lite", *segment_args(root, "single")],
        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300,
    )  # fmt: skip
    code, out, err = finish(torchrun(*segment_args(root, "two")))
    # One corrupt image: named, logged, the others done; exit code 1 from rank 0, which torchrun
    # reports with its own launcher traceback; no rank raised (no frame inside the package).
    assert single.returncode == 1 and code == 1, err
    assert "odd/broken.png" in err and "/sam3lite/" not in err
    assert "13 images: 12 done, 0 skipped, 1 failed" in out

    summary = read(root, "two", "summary.json")
    ranks = summary["ranks"]
    assert summary["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
    assert sum(r["done"] + r["failed"] for r in ranks) == 13  # each image once, shards disjoint
    assert [r["done"] + r["failed"] for r in ranks] == [7, 6]
    for name in ("results.json", "images.json", *(f"{n}.json" for n in names)):
        assert read(root, "two", name) == read(root, "single", name), name
    errors = (root / "two/errors.jsonl").read_text().splitlines()
    assert len(errors) == 1 and json.loads(errors[0])["image"].endswith("broken.png")
    assert summary["detections_per_prompt"] == read(root, "single", "summary.json")["detections_per_prompt"]
    assert sum(summary["detections_per_prompt"].values()) == len(read(root, "two", "results.json")) > 0

    # Delete some outputs (one image loses only its overlay); rerun through the sam3lite script.
    deleted = names[1:4]
    for name in deleted:
        (root / "two" / f"{name}.json").unlink()
    (root / "two" / f"{names[5]}.overlay.png").unlink()
    kept = {n: (root / "two" / f"{n}.json").stat().st_mtime_ns for n in names if n not in deleted}
    kept.pop(names[5])
    code, out, err = finish(torchrun(*segment_args(root, "two"), entry="script"))
    assert code == 1 and "13 images: 4 done, 8 skipped, 1 failed" in out, err
    assert {n: (root / "two" / f"{n}.json").stat().st_mtime_ns for n in kept} == kept
    assert read(root, "two", "results.json") == read(root, "single", "results.json")


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"sam3lite" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process through /proc")
def test_killed_rank_loses_nothing_but_its_current_image(setup, tmp_path):
    root, _ = setup
    folder = tmp_path / "images"
    names = write_images(folder, 40, (400, 600), seed=1)  # big enough to take a few seconds
    args = ["segment", str(folder), *PROMPTS, "--model", str(root / "tiny"), "--out", str(tmp_path / "out"),
            "--threshold", THRESHOLD]  # fmt: skip
    proc = torchrun(*args)
    deadline = time.monotonic() + 240
    while len(list((tmp_path / "out").glob("*.json"))) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    pid = _rank_pid(proc.pid, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code != 0
    written = [p for p in (tmp_path / "out").glob("*.json") if p.stem in names]
    assert 0 < len(written) < len(names)
    for path in written:  # whatever exists is complete
        json.loads(path.read_text())

    code, out, err = finish(torchrun(*args))
    assert code == 0, err
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert (summary["skipped"], summary["done"], summary["failed"]) == (len(written), 40 - len(written), 0)
    assert f"40 images: {40 - len(written)} done, {len(written)} skipped, 0 failed" in out
    assert all((tmp_path / "out" / f"{n}.json").is_file() for n in names)
    assert not list((tmp_path / "out").glob(".*"))  # the killed rank's temporary files are gone
    assert {r["image_id"] for r in json.loads((tmp_path / "out/results.json").read_text())} <= set(range(40))

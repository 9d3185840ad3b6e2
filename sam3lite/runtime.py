"""Run-time choices that depend on the machine: which device, which inference dtype.

The lowest layer of the package: it imports nothing from sam3lite.

``--dtype auto`` means bfloat16 where the hardware runs it fast (CUDA compute capability 8.0+, x86
CPUs with AMX or AVX512-BF16, Apple MPS on macOS 14+), else float32: on other hardware bfloat16 is
emulated and slower.
"""

from __future__ import annotations

import functools
import os
import statistics
import time

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# How prompts are tokenized and encoded (docs/text_modes.md): "transformers" as transformers' port
# (pad with EOS to 32, padding masked inside the text encoder, position table resized to 32);
# "original" as the EfficientSAM3 code the LiteText weights were trained with (pad with 0 to the
# position table's length, no padding mask inside the encoder, detector padding = ids == 0).
TEXT_MODES = ("transformers", "original")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bfloat16 matrix instructions (AMX or AVX512-BF16) that oneDNN uses."""
    flags = cpu_flags()
    if flags:
        return any(flag in flags for flag in _CPU_BF16_FLAGS)
    # No /proc/cpuinfo: ask PyTorch's own probe (a private helper, hence the guard).
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe is not None else False


def fast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where ``device`` computes it fast, else float32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if device.type == "mps":
        return torch.bfloat16 if mps_has_bf16() else torch.float32
    return torch.float32  # anything else: float32 is the safe choice


def mps_has_bf16() -> bool:
    """True on Apple-silicon GPUs with macOS 14+, where MPS runs bfloat16 (float32 before)."""
    backend = getattr(torch.backends, "mps", None)
    newer = getattr(backend, "is_macos_or_newer", None)
    return bool(newer is not None and backend.is_available() and newer(14, 0))


def select_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"`` -> ``fast_dtype(device)``; any other name as ``sam3lite.load`` reads it."""
    return fast_dtype(device) if name == "auto" else resolve_dtype(name)


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def select_device(name: str) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is present, else MPS, else CPU; ``cuda`` -> ``cuda:LOCAL_RANK``.

    One process per GPU: torchrun starts one rank per GPU and each takes the GPU of its local rank.

    Raises:
        ValueError: an unknown name, or a device that this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        count = torch.cuda.device_count()
        rank = local_rank()
        if rank >= count:
            raise ValueError(f"local rank {rank} has no GPU: this machine has {count}; start at most {count} ranks")
        return torch.device("cuda", rank)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CPU; ``"auto"`` -> CUDA (this rank's GPU), else MPS, else CPU; anything else as given."""
    if device is None:
        return torch.device("cpu")
    if str(device) == "auto":
        return select_device("auto")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a valid torch device") from err


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` / ``"float32"`` / ``"bfloat16"`` / ``"float16"`` / a torch dtype -> torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {sorted(names)}")
    return names[dtype]


def check_text_mode(text_mode: str, argument: str = "text_mode") -> str:
    """``text_mode`` if it is one of ``TEXT_MODES``; else ValueError naming ``argument``."""
    if text_mode not in TEXT_MODES:
        raise ValueError(f"{argument} must be one of {', '.join(TEXT_MODES)}; got {text_mode!r}")
    return text_mode


# ----------------------------------------------------------------------------------------------
# CPU threads
# ----------------------------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (containers and
    ``taskset`` narrow it), else every core of the machine."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is not None:
        try:
            return max(1, len(getter(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 9, interval: float = 0.01) -> float:
    """Cores that other processes keep busy right now: the machine's runnable tasks (``/proc/loadavg``)
    less this process's, median of a few samples. 0 where the OS does not say (macOS, Windows)."""
    counts = []
    for k in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as fh:
                running = int(fh.read().split()[3].split("/")[0])
            own = sum(_task_running(task) for task in os.scandir("/proc/self/task"))
        except (OSError, ValueError, IndexError):
            return 0.0
        counts.append(max(0, running - own))
        if k + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


def _task_running(task: os.DirEntry) -> bool:
    with open(os.path.join(task.path, "stat"), encoding="ascii", errors="replace") as fh:
        return fh.read().rsplit(")", 1)[-1].split()[0] == "R"  # the state follows the (name)


def cpu_budget(
    workers: int | None, device: torch.device, ranks_here: int = 1, busy: float = 0.0, ceiling: int | None = None
) -> tuple[int, int]:
    """(torch intra-op threads, data-loading worker processes) for one of ``ranks_here`` ranks on this
    machine, together never more than its share of the free cores.

    More threads than free cores add no speed: they take turns, and torch's threads wait for the
    slowest of them at every operation, so one that lost its core stalls all (on a busy 2-core
    machine, 2 threads plus a decoding worker ran a small job 3-5x slower than 1 thread). ``busy``
    (``busy_cores()``) is what other processes use; the rank's share of the cores shrinks by the
    same fraction. ``workers`` None picks: on the CPU, where the model needs the cores, one worker
    per 4 cores (at most 4); on a GPU, every core but one for decoding (at most 4). Threads take
    what remains, but no more than ``ceiling`` (default: what torch uses now, which
    ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` may have lowered).
    """
    share = available_cores() / max(1, ranks_here)
    in_use = min(1.0, busy / max(1, os.cpu_count() or 1))
    free = max(1, round(share * (1.0 - in_use)))
    if workers is None:
        workers = min(4, free // 4) if device.type == "cpu" else min(4, free - 1)
    ceiling = torch.get_num_threads() if ceiling is None else ceiling
    threads = max(1, min(ceiling, free - workers))
    return threads, workers

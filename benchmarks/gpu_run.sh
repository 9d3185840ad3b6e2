#!/usr/bin/env bash
# The device benchmarks recorded in BENCHMARKS.md (one H200 lease): video tracking against
# transformers' Sam3TrackerVideoModel on the GPU, point prompts against Sam3TrackerModel on its CPU.
# Needs the wheels in .whl (transformers 5.23.0, pycocotools): see BENCHMARKS.md.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m sam3lite bench --video --device cuda --dtype bfloat16 --frames 64 --json "$OUT/video_cuda_bf16.json"
python3 -m sam3lite bench --tracker --threads 16 --repeats 3 --json "$OUT/tracker_cpu.json"
python3 -m sam3lite bench --video --device cuda --dtype float32 --frames 64 --json "$OUT/video_cuda_fp32.json"

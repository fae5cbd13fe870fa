#!/usr/bin/env bash
# The prepared GPU check (issue 17): about 8 minutes on one GPU, one JSON at the end.
#
#   benchmarks/gpu_check.sh [--dry-run] [--out FILE]
#
# On a GPU: the device tests on CUDA (DGI_TEST_DEVICE=cuda), one Beauty epoch per phase in bf16 timed
# by benchmarks/training_speed.py (dense, joint, decoder; 200 steps each, extrapolated), and the scale
# benchmark with DGI on the GPU (10k and 100k items; FAISS stays on the CPU). Beauty is prepared from
# $DGI_SHARED_DATA/amazon-beauty (default ../shared/data). --dry-run runs the same steps on the CPU
# on a small synthetic dataset in under a minute: what a machine without a GPU can check.
# The trainable text backbone (model.text_encoder=trainable, the packaged MiniLM) is timed the same way
# on the dense and joint phases (200 steps each on the GPU; 2 small steps of the dense phase in the dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
out=benchmarks/results/gpu-check.json
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
py=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false DGI_CACHE=${DGI_CACHE:-$work/cache}
started=$(date +%s)
if [ "$dry" = 1 ]; then
  device=cpu; steps=5; sizes=2000; queries=256; repeats=20
  "$py" -m dgi data synth --out "$work/data" --items 300 --examples 2000 > /dev/null
  backbone=(--steps 1 --phases dense --set train.batch_size=8 --set train.eval_examples=50)
  small=(--set model.width=32 --set model.context_layers=1 --set model.decoder_layers=1 --set model.attention_heads=2
         --set quantizer.codebook_sizes=[16,16,16] --set train.batch_size=64 --set train.eval_examples=200
         --set loss.sampled_negatives=64 --set train.precision=auto)
else
  device=cuda; steps=200; sizes=10000,100000; queries=1024; repeats=200
  "$py" -m dgi data prepare amazon-beauty --source "${DGI_SHARED_DATA:-../shared/data}/amazon-beauty" \
    --out "$work/data" > /dev/null
  backbone=(--steps 200 --phases dense,joint)
  small=(--set train.precision=bf16)
fi
t0=$(date +%s)
DGI_TEST_DEVICE=$device "$py" -m pytest -q -p no:cacheprovider tests/test_device.py > "$work/tests.txt" 2>&1 \
  && tests_ok=true || tests_ok=false
t1=$(date +%s)
"$py" benchmarks/training_speed.py --config configs/amazon-beauty.yaml --data "$work/data" --label "$device" \
  --steps "$steps" --set train.device="$device" "${small[@]}" --out "$work/speed.json" > "$work/speed.txt"
t2=$(date +%s)
"$py" benchmarks/training_speed.py --config configs/amazon-beauty.yaml --data "$work/data" --label "$device-trainable-backbone" \
  --set train.device="$device" "${small[@]}" --set model.text_encoder=trainable "${backbone[@]}" \
  --out "$work/backbone.json" > "$work/backbone.txt"
t2b=$(date +%s)
"$py" benchmarks/scale.py --sizes "$sizes" --queries "$queries" --repeats "$repeats" --device "$device" \
  --out "$work/scale.json" > "$work/scale.txt"
t3=$(date +%s)
"$py" - "$out" "$work" "$dry" "$tests_ok" "$((t1 - t0))" "$((t2 - t1))" "$((t2b - t2))" "$((t3 - t2b))" \
  "$(( $(date +%s) - started ))" <<'PY'
import json, sys
from pathlib import Path
from dgi.io import write_json
from dgi.provenance import git_commit, machine
out, work, dry, tests_ok, t_tests, t_speed, t_backbone, t_scale, total = sys.argv[1:]
work = Path(work)
write_json(out, {
    "dry_run": dry == "1", "git_commit": git_commit(), "machine": machine("cpu" if dry == "1" else "cuda"),
    "device_tests": {"passed": tests_ok == "true", "seconds": int(t_tests),
                     "summary": (work / "tests.txt").read_text().strip().splitlines()[-1]},
    "training_speed": {"seconds": int(t_speed), **json.loads((work / "speed.json").read_text())},
    "trainable_backbone": {"seconds": int(t_backbone), **json.loads((work / "backbone.json").read_text())},
    "scale": {"seconds": int(t_scale), **json.loads((work / "scale.json").read_text())},
    "total_seconds": int(total),
})
print(f"wrote {out} in {total} s; device tests passed: {tests_ok}")
PY

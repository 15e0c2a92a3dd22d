#!/usr/bin/env bash
# Train on a lent GPU machine from the pack, and back here export and compare the result
# (training/README.md, "On a GPU").
#
#   here, once:   .venv-train/bin/python -m training.gpu_pack --run training/configs/verity-sbi-research.json \
#                     --out training/gpu_pack.npz --max-mib 26 --eval-mib 3
#   on the GPU:   the device tool's run, from the repository root there:
#                     command: bash training/run_gpu.sh train      carry: ["training/gpu_pack.npz"]
#                     timeout_s: 600
#                 (writes $OUT/verity-sbi-gpu/{best.pt,config.json,history.json,device_eval.json,model.onnx}
#                 and $OUT/verity-sbi-gpu.log; extra arguments go to training.gpu_train)
#   back here:    training/run_gpu.sh import <the verity-sbi-gpu folder that came back>
#                 (export with calibration, the shipped models' second crop and picture calibration, then
#                 the source-held-out evaluation against both shipped models; ship only if it wins there,
#                 after training.video_eval --write)
#
# Environment: MINUTES (default 8: the whole training command, loading and evaluation included),
# PACK (default training/gpu_pack.npz), PYTHON (default python3: the one with torch on the GPU
# machine), VERSION (model version of the export, default 1.0.0), SHIFT (default /tmp/verity-shift),
# PICTVAL (the validation people's pictures, default /tmp/verity-pictval, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-train}
shift || true
case "$what" in
  train)
    out=${OUT:-/tmp/verity-gpu-out}
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    "${PYTHON:-python3}" -m training.gpu_train --pack "${PACK:-training/gpu_pack.npz}" \
      --out "$out/verity-sbi-gpu" --minutes "${MINUTES:-8}" "$@" 2>&1 | tee "$out/verity-sbi-gpu.log"
    ;;
  import)
    src=${1:?usage: training/run_gpu.sh import DIR (the verity-sbi-gpu folder that came back from the GPU)}
    name=$(basename "$src")
    mkdir -p "training/runs/$name"
    cp "$src/best.pt" "$src/config.json" "$src/history.json" "training/runs/$name/"
    if [ -f "$src/device_eval.json" ]; then cp "$src/device_eval.json" "training/runs/$name/"; fi
    .venv-train/bin/python -m training.export --run "training/runs/$name" --out "/tmp/$name" --name "$name" \
      --version "${VERSION:-1.0.0}"
    # the runtime's views of a face and a photo, as the shipped research model has them: its further
    # crop margins (tta.margins) and the count correction fitted on the validation people's pictures
    pictval=${PICTVAL:-/tmp/verity-pictval}
    if [ ! -f "$pictval/items.json" ]; then
      .venv/bin/python -m training.shift_eval --split val --per-source 200 --source faces-fairface \
        --source faces-london --source faces-canada --out "$pictval"
    fi
    margins=$(.venv/bin/python -c "from detector.manifest import load_manifest
print(*load_manifest('models/verity-sbi-research').tta.margins)")
    if [ -n "$margins" ]; then
      # shellcheck disable=SC2086  # one argument per margin
      .venv/bin/python -m training.crop_margins --sets "$pictval" --model "/tmp/$name" --write $margins
    fi
    .venv/bin/python -m training.picture_calibration --sets "$pictval" --model "/tmp/$name" --write
    # the comparison that decides: the new network last, so the difference column is new - research
    .venv/bin/python -m training.shift_eval --out "${SHIFT:-/tmp/verity-shift}" \
      --evaluate models/verity-sbi-research models/verity-sbi "/tmp/$name" --report "training/runs/$name/shift_eval.md"
    ;;
  *)
    echo "usage: training/run_gpu.sh train [gpu_train options] | import DIR" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# The GPU checks of issue #14 in one run of at most 10 minutes on a machine with one NVIDIA GPU, in this order:
#   1. benchmarks/irnn.py on the GPU (goal: the fused IRNN at least 5x the cell loop);
#   2. CNN training images per second on the GPU (benchmarks/cnn_throughput.py, cnn_deep and cnn_res, bf16);
#   3. experiment=fer2013_deep (the 4.8 M-parameter VGG-style net) trained on FER2013 Training with every face held on
#      the GPU (data.device=cuda) and bf16 autocast, stopped after 4.5 minutes if its 60 epochs are not done by then;
#      PublicTest accuracy (goal 71 %, the 2013 challenge winner);
#   4. python train.py experiment=submission2 scale=quick trainer=gpu (stage=all on the tiny generated set).
# Each step gets at most what is left of the 570 s budget; a failed step is recorded and the next one still runs.
# Everything lands in one output folder: numbers.json (every figure and each step's status and seconds),
# gpu_check.log (all output), logs.tar.gz (the runs' metrics, configs and report.md) and cnn_deep_fer2013.pt (the
# trained weights, a save_weights file in fp16 to stay under 16 MB; load_cnn(weights=...) reads it as fp32).
#
#   scripts/gpu_check.sh [OUT_DIR] [FER_TARBALL]
#
# OUT_DIR: the output folder (default: $OUT when set, else runs/gpu_check). FER_TARBALL: fer2013_train_publictest.tar.gz
# (train/ and test/ image folders, see shared/data/fer2013/SOURCE.md), default $FER_TAR. The GPU machine gets a copy
# of the working tree only, not ../shared: copy the tarball into an ignored path of the tree first and carry it,
# e.g. `cp ../shared/data/fer2013/fer2013_train_publictest.tar.gz data/` and carry `data/fer2013_train_publictest.tar.gz`,
# then run `scripts/gpu_check.sh "$OUT" data/fer2013_train_publictest.tar.gz`. Without a tarball step 1 trains on
# generated FER-style faces (a smoke test, not FER2013; numbers.json says which).
#
# Python: $PYTHON, else .venv/bin/python when present, else python3. The GPU image lacks some of setup.cfg's packages
# (hydra-core, omegaconf, av, opensmile, skops, wandb, ...): pass a folder of wheels as $WHEELS (installed with
# pip --no-index into a temporary site folder). The script first checks that every module imports and that CUDA is
# there, and stops before any GPU work if not.
#
# GPU_CHECK_TINY=1 runs every step on the CPU with tiny sizes (tests/scripts/test_gpu_check.py does, in a slow test),
# so that GPU time is never spent on a typo.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT_DIR="${1:-${OUT:-runs/gpu_check}}"
FER_TARBALL="${2:-${FER_TAR:-}}"
TINY="${GPU_CHECK_TINY:-0}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
LOG="$OUT_DIR/gpu_check.log"
NUMBERS="$WORK/numbers.tsv"
: >"$LOG"
: >"$NUMBERS"
export WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1 EMOTIW_ROOT="$WORK"

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY="$REPO/.venv/bin/python"
else
    PY=python3
fi
if [[ -n "${WHEELS:-}" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl \
        >>"$LOG" 2>&1 || { echo "gpu_check: installing the wheels of $WHEELS failed (see $LOG)"; exit 2; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [[ "$TINY" == 1 ]]; then
    DEVICE=cpu
    TRAINER=cpu
    CNN_EXTRA=(trainer.max_epochs=1 "model.deep_widths=[8,8,8,8]" data.batch_size=64 trainer.precision=32-true)
    IRNN_ARGS=(--batch 4 --frames 6 --features 64 --hidden 8 --rounds 1 --per-round 1 --warmup 1)
    SPEED_ARGS=(--batch 16 --steps 1 --rounds 1 --precision fp32)
    # generous: the CPU test shares a busy 2-core machine
    STEP_LIMIT=1800
    SHORT_LIMIT=900
else
    DEVICE=cuda
    TRAINER=gpu
    # max_time: training stops in time for the test, the export and the steps after it
    CNN_EXTRA=(trainer.precision=bf16-mixed +trainer.max_time=00:00:04:30)
    IRNN_ARGS=()
    SPEED_ARGS=(--batch 256 --steps 20 --rounds 3 --precision bf16)
    STEP_LIMIT=330
    SHORT_LIMIT=90
fi

# The whole run ends within BUDGET seconds (10 minutes on the GPU): each step gets at most what is left.
BUDGET="${GPU_CHECK_BUDGET:-$([[ "$TINY" == 1 ]] && echo 5400 || echo 570)}"
note() { printf '%s\t%s\n' "$1" "$2" >>"$NUMBERS"; }
say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
FAILED=0
# step NAME SECONDS CMD...: run CMD with a time limit, output to the log and to $WORK/NAME.out; record status, seconds
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((BUDGET - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        note "$name/status" "skipped (the ${BUDGET} s budget is spent)"
        FAILED=1
        say "$name skipped: no time left"
        return 1
    fi
    say "$name (at most $limit s): $*"
    local start=$SECONDS
    timeout --signal=TERM --kill-after=20 "$limit" "$@" 2>&1 | tee "$WORK/$name.out" >>"$LOG"
    local rc=${PIPESTATUS[0]}
    note "$name/seconds" "$((SECONDS - start))"
    note "$name/status" "$([[ $rc == 0 ]] && echo ok || echo "failed (exit $rc)")"
    [[ $rc == 0 ]] || { FAILED=1; say "$name failed (exit $rc)"; }
    return "$rc"
}

# 0. Preflight: every module imports, CUDA is there (GPU run), the data is readable. Nothing else runs otherwise.
say "python: $PY; output: $OUT_DIR; work: $WORK; tiny: $TINY"
step preflight "$SHORT_LIMIT" "$PY" - "$DEVICE" <<'EOF' || { say "preflight failed: fix the environment first"; exit 2; }
import importlib, sys
missing = []
for name in ("torch", "lightning", "torchmetrics", "hydra", "omegaconf", "sklearn", "cv2", "av", "opensmile",
             "skops", "wandb", "scipy", "pandas", "matplotlib"):
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - report every broken import at once
        missing.append(f"{name} ({type(err).__name__}: {err})")
if missing:
    sys.exit("missing or broken modules: " + "; ".join(missing))
import torch
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch " + torch.__version__)
    print("gpu:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
print("torch", torch.__version__)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1

# 1. IRNN: fused vs the cell loop.
step irnn "$SHORT_LIMIT" "$PY" benchmarks/irnn.py --device "$DEVICE" "${IRNN_ARGS[@]}"
note irnn/cell_loop_over_fused "$(grep -o 'cell_loop / fused *= *[0-9.]*' "$WORK/irnn.out" | grep -o '[0-9.]*$')"

# 2. CNN training images per second.
for model in cnn_deep cnn_res; do
    step "speed_$model" "$SHORT_LIMIT" "$PY" benchmarks/cnn_throughput.py --device "$DEVICE" --model "$model" "${SPEED_ARGS[@]}"
    note "speed_$model/train_images_per_s" "$(tail -1 "$WORK/speed_$model.out")"
done

# 3. The deep CNN on FER2013 with the data on the GPU.
FER="$WORK/fer2013"
if [[ -n "$FER_TARBALL" ]]; then
    mkdir -p "$FER"
    tar -xzf "$FER_TARBALL" -C "$FER" || { say "cannot extract $FER_TARBALL"; exit 2; }
    note data "FER2013 Training + PublicTest from $FER_TARBALL"
else
    "$PY" -c "from emotiw.synth import make_fer, write_fer_images; write_fer_images('$FER', make_fer(20, seed=0))" \
        >>"$LOG" 2>&1 || { say "cannot generate FER-style faces"; exit 2; }
    note data "generated FER-style faces (no tarball given): not FER2013"
fi
step cnn_deep "$STEP_LIMIT" "$PY" train.py stage=cnn experiment=fer2013_deep "data.root=$FER" "data.device=$DEVICE" \
    data.num_workers=0 "trainer=$TRAINER" logger=csv "paths.root_dir=$WORK" "${CNN_EXTRA[@]}"
note cnn_deep/test_acc "$(grep -o 'test accuracy: [0-9.]*' "$WORK/cnn_deep.out" | tail -1 | cut -d' ' -f3)"
BEST="$WORK/runs/fer2013_deep/cnn/best.ckpt"
if [[ -f "$BEST" ]]; then
    "$PY" - "$BEST" "$OUT_DIR/cnn_deep_fer2013.pt" <<'EOF' >>"$LOG" 2>&1 || FAILED=1
import sys
import torch
from lightning_modules.cnn import CNNModule, save_weights
module = CNNModule.load_from_checkpoint(sys.argv[1], map_location="cpu")
val = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["callbacks"]
print("best checkpoint callbacks:", {k: v.get("best_model_score") for k, v in val.items() if isinstance(v, dict)})
save_weights(module.half(), sys.argv[2])  # fp16 on the way back (under 16 MB); load_cnn reads it as fp32
EOF
fi

# 4. The whole pipeline, quick scale, on the GPU trainer.
step stage_all "$STEP_LIMIT" "$PY" train.py experiment=submission2 scale=quick "trainer=$TRAINER" logger=csv \
    "paths.root_dir=$WORK"

# Collect: numbers.json, logs.tar.gz (metrics, configs, report) next to the log and the weights.
"$PY" - "$NUMBERS" "$OUT_DIR/numbers.json" <<'EOF'
import json, sys
rows = [line.rstrip("\n").split("\t", 1) for line in open(sys.argv[1]) if "\t" in line]
json.dump({k: v for k, v in rows}, open(sys.argv[2], "w"), indent=1)
EOF
(cd "$WORK" && find runs -name metrics.csv -o -name metrics.json -o -name resolved_config.yaml -o -name report.md \
    -o -name '*.log' | tar -czf "$OUT_DIR/logs.tar.gz" -T -) 2>>"$LOG"
say "numbers: $(tr '\n' ' ' <"$OUT_DIR/numbers.json")"
rm -rf "$WORK"
exit "$FAILED"

#!/usr/bin/env bash
# The GPUs this host's workers get, one per line, each what CUDA_VISIBLE_DEVICES takes for it: a GPU index, or the
# UUID of a MIG instance (a GPU split with MIG is not usable as a whole: each of its instances is one device).
# CUDA_VISIBLE_DEVICES, when set, is the list as given (indices or GPU-/MIG- UUIDs; empty or -1: none). Without
# nvidia-smi nothing is printed (a CPU host, whatever CUDA_VISIBLE_DEVICES says).
set -euo pipefail
command -v "${NVIDIA_SMI:-nvidia-smi}" >/dev/null || exit 0
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
  case "$CUDA_VISIBLE_DEVICES" in
    "" | -1 | none | NoDevFiles) exit 0 ;;
  esac
  tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | sed 's/^ *//; s/ *$//' | grep -v '^$' || true
  exit 0
fi
"${NVIDIA_SMI:-nvidia-smi}" -L 2>/dev/null | awk '
  /^GPU [0-9]+:/ { if (gpu != "" && !mig) print gpu; gpu = $2; sub(":", "", gpu); mig = 0; next }
  /^ +MIG / { if (match($0, /UUID: MIG-[^)]+/)) { print substr($0, RSTART + 6, RLENGTH - 6); mig = 1 } }
  END { if (gpu != "" && !mig) print gpu }
'

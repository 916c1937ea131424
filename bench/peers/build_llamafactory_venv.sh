#!/usr/bin/env bash
# Build LLaMA-Factory 0.9.5's own venv for the side-by-side CPT bench (it cannot share a process with
# transformers 5). Reproducible: every version pinned, torch installed first from the CPU wheel, a torchaudio
# stub because LF imports it at module level and no torchaudio build exists for torch 2.13.
# Usage: bench/peers/build_llamafactory_venv.sh [VENV]   (default: bench/.cache/lf-venv; idempotent)
set -euo pipefail
VENV="${1:-$(dirname "$0")/../.cache/lf-venv}"
if [ -x "$VENV/bin/llamafactory-cli" ] && "$VENV/bin/python" -c "import llamafactory" 2>/dev/null; then
  echo "LLaMA-Factory venv ready: $VENV"; exit 0
fi
python3 -m venv "$VENV"
PIP="$VENV/bin/pip install -q"
$PIP torch==2.13.0
PIN="$(mktemp)"; echo "torch==2.13.0" > "$PIN"
$PIP --no-deps llamafactory==0.9.5
$PIP -c "$PIN" transformers==4.57.1 trl==0.24.0 peft==0.18.1 datasets==4.0.0 accelerate==1.11.0 torchdata==0.11.0 \
  tyro==0.8.14 einops fire omegaconf pandas protobuf pydantic pyyaml safetensors scipy sentencepiece tiktoken \
  matplotlib fastapi sse-starlette uvicorn modelscope psutil
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$SITE/torchaudio" && echo '__version__ = "0.0.0+stub"' > "$SITE/torchaudio/__init__.py"
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
HF_HUB_OFFLINE=1 "$VENV/bin/llamafactory-cli" version | grep -q "0.9.5"
echo "LLaMA-Factory venv ready: $VENV"

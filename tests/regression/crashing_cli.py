"""Run the domaintune CLI with a fault injected: SIGKILL right after the checkpoint of a given
step is saved ("after-save"), or in the middle of writing it ("during-save"); or just slowly
("slow": STEP milliseconds longer per step, 400 when STEP is 0) so a test can send a signal mid-run.

Usage: python crashing_cli.py MODE STEP domaintune-args...
"""

import os
import signal
import sys

from domaintune.training import checkpoint, loop

mode, crash_step, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

if mode == "after-save":
    original = loop._maybe_save

    def _save_then_die(ckpt, step, *a, **k):
        original(ckpt, step, *a, **k)
        if step == crash_step:
            os.kill(os.getpid(), signal.SIGKILL)

    loop._maybe_save = _save_then_die
elif mode == "elastic":  # only rank 1 dies, only in torchrun's first attempt: a restart must recover
    original = loop._maybe_save

    def _rank1_dies_once(ckpt, step, *a, **k):
        original(ckpt, step, *a, **k)
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if step == crash_step and first_attempt and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    loop._maybe_save = _rank1_dies_once
elif mode == "during-save":
    original_save = checkpoint.save_file

    def _die_mid_write(tensors, filename, *a, **k):
        original_save(tensors, filename, *a, **k)
        if f"step-{crash_step:08d}" in filename:  # weights written, optimizer/meta not yet
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save_file = _die_mid_write
elif mode == "slow":  # every step takes STEP ms (0: 400 ms) longer, so a test can signal mid-run
    import time

    original = loop._maybe_save
    delay_s = (crash_step or 400) / 1000

    def _slow(*a, **k):
        time.sleep(delay_s)
        return original(*a, **k)

    loop._maybe_save = _slow
else:
    raise SystemExit(f"unknown mode {mode}")

from domaintune.cli import app  # noqa: E402  (after the patches)

app(args)

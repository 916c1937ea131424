"""Core training library shared by the training stages (train = CPT, sft, align).

The loop, collation, held-out eval, checkpoints and ONE resume policy (own and HF-trainer
checkpoints), guards, heartbeat, reporting, metrics log, plots, throughput, auto-eval, the
shared stage runtime (runner), the start model of a fine-tuning stage, and the HF-trainer
callbacks live here; a stage package reads top to bottom as a recipe and imports what it needs
from this library. Never imports a stage.
"""

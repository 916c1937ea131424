"""Core training library shared by the training stages (train = CPT, sft, align).

The loop, collation, held-out eval, checkpoints and resume, guards, reporting, metrics log,
throughput, auto-eval and the bridge to Hugging Face trainers live here; a stage package reads
top to bottom as a recipe and imports what it needs from this library. Never imports a stage.
"""

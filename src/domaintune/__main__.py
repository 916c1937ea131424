"""`python -m domaintune ...` (also what `torchrun -m domaintune train CFG` launches)."""

from domaintune.cli import app

app()

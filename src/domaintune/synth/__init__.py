"""Stage "synth": instruction synthesis with a teacher (doc_qa, self_instruct, evol, magpie,
augment, judge), exactly-once journaled, filtered and decontaminated; feeds sft through artifacts."""

from domaintune.synth.stage import inputs, run

__all__ = ["inputs", "run"]

"""Instruction data as a core library: formats, chat templates, assistant-only label masks,
truncation. No stage imports: the SFT stage (train/) and alignment build on it."""

"""`domaintune init`: write a commented starter domaintune.yaml and rules.yaml from a `Survey`, and
print what was found and what to edit.

The files are written as text, not dumped from the config model, so that every choice `init` made
carries a comment saying why and what else the key accepts. They are loaded back with the real
config loader and rules parser, and the command runs `domaintune validate`'s checks on them before
it reports success.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from domaintune.data.survey import Survey
from domaintune.errors import ConfigError

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONFIG_NAME, RULES_NAME = "domaintune.yaml", "rules.yaml"
LANGUAGE_CODES = {"zh", "en", "ja", "ko", "ru", "ar", "fr", "de", "es", "it", "pt", "nl"}
MIN_LANGUAGE_SHARE = 0.05  # a language below this share of the text is noise (a quote, a name)


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _source_lines(survey: Survey, out_dir: Path) -> list[str]:
    base = Path(os.path.relpath(survey.folder.resolve(), out_dir.resolve())).as_posix()
    lines = []
    for src in survey.sources:
        targets = [f"{base}/{src.pattern}"] if src.pattern else \
            [Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix() for p in src.paths]
        extra = "".join(f", {k}: {_q(v) if isinstance(v, str) else 'null'}" for k, v in src.settings().items())
        for n, target in enumerate(targets):
            name = src.name if len(targets) == 1 else f"{src.name}-{n + 1}"
            lines.append(f"    - {{name: {_q(name)}, path: {_q(target)}, stream: domain{extra}}}"
                         f"   # {len(src.paths)} {src.fmt} file(s)" * (n == 0))
    return lines


def _languages(survey: Survey) -> list[str]:
    found = [lang for lang, share in survey.languages if share >= MIN_LANGUAGE_SHARE]
    return sorted({lang if lang in LANGUAGE_CODES else "other" for lang in found})


def _tokens(survey: Survey) -> int:
    # at least a few rows of mix.seq_len (1024), which `domaintune validate` requires
    return max(4096, survey.approx_tokens)


def render_config(survey: Survey, out_dir: Path, model: str) -> str:
    langs = _languages(survey)
    lang_note = ", ".join(f"{lang} {share:.0%}" for lang, share in survey.languages[:4]) or "none found"
    pii_note = ", ".join(f"{t} {n}" for t, n in survey.pii.most_common()) or "none found"
    dup_note = f"{survey.exact_duplicates} exact, {survey.near_duplicates} near"
    quality = f"{{languages: [{', '.join(langs)}]}}" if langs and langs != ["other"] else "{}"
    return "\n".join([
        f"# Starter config written by `domaintune init {survey.folder}`: check every line marked EDIT.",
        "# Relative paths resolve against this file's folder. Validate with: domaintune validate domaintune.yaml",
        "name: " + _q(_run_name(survey.folder)),
        "runs_dir: runs",
        "seed: 0",
        "",
        "model:",
        f"  base: {_q(model)}   # EDIT: the base model (hub id, local folder or .gguf file)",
        "",
        "data:",
        "  sources:   # one per format found; stream 'domain' for all (EDIT: split into streams if you mix topics)",
        *_source_lines(survey, out_dir),
        "  normalize: {unicode: NFKC, whitespace: true}",
        f"  rules_file: {RULES_NAME}   # glossary terms protected from cleaning, rewrite rules",
        f"  quality: {quality}   # languages found: {lang_note}",
        "  pii:",
        "    enabled: true   # likely personal data found: " + pii_note,
        "    action: mask    # or hash (<EMAIL:3f2a9c1b>) or drop (reject the document)",
        "    suppress_context: false   # true lets words like 'order no.' hide a valid number (counted in the report)",
        "    allow: []       # EDIT: public contacts that must stay (a hotline, a support address)",
        "  exact_dedup: true",
        f"  near_dedup: {{enabled: true, threshold: 0.8}}   # duplicates in the sample: {dup_note}",
        "  split: {train: 0.8, val: 0.1, test: 0.1}",
        "",
        "mix:",
        "  mixture: {domain: 1}   # EDIT: add general english/chinese streams (e.g. 3:6:1) against forgetting",
        f"  tokens: {_tokens(survey)}   # about the folder's size in tokens (words + CJK characters); EDIT",
        "",
        "train:",
        "  method: lora   # qlora needs a CUDA GPU; full trains every weight",
        "",
    ])


def _run_name(folder: Path) -> str:
    name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in folder.resolve().name).strip("-.")
    return name or "domain"


def render_rules(survey: Survey) -> str:
    candidates = [(t, n) for t, n in survey.terms.most_common(30) if n >= 3][:15]
    lines = ["# Rules for the data stage (data.rules_file), written by `domaintune init`.",
             "# glossary: exact spellings no cleaning step may alter or split (product names, codes).",
             "# rewrites: Python regexes applied in order; `lang` limits a rule to one language."]
    if candidates:
        lines.append("# EDIT: terms seen often in the folder; uncomment the ones to protect:")
        lines += [f"#   - {_q(t)}   # {n} times" for t, n in candidates]
    lines += ["glossary: []", "rewrites: []",
              "# e.g. rewrites: [{pattern: '\\bFX\\b', replace: 'foreign exchange', lang: en}]", ""]
    return "\n".join(lines)


def write_starter(survey: Survey, out_dir: Path, model: str = DEFAULT_MODEL, force: bool = False) -> tuple[Path, Path]:
    """Write both files into `out_dir` and load them back; existing files are kept unless `force`."""
    config_path, rules_path = out_dir / CONFIG_NAME, out_dir / RULES_NAME
    existing = [str(p) for p in (config_path, rules_path) if p.exists()]
    if existing and not force:
        raise ConfigError([f"{p}: already exists; pass --force to overwrite it or --out to write elsewhere"
                           for p in existing])
    if not survey.sources:
        raise ConfigError([f"{survey.folder}: no file with a known format (jsonl, csv, txt, md, html, pdf, docx, "
                           "parquet); point init at the folder holding the documents"])
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(render_config(survey, out_dir, model), encoding="utf-8")
    rules_path.write_text(render_rules(survey), encoding="utf-8")
    _check(config_path, rules_path)
    return config_path, rules_path


def _check(config_path: Path, rules_path: Path) -> None:
    """Load both files back with the real parsers (the CLI then runs `domaintune validate`'s checks)."""
    from domaintune.config import load_config
    from domaintune.governance.rules import load_rules

    load_config(config_path, [])
    load_rules(rules_path, "data.rules_file")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_findings(survey: Survey, config_path: Path, rules_path: Path) -> None:
    """What the folder holds and what to edit before `domaintune run`."""
    from rich.markup import escape
    from rich.table import Table

    from domaintune.console import console

    table = Table(title=f"init: {survey.folder}", title_justify="left")
    for col in ("format", "files", "size"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for fmt, n in survey.files_by_format.most_common():
        table.add_row(fmt, str(n), _size(survey.bytes_by_format[fmt]))
    console.print(table)
    sampled = " (a sample: the first records of each file)" if survey.sampled else ""
    console.print(f"  documents read: {survey.docs:,}{sampled}; ~{survey.approx_tokens:,} tokens")
    langs = ", ".join(f"{lang} {share:.0%}" for lang, share in survey.languages[:5])
    console.print(f"  languages: {langs or 'none found'}")
    pii = ", ".join(f"{t}: {n}" for t, n in survey.pii.most_common())
    console.print(f"  likely personal data: {pii or 'none found'} in {survey.docs_with_pii} document(s)")
    console.print(f"  likely duplicates: {survey.exact_duplicates} exact, {survey.near_duplicates} near"
                  + "".join(f"\n    {escape(a)} ~ {escape(b)}" for a, b in survey.duplicate_examples))
    if survey.rejects:
        console.print("  unreadable: " + ", ".join(f"{r}: {n}" for r, n in survey.rejects.most_common()))
    if survey.skipped:
        shown = ", ".join(escape(p.name) for p in survey.skipped[:5])
        console.print(f"  [yellow]no reader[/] for {len(survey.skipped)} file(s): {shown}")
    console.print(f"[green]wrote[/] {config_path} and {rules_path} (they validate)")
    console.print("what to edit:\n"
                  "  - model.base: the model to adapt\n"
                  "  - data.sources: one stream 'domain' for all; add general-text streams and set mix.mixture\n"
                  "  - data.pii.allow: public contacts to keep; custom_patterns/dictionaries for your own ids\n"
                  f"  - {rules_path.name}: uncomment the glossary terms to protect\n"
                  f"then: domaintune validate {config_path} && domaintune run {config_path}")

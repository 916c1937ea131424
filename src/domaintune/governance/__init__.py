"""Core library: the governance of text, shared by the data stage (training text), the server (audit
redaction, rules) and synthesis (filters). It never imports a stage and takes plain parameters or a
config *section*, never the whole config; each builder takes the section's dotted `key` so errors
name what to fix.

- `pii`: `Redactor.from_config(section, key)` -> `redact(text) -> (text, findings)`,
  `redact_value(obj) -> (obj, counts)`; `PiiFinder` and the validators underneath.
- `normalize`: named text transforms (`transforms(...)`) run by a `Normalizer(steps, glossary)`
  that returns the text, the transforms that changed it and any damaged protected term.
- `glossary`: protected terms, masked while the transforms run.
- `rules`: the rules file (width, Chinese script, glossary, rewrites) and `load_rules(path, key)`.
- `langid`: offline language identification (`identify(text).code`).
- `neardup`: MinHash `signature(text)` / `Signer`, `NearDupIndex` (match a text against the ones
  kept so far), `cluster` (a whole list in keeper order), `exact_digest`.
"""

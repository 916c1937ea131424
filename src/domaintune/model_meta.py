"""What a trained model folder says about itself: full model or adapter, the stage and method that
made it, its base model (recorded by export or the stage manifest), read from JSON files only.
`models.load_trained` uses it to load the folder; nothing here loads weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from domaintune.config import ModelConfig
from domaintune.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"
EXPORT_RECORD = "domaintune_export.json"  # written by the export stage next to the model
MANIFEST = "manifest.json"  # a stage's manifest (artifacts.MANIFEST), one to three folders above its model


class TrainedMeta(NamedTuple):
    """Where a trained model came from, as far as its folder says."""

    path: str
    kind: str  # "full" (a complete model folder) or "adapter" (peft weights loaded onto `base`)
    stage: str | None  # the stage that wrote the folder (train, sft, align, export), when known
    method: str | None  # how it was trained: full, lora, qlora, prefix, ... when known
    base: str | None  # the base model: what an adapter was loaded onto, or what a full model started from
    base_from: str | None  # where `base` came from: argument, export, manifest, adapter_config
    tokenizer_from: str  # "saved" with the model, or "base" (none was saved)
    template_from: str  # chat template: "saved" with the model, "base" (none was saved) or "none"
    manifest: dict | None  # the stage manifest that lists this folder as its `model` output
    export: dict | None  # domaintune_export.json of a `domaintune export` folder

    def describe(self) -> str:
        what = f"adapter on {self.base}" if self.kind == "adapter" else "full model"
        made = " ".join(x for x in (self.stage and f"stage {self.stage}", self.method and f"({self.method})") if x)
        made = f", {made}" if made else ""
        return f"{what}{made}; tokenizer {self.tokenizer_from}, chat template {self.template_from}"


class Folder(NamedTuple):
    """A trained folder's description before anything is loaded."""

    kind: str
    base: ModelConfig | None
    base_from: str | None
    manifest: dict | None
    export: dict | None


def describe_folder(path: Path, base: ModelConfig | None = None) -> Folder:
    """Kind, base model (`base` wins) and records of the trained folder `path`; ModelError if it is
    not a model folder, or an adapter whose base is nowhere recorded."""
    kind = folder_kind(path)
    manifest, export = stage_manifest(path), read_json(path / EXPORT_RECORD)
    base_cfg, base_from = trained_base(path, base, manifest, export, kind)
    return Folder(kind, base_cfg, base_from, manifest, export)


def meta_of(path: Path, folder: Folder, tokenizer_from: str, template_from: str) -> TrainedMeta:
    return TrainedMeta(str(path), folder.kind, stage_of(folder.manifest, folder.export),
                       method_of(path, folder.kind, folder.manifest, folder.export),
                       folder.base.base if folder.base else None, folder.base_from, tokenizer_from, template_from,
                       folder.manifest, folder.export)


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}; restore it or re-run the stage that wrote it") from exc
    return data if isinstance(data, dict) else None


def folder_kind(path: Path) -> str:
    if is_adapter_dir(path):
        return "adapter"
    if (path / "config.json").is_file():
        return "full"
    what = "does not exist" if not path.exists() else "is not a model folder (no config.json or adapter_config.json)"
    raise ModelError(f"{path} {what}: pass a folder a stage or `domaintune export` wrote (e.g. "
                     f"runs/<name>/export/model), or import a GGUF with `domaintune models import-gguf`")


def stage_manifest(path: Path) -> dict | None:
    """The manifest of the stage whose `model` output is `path` (runs/<name>/<stage>/model, or deeper
    like sft/attempts/<method>/model); None for a folder outside a run. An unreadable manifest is
    skipped: it only adds metadata here, and the pipeline reports it where it matters."""
    resolved = path.resolve()
    for folder in list(resolved.parents)[:3]:
        try:
            m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out = m.get("outputs", {}).get("model") if isinstance(m, dict) else None
        if isinstance(out, str) and (folder / out).resolve() == resolved:
            return m
    return None


def trained_base(path: Path, base: ModelConfig | None, manifest: dict | None, export: dict | None,
                  kind: str) -> tuple[ModelConfig | None, str | None]:
    if base is not None:
        return base, "argument"
    for source, section in (("export", (export or {}).get("model")),
                            ("manifest", ((manifest or {}).get("config") or {}).get("model"))):
        if isinstance(section, dict):
            try:
                return ModelConfig.model_validate(section), source
            except ValueError as exc:
                if kind == "full":  # only metadata for a full model: it loads without its base
                    continue
                raise ModelError(f"the model section recorded for {path} ({source}) no longer validates: {exc}; "
                                 f"re-run the stage that wrote it") from exc
    named = (read_json(path / ADAPTER_CONFIG) or {}).get("base_model_name_or_path") if kind == "adapter" else None
    if named:
        return ModelConfig(base=named), "adapter_config"
    if kind == "adapter":
        raise ModelError(f"{path} holds an adapter but does not say which base model it belongs to (no "
                         f"{EXPORT_RECORD}, stage manifest or base_model_name_or_path in {ADAPTER_CONFIG}); export "
                         f"it merged (export.merge: true) or set base_model_name_or_path")
    return None, None


def stage_of(manifest: dict | None, export: dict | None) -> str | None:
    if manifest and manifest.get("stage"):
        return manifest["stage"]
    return "export" if export else None


def method_of(path: Path, kind: str, manifest: dict | None, export: dict | None) -> str | None:
    if manifest:
        stage = manifest.get("stage")
        method = (manifest.get("metrics") or {}).get("method") or \
            ((manifest.get("config") or {}).get(stage) or {}).get("method")
        if isinstance(method, str):
            return method
    if export and isinstance(export.get("method"), str):
        return export["method"]
    if kind == "adapter":
        peft_type = (read_json(path / ADAPTER_CONFIG) or {}).get("peft_type")
        return {"LORA": "lora", "PREFIX_TUNING": "prefix"}.get(peft_type, peft_type and str(peft_type).lower())
    return None

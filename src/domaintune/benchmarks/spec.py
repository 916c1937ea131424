"""The schema of a task definition (one YAML file per task, versioned), validated strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domaintune.config.load import load_yaml_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    path: str | None = Field(None, description="File or folder (relative to the task YAML), or "
                                               "'package:<name>/<path>' for a file shipped in a Python package.")
    format: Literal["auto", "jsonl", "csv"] = "auto"
    pattern: str = Field("*", description="Glob of the files to read when `path` is a folder.")
    subject_from_filename: str | None = Field(
        None, description="Regex with one group: the subject of every row of a file from its stem.")


class FieldsSpec(_Strict):
    question: str = "question"
    choices: list[str] | str | None = Field(
        None, description="Columns holding the options, or one field holding a list of options.")
    answer: str = "answer"
    answer_format: Literal["letter", "index", "text"] = "letter"
    subject: str | None = None


class PromptSpec(_Strict):
    template: str = Field(description="Item prompt; {question}, {subject} and each option label "
                                      "({A}, {B}, ...) are filled in.")
    description: str = Field("", description="Text before the shots and the question; may use {subject}.")
    fewshot_separator: str = "\n\n"
    target_delimiter: str = " "
    choice_labels: list[str] = ["A", "B", "C", "D"]
    continuation: Literal["label", "text"] = Field(
        "label", description="Score each option's label (' A') or its text (' Paris').")


class FewshotSpec(_Strict):
    shots: int = Field(0, ge=0)
    seed: int = 1234
    path: str | None = Field(None, description="Separate few-shot source (e.g. a dev split); default: "
                                               "the task's own items, never the item being asked.")


class GenerationSpec(_Strict):
    max_new_tokens: int = Field(256, ge=1)
    until: list[str] = Field(default_factory=lambda: ["\n\n"], description="Stop strings.")
    extract: str = Field("strip", description="Extractor applied to the model's output.")
    gold_extract: str = Field("strip", description="Extractor applied to the gold answer field.")


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = Field(description="Bump when prompts, data handling or scoring change.")
    kind: Literal["multiple_choice", "generation"]
    data: DataSpec = DataSpec()
    fields: FieldsSpec = FieldsSpec()
    prompt: PromptSpec
    fewshot: FewshotSpec = FewshotSpec()
    generation: GenerationSpec = GenerationSpec()
    chat_template: bool = Field(False, description="Wrap each prompt in the model's chat template.")

    @model_validator(mode="before")
    @classmethod
    def _version_as_text(cls, raw):
        if isinstance(raw, dict) and isinstance(raw.get("version"), (int, float)):
            raw = {**raw, "version": str(raw["version"])}
        return raw

    @model_validator(mode="after")
    def _choices_for_multiple_choice(self) -> TaskSpec:
        if self.kind == "multiple_choice" and not self.fields.choices:
            raise ValueError("multiple_choice tasks need fields.choices (the option columns)")
        return self


def read_spec(path: Path) -> TaskSpec:
    """Parse and validate one task YAML; every problem names its key and the file."""
    return load_yaml_model(path, TaskSpec, what="task file")

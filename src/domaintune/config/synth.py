"""The `synth` section: instruction synthesis with a teacher model (local or an OpenAI-compatible
endpoint), between the data stage and SFT. Outputs are consumed by `sft` through artifacts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import FilePath, ModelRef, Section

Lang = Literal["en", "zh"]


class TeacherConfig(Section):
    kind: Literal["local", "openai"] = Field(
        "local", description="local: a Hugging Face model folder run in-process (batched generate); openai: any "
                             "OpenAI-compatible endpoint, e.g. `domaintune serve`.")
    model: ModelRef | None = Field(None, description="local: model folder or hub id (default: model.base); openai: "
                                                     "the served model name.")
    url: str | None = Field(None, description="openai: base URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(None, description="openai: name of the environment variable holding the API "
                                                      "key (the key itself never goes in the config).")
    batch_size: int = Field(16, ge=1, description="local: rows decoded together; a row that stops hands its slot to "
                                                  "the next prompt of the journal batch (continuous batching).")
    journal_batch: int = Field(64, ge=1, description="Prompts committed to the journal together: a killed run "
                                                     "redoes at most this many; the local teacher refills its "
                                                     "batch_size slots from them.")
    context_cache_mb: int = Field(512, ge=0, description="local: memory for the KV of shared prompt prefixes (the "
                                                         "chat template's header, a doc_qa chunk), computed once for "
                                                         "a chunk's questions and answers; 0 disables it.")
    threads: int = Field(1, ge=1, description="local: torch threads (1 is fastest on a shared CPU).")
    timeout_s: float = Field(120.0, gt=0, description="openai: per-request timeout.")
    max_retries: int = Field(3, ge=0, description="openai: retries on 429/5xx/timeouts (exponential backoff).")
    requests_per_s: float | None = Field(None, gt=0, description="openai: client-side rate limit.")
    completions: bool = Field(True, description="openai: the endpoint offers /v1/completions (raw prompts; "
                                                "needed by magpie).")

    @model_validator(mode="after")
    def _endpoint(self) -> TeacherConfig:
        if self.kind == "openai" and (not self.url or not self.model):
            raise ValueError("teacher.kind 'openai' needs teacher.url (e.g. http://127.0.0.1:8000/v1) and "
                             "teacher.model (the served model name)")
        if self.kind == "local" and self.url:
            raise ValueError("teacher.url is only used with teacher.kind: openai")
        return self


class SamplingConfig(Section):
    temperature: float = Field(0.8, ge=0, description="0 = greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass (with temperature > 0).")
    max_new_tokens: int = Field(96, ge=1, description="Longest generated reply, in tokens.")


def _sampling(temperature: float, max_new_tokens: int, description: str):
    return Field(default_factory=lambda: SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens),
                 description=description)


class DocQAConfig(Section):
    chunk_chars: int = Field(600, ge=50, description="Train-split documents are cut into chunks of about this "
                                                     "many characters at sentence boundaries.")
    questions_per_chunk: int = Field(2, ge=1, le=10, description="Questions asked of each chunk.")
    max_chunks: int | None = Field(None, ge=1, description="Chunks at most (taken in document order).")
    streams: list[str] | None = Field(None, description="Data streams to read (default: all).")
    question: SamplingConfig = _sampling(0.8, 48, "Sampling of questions.")
    answer: SamplingConfig = _sampling(0.0, 80, "Sampling of answers (greedy by default).")


class SelfInstructConfig(Section):
    seeds: FilePath = Field(description="JSONL of seed tasks: {instruction, output?, lang?}.")
    num_instructions: int = Field(32, ge=1, description="New instructions to request.")
    examples_per_prompt: int = Field(4, ge=1, description="Pool tasks shown in each prompt.")
    sampling: SamplingConfig = _sampling(0.9, 48, "Sampling of the generated instructions.")
    answer: SamplingConfig = _sampling(0.0, 96, "Sampling of the answers (greedy by default).")


class EvolConfig(Section):
    source: Literal["seeds", "doc_qa"] = Field("doc_qa", description="Instructions to evolve.")
    operations: list[Literal["constraints", "deepen", "concretize", "reasoning", "breadth"]] = Field(
        default_factory=lambda: ["constraints", "deepen", "concretize", "reasoning", "breadth"],
        description="In-depth operations and in-breadth; one is picked per parent (deterministically).")
    max_parent_rouge: float = Field(0.9, gt=0, le=1, description="Elimination: an evolution this similar to its "
                                                                 "parent adds no information.")
    sampling: SamplingConfig = _sampling(0.7, 64, "Sampling of the generated instructions.")
    answer: SamplingConfig = _sampling(0.0, 96, "Sampling of the answers (greedy by default).")


class MagpieConfig(Section):
    num: int = Field(16, ge=1, description="Queries to sample from the pre-query prefix.")
    system_prompt: str | None = Field(None, description="Domain system turn (default: the template's own).")
    sampling: SamplingConfig = _sampling(1.0, 48, "Sampling of the generated instructions.")
    answer: SamplingConfig = _sampling(0.0, 96, "Sampling of the answers (greedy by default).")


class AugmentConfig(Section):
    rules_file: FilePath | None = Field(None, description="Rules file whose glossary (protected terms) and "
                                                          "synonyms drive term swaps (default: data.rules_file).")
    paraphrases: int = Field(1, ge=0, description="Teacher paraphrases of each question (protected terms kept).")
    sampling: SamplingConfig = _sampling(0.7, 64, "Sampling of the generated instructions.")


class JudgeConfig(Section):
    min_score: int = Field(3, ge=1, le=5, description="Pairs rated below this (1-5 rubric) are dropped.")
    preference_pairs: bool = Field(False, description="Also write dpo.jsonl: chosen = kept answer, rejected = the "
                                                      "lowest-rated answer to the same question.")


class FilterConfig(Section):
    min_chars: int = Field(8, ge=1, description="Shortest question/answer.")
    max_chars: int = Field(1200, ge=1, description="Longest question/answer.")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Drop an instruction whose ROUGE-L F1 to a seed or "
                                                                "an earlier kept one exceeds this.")
    neardup_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard of question+answer shingles.")
    neardup_ngram: int = Field(3, ge=1, description="Shingle length (words; CJK characters count as words).")
    grounding: bool = Field(True, description="Numbers (and capitalized entities) in an answer must occur in "
                                              "its source chunk (doc_qa).")
    decontam_ngram: int = Field(8, ge=3, description="n-gram overlap with an eval task item = contaminated.")
    heldout_ngram: int = Field(13, ge=3, description="n-gram overlap with a val/test document = contaminated.")


class SynthConfig(Section):
    """Instruction synthesis: doc_qa, self_instruct, evol, magpie, augment, judge."""

    language: Lang | Literal["auto"] = Field("auto", description="Prompt language; auto: per chunk/seed text.")
    methods: list[Literal["doc_qa", "self_instruct", "evol", "magpie", "augment", "judge"]] = Field(
        default_factory=lambda: ["doc_qa"], description="Methods to run, in this order.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The model that writes the data.")
    doc_qa: DocQAConfig = Field(default_factory=DocQAConfig, description="Questions + answers from train chunks.")
    self_instruct: SelfInstructConfig | None = Field(None, description="Seed expansion (needs seeds).")
    evol: EvolConfig = Field(default_factory=EvolConfig, description="Evol-Instruct rewriting.")
    magpie: MagpieConfig = Field(default_factory=MagpieConfig, description="Queries from the template prefix.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Term-aware augmentation.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Teacher rating pass (1-5 rubric).")
    filters: FilterConfig = Field(default_factory=FilterConfig, description="Filters, each counted in the report.")
    oracle: FilePath | None = Field(None, description="Answer key JSONL ({question, answer} or {question, choices, "
                                                      "answer index}) from a fact sheet: oracle correctness.")
    examples_in_report: int = Field(8, ge=0, description="Example pairs shown in synth_report.html.")

    @model_validator(mode="after")
    def _needs(self) -> SynthConfig:
        if "self_instruct" in self.methods and self.self_instruct is None:
            raise ValueError("methods includes self_instruct: set synth.self_instruct.seeds (a JSONL of seed tasks)")
        if "evol" in self.methods and self.evol.source == "seeds" and self.self_instruct is None:
            raise ValueError("evol.source 'seeds' needs synth.self_instruct.seeds")
        if self.judge.preference_pairs and "judge" not in self.methods:
            raise ValueError("judge.preference_pairs needs 'judge' in synth.methods (pairs are ranked by its scores)")
        if "magpie" in self.methods and self.teacher.kind == "openai" and not self.teacher.completions:
            raise ValueError("magpie continues a raw pre-query prefix, which a chat-only endpoint cannot do "
                             "(teacher.completions: false); use a local teacher or an endpoint with /v1/completions")
        return self

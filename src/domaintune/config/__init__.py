"""THE config: one strict pydantic root with one section per stage (see DESIGN.md).

Unknown keys are errors naming the dotted path with a did-you-mean; all problems are reported at
once; defaults and field docs live in the section modules; relative paths resolve against the
config file's folder; `key.path=value` overrides apply before validation; old key names are
migrated with a deprecation warning (migrate.py).
"""

from domaintune.config.align import (
    AlignConfig,
    ConfidenceFilterConfig,
    DPOSection,
    PreferenceDataConfig,
    RewardModelConfig,
)
from domaintune.config.base import (
    ConfigDeprecation,
    ConfigWarning,
    Count,
    CountOrZero,
    FilePath,
    Section,
    result_settings,
    volatile_keys,
)
from domaintune.config.data import (
    DataConfig,
    EngineConfig,
    LanguageCode,
    NearDedupConfig,
    NormalizeConfig,
    PiiConfig,
    PiiType,
    QualityConfig,
    SourceConfig,
    SplitConfig,
)
from domaintune.config.eval import EvalConfig, EvalTaskConfig, GateConfig
from domaintune.config.load import apply_overrides, format_validation_error, load_config, load_yaml_model
from domaintune.config.migrate import MOVES, migrate
from domaintune.config.runtime import RuntimeConfig, SuperviseConfig
from domaintune.config.schema import (
    MODEL_STAGES,
    STAGE_SECTIONS,
    Config,
    ExportConfig,
    MixConfig,
    ModelConfig,
)
from domaintune.config.serve import ServeConfig, TLSConfig, VLLMConfig, is_loopback
from domaintune.config.sft import PrefixConfig, SFTAutoConfig, SFTConfig, SFTDataConfig
from domaintune.config.synth import SynthConfig
from domaintune.config.training import (
    AdapterConfig,
    AutoEvalConfig,
    BatchConfig,
    CheckpointConfig,
    GuardConfig,
    LoggingConfig,
    NanGuardConfig,
    OptimConfig,
    TrainConfig,
)

__all__ = [
    "MODEL_STAGES", "MOVES", "STAGE_SECTIONS", "AdapterConfig", "AlignConfig", "AutoEvalConfig", "BatchConfig",
    "CheckpointConfig", "ConfidenceFilterConfig", "Config", "ConfigDeprecation", "ConfigWarning", "Count",
    "CountOrZero", "DPOSection", "DataConfig", "EngineConfig", "EvalConfig", "EvalTaskConfig", "ExportConfig",
    "FilePath", "GateConfig", "GuardConfig", "LanguageCode", "LoggingConfig", "MixConfig", "ModelConfig",
    "NanGuardConfig", "NearDedupConfig", "NormalizeConfig", "OptimConfig", "PiiConfig", "PiiType", "PrefixConfig",
    "PreferenceDataConfig", "QualityConfig", "RewardModelConfig", "RuntimeConfig", "SFTAutoConfig", "SFTConfig",
    "SFTDataConfig", "Section", "SynthConfig", "ServeConfig", "TLSConfig", "VLLMConfig", "is_loopback", "SourceConfig",
    "SplitConfig", "SuperviseConfig", "TrainConfig", "apply_overrides",
    "format_validation_error", "load_config", "load_yaml_model", "migrate", "result_settings", "volatile_keys",
]

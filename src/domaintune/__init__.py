"""domaintune: from an open base LLM to a governed enterprise domain model, from one YAML file."""

import logging as _logging

__version__ = "0.1.0"


class _TorchaoImportNoise(_logging.Filter):
    """torchao (imported by transformers whenever it is installed) warns on every start that its CUDA-only
    kernels do not load on a CPU machine and that it registers Enum constants the deprecated way; both are
    expected and bury real messages. Only those two messages are dropped."""

    def filter(self, record: _logging.LogRecord) -> bool:
        msg = record.getMessage()
        cuda_kernel = msg.startswith("Failed to load ") and ".so" in msg
        return not (cuda_kernel or "Calling register_constant() on Enum subclasses is deprecated" in msg)


_logging.getLogger("torchao").addFilter(_TorchaoImportNoise())
_logging.getLogger("torch.utils._pytree").addFilter(_TorchaoImportNoise())

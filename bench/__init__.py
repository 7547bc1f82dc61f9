"""commbench: benchmark communication optimizations for LLMs (bytes, latency, memory, accuracy)."""

import logging as _logging

__version__ = "0.1.0"

# Third-party import-time chatter that says nothing about a benchmark: torchao failing to
# load CUDA-only kernels on a CPU build, and torch's pytree deprecation notes for torchao's
# enums. Silenced before anything imports them; real warnings from those packages at
# ERROR level still show.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

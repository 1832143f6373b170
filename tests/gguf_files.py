"""Reading back what the tiny-model writers wrote: one tensor's values, a file's digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from omni_app.config import GgufHeader


def tensor_values(header: GgufHeader, name: str) -> np.ndarray:
    """The F16 or F32 tensor `name` in PyTorch order (GGUF ne reversed), copied out of the file."""
    info = header.tensors[name]
    dtype = np.float16 if info.ggml_type == GGMLQuantizationType.F16 else np.float32
    shape = tuple(reversed(info.ne))
    return np.array(np.memmap(header.path, dtype=dtype, mode="r", offset=info.offset, shape=shape))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

"""What every tiny-model writer shares: writing the tensors and closing a GGUF file."""

from __future__ import annotations

from collections.abc import Mapping

import gguf
import numpy as np


def write_tensors_and_close(writer: gguf.GGUFWriter, weights: Mapping[str, np.ndarray]) -> None:
    """Add `weights` in order (gguf pads each tensor to the 32-byte alignment), write the file, close it."""
    for name, array in weights.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

"""Write a GGUF model with every tensor dequantized to F32 (metadata unchanged).

Tests use it where outputs must not depend on the KV layout: quantized
activations (ggml rounds them to 8 bits for quantized weights) turn the last-digit
differences of attention's summation order into visible ones; in F32 they stay
in the last digits.

    python scripts/dequantize_gguf.py IN.gguf OUT.gguf
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np


def dequantize(src: Path, dst: Path) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # GGUFReader gives numpy shapes (outermost first), as GGUFWriter expects
        writer.add_tensor(tensor.name, data.reshape(data.shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    dequantize(Path(sys.argv[1]), Path(sys.argv[2]))

"""Reading numbers back out of a plotly chart spec, as AppTest hands it over."""

from __future__ import annotations

import base64

import numpy as np

DTYPES = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "u1": np.uint8, "i2": np.int16, "u2": np.uint16,
          "i4": np.int32, "u4": np.uint32}


def array(values) -> np.ndarray:
    """x, y or z of a trace: plotly sends numpy arrays as base64 typed arrays, lists as lists."""
    if isinstance(values, dict):
        flat = np.frombuffer(base64.b64decode(values["bdata"]), dtype=DTYPES[values["dtype"]])
        shape = values.get("shape")
        return flat.reshape([int(s) for s in str(shape).split(",")]) if shape else flat
    return np.array(values)

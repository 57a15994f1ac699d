"""The dtypes of safetensors files, without torch: how each is stored, checked and widened.

A tensor's bytes are handled as numpy arrays of a storage type: the dtype itself where numpy has it
(float32, float16, the integers), else an unsigned integer of the same width (bfloat16 as uint16, the
float8 formats as uint8). Cuts are byte copies, so they need nothing more. NaN/Inf are found from the
bits (`DType.non_finite`: the value of masked bits that marks one), and the few places that need the
values widen them to float32 (`as_float32`; bfloat16 by a shift of its bits). A cast to another dtype
is torch's (`DType.torch`, imported only then), so its rounding is the in-memory path's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(frozen=True)
class DType:
    """One safetensors dtype. `name`: the safetensors name (BF16); `torch_name`: torch's (bfloat16);
    `native`: the numpy dtype holding its values, None where numpy has none; `non_finite`: (mask, value)
    such that a stored element is NaN or infinite iff its bits & mask == value (None: never)."""

    name: str
    torch_name: str
    itemsize: int
    kind: str  # "f" floating point, "c" complex, "i"/"u" integer, "b" bool
    native: str | None
    non_finite: tuple[int, int] | None = None

    @property
    def is_floating_point(self) -> bool:
        return self.kind == "f"

    @property
    def storage(self) -> np.dtype:
        """The numpy dtype its bytes are held in: `native`, else an unsigned integer of its width."""
        return np.dtype(self.native) if self.native else np.dtype(_UINT[self.itemsize])

    @property
    def torch(self):
        """The torch dtype (imports torch)."""
        import torch

        return getattr(torch, self.torch_name)

    def __str__(self) -> str:
        return self.torch_name


_F = [
    DType("F64", "float64", 8, "f", "float64", (0x7FF0000000000000, 0x7FF0000000000000)),
    DType("F32", "float32", 4, "f", "float32", (0x7F800000, 0x7F800000)),
    DType("F16", "float16", 2, "f", "float16", (0x7C00, 0x7C00)),
    DType("BF16", "bfloat16", 2, "f", None, (0x7F80, 0x7F80)),
    DType("F8_E4M3", "float8_e4m3fn", 1, "f", None, (0x7F, 0x7F)),  # no infinity; NaN is S.1111.111
    DType("F8_E5M2", "float8_e5m2", 1, "f", None, (0x7C, 0x7C)),
    DType("F8_E4M3FNUZ", "float8_e4m3fnuz", 1, "f", None, (0xFF, 0x80)),  # the one NaN is "negative zero"
    DType("F8_E5M2FNUZ", "float8_e5m2fnuz", 1, "f", None, (0xFF, 0x80)),
    DType("C64", "complex64", 8, "c", "complex64", (0x7F800000, 0x7F800000)),  # per float32 part
]
_I = [
    DType(name, torch_name, size, kind, torch_name if kind != "b" else "bool")
    for name, torch_name, size, kind in (
        ("I64", "int64", 8, "i"), ("I32", "int32", 4, "i"), ("I16", "int16", 2, "i"), ("I8", "int8", 1, "i"),
        ("U8", "uint8", 1, "u"), ("U16", "uint16", 2, "u"), ("U32", "uint32", 4, "u"), ("U64", "uint64", 8, "u"),
        ("BOOL", "bool", 1, "b"))
]
#: safetensors dtype names that hybridprune handles, and their DType.
DTYPES: dict[str, DType] = {d.name: d for d in _F + _I}
_BY_TORCH_NAME = {d.torch_name: d for d in DTYPES.values()}
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32",
            "double": "float64"}


def dtype_of(value) -> DType:
    """The DType of a DType, a safetensors name ("BF16"), a torch name ("bfloat16", "bf16") or a
    torch dtype (read by its name: torch is not imported)."""
    if isinstance(value, DType):
        return value
    text = str(value).removeprefix("torch.")
    found = DTYPES.get(text) or _BY_TORCH_NAME.get(_ALIASES.get(text, text))
    if found is None:
        raise ValueError(f"unknown dtype {value!r}; use one of {', '.join(_BY_TORCH_NAME)}")
    return found


def as_float32(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Stored `values` (of `dtype`'s storage type) as float32, as torch's `.to(torch.float32)` gives them."""
    if dtype.name == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    if dtype.native and dtype.kind != "c":
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32: inf, as torch gives it
            out = values.astype(np.float32)
        if dtype.name == "F16" and (nan := np.isnan(out)).any():  # torch quiets a signalling NaN, numpy keeps it
            out.view(np.uint32)[nan] |= 0x400000
        return out
    import torch  # float8 and complex: torch's conversion

    t = torch.from_numpy(np.ascontiguousarray(values)).view(dtype.torch)
    return t.to(torch.float32).numpy()


#: Elements masked at a time when counting non-finite values (the buffers are reused).
_CHUNK = 1 << 20


def count_non_finite(values: np.ndarray, dtype: DType) -> int:
    """NaN/Inf elements among stored `values` (0 for integers): read from the bits, a chunk at a time
    into small reused buffers. A complex value counts once per non-finite part."""
    if dtype.non_finite is None or values.size == 0:
        return 0
    mask, marker = dtype.non_finite
    bits = np.ascontiguousarray(values).reshape(-1)
    word = np.dtype(_UINT[dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize])
    bits = bits.view(word)
    masked = np.empty(min(bits.size, _CHUNK), dtype=word)
    hits = np.empty(masked.size, dtype=bool)
    bad = 0
    for a in range(0, bits.size, _CHUNK):
        chunk = bits[a:a + _CHUNK]
        m, h = masked[:chunk.size], hits[:chunk.size]
        np.bitwise_and(chunk, word.type(mask), out=m)
        if mask == marker and m.max() != marker:  # exponent bits never all ones: all finite (one reduction)
            continue
        np.equal(m, word.type(marker), out=h)
        bad += int(np.count_nonzero(h))
    return bad


def stored_bytes(config, dtype: str = "auto") -> int:
    """Bytes per parameter a streaming prune writes: `dtype` ("auto": the config's stored dtype, float32
    when it names none), without torch (a streaming prune does not place the model on a device, so the
    loading rule "auto is bfloat16 on a GPU" does not apply)."""
    if dtype == "auto":
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
        try:
            return dtype_of(stored).itemsize
        except ValueError:
            return 4
    return dtype_of(dtype).itemsize

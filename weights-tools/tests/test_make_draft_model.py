"""make_draft_model.py: which blocks a --keep spec names, and a truncated copy of a small model."""

import pytest

import common
import make_draft_model as mdm
from common import ToolError


def test_parse_keep():
    assert mdm.parse_keep("0-5,28-29", 30) == [0, 1, 2, 3, 4, 5, 28, 29]
    assert mdm.parse_keep("3", 4) == [3]
    for bad in ["5-3", "0,0", "2,1", "x", "0-30", ""]:
        with pytest.raises(ToolError):
            mdm.parse_keep(bad, 30)


def test_output_name():
    from pathlib import Path
    assert mdm.output_name(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), [0, 1, 29]) == "SmolLM2-135M-Instruct.draft3.Q4_1.gguf"


def test_truncates_a_fixture(tmp_path):
    import make_test_model  # writes small random models

    src = tmp_path / "m.gguf"
    make_test_model.main(["--out", str(src), "--outtype", "q8_0", "--layers", "3"])
    reader = common.open_gguf(src)
    arch = common.field_value(reader, "general.architecture")
    blocks = int(common.field_value(reader, f"{arch}.block_count"))
    assert blocks == 3
    out = tmp_path / "d.gguf"
    mdm.truncate(src, out, [0, blocks - 1])
    got = common.open_gguf(out)
    assert int(common.field_value(got, f"{arch}.block_count")) == 2
    src_tensors = {t.name: t for t in reader.tensors}
    for t in got.tensors:
        old = t.name
        if t.name.startswith("blk.1."):
            old = f"blk.{blocks - 1}." + t.name[len("blk.1."):]
        assert (t.data == src_tensors[old].data).all(), t.name

"""Damaged inputs of `openclip-ce eval`, `interpolate` and `compare`, through the command: one line naming the
file (and the line or entry), exit 2, no traceback. Bytes that are not UTF-8, nesting deeper than Python's
parsers follow and empty checkpoints, in every reader that meets them."""

import json

import pytest
import torch

from openclip_ce.cli import main
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_scpp_spatial_color import build_mmvp
from openclip_ce.testing.eval_benchmarks import build_aro, build_imagefolder, build_sugarcrepe, build_vlchecklist, build_winoground

DEEP = 100_000  # far past the recursion limit of Python's JSON and YAML readers


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model_dir(tmp_path_factory.mktemp("model"))


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"openclip-ce {command}: error: "), err[-3000:]
    return line


def _eval(model, root, benchmark, *extra):
    return main(["eval", "--model", model, "--data-root", str(root), "--out", str(root / "r.json"),
                 "--benchmarks", benchmark, "--workers", "0", *extra])


def test_an_empty_checkpoint_is_named_by_eval_and_interpolate(model, tmp_path, capsys):
    empty = tmp_path / "epoch_3.pt"
    empty.write_bytes(b"")  # a save that never wrote a byte (a full disk)
    assert _eval(model, tmp_path, "winoground", "--checkpoint", str(empty)) == 2
    assert f"{empty}: cannot load checkpoint (an empty file, 0 bytes)" in _one_line_error(capsys, "eval")
    whole = tmp_path / "ft.pt"
    torch.save({"w": torch.zeros(2)}, whole)
    rc = main(["interpolate", "--model", model, "--base", str(empty), "--finetuned", str(whole), "--alpha", "0.5",
               "--out", str(tmp_path / "wise.pt")])
    assert rc == 2
    assert f"{empty}: cannot load checkpoint (an empty file, 0 bytes)" in _one_line_error(capsys, "interpolate")
    assert not (tmp_path / "wise.pt").exists()


def test_winoground_names_the_line_of_a_byte_that_is_not_utf8_and_counts_blank_lines(model, tmp_path, capsys):
    build_winoground(tmp_path)
    f = tmp_path / "winoground" / "examples.jsonl"
    lines = f.read_bytes().splitlines()
    good = list(lines)
    lines[1] = lines[1].replace(b'"caption_0": "', b'"caption_0": "\xff')
    f.write_bytes(b"\n".join(lines) + b"\n")
    assert _eval(model, tmp_path, "winoground") == 2
    assert f"{f}: line 2: not valid UTF-8 JSON (byte " in _one_line_error(capsys, "eval")

    good[2] = good[2].replace(b'"caption_1"', b'"caption_x"')
    f.write_bytes(b"\n".join(good[:1] + [b"", b"  "] + good[1:]) + b"\n")  # two blank lines before line 2
    assert _eval(model, tmp_path, "winoground") == 2
    assert f"{f} line 5: missing field 'caption_1'" in _one_line_error(capsys, "eval")


@pytest.mark.parametrize("benchmark", ["sugarcrepe", "aro"])
def test_json_nested_too_deep_is_named(model, tmp_path, capsys, benchmark):
    if benchmark == "sugarcrepe":
        build_sugarcrepe(tmp_path)
        f = tmp_path / "sugarcrepe" / "add_att.json"
    else:
        build_aro(tmp_path, with_order=False)
        f = tmp_path / "aro" / "visual_genome_relation.json"
    f.write_text("[" * DEEP + "]" * DEEP)
    assert _eval(model, tmp_path, benchmark) == 2
    assert f"{f}: not usable JSON (nested deeper than Python's JSON reader follows" in _one_line_error(capsys, "eval")


def test_other_readers_name_the_file_for_bad_bytes_deep_nesting_and_oversized_fields(model, tmp_path, capsys):
    build_vlchecklist(tmp_path / "a")
    y = next((tmp_path / "a" / "vl-checklist" / "corpus" / "v1").rglob("*.yaml"))
    y.write_bytes(b'ANNO_PATH: "caf\xe9"\n')
    assert _eval(model, tmp_path / "a", "vl-checklist") == 2
    assert f"{y}: not valid UTF-8 YAML (UnicodeDecodeError" in _one_line_error(capsys, "eval")
    y.write_text("[" * DEEP)
    assert _eval(model, tmp_path / "a", "vl-checklist") == 2
    assert f"{y}: not usable YAML (nested deeper" in _one_line_error(capsys, "eval")

    build_mmvp(tmp_path / "b")
    questions = tmp_path / "b" / "mmvp-vlm" / "Questions.csv"
    questions.write_text(questions.read_text() + '1,Orientation,"' + "x" * 200_000 + '"\n')
    assert _eval(model, tmp_path / "b", "mmvp-vlm") == 2
    assert f"{questions} line " in (line := _one_line_error(capsys, "eval")) and "field larger than field limit" in line

    build_imagefolder(tmp_path / "c")
    names = tmp_path / "c" / "zeroshot" / "toy" / "classnames.txt"
    names.write_bytes(b"red square\ngreen circle\nblue \xff thing\n")
    assert _eval(model, tmp_path / "c", "zeroshot", "--zeroshot-datasets", "folder:toy") == 2
    assert f"{names}: not valid UTF-8 (UnicodeDecodeError" in _one_line_error(capsys, "eval")


def test_compare_names_a_results_file_or_reference_nested_too_deep_or_not_utf8(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * DEEP + "]" * DEEP)
    assert main(["compare", str(deep), "--out", str(tmp_path / "c")]) == 2
    assert f"{deep}: not usable JSON (nested deeper" in _one_line_error(capsys, "compare")
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"summary": {"winoground/text": 0.5}, "benchmarks": {}}))
    latin = tmp_path / "ref.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    assert main(["compare", str(results), "--reference", str(latin), "--out", str(tmp_path / "c")]) == 2
    assert f"--reference {latin}: not valid UTF-8 JSON (byte 13" in _one_line_error(capsys, "compare")

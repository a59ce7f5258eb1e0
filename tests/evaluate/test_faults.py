"""Damaged inputs of `openclip-ce eval`, `interpolate` and `compare`, through the command: one line naming the
file (and the line or entry), exit 2, no traceback. Bytes that are not UTF-8, nesting deeper than Python's
parsers follow and empty checkpoints, in every reader that meets them."""

import argparse
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


def test_a_file_that_is_no_checkpoint_gets_a_reason_that_fits_it(model, tmp_path, capsys):
    """torch's own text for all three advises weights_only=False, cut off mid-sentence on one line."""
    text = tmp_path / "notes.pt"
    text.write_text("training notes, not weights\n")
    whole = tmp_path / "whole.pt"
    torch.save({"state_dict": {"w": torch.zeros(64)}}, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a copy that stopped half-way
    objects = tmp_path / "objects.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1e-5)}, objects)
    for path, why in ((text, "not a PyTorch file: neither torch.save's zip format nor a pickle"),
                      (cut, "a damaged or cut-off torch zip file: its end is missing"),
                      (objects, "it holds Python objects besides tensors (argparse.Namespace)")):
        assert _eval(model, tmp_path, "winoground", "--checkpoint", str(path)) == 2
        line = _one_line_error(capsys, "eval")
        assert f"{path}: cannot load checkpoint ({why}" in line, line
        assert "weights_only" not in line


def test_out_in_the_place_of_a_folder_fails_before_the_evaluation(model, tmp_path, capsys, monkeypatch):
    build_winoground(tmp_path)
    (tmp_path / "afile").write_text("x")
    import openclip_ce.evaluate.command as command
    monkeypatch.setattr(command, "load_model", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    rc = main(["eval", "--model", model, "--data-root", str(tmp_path), "--out", str(tmp_path / "afile" / "r.json"),
               "--benchmarks", "winoground", "--workers", "0"])
    assert rc == 2
    line = _one_line_error(capsys, "eval")
    assert line.endswith(f"{tmp_path / 'afile' / 'r.json'}: {tmp_path / 'afile'} is not a folder"), line


@pytest.mark.parametrize("argv, complaint", [
    (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["--workers", "-1"], "--workers: must be >= 0, got -1"),
    (["--vlc-max-per-corpus", "-1"], "--vlc-max-per-corpus: must be >= 0, got -1"),
])
def test_counts_out_of_range_are_usage_errors_not_tracebacks_or_silent_slices(model, tmp_path, capsys, argv, complaint):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", model, "--data-root", str(tmp_path), "--out", str(tmp_path / "r.json"), *argv])
    assert e.value.code == 2
    assert complaint in capsys.readouterr().err


def test_analyze_checks_its_counts_and_model_items(model, tmp_path, capsys):
    base = ["analyze", "--data", str(tmp_path / "x.tar"), "--out", str(tmp_path / "a")]
    with pytest.raises(SystemExit):  # was a silent [:-1]: the last sample left out
        main([*base, "--model", model, "--max-samples", "-1"])
    assert "--max-samples: must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # was ignored: the config's activation
        main([*base, "--model", f"{model},quickgelu=maybe"])
    assert "quickgelu=maybe (auto, on or off)" in capsys.readouterr().err
    # --out is the start of file names: a folder there would get results.json beside it, after the embeddings
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["analyze", "--data", str(tmp_path / "x.tar"), "--model", model, "--out", f"{folder}/"]) == 2
    assert _one_line_error(capsys, "analyze").endswith(f"{folder}/: is a folder; --out takes the start of file names "
                                                       f"(OUT.json, ...), e.g. {folder / 'results'}")


def test_pretrained_weights_beside_a_local_dir_model_are_refused_not_ignored(model, tmp_path, capsys):
    """open_clip ignores pretrained= for local-dir: and hf-hub: models (it only logs it): the results would be
    the folder's weights under the name of the file given."""
    build_winoground(tmp_path)
    weights = tmp_path / "mine.bin"
    torch.save({"w": torch.zeros(2)}, weights)
    assert _eval(model, tmp_path, "winoground", "--pretrained", str(weights)) == 2
    line = _one_line_error(capsys, "eval")
    assert f"ignores --pretrained {weights}; give other weights as --checkpoint PATH" in line, line
    assert not (tmp_path / "r.json").exists()


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

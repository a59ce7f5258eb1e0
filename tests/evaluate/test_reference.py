"""`compare --reference paper`: the CE-CLIP paper's numbers beside ours, keyed to metrics eval produces."""

import json

import pytest

from openclip_ce.cli import main
from openclip_ce.evaluate import registry
from openclip_ce.evaluate.common import EvalOptions
from openclip_ce.evaluate.reference import load_reference

from openclip_ce.testing.eval_benchmarks import FakeScorer, build_aro, build_sugarcrepe, build_valse, write_image

# VL-CheckList's released corpus tree (om-ai-lab/VL-CheckList corpus/v1): one leaf corpus each is enough
VLC_TREE = ["Attribute/action/vg", "Attribute/color/vaw", "Attribute/material/vg", "Attribute/size/vaw",
            "Attribute/state/vg", "Object/Location/center/vg_obj", "Object/Location/margin/hake",
            "Object/Size/large/swig_agent", "Object/Size/small/vg_subj", "Relation/action/swig",
            "Relation/spatial/vg"]


def _official_vlchecklist(root):
    base = root / "vl-checklist"
    for i, corpus in enumerate(VLC_TREE):
        write_image(base / "images" / "vg" / f"{i}.jpg")
        anno = base / "data" / f"{i}.json"
        anno.parent.mkdir(parents=True, exist_ok=True)
        anno.write_text(json.dumps([[f"{i}.jpg", {"POS": [f"pos {i}"], "NEG": [f"neg {i}"]}]]))
        y = base / "corpus" / "v1" / f"{corpus}.yaml"
        y.parent.mkdir(parents=True, exist_ok=True)
        y.write_text(f'ANNO_PATH: "data/{i}.json"\nIMG_ROOT: "vg"\nTYPE: "TUPLE_JSON"\n')


def test_every_paper_number_maps_to_a_metric_our_eval_produces(tmp_path):
    build_aro(tmp_path, with_order=False)
    build_sugarcrepe(tmp_path)
    build_valse(tmp_path)
    _official_vlchecklist(tmp_path)
    produced = set()
    for name in ("aro", "sugarcrepe", "valse", "vl-checklist"):
        res = registry.get(name).evaluate(tmp_path, FakeScorer(default=0.0), EvalOptions())
        produced |= {f"{name}/{k}" for k in res["summary"]}
    ref = load_reference("paper")
    assert len(ref.values) == 36 and set(ref.models) == {"CLIP", "NegCLIP", "CE-CLIP", "CE-CLIP+"}
    assert set(ref.values) <= produced, sorted(set(ref.values) - produced)
    assert ref.values["aro/vg_relation_macro"]["CE-CLIP+"] == pytest.approx(0.836)


def _results(path, summary, label):
    path.write_text(json.dumps({"model": {"label": label}, "summary": summary, "benchmarks": {}}))
    return str(path)


def test_compare_with_the_paper_as_reference(tmp_path, capsys):
    clip = _results(tmp_path / "clip.json", {"aro/vg_relation_macro": 0.60, "vl-checklist/avg": 0.70,
                                             "sugarcrepe/add_att": 0.69}, "CLIP")
    mine = _results(tmp_path / "mine.json", {"aro/vg_relation_macro": 0.80, "vl-checklist/avg": 0.74,
                                             "sugarcrepe/add_att": 0.90}, "mine")
    out = tmp_path / "c"
    assert main(["compare", clip, mine, "--reference", "paper", "--reference-pair", "mine=CE-CLIP+",
                 "--out", str(out)]) == 0
    md = (out.parent / "c.md").read_text()
    section = md[md.index("## Against CE-CLIP"):]
    head = next(l for l in section.splitlines() if l.startswith("| metric"))
    assert head == ("| metric | CLIP | mine | paper: CLIP | paper: NegCLIP | paper: CE-CLIP | paper: CE-CLIP+ | "
                    "CLIP - paper CLIP | mine - paper CE-CLIP+ | paper's table |")
    row = next(l for l in section.splitlines() if l.startswith("| aro/vg_relation_macro"))
    assert row == ("| aro/vg_relation_macro | 60.0 | 80.0 | 59.3 | 80.2 | 83.0 | 83.6 | +0.7 | -3.6 | "
                   "Table 1, ARO Relation |")
    vlc = next(l for l in section.splitlines() if l.startswith("| vl-checklist/avg"))
    mark = vlc.split()[2]
    assert mark.startswith("†")
    assert f"- {mark}: the paper's Avg is the mean of its 9 leaf columns" in section
    assert "GELU" in section  # the paper-wide note on how the authors loaded checkpoints
    absent = next(l for l in section.splitlines() if l.startswith("Benchmarks of the paper not in these results"))
    assert "valse" in absent and "aro" not in absent and "sugarcrepe" not in absent  # those two are in, in part
    partial = next(l for l in section.splitlines() if l.startswith("Metrics of the paper not in these results"))
    assert "aro/vg_attribution_macro" in partial and "sugarcrepe/replace_obj" in partial
    assert "aro/vg_relation_macro" not in partial
    js = json.loads((out.parent / "c.json").read_text())["reference"]
    assert js["paired"] == {"CLIP": "CLIP", "mine": "CE-CLIP+"}
    assert js["metrics"]["sugarcrepe/add_att"]["difference"]["mine"] == pytest.approx(0.90 - 0.949)
    assert (out.parent / "c.png").stat().st_size > 10_000

    assert main(["compare", clip, mine, "--reference", "paper", "--reference-pair", "mine=CE-CLIP++",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--reference-pair 'mine=CE-CLIP++'" in capsys.readouterr().err
    assert main(["compare", clip, "--reference", "nope", "--out", str(tmp_path / "bad")]) == 2

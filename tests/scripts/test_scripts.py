import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_coco_to_wds(tmp_path):
    (tmp_path / "img").mkdir()
    for i in (1, 2, 3):
        (tmp_path / "img" / f"{i:012d}.jpg").write_bytes(b"JPEG%d" % i)
    coco = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3)],
            "annotations": [{"id": 10 + k, "image_id": 1 + k % 3, "caption": f" caption {k} "} for k in range(6)]}
    (tmp_path / "caps.json").write_text(json.dumps(coco))
    cmd = [sys.executable, str(SCRIPTS / "recipes" / "coco_to_wds.py"), "--images", str(tmp_path / "img"),
           "--captions", str(tmp_path / "caps.json"), "--per-shard", "2"]
    assert subprocess.run(cmd + ["--out", str(tmp_path / "one")]).returncode == 0
    assert json.loads((tmp_path / "one" / "sizes.json").read_text()) == {"00000.tar": 2, "00001.tar": 1}
    with tarfile.open(tmp_path / "one" / "00000.tar") as t:
        names = t.getnames()
        assert names[:3] == ["000000000001_10.jpg", "000000000001_10.txt", "000000000001_10.json"]
        assert t.extractfile("000000000001_10.txt").read() == b"caption 0"
        assert t.extractfile("000000000001_10.jpg").read() == b"JPEG1"
    assert subprocess.run(cmd + ["--out", str(tmp_path / "all"), "--captions-per-image", "all"]).returncode == 0
    assert sum(json.loads((tmp_path / "all" / "sizes.json").read_text()).values()) == 6

    (tmp_path / "img" / f"{3:012d}.jpg").unlink()
    proc = subprocess.run(cmd + ["--out", str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 1 and "000000000003.jpg: image of caption 12 not found" in proc.stderr
    assert not list((tmp_path / "missing").glob("*.tmp"))


def test_vg_to_wds_crops_regions_filters_and_excludes(tmp_path):
    from PIL import Image

    (tmp_path / "VG_100K").mkdir()
    (tmp_path / "VG_100K_2").mkdir()
    for image_id, folder in ((1, "VG_100K"), (2, "VG_100K_2"), (3, "VG_100K")):
        Image.new("RGB", (300, 200), (image_id * 40, 0, 0)).save(tmp_path / folder / f"{image_id}.jpg")
    region = lambda rid, x, y, w, h, phrase: {"region_id": rid, "x": x, "y": y, "width": w, "height": h,  # noqa: E731
                                              "phrase": phrase, "image_id": 0}
    data = [
        {"id": 2, "regions": [region(20, 0, 0, 100, 80, "a red  car parked outside"),
                              region(21, 10, 10, 30, 30, "a tiny box on the left"),        # box too small
                              region(22, 50, 50, 120, 100, "car")]},                     # phrase too short
        {"id": 1, "regions": [region(10, 0, 0, 200, 100, "man riding a horse"),
                              region(11, 5, 5, 150, 90, "Man riding a horse"),           # repeated phrase
                              region(12, 100, 50, 80, 80, "a brown horse running")]},
        {"id": 3, "regions": [region(30, 0, 0, 100, 100, "a test image of ARO")]},
    ]
    (tmp_path / "regions.json").write_text(json.dumps(data))
    (tmp_path / "aro.json").write_text(json.dumps([{"image_path": "3.jpg", "true_caption": "x"}]))
    cmd = [sys.executable, str(SCRIPTS / "recipes" / "vg_to_wds.py"), "--regions", str(tmp_path / "regions.json"),
           "--images", str(tmp_path / "VG_100K"), "--images", str(tmp_path / "VG_100K_2"),
           "--exclude-images", str(tmp_path / "aro.json"), "--per-shard", "2", "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "excluded_images 1, small_box 1, short_phrase 1, repeated_phrase 1" in proc.stderr
    assert json.loads((tmp_path / "out" / "sizes.json").read_text()) == {"00000.tar": 2, "00001.tar": 1}
    with tarfile.open(tmp_path / "out" / "00000.tar") as t:
        assert t.getnames()[:3] == ["vg000000001_10.jpg", "vg000000001_10.txt", "vg000000001_10.json"]
        assert t.extractfile("vg000000001_10.txt").read() == b"man riding a horse"
        assert Image.open(t.extractfile("vg000000001_12.jpg")).size == (80, 80)  # the region's box
    with tarfile.open(tmp_path / "out" / "00001.tar") as t:
        assert t.extractfile("vg000000002_20.txt").read() == b"a red car parked outside"
        assert json.loads(t.extractfile("vg000000002_20.json").read())["box"] == [0, 0, 100, 80]

    (tmp_path / "VG_100K_2" / "2.jpg").unlink()
    proc = subprocess.run(cmd[:-1] + [str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 1 and "image 2 (region 20): 2.jpg not in" in proc.stderr
    assert not list((tmp_path / "missing").glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_check_make_shards_tiny_mode_runs_on_cpu(tmp_path):
    """The GPU device check, in its CPU smoke mode: every step (filler alone as the GPU process and in one
    process, local runs with several workers feeding a masked-LM process, the Ray run, output comparison)
    runs through the code paths of the GPU run and writes its figures, so a lent GPU's minutes are not
    lost to a bug."""
    pytest.importorskip("ray")
    from openclip_ce.testing.make_shards_runs import env

    out = tmp_path / "figures.json"
    cmd = [sys.executable, str(SCRIPTS / "gpu_checks" / "make_shards.py"), "--json", str(out), "--device", "cpu", "--tiny",
           "--shards", "2", "--captions", "8", "--workers", "1,2", "--ray-workers", "1", "--batch-sizes", "8,256",
           "--chunk-size", "2", "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    assert fig["mode"] == "tiny" and fig["model"]["parameters"] > 0
    filler = fig["filler"]
    assert set(filler["gpu_process"]) == set(filler["in_process"]) == {"8", "256"}
    assert filler["best_fills_per_s"] == max(filler["gpu_process"].values()) > 0
    runs = fig["end_to_end"]
    assert set(runs) == {"local_workers1", "local_workers2", "ray_workers1_1actor"}
    for run in runs.values():
        assert run["captions"] == 8 and run["captions_per_s"] > 0 and run["fills"] > 0
        assert run["workers_detail"] and run["limited_by"] and run["tagging_ops"]["ops"]
        assert run["fillers"] and sum(f["fills"] for f in run["fillers"]) == run["fills"]
    assert {w["device"] for w in runs["local_workers2"]["workers_detail"]} == {"cuda:0"}  # both feed the one GPU
    assert runs["local_workers2"]["fillers"][0]["device"] == "cuda:0"
    assert runs["ray_workers1_1actor"]["fillers"][0]["requests"] > 0
    assert fig["identical_outputs"] is True


def test_bench_make_shards_measures_the_filler_and_tagging_against_their_baselines():
    """The CPU benchmark's first two parts (issue 18's goals) run and print their figures."""
    import re

    cmd = [sys.executable, str(SCRIPTS / "benchmarks" / "bench_make_shards.py"), "--no-naive", "--no-cli", "--overhead-captions", "64",
           "--tag-captions", "64", "--rounds", "1", "--overhead-batch", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"filler  : +([\d.]+) us/fill vs the tiny model's bare forward +([\d.]+) us/fill", proc.stdout)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, proc.stdout
    m = re.search(r"tagging : +(\d+) captions/s vs bare spaCy .* +(\d+) captions/s -> ([\d.]+)x", proc.stdout)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, proc.stdout


def test_bench_make_shards_rules_only_compares_a_baseline_language_filter_in_the_same_process():
    """``--rules-only --baseline-language``: another version's language.py (here this checkout's own) runs
    beside this one, and the script prints both filters' generation throughput and cost."""
    import re

    from openclip_ce.shards import language
    from openclip_ce.testing.make_shards_runs import SPACY_MODEL

    cmd = [sys.executable, str(SCRIPTS / "benchmarks" / "bench_make_shards.py"), "--rules-only", "--captions", "64",
           "--rounds", "1", "--spacy-model", SPACY_MODEL, "--baseline-language", language.__file__]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"rules   : +(\d+) captions/s with the alt-text rules .* -> ([\d.]+)x; language filter ([\d.]+) us",
                  proc.stdout)
    assert m and int(m.group(1)) > 0 and float(m.group(3)) > 0, proc.stdout
    m = re.search(r"language filter instead: +(\d+) captions/s -> this one ([\d.]+)x; its filter ([\d.]+) us/caption",
                  proc.stdout)
    assert m and int(m.group(1)) > 0 and float(m.group(2)) > 0 and float(m.group(3)) > 0, proc.stdout


def test_language_filter_quality_reads_its_neighbour_and_counts_each_file(tmp_path):
    """The language benchmark runs as a user runs it (its folder's alttext_quality.py found without
    touching sys.path) and counts, per file, the captions each filter calls another language."""
    import re

    (tmp_path / "en.txt").write_text("A man rides a horse on the beach.\nTwo dogs play with a red ball.\n")
    (tmp_path / "de.txt").write_text("Ein Mann reitet am Strand auf einem Pferd.\nZwei Hunde spielen mit einem roten Ball.\n")
    (tmp_path / "fr.txt").write_text("Collier initiale A or\n")
    cmd = [sys.executable, str(SCRIPTS / "benchmarks" / "language_filter_quality.py"), f"en={tmp_path / 'en.txt'}",
           f"de={tmp_path / 'de.txt'}", f"fr={tmp_path / 'fr.txt'}", "--show", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): (int(m.group(2)), float(m.group(3)), float(m.group(4)))
            for m in re.finditer(r"^(\w+) +(\d+) +([\d.]+) +([\d.]+)$", proc.stdout, re.M)}
    assert rows == {"en": (2, 0.0, 0.0), "de": (2, 1.0, 1.0), "fr": (1, 0.0, 1.0)}, proc.stdout
    assert "## fr: 1 captions only the word check calls another language" in proc.stdout
    assert "'Collier initiale A or'" in proc.stdout


def test_fuzzed_captions_go_through_make_shards_without_a_crash_or_a_broken_edit(tmp_path):
    """fuzz_captions.py writes the same fuzzed captions for the same seed; alttext_quality.py runs
    make-shards on them as a user would: no crash, no broken edit, every sample without a negative
    counted in stats.json."""
    from openclip_ce.testing.alttext_captions import all_captions

    src = tmp_path / "real.txt"
    src.write_text("\n".join(c for c in all_captions() if "\n" not in c) + "\n", encoding="utf-8")
    fuzz = [SCRIPTS / "benchmarks" / "fuzz_captions.py", src, "--count", "300", "--seed", "3"]
    for name in ("a.json", "b.json"):
        proc = subprocess.run([sys.executable, *map(str, fuzz), "--out", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    captions = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert captions == json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) and len(captions) == 300
    assert sum('""' in c for c in captions) > 5 and sum(not c.isascii() for c in captions) > 50
    proc = subprocess.run([sys.executable, str(SCRIPTS / "benchmarks" / "alttext_quality.py"),
                           f"fuzz={tmp_path / 'a.json'}", "--out", str(tmp_path / "q"), "--json", str(tmp_path / "q.json")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = json.loads((tmp_path / "q.json").read_text())
    assert report["samples"] == 300 and report["negatives"] > 100, report
    assert report["broken"] == 0, report["examples"]["broken"]
    assert report["samples_without_negatives_in_stats"] == report["samples_without_negatives_counted"] > 0


@pytest.mark.parametrize("compile_", [False, True])
def test_bench_train_step_runs_every_variant(tmp_path, compile_):
    """The step benchmark's smoke run: every variant trains and is reported (speed figures are not asserted)."""
    import re

    from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path / "m", TINY_VIT_B_32_CFG)
    # compiled: aot_eager keeps the smoke run at seconds (inductor would generate C++ for every variant)
    extra = ["--compile", "--compile-backend", "aot_eager"] if compile_ else ["--compare-layouts"]
    proc = subprocess.run([sys.executable, str(SCRIPTS / "benchmarks" / "bench_train_step.py"), "--model", model, "--batch-size", "8",
                           "--steps", "1", "--warmup", "0", "--precision", "fp32", "--device", "cpu", *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(plain CLIP|CE-CLIP [\w ,()-]+?)\s+([\d.]+)\s+([\d.]+)x\s+[\d.]+\s+\d+ MiB\s+([\d.]+)\s+(\d+)$",
        proc.stdout, re.M)}
    want = {"plain CLIP", "CE-CLIP packed", "CE-CLIP rows (--ce-no-pack)"}
    assert set(rows) == (want if compile_ else want | {"CE-CLIP dense (all slots)"}), proc.stdout
    assert compile_ or float(rows["CE-CLIP dense (all slots)"][2]) == 5 * 77
    assert rows["plain CLIP"][1] == "1.00" and float(rows["plain CLIP"][2]) == 77.0
    # rows: a full row per caption, up to 5 per image (capacity headroom included); packed: far fewer positions
    assert 77 < float(rows["CE-CLIP rows (--ce-no-pack)"][2]) <= 5 * 77
    assert float(rows["CE-CLIP packed"][2]) < float(rows["CE-CLIP rows (--ce-no-pack)"][2]) / 2
    assert all(r[3] == "0" for r in rows.values())  # no host reads in forward, loss or backward


def test_mixture_factors_and_bad_shares(tmp_path):
    """scripts/recipes/mixture.py: share / samples per source (largest 1), epoch = first source once; bad --mix is one line."""
    folders = []
    for name, n in (("a", 100), ("b", 400)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "00000.tar").write_bytes(b"")
        (tmp_path / name / ".00001.tar.partial").write_bytes(b"")  # not a shard
        (tmp_path / name / "stats.json").write_text(json.dumps({"samples": n}))
        folders.append(str(tmp_path / name))

    def mixture(*args):
        return subprocess.run([sys.executable, str(SCRIPTS / "recipes" / "mixture.py"), *args], capture_output=True, text=True)

    proc = mixture("--mix", "1:1", *folders)
    assert proc.returncode == 0, proc.stderr
    data, factors, per_epoch = proc.stdout.split()
    assert data == f"{folders[0]}/00000.tar::{folders[1]}/00000.tar"
    assert factors == "1::0.25" and per_epoch == "200"  # equal shares of 100 and 400 samples
    for bad in ("1:x", "1", "1:0"):
        proc = mixture("--mix", bad, *folders)
        assert proc.returncode == 2 and proc.stderr.strip() == f"mixture: error: --mix needs 2 positive shares, got {bad!r}"


def test_gpu_check_train_step_smoke(tmp_path):
    """The prepared GPU check runs through every step on a CPU with tiny sizes and writes its figures."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_checks" / "train_step.py"), "--out", str(tmp_path), "--smoke"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads((tmp_path / "train_step_gpu.json").read_text())
    assert fig["finished"] and all(fig[k]["rc"] == 0 for k in ("bench_8", "train_ce_clip", "train_clip", "probe"))
    assert set(fig["bench_8"]["variants"]) == {"plain CLIP", "CE-CLIP packed", "CE-CLIP rows (--ce-no-pack)"}
    assert fig["train_ce_clip"]["steps"] == 4 and fig["train_clip"]["steps"] == 4  # 2 epochs of 2 batches
    assert (tmp_path / "train_ce_clip.png").exists() and (tmp_path / "probe" / "probe.png").exists()
    assert set(fig["probe"]["summary"]) == {f"{run} {p}" for run in ("default", "paper", "clip") for p in ("fp32", "amp_bf16")}
    # the CE run trained with the defaults of a run from random weights: the schedule's gate, its weights
    assert "gate_open_step" in fig["train_ce_clip"] and fig["train_ce_clip"]["imc_weight_last"] == [0.0]

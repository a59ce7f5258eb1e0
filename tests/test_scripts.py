import json
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_coco_to_wds(tmp_path):
    (tmp_path / "img").mkdir()
    for i in (1, 2, 3):
        (tmp_path / "img" / f"{i:012d}.jpg").write_bytes(b"JPEG%d" % i)
    coco = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (1, 2, 3)],
            "annotations": [{"id": 10 + k, "image_id": 1 + k % 3, "caption": f" caption {k} "} for k in range(6)]}
    (tmp_path / "caps.json").write_text(json.dumps(coco))
    cmd = [sys.executable, str(SCRIPTS / "coco_to_wds.py"), "--images", str(tmp_path / "img"),
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


def test_bench_train_step_runs_every_variant(tmp_path):
    """The step benchmark's smoke run: every variant trains and is reported (figures are not asserted)."""
    import re

    from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path / "m", TINY_VIT_B_32_CFG)
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_train_step.py"), "--model", model, "--batch-size", "8",
                           "--steps", "1", "--warmup", "0", "--precision", "fp32", "--device", "cpu",
                           "--compare-padding"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(plain CLIP \(77 tokens\)|CE-CLIP [\w ,]+?)\s+([\d.]+)\s+([\d.]+)x\s+[\d.]+\s+\d+ MiB\s+([\d.]+)", proc.stdout, re.M)}
    assert set(rows) == {"plain CLIP (77 tokens)", "CE-CLIP untrimmed", "CE-CLIP trimmed",
                         "CE-CLIP untrimmed, padded negs", "CE-CLIP trimmed, padded negs"}, proc.stdout
    assert rows["plain CLIP (77 tokens)"][1] == "1.00"
    assert float(rows["CE-CLIP untrimmed"][2]) == 77.0 and float(rows["CE-CLIP trimmed"][2]) < 40

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_check_make_shards_gpu_tiny_mode_runs_on_cpu(tmp_path):
    """The GPU device check, in its CPU smoke mode: every step (filler alone, local and Ray make-shards
    runs, output comparison) runs and writes its figures, so a lent GPU's minutes are not lost to a bug."""
    pytest.importorskip("ray")
    from tests._gen_helpers import env

    out = tmp_path / "figures.json"
    cmd = [sys.executable, str(SCRIPTS / "check_make_shards_gpu.py"), "--json", str(out), "--device", "cpu", "--tiny",
           "--shards", "2", "--captions", "8", "--workers", "1", "--ray-workers", "1", "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    assert fig["mode"] == "tiny" and fig["model"]["parameters"] > 0
    assert fig["filler"]["best_fills_per_s"] > 0 and set(fig["filler"]["fills_per_s"]) == {"256", "1024"}
    runs = fig["end_to_end"]
    assert set(runs) == {"local_workers1", "ray_workers1_1actor"}
    for run in runs.values():
        assert run["captions"] == 8 and run["captions_per_s"] > 0 and run["fills"] > 0
        assert run["workers_detail"] and run["limited_by"]
    assert runs["local_workers1"]["workers_detail"][0]["device"] == "cpu"
    assert runs["ray_workers1_1actor"]["fillers"][0]["requests"] > 0
    assert fig["identical_outputs"] is True

"""Golden shards: the exact bytes make-shards writes for a fixed input, seed and model, pinned by sha256.

The digests were taken from the code *before* the batched filler, the CPU/GPU pipeline and the tagging
ops (issue 18) and must not change with them: speed work may not change a single output byte. Both
fillers are covered (the tiny masked LM, random weights; the corpus vocabulary), with captions that
exercise windowing (a caption longer than the model's positions), casing, odd whitespace, non-ASCII
text and every kind of bad caption.

The input is built here from fixed bytes (no JPEG encoder involved). A digest changes legitimately when
the environment changes what the model or the tagger computes (another torch or transformers version
initialising the random tiny model differently, another spaCy model): then re-pin it from a checkout
known to be right, and say so in the commit.
"""

import hashlib
import json

import pytest

from openclip_ce.shards import command
from openclip_ce.shards.config import config_for
from openclip_ce.testing.tiny_mlm import SAMPLE_CAPTIONS
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, tiny_filler, tree_bytes, write_tar

# Re-pinned once for the web alt-text rules (openclip_ce/generation/alttext.py): of the 137 samples only
# "A CAT ON A WOODEN MAT." changed, with both fillers: the ALL-CAPS rule tags it as a lowercase copy, so
# its two nouns are found and it gets a noun swap ("A MAT ON A WOODEN CAT."), where it had none.
GOLDEN = {
    "mlm": "306bcc80b2a3f54bf3590933e2210a9c44e3fc9f7185e2fe290393135a00f30d",
    "vocab": "f3a748194057dac073c34db06ec2fc66cee1d18f79cb9a407a791d99f53543c1",
}


def golden_captions():
    caps = []
    for i, a in enumerate(SAMPLE_CAPTIONS):
        b = SAMPLE_CAPTIONS[(7 * i + 3) % len(SAMPLE_CAPTIONS)]
        caps += [a, a.rstrip(".") + " and " + b[0].lower() + b[1:]]
    caps += ["A CAT ON A WOODEN MAT.", "  two  dogs\tand a cat\n", "Ünïcödé café with a naïve waiter near a chair.",
             " ".join(SAMPLE_CAPTIONS[:25]),  # longer than the tiny model's 128 positions: windowed
             "A dog.", "...", "Running dogs chase the happier cats while a man watches.", "red"]
    return caps


def write_golden_input(root):
    caps = golden_captions()
    bad = [None, b"", b"\xff\xfe caf\xe9"]  # no caption, empty, not UTF-8
    per = (len(caps) + 2) // 3
    for s in range(3):
        members = []
        for i, cap in enumerate(caps[s * per:(s + 1) * per]):
            key = f"g{s}_{i:04d}"
            members.append((f"{key}.jpg", b"image-bytes-%d-%d" % (s, i)))
            members.append((f"{key}.txt", cap.encode("utf-8")))
        for j, cap in enumerate(bad):
            key = f"g{s}_bad{j}"
            members.append((f"{key}.jpg", b"x"))
            if cap is not None:
                members.append((f"{key}.txt", cap))
        write_tar(root / f"{s:05d}.tar", members)


def digest(tree):
    h = hashlib.sha256()
    for name in sorted(tree):
        h.update(name.encode() + b"\0" + hashlib.sha256(tree[name]).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def golden_input(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    write_golden_input(root / "in")
    return root


def _run(golden_input, out, filler="mlm", **kw):
    model = tiny_filler(golden_input, []) if filler == "mlm" else "/unused"
    cfg = config_for([str(golden_input / "in")], str(out), spacy_model=SPACY_MODEL, filler=filler,
                     filler_model=model, seed=3, top_k=5, chunk_size=16, batch_size=8, vocab_per_tag=50, **kw)
    assert command.run_config(cfg) == 0
    return tree_bytes(out)


@pytest.mark.parametrize("filler", ["mlm", "vocab"])
def test_output_bytes_are_the_pinned_ones(golden_input, filler, tmp_path):
    tree = _run(golden_input, tmp_path / "out", filler)
    assert sorted(tree) == ["00000.tar", "00001.tar", "00002.tar"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["problems"] == {"empty_caption": 3, "no_caption": 3, "non_utf8_caption": 3}
    assert min(stats["negatives"].values()) > 80  # every type made for most of the 128 captions
    assert digest(tree) == GOLDEN[filler], f"{filler}: {digest(tree)}"


def test_every_tagging_ops_gives_the_pinned_bytes_and_none_blocks_a_resume(golden_input, tmp_path):
    """blis (thinc's default), numpy and torch multiplies: the same tags, so the same bytes. The choice is
    recorded in config.json, and a rerun that would choose otherwise still resumes (it is not an output
    setting)."""
    for ops in ("blis", "numpy", "torch"):
        assert digest(_run(golden_input, tmp_path / ops, tagging_ops=ops)) == GOLDEN["mlm"], ops
    recorded = json.loads((tmp_path / "blis" / ".make-shards" / "config.json").read_text())
    assert recorded["tagging_ops"] == {"ops": "blis", "chosen_by": "--tagging-ops"}
    (tmp_path / "blis" / "00001.tar").unlink()  # one shard to redo, now with another multiply
    assert digest(_run(golden_input, tmp_path / "blis", tagging_ops="torch")) == GOLDEN["mlm"]
    recorded = json.loads((tmp_path / "blis" / ".make-shards" / "config.json").read_text())
    assert recorded["tagging_ops"]["ops"] == "torch"
    stats = json.loads((tmp_path / "blis" / "stats.json").read_text())
    assert stats["shards"]["written_this_run"] == 1 and stats["run"]["tagging_ops"]["ops"] == "torch"


@pytest.mark.slow
def test_the_gpu_process_path_gives_the_pinned_bytes(golden_input, tmp_path, monkeypatch):
    """--device cuda: the workers tag, a separate masked-LM process fills (here on the CPU, test hook),
    two chunks in flight per worker; the bytes are the pinned ones, and stats.json says who did what."""
    from openclip_ce.shards.devices import FAKE_GPUS_ENV

    monkeypatch.setenv(FAKE_GPUS_ENV, "1")
    assert digest(_run(golden_input, tmp_path / "out", device="cuda")) == GOLDEN["mlm"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    fillers, th = stats["run"]["fillers"], stats["throughput"]
    assert [f["device"] for f in fillers] == ["cuda:0"] and fillers[0]["fills"] == th["fills"] > 0
    assert fillers[0]["requests"] >= 3 and fillers[0]["busy_s"] > 0
    assert 0 <= th["wait_s"] <= th["fill_s"] and th["limited_by"] in ("tagging (CPU)", "filling (masked LM)")

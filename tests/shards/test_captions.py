"""make-shards on captions that are not clean text: every input survives, is counted by kind, and the
run says what it lost (stats.json, the last log line, a closing warning). Through ``openclip-ce make-shards``."""

import json

import pytest

from openclip_ce import cli
from openclip_ce.negatives import NEG_TYPES, decode_negatives
from openclip_ce.testing.make_shards_runs import SPACY_MODEL, jpeg, read_tar, tiny_filler, write_tar

PLAIN = ["A dog chases a cat on the grass.", "Two men are riding horses on the beach.",
         "A red bus parked next to a tall building.", "A woman holding an umbrella walks down a rainy street."]

# the caption field of each sample's JSON member, as raw JSON text, and the problem kind it must give
JSON_CAPTIONS = [
    (b'{"caption": "A dog chases a cat on the grass."}', None),
    (b'{"caption": "A red bus \\ud800 parked next to a building."}', "non_utf8_caption"),  # cut UTF-16 pair
    (b'{"caption": "\\udc80\\udc81"}', "non_utf8_caption"),
    (b'{"caption": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "bad_caption_json"),  # RecursionError
    (b'{"caption": ' + b"1" * 5000 + b"}", "bad_caption_json"),  # ValueError: too long an integer
    (b'{"caption": "unterminated', "bad_caption_json"),
    (b'{"caption": 42}', "non_string_caption"),
    (b'{"caption": ["a", "list"]}', "non_string_caption"),
    (b'{"caption": {"nested": "object"}}', "non_string_caption"),
    (b'{"caption": true}', "non_string_caption"),
    (b'{"caption": null}', "no_caption"),
    (b'{"other": "field"}', "no_caption"),
    (b'\xff\xfe{"caption": "x"}', "non_utf8_caption"),
    (b'{"caption": "   "}', "empty_caption"),
    (b'{"caption": "Two men are riding horses on the beach."}', None),
    (b'{"caption": "A woman holding an umbrella walks down a rainy street."}', None),
]


def _json_shard(path, extra=()):
    members = []
    for i, (raw, _) in enumerate(list(JSON_CAPTIONS) + list(extra)):
        members += [(f"s{i:03d}.jpg", jpeg(i)), (f"s{i:03d}.json", raw)]
    write_tar(path, members)


def _negatives(out_tar):
    return {name.split(".", 1)[0]: decode_negatives(data) for name, data in read_tar(out_tar)
            if name.endswith(".neg.json")}


def _make_shards(args, caplog=None):
    return cli.main(["make-shards", *map(str, args), "--spacy-model", SPACY_MODEL, "--no-progress",
                     "--tagging-ops", "blis"])


def _expected_problems():
    want = {}
    for _, kind in JSON_CAPTIONS:
        if kind:
            want[kind] = want.get(kind, 0) + 1
    return want


@pytest.mark.parametrize("filler", ["vocab", "mlm"])
def test_json_captions_of_every_shape_are_counted_never_crash(tmp_path, filler, caplog):
    """Lone surrogates (the vocabulary build crashed on them; the masked LM failed the shard on every
    retry), deep nesting, huge numbers, non-string fields: each sample passes with null negatives and
    its own problem kind; the run exits 0."""
    # plain captions beside them, so that --filler vocab finds words that occur twice (it refuses an empty vocabulary)
    _json_shard(tmp_path / "in" / "00000.tar", extra=[(json.dumps({"caption": c}).encode(), None) for c in PLAIN * 3])
    extra = ["--filler", filler, "--caption-json-field", "caption"]
    if filler == "mlm":
        extra += ["--filler-model", tiny_filler(tmp_path, [])]
    caplog.set_level("INFO")
    assert _make_shards([tmp_path / "in", "--out", tmp_path / "out", *extra]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["failed_shards"] == []
    assert stats["problems"] == _expected_problems()
    negs = _negatives(tmp_path / "out" / "00000.tar")
    for i, (_, kind) in enumerate(JSON_CAPTIONS):
        if kind:
            assert all(v is None for v in negs[f"s{i:03d}"].values()), (i, kind)
    assert any(v is not None for v in negs["s000"].values())
    # samples_without_negatives is exact: every sample of the output with four nulls, no more, no less
    without = sum(all(v is None for v in n.values()) for n in negs.values())
    assert stats["samples_without_negatives"] == without >= sum(1 for _, k in JSON_CAPTIONS if k)
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done:")][-1]
    assert f"{without} samples without negatives" in done
    assert "non_string_caption 4" in done and "bad_caption_json 3" in done and "non_utf8_caption 3" in done


def test_a_wrong_caption_key_ends_with_a_warning_that_names_it(tmp_path, caplog, capsys):
    members = []
    for i, cap in enumerate(PLAIN * 3):
        members += [(f"k{i:03d}.jpg", jpeg(i)), (f"k{i:03d}.caption", cap.encode())]
    write_tar(tmp_path / "in" / "00000.tar", members)
    caplog.set_level("INFO")
    # --filler vocab reads the captions first: none found is a one-line error naming the key, nothing written
    assert _make_shards([tmp_path / "in", "--out", tmp_path / "out0", "--filler", "vocab"]) == 2
    assert "the shards hold no caption (--caption-key 'txt')" in capsys.readouterr().err
    assert not (tmp_path / "out0" / "00000.tar").exists()
    # a run that needs no vocabulary goes through, and its closing warning names the key
    assert _make_shards([tmp_path / "in", "--out", tmp_path / "out", "--types", "rel"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "most samples" in r.getMessage()]
    assert len(warned) == 1
    assert "--caption-key txt" in warned[0] and "no_caption 12" in warned[0] and "caption, jpg" in warned[0]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["samples_without_negatives"] == 12 and stats["problems"] == {"no_caption": 12}
    # the right key: no warning, negatives made
    caplog.clear()
    assert _make_shards([tmp_path / "in", "--out", tmp_path / "out2", "--filler", "vocab",
                         "--caption-key", "caption"]) == 0
    assert not [r for r in caplog.records if "most samples" in r.getMessage()]
    assert json.loads((tmp_path / "out2" / "stats.json").read_text())["samples_without_negatives"] == 0


def test_a_run_where_most_captions_get_no_negative_warns(tmp_path, caplog):
    """Captions with no editable word at all (codes, numbers): a closing warning says what to check."""
    members = []
    for i, cap in enumerate(["IMG_0042", "12345", "DSC 0001.JPG", "A dog chases a cat on the grass."] * 3):
        members += [(f"k{i:03d}.jpg", jpeg(i)), (f"k{i:03d}.txt", cap.encode())]
    write_tar(tmp_path / "in" / "00000.tar", members)
    caplog.set_level("INFO")
    assert _make_shards([tmp_path / "in", "--out", tmp_path / "out", "--filler", "vocab"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["samples_without_negatives"] == 9 and stats["problems"] == {}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "most samples" in r.getMessage()]
    assert len(warned) == 1 and "9 of 12" in warned[0] and "--caption-key" in warned[0]


def test_a_failure_that_still_fails_a_shard_names_the_sample(tmp_path, monkeypatch):
    """Whatever still goes wrong inside generation fails the shard with the sample's key in the error."""
    from openclip_ce.generation import generator

    real = generator.make_rel

    def make_rel(text, toks, rng):
        if "exploding" in text:
            raise ValueError("cannot swap")
        return real(text, toks, rng)
    monkeypatch.setattr(generator, "make_rel", make_rel)
    members = []
    for i, cap in enumerate(PLAIN + ["An exploding dog chases a cat."] + PLAIN):
        members += [(f"k{i:03d}.jpg", jpeg(i)), (f"k{i:03d}.txt", cap.encode())]
    write_tar(tmp_path / "in" / "00000.tar", members)
    assert _make_shards([tmp_path / "in", "--out", tmp_path / "out", "--filler", "vocab"]) == 1
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    (failed,) = stats["failed_shards"]
    assert "sample k004: ValueError: cannot swap" in failed["error"]
    assert not (tmp_path / "out" / "00000.tar").exists()

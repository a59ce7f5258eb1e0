"""The training data stage under hostile shards, through open_clip's own training main (--loss ce_clip):
a neg.json with a lone surrogate or 50,000 nested brackets, a neg.json that may belong to another caption
(a repeated key), a member webdataset would unpickle, hand-made negatives unlike any edit."""

import pickle
import random
import re
import sys

import pytest

from openclip_ce.negatives import NEG_TYPES, encode_negatives
from openclip_ce.training.data import (NegativesError, NegativesProblemCounter, attach_negatives, decode_bundle,
                                       drop_pickled_members, sanity_issues)
from openclip_ce.testing.caption_shards import write_tar
from openclip_ce.testing.proc import run
from openclip_ce.testing.toy_shards import Opens
from openclip_ce.testing.training_runs import sample_members, tiny_model, train_args

SURROGATE = b'{"rel": "a red \\ud800 square", "att": null, "act": null, "obj": null}'  # escaped, valid JSON
NESTED = b"[" * 50_000 + b"]" * 50_000


def _sample(key, members):
    return [(f"{key}.{ext}", data) for ext, data in members.items()]


def _hostile_shard(path, marker, n_ok=10):
    rng = random.Random(7)
    out = []
    for i in range(n_ok):
        out += _sample(f"ok{i}", sample_members(rng))
    surrogate = sample_members(rng)
    surrogate["neg.json"] = SURROGATE
    nested = sample_members(rng)
    nested["neg.json"] = NESTED
    long = sample_members(rng)
    long["neg.json"] = encode_negatives({"rel": "word " * 2000, "att": None, "act": None, "obj": None})
    pickled = sample_members(rng)
    pickled["pyd"] = pickle.dumps(Opens(marker))
    first, second = sample_members(rng), sample_members(rng)
    # what make-shards wrote before it split repeated keys: one neg.json, made from the first caption, after both
    dup = [("dup.jpg", first["jpg"]), ("dup.txt", first["txt"]), ("dup.jpg", second["jpg"]),
           ("dup.txt", second["txt"]), ("dup.neg.json", first["neg.json"])]
    out = (_sample("sur", surrogate) + out[:4 * 3] + _sample("deep", nested) + dup + _sample("long", long)
           + _sample("pkl", pickled) + out[4 * 3:])
    write_tar(path, out)


def test_hostile_shards_train_with_logged_placeholders_or_stop_with_one_line(tmp_path):
    marker = tmp_path / "code-ran-from-data"
    _hostile_shard(tmp_path / "hostile.tar", marker)
    model, logs = tiny_model(tmp_path), tmp_path / "logs"
    lenient = run([sys.executable, "-m", "open_clip_train.main",
                   *train_args(model, str(tmp_path / "hostile.tar"), logs, "lenient", "--loss", "ce_clip",
                               samples=16, batch=4)])
    assert lenient.returncode == 0, lenient.stderr[-4000:]
    assert not marker.exists(), "a pickled shard member was unpickled in a --loss ce_clip run"
    log = (logs / "lenient" / "out.log").read_text()
    where = r"ce_clip: shard \S+hostile\.tar key"
    assert re.search(where + r" sur: malformed neg\.json \('rel' holds a lone surrogate '\\ud800' at position 6", log)
    assert re.search(where + r" deep: malformed neg\.json \(JSON nested too deeply", log)
    assert re.search(where + r" dup: neg\.json of a repeated key \(the sample before has the same key and no "
                             r"neg\.json", log)
    assert re.search(where + r" dup: missing neg\.json", log)  # the first of the two: nothing silently attached
    assert re.search(where + r" pkl: pickled member \(\.pyd\); dropped before open_clip's decoder", log)
    assert re.search(where + r" long: suspicious negatives \(rel has 10000 characters for a caption of \d+.*\); kept",
                     log)
    assert "Traceback" not in lenient.stderr

    strict = run([sys.executable, "-m", "open_clip_train.main",
                  *train_args(model, str(tmp_path / "hostile.tar"), logs, "strict", "--loss", "ce_clip", "--ce-strict",
                              samples=16, batch=4)])
    assert strict.returncode == 2, strict.stderr[-4000:]
    assert "Traceback" not in strict.stderr and "UnicodeEncodeError" not in strict.stderr
    errors = [l for l in strict.stderr.splitlines() if "| ERROR |" in l]
    assert len(errors) == 1 and re.search(r"shard \S+hostile\.tar key sur: malformed neg\.json: 'rel' holds a lone "
                                          r"surrogate .*\(--ce-strict\)$", errors[0]), strict.stderr[-3000:]
    assert not marker.exists()


# ----------------------------------------------------------------------------- the stage itself
def _neg(rel):
    return encode_negatives({"rel": rel, "att": None, "act": None, "obj": None})


def test_repeated_keys_keep_their_own_negatives_and_an_old_layout_is_refused():
    a = {"__key__": "k", "__url__": "s.tar", "txt": b"a dog chasing a ball", "neg.json": _neg("a ball chasing a dog")}
    b = {"__key__": "k", "__url__": "s.tar", "txt": b"a cat on a mat", "neg.json": _neg("a mat on a cat")}
    out = [decode_bundle(s["txt"].decode()) for s in attach_negatives([dict(a), dict(b)])]  # make-shards' layout now
    assert [n["rel"] for _, n in out] == ["a ball chasing a dog", "a mat on a cat"]

    old = [{k: v for k, v in a.items() if k != "neg.json"}, dict(b, **{"neg.json": a["neg.json"]})]
    out = [decode_bundle(s["txt"].decode()) for s in attach_negatives([dict(s) for s in old])]
    assert [n for _, n in out] == [dict.fromkeys(NEG_TYPES)] * 2  # neither caption gets the other's negatives
    with pytest.raises(NegativesError, match=r"shard s.tar key k: missing neg.json"):  # strict stops at the first
        list(attach_negatives([dict(s) for s in old], strict=True))
    image_only = {"__key__": "k", "__url__": "s.tar", "jpg": b"J"}
    with pytest.raises(NegativesError, match=r"shard s.tar key k: neg.json of a repeated key"):
        list(attach_negatives([image_only, dict(old[1])], strict=True))
    other_shard = [old[0], dict(old[1], __url__="t.tar")]  # the same key in the next shard: not a repeat
    out = [decode_bundle(s["txt"].decode()) for s in attach_negatives([dict(s) for s in other_shard])]
    assert out[1][1]["rel"] == "a ball chasing a dog"


def test_pickled_members_are_dropped_and_counted(tmp_path):
    marker = tmp_path / "ran"
    counter = NegativesProblemCounter(verdict="dropped")
    sample = {"__key__": "k", "__url__": "s.tar", "txt": b"x", "pyd": pickle.dumps(Opens(marker)),
              "pickle.gz": b"...", "pth": b"...", "jpg": b"J"}
    drop_pickled_members(sample, counter)
    assert set(sample) == {"__key__", "__url__", "txt", "jpg"} and counter.counts == {"pickled member": 3}
    assert not marker.exists()


def test_sanity_report_flags_what_no_edit_makes():
    caption = "a red square left of a blue circle"
    assert sanity_issues(caption, {"rel": "a blue square left of a red circle", "att": "a red square left of a "
                                   "green circle", "act": None, "obj": None}) == []
    issues = sanity_issues(caption, {"rel": caption, "att": "x" * 200, "act": "один красный квадрат",
                                     "obj": "a red square 😀 left of a blue circle"})
    assert issues == ["rel equals the caption", "att has 200 characters for a caption of 34",
                      "att shares no word with the caption", "act uses CYRILLIC characters, the caption does not",
                      "act shares no word with the caption", "obj uses SYMBOL characters, the caption does not"]

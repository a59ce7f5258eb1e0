"""Keep the held-out combinations out of the training *negatives* too (the demo's stage 2b).

make-shards' ``att`` and ``obj`` edits put a colour or a shape into a training caption; now and then
the result names a held-out combination of two colours with two shapes ("a red circle ... a blue
square" made from "a red circle ... a green square"). CE-CLIP would then be trained, on hundreds of
such captions, that these texts are wrong, while plain CLIP never sees them: the held-out test would
measure that, not composition (measured: 15% of the ``obj`` and 6% of the ``att`` negatives of a
2,000-picture run named a held-out combination). This stage turns every such negative into a
placeholder, the same thing make-shards writes when it has no candidate, so the loss ignores it.

Decontamination of an evaluation set is a property of this toy world (we know which combinations
are held out); on real data the analogue is keeping benchmark captions out of the training negatives.
Each shard is rewritten atomically (a new file renamed into place) only if something changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from ..fileio import write_json_atomic
from ..negatives import NEG_MEMBER, NEG_TYPES, decode_negatives, encode_negatives
from ..shards.tario import ShardWriter, read_samples
from .scenes import names_held_out

REPORT = "decontamination.json"


def drop_held_out_negatives(shard_dir: Path) -> Dict:
    """Placeholders for the negatives in ``shard_dir/*.tar`` that name a held-out combination;
    writes and returns ``{"negatives": {type: n}, "removed": {type: n}}``."""
    negatives = dict.fromkeys(NEG_TYPES, 0)
    removed = dict.fromkeys(NEG_TYPES, 0)
    for shard in sorted(shard_dir.glob("*.tar")):
        writer = ShardWriter(str(shard))
        changed = False
        try:
            for _, members in read_samples(str(shard)):
                for m in members:
                    if not (m.is_file and m.name.endswith("." + NEG_MEMBER)):
                        writer.write_raw(m.raw)
                        continue
                    negs = decode_negatives(m.data)
                    for t, caption in negs.items():
                        if caption is None:
                            continue
                        negatives[t] += 1
                        if names_held_out(caption):
                            negs[t] = None
                            removed[t] += 1
                            changed = True
                    writer.add(m.name, encode_negatives(negs), m.mtime)
        except BaseException:
            writer.abort()
            raise
        if changed:
            writer.commit()
        else:
            writer.abort()
    result = {"negatives": negatives, "removed": removed}
    write_json_atomic(shard_dir / REPORT, result)
    return result

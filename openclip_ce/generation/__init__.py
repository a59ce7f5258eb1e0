"""Negative generation: hard-negative captions (CE-CLIP paper, section 3.1): spaCy POS tags, a noun swap, masked-LM fills.

For every caption four negatives are made, each independently:

* ``rel``: two different nouns (runs of consecutive ``NOUN`` tokens, so "tennis racket" moves as one)
  swap places;
* ``att`` / ``act`` / ``obj``: one ``ADJ`` / ``VERB`` / ``NOUN`` token is masked and refilled by a
  :class:`MLMFiller` (a ``transformers`` masked LM) or a :class:`VocabFiller` (same-tag words of the
  corpus's own vocabulary, no model needed).

Everything operates on spaCy's character offsets: the rest of the caption, whitespace included, is
kept exactly. A type whose required words are absent gives ``None`` (never a lone ``<mask>`` fill).
A fill is never the original word nor a case or inflection variant of it (same lowercase, same
lemma or same crude stem), never punctuation, a sub-word fragment, a number or an empty string.

Determinism: every random choice comes from a ``random.Random`` seeded by ``(seed, sample key,
type)``, never by process, worker or batch. The MLM choice is uniform over the *set* of the top-k
admissible words (sorted alphabetically before drawing), so the rank order among the top-k, which
tiny floating-point differences between batch compositions could flip, does not matter; only a
near-tie exactly at the k-th place could. On CPU (fp32) with a fixed model this did not happen in
the tests; in fp16 on a GPU, such boundary ties are more frequent, so outputs made on different
device types can differ for a small fraction of samples (docs/make-shards.md, "Determinism").


Everything works on a chunk of captions at once: one spaCy ``pipe``, one tokenizer call, numpy
arrays for the masked sequences and the word filters, one model request per chunk; the model side can
run in another process (a GPU process, a Ray actor) while the caller tags the next chunk.

Modules, in dependency order: :mod:`.words` (what a word is, variants, casing, seeding),
:mod:`.tagging` (spaCy POS tags and lemmas) with :mod:`.tagging_ops` (which matrix multiply it runs
on), :mod:`.alttext` (which words of web alt-text an edit may touch; Title Case tagged in lowercase),
:mod:`.edits` (the noun swap, the fill protocol, its chunk-wide chooser), :mod:`.mlm_tokens`
(the masked LM's tokenizer side) with :mod:`.bpe_pieces` (cached byte-level BPE), :mod:`.mlm_model`
(its model side), :mod:`.fillers` (masked LM and vocabulary fillers), :mod:`.generator` (the four
negatives of a chunk of captions). The shard job that runs it over WebDataset shards is
:mod:`openclip_ce.shards`.
"""

from ..errors import UserError


class GenerationSetupError(UserError):
    """A model (spaCy or masked LM) that cannot be loaded; the message says what to do."""

"""Where a sample's caption is, and which captions get negatives: :class:`CaptionReader`.

``--caption-key``, ``--caption-json-field``, ``--max-caption-chars`` and ``--languages`` in one frozen
value, made once from the configuration (:func:`openclip_ce.shards.setup.caption_reader`) and read by
everything that reads captions: the shard writer, the vocabulary of ``--filler vocab`` and the closing
warning of a run whose captions were mostly not found. No input makes :meth:`CaptionReader.read` raise:
a sample without a usable caption gets a problem kind instead, counted in ``stats.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .language import LanguageFilter

# kinds that say the caption was not found where --caption-key / --caption-json-field point
CAPTION_NOT_FOUND = ("no_caption", "bad_caption_json", "non_string_caption")

_FILTERS: Dict[Tuple[Tuple[str, ...], int], LanguageFilter] = {}


@dataclass(frozen=True)
class CaptionReader:
    key: str = "txt"                  # the sample's member holding the caption
    json_field: Optional[str] = None  # dotted path of the caption in that (JSON) member
    max_chars: int = 2000             # longer captions get no negatives (caption_too_long)
    languages: Tuple[str, ...] = ("en",)  # () = every language

    def where(self) -> str:
        """The flags that point at the caption, as a user would type them."""
        return f"--caption-key {self.key}" + (f" --caption-json-field {self.json_field}" if self.json_field else "")

    def read(self, members_by_ext: Dict[str, bytes], tagger) -> Tuple[Optional[str], Optional[str]]:
        """``(caption, None)`` or ``(None, problem kind)``. ``tagger``: the run's
        :class:`~openclip_ce.generation.tagging.SpacyTagger` (or None), whose dictionary the word check of
        English reads."""
        raw = members_by_ext.get(self.key)
        if raw is None:
            return None, "no_caption"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "non_utf8_caption"
        if self.json_field:
            try:
                value = _json_field(json.loads(text), self.json_field)
            except (ValueError, RecursionError):  # JSONDecodeError, too long a number, too deep a nesting
                return None, "bad_caption_json"
            if value is None:
                return None, "no_caption"
            if not isinstance(value, str):
                return None, "non_string_caption"
            try:
                value.encode("utf-8")  # a lone surrogate ("\ud800") that JSON escapes let through
            except UnicodeEncodeError:
                return None, "non_utf8_caption"
            text = value
        if not text.strip():
            return None, "empty_caption"
        if len(text) > self.max_chars:
            return None, "caption_too_long"
        if self.language_filter(tagger).other(text) is not None:
            return None, "other_language_caption"
        return text, None

    def language_filter(self, tagger) -> LanguageFilter:
        """The filter of ``--languages``, with ``tagger``'s dictionary for the word check of English (made
        once per tagger: the tagger of a process lives as long as the process)."""
        key = (self.languages, id(tagger))
        if key not in _FILTERS:
            english = tagger.english if self.languages == ("en",) and tagger is not None else None
            _FILTERS[key] = LanguageFilter(self.languages, english)
        return _FILTERS[key]


def _json_field(obj, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj

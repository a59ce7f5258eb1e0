"""Names, titles and labels of web alt-text: the spans of a caption that no edit may enter.

A dictionary cannot tell "The Walking Dead", "Starting Lineup" or "Florence Nightingale" from a product
description: every word of them is a dictionary word, and in a Title Case caption every word is
capitalised. What gives most of them away is where they stand. :func:`name_spans` finds, from the
caption's text alone:

* **Labels**: words about the file or the listing, not the scene: "Stock Photo", "Royalty Free",
  "Vector", "Screenshot", "Free Shipping", "HD", "Download", "Getty Images", units ("oz", "ml"),
  domain parts ("com"); "photo", "image", "picture" unless written in lowercase inside a sentence
  ("a photo of a cat" is a scene).
* **The site or shop**: the part after the last bar ("... | Christmas World"), and a single word after
  a closing dash ("... - Lyst"; not a colour: "... - Black").
* **The artist or brand**: a single capitalised word before the first dash ("Slipknot - Wait and Bleed").
* **Quoted text**: a title or a quote ("Kygo Announces Debut LP 'Cloud Nine'").
* **Acronyms**: a word in capitals in a caption that is not all capitals ("NFL", "CRP", "LED").
* **Names after a marker**: the capitalised run after "by", "featuring", "starring", "©", "credit",
  "courtesy", "Photo:" ("Greeting Card by Orange Tree Toys"), the one before "™" or "®", and the whole
  sentence around "feat" / "ft" ("You Got Me feat Erykah Badu": a song and its singers).
* **Capitals inside a sentence**: in a sentence with a lowercase content word among its capitals, a
  capitalised word that does not start it is a name ("the 2011 Harrods Christmas Sale", "US rider
  Stephen Basset in the Elite Junior World Championships"), and so is its first word when a
  capitalised word follows ("Scott Dixon and his wife").
* **Titles**, in a sentence of capitals (Title Case):
  - from a capitalised article or possessive to the end of its segment ("The Walking Dead", "Case
    For The iPad Mini", "Barns With A View", "My Uncensored Life in Rock");
  - a segment up to a word that names a release ("Brain Games Season Two", "Stronghold 2nd Edition",
    "Ranger's Apprentice Series", "Kingsman: Golden Circle Review");
  - a capitalised run that ends in the word of an organisation or a place ("Blackbird Fabrics",
    "Langdon Farm", "Tivy Stadium", "Colonial Street", "Hearing Loss Association", "Chaos Mountain
    Brewing");
  - a capitalised run that ends in a model's letter or a sequel's numeral ("Logic Pro X", "Chocolate
    Cream Pie II"; not a size, "Bike Cover S", nor a joined letter, "T-shirt");
  - the segment before a year in brackets: a work or a life ("Madagascar: Escape 2 Africa (2008)",
    "Saving Grace (2000)");
  - the title before a subtitle ("Inner Engineering: ...", "Transatlantic Rebels: ..."; not a field
    name: "Color: Gray").

Segments are the parts of a caption between separators (" - ", "|", ":", ",", brackets, quotes...);
sentences are split at the same separators but commas.
"""

from __future__ import annotations

import re
from typing import List, Tuple

# words about the picture file or the listing, never about what is in the picture; units and domain parts
LABEL_WORDS = frozenset((
    "screenshot screenshots thumbnail thumbnails footage clipart vector vectors infographic infographics png jpg "
    "jpeg gif svg eps pdf mp3 mp4 hd download downloads royalty com net org www html htm php "
    "oz ml cl cm mm km kg mg lb lbs inch inches ft pcs pc mah gb tb mb px dpi"
).split())
# words of the medium: a label ("Image of ...", "- Photo") unless written in lowercase inside a sentence
MEDIUM_WORDS = frozenset((
    "photo photos photograph photographs photography pic pics image images picture pictures wallpaper wallpapers"
).split())
_LABELS = re.compile(
    r"\b(?:stock|free|premium|editorial|archival|high|hi)[\s-]+(?:photos?|photographs?|photography|images?|pictures?|"
    r"vectors?|illustrations?|footage|videos?|clips?|art|graphics?|icons?|download|shipping|delivery|res(?:olution)?"
    r"|quality|stock|printable|fotos?|fotografie|fotograf[ií]as?)\b"
    # the stock-photo label of the sites' other languages ("Stock fotografie", "Foto Stock", "Stok fotoğraf")
    r"|\b(?:foto\s+stock|stok\s+foto[gğ]raf)(?!\w)"
    r"|\b(?:vector|flat|cartoon|stock)\s+(?:illustrations?|art|graphics?|icons?|designs?|drawings?|backgrounds?)\b"
    r"|\b(?:clip\s+art|for\s+sale|best\s+sellers?|new\s+arrivals?|buy\s+online|on\s+sale)\b"
    r"|\b(?:getty|shutterstock|alamy|dreamstime|istock(?:photo)?|depositphotos|123rf|fotolia|pinterest|etsy|ebay"
    r"|amazon|youtube)\b",
    re.I,
)
# a word that every match of _LABELS holds, as _WORD splits an ASCII caption without apostrophes: a
# caption with none of them skips the search (most captions)
_LABEL_KEYS = frozenset((
    "stock free premium editorial archival high hi vector flat cartoon clip sale best arrival arrivals online foto stok "
    "getty shutterstock alamy dreamstime istock istockphoto depositphotos 123rf fotolia pinterest etsy ebay "
    "amazon youtube"
).split())
# the capitalised run after one of these is a name ("by Granger", "© Meg McMahon", "Photo: Jason Merritt")
_AFTER = re.compile(r"(?:^|(?<=\W))(?:by|featuring|starring|credits?|courtesy(?:\s+of)?|via|copyright|©|\(c\)"
                    r"|(?:photo|image|picture|source)\s*:)(?=\W)[.:]?", re.I)
_BEFORE = re.compile(r"[™®©℠]")
# paired quotes: a straight double quote not glued to a word or a number ('30"'), a straight single one
# only at a word's edge (not an apostrophe)
_QUOTES = "\"“„«'‘"
_QUOTED = re.compile(r"(?<![\w\"])\"[^\"]+\"(?![\w\"])|“[^”]+”|„[^“”]+[“”]|«[^»]+»|(?<![\w'])'[^']+'(?![\w'])"
                     r"|‘[^’]+’(?!\w)")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# characters that end a segment when they stand between two words (a dash or dot only with a space)
_SEGMENT_END = frozenset("|:;,()[]{}<>•·~!?\"“”«»/\\")
_SENTENCE_BREAK = frozenset("|:;()[]{}<>•·!?\"“”«»")
_SPACED_END = frozenset("-–—.")
# lowercase words that say nothing about how a caption is written
_FUNCTION = frozenset("the and for with from into onto over under not are was were has have had its his her "
                      "their our your you this that these those per via all any off out who what how why".split())
_FEAT = frozenset(("feat", "ft"))
COLOURS = frozenset("black white red blue green yellow gray grey brown pink purple orange navy silver gold beige "
                    "ivory cream khaki tan teal turquoise maroon burgundy olive multicolor multicolour".split())
# lowercase words that may stand inside a name ("Leonardo da Vinci", "Beauty and the Beast")
_PARTICLES = frozenset("of the and de da di del der den van von la le du y e & des dos das".split())
# a capitalised one of these starts a title that runs to the end of its segment
_ARTICLES = frozenset("the a an my your our his her their its".split())
# the last word of the name of an organisation or a place
_ORGS = frozenset("""records fabrics solutions design designs studio studios inc llc ltd co company corp corporation group
store stores shop boutique apartments hotel hotels resort retreat restaurant bar cafe farm farms cottage works industries
transport media news press publishing church school university college academy center centre club association
foundation institute hospital museum gallery stadium arena airport airways airlines motors realty festival championship
championships conference awards league society council committee department ministry bank tower hall theatre theater
street st avenue ave road rd drive lane boulevard city county river lake island islands valley bay mountains beach
park inn suites lodge motel brewing brewery brewers winery vineyard vineyards distillery bakery salon spa clinic agency
network magazine radio""".split())
# a year in brackets after a title: "Madagascar: Escape 2 Africa (2008)", "Jorge Luis Borges (1899-1986)"
_YEAR = re.compile(r"(?:1[89]|20)\d\d")
# the last word of a model's or a sequel's name: one capital letter, a roman numeral ("Logic Pro X", "Rocky IV")
# (not "A", "I", nor a size: "Bike Cover S"; not a letter joined to a word: "T-shirt", "V-neck")
_MODEL_END = re.compile(r"[B-HJKN-RT-Z]|(?=[IVX]{2})X{0,3}(?:IX|IV|V?I{0,3})")
# a word that names a release of a work: the segment up to it is the work's title
_WORKS = frozenset("""season episode vol volume edition series chapter dvd bluray paperback hardcover audiobook soundtrack
ost remix trailer review subtitle subtitles lyrics album apk mod""".split())
# a caption whose only capital is its first letter needs the rules after the dictionary only for these
_FIRST_CAPITAL_RULES = MEDIUM_WORDS | _FEAT | _WORKS
# field names: "Color: Gray" is no title and subtitle
_FIELDS = frozenset("""color colour colors colours size sizes material style type model brand item sku condition finish
dimensions weight length width height pattern theme fabric shape capacity quantity price format language author artist
title category features feature note subject location date time place""".split())


def _words(text: str) -> List[Tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def _csv_unescaped(text: str) -> str:
    """``text`` with CSV's doubled quotes read, offsets kept. A caption wrapped in quotes that holds a
    doubled one was written as a CSV field (2 % of LAION-400M alt-text: '"Pink ""Tree"" Bedding Cover
    Set"'): the wrapping quotes are no quotes, and each doubled one is one quote, next to the word it
    touches ('""Tree' -> ' "Tree', 'Tree""' -> 'Tree" ', '30"" Range' -> '30"  Range': an inch mark).
    A field written into a CSV field again (1 % of LAION-2B alt-text: three quotes at each end, four
    for each quote inside, so that one reading leaves '"24"" Tile Cutter"') is read again ('24" Tile
    Cutter'). Elsewhere a doubled quote is no quote ("30"" Range"). What a reading drops becomes spaces."""
    if '""' not in text:
        return text
    end = len(text.rstrip())
    kept = list(range(end))  # the characters left after each reading, by their place in ``text``
    read = False
    while len(kept) > 2 and text[kept[0]] == '"' and text[kept[-1]] == '"':
        body = kept[1:-1]
        if not any(text[a] == '"' == text[b] for a, b in zip(body, body[1:])):
            break
        kept, i = [], 0
        while i < len(body):
            if text[body[i]] == '"' and i + 1 < len(body) and text[body[i + 1]] == '"':
                # the quote that stays is the one next to the word it touches
                kept.append(body[i + 1] if i + 2 < len(body) and text[body[i + 2]].isalnum() else body[i])
                i += 2
            else:
                kept.append(body[i])
                i += 1
        read = True
    if not read:
        return text.replace('""', "  ")
    out = [" "] * end
    for k in kept:
        out[k] = text[k]
    return "".join(out) + text[end:]


def _breaks(gap: str) -> Tuple[bool, bool]:
    """Does the text between two words end a segment, and does it start a new sentence (where a capital
    says nothing)? A single space (most gaps) does neither."""
    if gap == " ":
        return False, False
    chars = set(gap)
    spaced = bool(chars & _SPACED_END) and (gap[0].isspace() or gap[-1].isspace())
    return spaced or bool(chars & _SEGMENT_END), spaced or bool(chars & _SENTENCE_BREAK)


def name_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of ``text`` that hold a name, title or label (see the module docstring)."""
    words = _words(text)
    low = [text[s:e].lower() for s, e in words]
    spans: List[Tuple[int, int]] = []
    if not _LABEL_KEYS.isdisjoint(low) or not text.isascii() or "'" in text:
        spans += [m.span() for m in _LABELS.finditer(text)]
    if not words:
        return spans
    n = len(words)
    spans += [w for w, lw in zip(words, low) if lw in LABEL_WORDS]
    if any(q in text for q in _QUOTES):
        read = _csv_unescaped(text)
        first, last = len(read) - len(read.lstrip()), len(read.rstrip())
        for m in _QUOTED.finditer(read):
            if m.start() > first or m.end() < last:  # not quotes around the whole caption
                spans.append(m.span())
    gaps = [text[words[i - 1][1]:words[i][0]] for i in range(1, n)]
    pipe = max((i for i, g in enumerate(gaps, 1) if "|" in g), default=0)
    if pipe:  # "Title | Site": the part after the last bar names the site or shop
        spans.append((words[pipe][0], words[-1][1]))
    if text.lower() == text:  # no capital: the medium words are the scene's
        return spans
    if (text[1:].islower() and _FIRST_CAPITAL_RULES.isdisjoint(low) and text.isascii()
            and "-" not in text):
        # one capital, the first letter ("A man riding a bike."): no acronym, no capitalised run, no
        # title; of the rules below only the dashes, the medium words, "feat", a release word and the
        # marks (non-ASCII) could still apply, and the caption has none of them
        return spans
    # a capital first, or inside a word that starts in lowercase ("iPad", "eBay": names too)
    cap = [text[s].isupper() or (text[s].islower() and not text[s:e].islower()) for s, e in words]
    breaks = [_breaks(g) for g in gaps]
    starts = [True] + [b[0] for b in breaks]  # a segment starts here (commas, slashes too)
    opens = [True] + [b[1] for b in breaks]  # a sentence starts here
    if n > 1 and opens[-1] and not pipe and low[-1] not in COLOURS and any(c in "-–—" for c in gaps[-1]):
        spans.append(words[-1])  # "... - Lyst", "... - Video": one word after a dash names a shop or a label
    if n > 2 and cap[0] and opens[1] and low[0] not in COLOURS and any(c in "-–—" for c in gaps[0]):
        spans.append(words[0])  # "Slipknot - Wait and Bleed": one word before a dash names an artist or a brand
    all_caps = sum(map(str.isupper, text)) * 5 >= sum(map(str.isalpha, text)) * 4
    if not all_caps:  # in an ALL CAPS caption a capital says nothing
        spans += [w for w, lw in zip(words, low) if len(lw) > 1 and text[w[0]:w[1]].isupper() and lw.isalpha()]

    def block(i: int, j: int) -> None:
        if i < j:
            spans.append((words[i][0], words[j - 1][1]))

    def run_end(i: int, whole_segment: bool) -> int:
        """Index past the capitalised run from word ``i`` (lowercase particles inside a name allowed),
        or past its segment."""
        j = i + 1
        while j < n and not starts[j] and (whole_segment or cap[j] or (
                low[j] in _PARTICLES and j + 1 < n and cap[j + 1] and not starts[j + 1])):
            j += 1
        return j

    # a sentence with a lowercase content word among its capitals is written in sentence case ("US rider
    # Stephen Basset in the Elite Junior World Championships"), not one that only ends in one ("... Basket
    # 20th century"); a word after a hyphen ("Twin-size") is part of its neighbour
    lower = [text[s:e].islower() and lw.isalpha() and len(lw) > 2 and lw not in _FUNCTION and lw not in LABEL_WORDS
             and lw not in MEDIUM_WORDS and (k == 0 or gaps[k - 1][-1].isspace())
             for k, ((s, e), lw) in enumerate(zip(words, low))]
    sentence = [False] * n
    i = 0
    while i < n:
        j = i + 1
        while j < n and not opens[j]:
            j += 1
        content = [k for k in range(i, j) if lower[k]]
        if not all_caps and content and (len(content) > 1 or any(cap[k] for k in range(content[0] + 1, j))):
            sentence[i:j] = [True] * (j - i)
        if any(low[k] in _FEAT for k in range(i, j)):  # "You Got Me feat Erykah Badu": a song and its singers
            block(i, j)
        i = j
    spans += [w for k, (w, lw) in enumerate(zip(words, low))
              if lw in MEDIUM_WORDS and not (sentence[k] and text[w[0]:w[1]].islower())]
    if all_caps:
        return spans
    for m in _AFTER.finditer(text):
        i = next((k for k, (s, _) in enumerate(words) if s >= m.end()), n)
        if i < n and cap[i]:
            block(i, run_end(i, not sentence[i]))
    for m in _BEFORE.finditer(text) if not text.isascii() else ():
        j = next((k for k in range(n - 1, -1, -1) if words[k][1] <= m.start()), None)
        if j is not None and cap[j]:
            i = j
            while i > 0 and not starts[i] and cap[i - 1]:
                i -= 1
            block(i, j + 1)
    for i in range(n):
        if not cap[i]:
            continue
        if sentence[i]:  # a capital inside a sentence, or a sentence's first word with a capital after it
            if not opens[i] or (i + 1 < n and cap[i + 1] and not opens[i + 1]):
                spans.append(words[i])
            continue
        if low[i] in _ARTICLES and i + 1 < n and cap[i + 1] and not starts[i + 1] and gaps[i].isspace():
            block(i, run_end(i, True))  # "The Walking Dead", "Barns With A View"
        if low[i] in _ORGS and i and cap[i - 1] and not starts[i] and (i + 1 == n or starts[i + 1] or not cap[i + 1]):
            k = i
            while k > 0 and not starts[k] and (cap[k - 1] or low[k - 1] in _PARTICLES):
                k -= 1
            block(k, i + 1)  # "Langdon Farm", "Blackbird Fabrics", "Tivy Stadium"
        if low[i] in _WORKS:
            k = i
            while k > 0 and not starts[k]:
                k -= 1
            block(k, i + 1)  # "Brain Games Season Two", "Stronghold 2nd Edition"
        if (i and cap[i - 1] and not starts[i] and (i + 1 == n or starts[i + 1] or not cap[i + 1])
                and (i + 1 == n or gaps[i][0].isspace()) and _MODEL_END.fullmatch(text[words[i][0]:words[i][1]])):
            k = i
            while k > 0 and not starts[k] and cap[k - 1]:
                k -= 1
            block(k, i + 1)  # "Logic Pro X", "Rocky IV": a model's or a sequel's name
    for i in range(1, n if "(" in text else 0):  # "Madagascar: Escape 2 Africa (2008)": a work or a life and its years
        if "(" in gaps[i - 1] and _YEAR.fullmatch(low[i]) and cap[i - 1] and not sentence[i - 1]:
            k = i - 1
            while k > 0 and not starts[k]:
                k -= 1
            block(k, i)
    for i in range(1, n if ":" in text else 0):  # "Inner Engineering: A Yogi's Guide to Joy": the title before its subtitle
        if ":" in gaps[i - 1] and not sentence[i - 1] and not sentence[i] and cap[i] and low[i - 1] not in _FIELDS:
            k = i - 1
            while k > 0 and not opens[k]:
                k -= 1
            block(k, i)
    return spans

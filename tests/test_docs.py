"""The user documentation: every relative link and anchor in README.md and docs/ resolves, the README stays a
front door, and no page speaks of how the project was built instead of the software."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(text):
    """(line number, line) of the lines outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    seen, out = {}, set()
    for _, line in _prose(page.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page):
    for number, line in _prose(page.read_text(encoding="utf-8")):
        for m in LINK.finditer(line):
            yield number, m.group(1) or m.group(2)


def broken_links(pages):
    problems = []
    for page in pages:
        for number, target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                problems.append(f"{page.name}:{number}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{page.name}:{number}: {target}: no such heading")
    return problems


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) > 5
    assert broken_links(PAGES) == []


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title `x`\n\n## Two words\n\n[ok](#two-words) [ok](b.md#title-x)\n"
                                   "[bad](#three) [bad](c.md) [bad](b.md#nope)\n```\n[not a link](none.md)\n```\n")
    (tmp_path / "b.md").write_text("# Title `x`\n")
    problems = [p.split(": ", 1)[1] for p in broken_links([tmp_path / "a.md"]) if p]
    assert problems == ["#three: no such heading", "c.md: no such file", "b.md#nope: no such heading"]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 250
    first = next(i for i, line in enumerate(lines) if "-m open_clip_train.main" in line and "torchrun" in line)
    assert first < 80
    assert "pip install -e . && openclip-ce demo" in lines[10] or any(
        "pip install -e . && openclip-ce demo" in line for line in lines[:20])
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README's index lacks docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_user_docs_speak_of_the_software_only(page):
    text = page.read_text(encoding="utf-8")
    for pattern in (r"\bthis session\b", r"\bthe session\b", r"\bwas lent\b", r"device tool", r"carry \.device",
                    r"\bissue #?\d+\b(?![^(]*github\.com)", r"\bhelper session"):
        hits = [line for line in text.splitlines() if re.search(pattern, line, re.I)
                and "github.com" not in line]
        assert not hits, (pattern, hits[:3])

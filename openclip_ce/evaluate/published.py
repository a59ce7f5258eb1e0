"""Published results of ``ViT-B-32 --pretrained openai``, beside ours.

Before trusting a comparison between two models, a user confirms on their own machine and data
that ``openclip-ce eval`` reproduces what the benchmarks' authors published for the one model they
all report, OpenAI's CLIP ViT-B/32. The published numbers live in ``published.json`` next to this
module, keyed by our summary metric names, each with its source, how sure we are of it (``status``)
and the tolerance a check allows; docs/evaluation.md shows them (the table there is generated
from the file: ``python -m openclip_ce.evaluate.published --write-doc docs/evaluation.md``).

``python -m openclip_ce.evaluate.published RESULTS.json`` prints ours beside theirs (the last step of
``scripts/recipes/verify_published_numbers.sh``) and exits 0 when every checked metric present in the results
is within its tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import EXIT_USAGE, UserError
from ..fileio import write_atomic
from .report import load_results

DATA = Path(__file__).with_name("published.json")
STATUSES = ("verified", "second-hand", "reference", "not found")
BEGIN, END = "<!-- published-table:begin -->", "<!-- published-table:end -->"


def load_published(path: Path = DATA) -> Dict:
    """The published-numbers file, checked: every metric names a known source and status; a checked one
    has a value and a tolerance."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    sources = data.get("sources") or {}
    for name, src in sources.items():
        if not all(isinstance(src.get(f), str) and src[f] for f in ("label", "cite", "url")):
            raise ValueError(f"{path}: source {name!r} needs a label, a cite and a url")
    for key, e in (data.get("metrics") or {}).items():
        if e.get("status") not in STATUSES:
            raise ValueError(f"{path}: {key}: status {e.get('status')!r} not in {STATUSES}")
        if e.get("source") not in sources:
            raise ValueError(f"{path}: {key}: unknown source {e.get('source')!r}")
        if e.get("check") and (not isinstance(e.get("value"), (int, float)) or not isinstance(e.get("tolerance"), (int, float))):
            raise ValueError(f"{path}: {key}: a checked metric needs a value and a tolerance")
    return data


def _pct(v: Optional[float], digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def doc_table(data: Optional[Dict] = None) -> str:
    """The Markdown table of docs/evaluation.md (between the published-table markers), then its sources."""
    data = data or load_published()
    m = data["model"]
    indep = data["sources"][data["independent_source"]]
    lines = [f"`--model {m['model']} --pretrained {m['pretrained']}`, accuracies in %. *checked*: compared by "
             f"`scripts/recipes/verify_published_numbers.sh`, within ± the tolerance in points. *independent*: a "
             f"re-evaluation with the benchmarks' own code, [{indep['label']}]({indep['url']}); not a reference, a "
             f"sense of how far a faithful re-run lands.", "",
             "| metric | published | status | checked | independent | source | note |",
             "|---|---|---|---|---|---|---|"]
    for key, e in data["metrics"].items():
        src = data["sources"][e["source"]]
        checked = f"±{100 * e['tolerance']:g}" if e.get("check") else "no"
        lines.append(f"| {key} | {_pct(e['value'])} | {e['status']} | {checked} | {_pct(e.get('independent'))} | "
                     f"[{src['label']}]({src['url']}) | {e.get('note', '')} |")
    lines += ["", "Sources:", ""]
    lines += [f"- [{src['label']}]({src['url']}): {src['cite']}" for src in data["sources"].values()]
    return "\n".join(lines) + "\n"


def replace_doc_section(text: str, table: str) -> str:
    if BEGIN not in text or END not in text:
        raise UserError(f"the document has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def compare_rows(results: Dict, data: Optional[Dict] = None) -> List[Dict]:
    """One row per published metric: ours, theirs, the difference and a verdict
    (``ok`` / ``DIFFERS`` for checked metrics, ``reference`` / ``not found`` / ``not run`` otherwise)."""
    data = data or load_published()
    rows = []
    for key, e in data["metrics"].items():
        ours = results["summary"].get(key)
        theirs = e["value"]
        diff = ours - theirs if ours is not None and theirs is not None else None
        if ours is None:
            verdict = "not run"
        elif not e.get("check"):
            verdict = "not found" if theirs is None else "reference"
        else:
            verdict = "ok" if abs(diff) <= e["tolerance"] + 1e-12 else "DIFFERS"
        rows.append({"metric": key, "ours": ours, "published": theirs, "difference": diff,
                     "independent": e.get("independent"), "tolerance": e.get("tolerance") if e.get("check") else None,
                     "verdict": verdict, "status": e["status"], "source": data["sources"][e["source"]]["cite"]})
    return rows


def side_by_side(rows: Sequence[Dict], results: Dict, data: Optional[Dict] = None) -> str:
    """Markdown: ours beside the published numbers, with a verdict line."""
    data = data or load_published()
    m = data["model"]
    info = results.get("model") or {}
    lines = [f"# openclip-ce eval vs published results of {m['model']} --pretrained {m['pretrained']} (values in %)", ""]
    if (info.get("model"), info.get("pretrained")) != (m["model"], m["pretrained"]):
        lines += [f"**Note: these results are for {info.get('label') or info.get('model')}, not "
                  f"{m['model']} --pretrained {m['pretrained']}: the published numbers do not apply to it.**", ""]
    lines += ["| metric | ours | published | ours - published | tolerance | verdict | independent | status |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "—" if r["difference"] is None else f"{100 * r['difference']:+.2f}"
        tol = "—" if r["tolerance"] is None else f"±{100 * r['tolerance']:g}"
        lines.append(f"| {r['metric']} | {_pct(r['ours'])} | {_pct(r['published'])} | {diff} | {tol} | {r['verdict']} | "
                     f"{_pct(r['independent'])} | {r['status']} |")
    checked = [r for r in rows if r["verdict"] in ("ok", "DIFFERS")]
    bad = [r["metric"] for r in checked if r["verdict"] == "DIFFERS"]
    missing = [r["metric"] for r in rows if r["verdict"] == "not run"]
    lines.append("")
    if not checked:
        lines.append("Verdict: nothing checked (no checked metric in the results).")
    elif bad:
        lines.append(f"Verdict: {len(bad)} of {len(checked)} checked metrics differ beyond their tolerance: {', '.join(bad)}.")
    else:
        lines.append(f"Verdict: all {len(checked)} checked metrics agree within their tolerance.")
    if missing:
        lines.append(f"Not in the results (benchmark data missing or not requested): {', '.join(missing)}.")
    lines.append("Sources and notes: docs/evaluation.md, 'Published results'.")
    return "\n".join(lines) + "\n"


def passed(rows: Sequence[Dict]) -> bool:
    checked = [r for r in rows if r["verdict"] in ("ok", "DIFFERS")]
    return bool(checked) and all(r["verdict"] == "ok" for r in checked)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m openclip_ce.evaluate.published",
                                description="print `openclip-ce eval` results beside the published ViT-B-32 openai numbers")
    p.add_argument("results", nargs="?", help="results JSON of `openclip-ce eval --model ViT-B-32 --pretrained openai`")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p.add_argument("--write-doc", default=None, metavar="DOC",
                   help="regenerate the published-results table of DOC (docs/evaluation.md) from the data file")
    args = p.parse_args(argv)
    prog = p.prog
    try:
        if args.write_doc:
            doc = Path(args.write_doc)
            try:
                text = doc.read_text(encoding="utf-8")
            except (OSError, UnicodeError) as e:
                raise UserError(f"--write-doc {doc}: cannot read it ({type(e).__name__}: {e.strerror or e})") from None
            write_atomic(doc, replace_doc_section(text, doc_table()))
            print(f"wrote the published-results table into {doc}")
            if not args.results:
                return 0
        if not args.results:
            raise UserError("give a results JSON (or --write-doc DOC)")
        results = load_results(args.results)
        rows = compare_rows(results)
        text = side_by_side(rows, results)
        print(text, end="")
        if args.out:
            write_atomic(Path(args.out), text)
        return 0 if passed(rows) else 1
    except UserError as e:
        print(f"{prog}: error: {e.one_line()}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

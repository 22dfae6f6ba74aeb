"""Turn a results JSON into an SVG bar chart and a Markdown table, for the docs.

Usage: ``python -m benchmarks.chart [RESULTS.json] [--svg PATH] [--md PATH]``. Nothing is
written unless asked: without ``--svg``/``--md`` the Markdown goes to stdout. The SVG is
written by hand (no plotting library): one panel per metric, a bar per implementation at
its median, a whisker over min-max.
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path
from typing import Any, Dict, List, Optional

from .report import fmt, fmt_ratio

Doc = Dict[str, Any]
Row = Dict[str, Any]

COLOURS = {"ours": "#2f6db5", "kiwipy09": "#9a9a9a", "reference": "#dd8a2b"}
KIND_NAMES = {"ours": "kiwipy (this project)", "kiwipy09": "kiwipy 0.9", "reference": "reference"}
WIDTH, LABEL_W, BAR_W, ROW_H, TITLE_H, GAP = 860, 170, 520, 18, 24, 12


def _metrics(doc: Doc) -> List[List[Row]]:
    """Rows grouped by metric, in the order of the summary."""
    groups: Dict[str, List[Row]] = {}
    for row in doc["summary"]:
        groups.setdefault(row["metric"], []).append(row)
    return list(groups.values())


def _text(x: float, y: float, body: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(body)}</text>'


def _scale(rows: List[Row]) -> float:
    """The value drawn at full width. One far-out bar (pika without confirms is ~15x the
    rest) would flatten every other bar, so it is cut at 1.6x the next one and marked."""
    tops = sorted((r["max"] for r in rows if r["status"] == "ok"), reverse=True)
    if not tops or not tops[0]:
        return 1.0
    if len(tops) > 1 and tops[0] > 4 * tops[1] > 0:
        return 1.6 * float(tops[1])
    return float(tops[0])


def _bar(row: Row, y: float, scale: float) -> List[str]:
    def x(value: float) -> float:
        return LABEL_W + BAR_W * min(value / scale, 1.04)

    colour = COLOURS.get(row["kind"], "#555")
    length, lo, hi, mid = x(row["median"]) - LABEL_W, x(row["min"]), x(row["max"]), y + ROW_H / 2
    out = [
        f'<rect x="{LABEL_W}" y="{y + 3:.1f}" width="{max(length, 1):.1f}"'
        f' height="{ROW_H - 6}" fill="{colour}"/>',
        f'<path d="M{lo:.1f} {mid:.1f}H{hi:.1f}M{lo:.1f} {mid - 4:.1f}v8M{hi:.1f} {mid - 4:.1f}v8"'
        ' stroke="#222" stroke-width="1" fill="none"/>',
    ]
    if row["median"] > scale:  # cut bar: a white double slash near its end
        cut = LABEL_W + BAR_W * 0.92
        out.append(
            f'<path d="M{cut:.1f} {y + 16:.1f}l6 -14M{cut + 5:.1f} {y + 16:.1f}l6 -14"'
            ' stroke="white" stroke-width="2"/>'
        )
    label = f"{fmt(row['median'])} ({fmt(row['min'])}-{fmt(row['max'])})"
    out.append(_text(max(hi, LABEL_W + length) + 6, y + 13, label, fill="#333"))
    return out


def _panel(rows: List[Row], top: float) -> List[str]:
    first = rows[0]
    better = "higher" if first["higher_is_better"] else "lower"
    title = f"{first['title']} ({first['unit']}, {better} is better)"
    out = [_text(10, top + 16, title, font_weight="bold")]
    scale = _scale(rows)
    y = top + TITLE_H
    for row in rows:
        out.append(_text(LABEL_W - 8, y + 13, row["impl"], text_anchor="end"))
        if row["status"] == "ok":
            out += _bar(row, y, scale)
        else:
            out.append(_text(LABEL_W + 4, y + 13, row["status"], fill="#888", font_style="italic"))
        y += ROW_H
    return out


def _caption(doc: Doc) -> str:
    m, broker = doc.get("machine", {}), doc.get("broker", {})
    reps = doc.get("settings", {}).get("repeat")
    return (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores; RabbitMQ {broker.get('version', '?')};"
        f" medians of {reps} repetitions, whiskers min-max; {doc.get('finished', '')[:10]}"
    )


def render_svg(doc: Doc) -> str:
    parts: List[str] = []
    y = 34.0
    for rows in _metrics(doc):
        parts += _panel(rows, y)
        y += TITLE_H + ROW_H * len(rows) + GAP
    legend, x = [], 10.0
    for kind, colour in COLOURS.items():
        legend.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/>')
        legend.append(_text(x + 17, 18, KIND_NAMES[kind]))
        x += 190
    footer = _text(10, y + 10, _caption(doc), fill="#555", font_size="11")
    height = int(y + 24)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">'
    )
    background = f'<rect width="{WIDTH}" height="{height}" fill="white"/>'
    return "\n".join([head, background, *legend, *parts, footer, "</svg>"]) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _versions(doc: Doc) -> str:
    ours = doc.get("interpreters", {}).get("ours", {}).get("versions", {})
    old = doc.get("interpreters", {}).get("kiwipy09", {}).get("versions", {})
    return (
        f"kiwipy {ours.get('kiwipy')} (aio-pika {ours.get('aio-pika')});"
        f" kiwipy {old.get('kiwipy')} (aio-pika {old.get('aio-pika')});"
        f" references: aio-pika {ours.get('aio-pika')}, pika {ours.get('pika')}"
    )


def render_markdown(doc: Doc) -> str:
    lines = [
        "<!-- Generated by `python -m benchmarks.chart`; do not edit by hand. -->",
        "",
        f"Measured {doc.get('finished', '?')} ({_caption(doc)}).",
        f"Versions: {_versions(doc)}.",
        "Ratios are median / the other's median.",
        "",
        "| Measurement | Implementation | Median | Min–max | Unit | Ratios |",
        "|---|---|--:|--:|---|---|",
    ]
    for rows in _metrics(doc):
        for row in rows:
            if row["status"] == "ok":
                span = f"{fmt(row['min'])}–{fmt(row['max'])}"
                ratios = ", ".join(f"{fmt_ratio(v)}× {k}" for k, v in row.get("ratios", {}).items())
                cells = [fmt(row["median"]), span, row["unit"], ratios]
            else:
                cells = [row["status"], "", row["unit"], _cell(row.get("note", ""))[:80]]
            lines.append("| " + " | ".join([_cell(row["title"]), row["impl"], *cells]) + " |")
    lines += [
        "",
        "| Target | Measured | Range over repetitions | Needed | Status |",
        "|---|--:|--:|---|---|",
    ]
    for t in doc.get("targets", []):
        versus = f"× {t['versus']}" if t["versus"] else ""
        need = f"{t['op']} {t['threshold']:g}{versus}"
        value = fmt(t["value"]) if t["value"] is not None else "–"
        span = _paired_range(doc, t)
        lines.append(f"| {_cell(t['text'])} | {value} | {span} | {need} | {t['status']} |")
    return "\n".join(lines) + "\n"


def _values(doc: Doc, metric: str, impl: str) -> Dict[int, float]:
    """``{repetition: value}`` of *impl*'s successful runs that measured *metric*."""
    out: Dict[int, float] = {}
    for run in doc.get("runs", []):
        value = (run.get("metrics") or {}).get(metric)
        if run.get("impl") == impl and run.get("status") == "ok" and value is not None:
            out[int(run.get("rep", 0))] = float(value)
    return out


def _paired_range(doc: Doc, target: Dict[str, Any]) -> str:
    """min–max of the target's value per repetition: for a ratio, each repetition of the
    implementation over the same repetition of the reference (they ran side by side)."""
    mine = _values(doc, target["metric"], target["impl"])
    if target["versus"]:
        theirs = _values(doc, target["metric"], target["versus"])
        values = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
    else:
        values = list(mine.values())
    if not values:
        return "–"
    return f"{fmt(min(values))}–{fmt(max(values))}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart", description=__doc__)
    default = Path(__file__).resolve().parent / "results" / "latest.json"
    parser.add_argument("results", nargs="?", type=Path, default=default)
    parser.add_argument("--svg", type=Path, help="write the SVG chart here")
    parser.add_argument("--md", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    doc = json.loads(args.results.read_text())
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(render_svg(doc))
        print(f"wrote {args.svg}", file=sys.stderr)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(render_markdown(doc))
        print(f"wrote {args.md}", file=sys.stderr)
    if not args.svg and not args.md:
        sys.stdout.write(render_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

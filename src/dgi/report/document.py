"""The report's document model (headings, paragraphs, notes, facts, tables, figures) and its two renderers.

A report is built once as a `Doc` and rendered twice: `render_markdown` (figures
linked as files) and `render_html` (one self-contained page, figures inlined as
base64 PNG data URIs, CSS inline). Knows nothing about benchmarks.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any


# ------------------------------------------------------------ document blocks


@dataclass
class Cell:
    text: str
    bold: bool = False
    detail: str = ""  # e.g. "± 0.0021": after the text in Markdown, on its own smaller line in HTML

    @property
    def full(self) -> str:
        return f"{self.text} {self.detail}" if self.detail else self.text


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    numeric: list[bool]  # right-align these columns
    caption: str = ""


@dataclass
class FigureBlock:
    number: int
    filename: str
    caption: str
    png: bytes


@dataclass
class Doc:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def figure(self, figure: FigureBlock) -> None:
        self.blocks.append(("figure", figure))

    def facts(self, rows: list[tuple[str, str, bool]]) -> None:
        """(label, value, value is code) pairs, e.g. the run's command and commit."""
        self.blocks.append(("facts", rows))

    @property
    def figures(self) -> list[FigureBlock]:
        return [b for kind, b in self.blocks if kind == "figure"]


# --------------------------------------------------------------- rendering


def _md_escape(text: str) -> str:
    for char in "\\`*_|[]<>":
        text = text.replace(char, "\\" + char)
    return text


def _md_code(text: str) -> str:
    """Inline code that survives backticks inside `text` (a longer fence, CommonMark style)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_cell(cell: Cell) -> str:
    text = _md_escape(cell.full).replace("\n", "<br>")
    return f"**{text}**" if cell.bold and text else text


def render_markdown(doc: Doc) -> str:
    out = [f"# {_md_escape(doc.title)}", ""]
    for kind, block in doc.blocks:
        if kind == "h2":
            out += [f"## {_md_escape(block)}", ""]
        elif kind == "p":
            out += [_md_escape(block), ""]
        elif kind == "note":
            out += [f"> **Note:** {_md_escape(block)}", ""]
        elif kind == "facts":
            out += [f"- **{label}:** {_md_code(value) if code else _md_escape(value)}" for label, value, code in block]
            out.append("")
        elif kind == "table":
            out.append("| " + " | ".join(_md_escape(h) for h in block.headers) + " |")
            out.append("|" + "|".join("---:" if num else ":---" for num in block.numeric) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
            if block.caption:
                out += [f"_{_md_escape(block.caption)}_", ""]
        elif kind == "figure":
            out += [f"![Figure {block.number}: {_md_escape(block.caption)}](figures/{block.filename})", "",
                    f"_Figure {block.number}. {_md_escape(block.caption)}_", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f4f5f7; color: #1d2330;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 16px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6eb; }
p { margin: 8px 0 12px; max-width: 75em; }
code { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; background: #f0f2f5;
       padding: 1px 5px; border-radius: 4px; word-break: break-all; }
.facts { border-collapse: collapse; margin: 0 0 8px; }
.facts th { text-align: left; padding: 3px 16px 3px 0; color: #555; font-weight: 600; vertical-align: top;
            white-space: nowrap; }
.facts td { padding: 3px 0; }
.scroll { overflow-x: auto; margin: 10px 0 4px; }
table.data { border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 5px 7px; border-bottom: 1px solid #e3e6eb; white-space: nowrap; }
table.data th { background: #eef1f5; text-align: left; font-weight: 600; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
table.data .num { text-align: right; }
table.data td.best { background: #fff4d6; }
table.data .detail { color: #6b7280; font-size: 12px; font-weight: normal; }
.caption { color: #5a6170; font-size: 13px; margin: 4px 0 16px; }
.note { background: #fff8e6; border-left: 4px solid #f0b429; padding: 6px 12px; color: #5a4a1a; }
figure { margin: 16px 0 24px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { color: #5a6170; font-size: 13px; margin-top: 6px; }
"""


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def render_html(doc: Doc) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{html.escape(doc.title)}</h1>"]
    for kind, block in doc.blocks:
        if kind == "h2":
            parts.append(f"<h2>{html.escape(block)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_html_text(block)}</p>")
        elif kind == "note":
            parts.append(f'<p class="note"><strong>Note:</strong> {_html_text(block)}</p>')
        elif kind == "facts":
            rows = "".join(
                f"<tr><th>{html.escape(label)}</th><td>"
                + (f"<code>{html.escape(value)}</code>" if code else html.escape(value)) + "</td></tr>"
                for label, value, code in block)
            parts.append(f'<table class="facts">{rows}</table>')
        elif kind == "table":
            head = "".join(("<th class=\"num\">" if num else "<th>") + f"{html.escape(h)}</th>"
                           for h, num in zip(block.headers, block.numeric))
            body = []
            for row in block.rows:
                cells = []
                for cell, num in zip(row, block.numeric):
                    classes = " ".join(c for c in ("num" if num else "", "best" if cell.bold else "") if c)
                    text = _html_text(cell.text)
                    if cell.detail:
                        text += f'<br><span class="detail">{_html_text(cell.detail)}</span>'
                    attribute = f' class="{classes}"' if classes else ""
                    content = f"<strong>{text}</strong>" if cell.bold else text
                    cells.append(f"<td{attribute}>{content}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            parts.append(f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
                         f'<tbody>{"".join(body)}</tbody></table></div>')
            if block.caption:
                parts.append(f'<p class="caption">{_html_text(block.caption)}</p>')
        elif kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            width, height = png_size(block.png)
            parts.append(f'<figure id="figure-{block.number}"><img src="data:image/png;base64,{data}" '
                         f'width="{width}" height="{height}" alt="Figure {block.number}: {html.escape(block.caption)}">'
                         f"<figcaption>Figure {block.number}. {html.escape(block.caption)}</figcaption></figure>")
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")

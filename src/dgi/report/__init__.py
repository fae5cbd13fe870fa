"""Turn a benchmark directory into a human report: ``report.md``, ``figures/*.png``, ``report.html``.

The benchmark directory holds ``results.json`` (the contract is checked by
`load_results`, which raises ``ValueError`` naming the file and the field) and,
per model and seed, ``hubness.npz`` and optionally ``grad_norms.npz`` at the
paths that ``results.json`` gives relative to the directory.

The report is built once as a list of blocks (headings, tables, figures, notes)
and rendered twice, to Markdown (figures linked as files) and to one
self-contained HTML page (figures inlined as base64 PNG data URIs, CSS inline).
A section without data (no generative model, no gradient norms, ...) becomes a
one-line note. Every file is written atomically (temp file + rename).

Modules: `dgi.report.results` (the ``results.json`` contract and its reader),
`dgi.report.document` (the block model and the Markdown / HTML renderers),
`dgi.report.sections` (number formatting, the sections, `build_report`); this
package's `write_report` ties them together and writes the files.
"""

from __future__ import annotations

from pathlib import Path

from dgi.io import atomic_path, write_text
from dgi.report.document import png_size, render_html, render_markdown
from dgi.results import load_results
from dgi.report.sections import FIGURE_NAMES, build_report, fmt_metric

__all__ = ["FIGURE_NAMES", "fmt_metric", "load_results", "png_size", "write_report"]


def write_report(bench_dir: Path, html: bool = False) -> list[Path]:
    """Write ``report.md`` and ``figures/*.png`` (and ``report.html`` with ``html=True``) into `bench_dir`.

    Returns the written paths. Everything is read and rendered before the first
    write, so a malformed input changes nothing on disk; each file is replaced
    atomically. Figures of this module that the new report no longer has (a
    section now skipped) are removed, so the folder matches the report.
    """
    bench_dir = Path(bench_dir)
    bench = load_results(bench_dir)
    doc = build_report(bench)
    markdown = render_markdown(doc)
    page = render_html(doc) if html else None

    written = []
    figure_dir = bench_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for block in doc.figures:
        path = figure_dir / block.filename
        with atomic_path(path) as tmp:
            tmp.write_bytes(block.png)
        written.append(path)
    kept = {block.filename for block in doc.figures}
    for name in FIGURE_NAMES.values():
        if name not in kept:
            (figure_dir / name).unlink(missing_ok=True)
    write_text(bench_dir / "report.md", markdown)
    written.append(bench_dir / "report.md")
    if page is not None:
        write_text(bench_dir / "report.html", page)
        written.append(bench_dir / "report.html")
    return written

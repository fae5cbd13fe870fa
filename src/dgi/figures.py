"""Benchmark-report figures, rendered to PNG bytes with matplotlib's Agg canvas.

Every function takes plain data (names, colours, arrays) and returns the PNG
bytes; `dgi.report` decides what to plot and where to write it. Figures are
drawn on a bare `Figure` with an explicit `FigureCanvasAgg`, so nothing here
touches pyplot's global state or the caller's backend. Legends sit outside the
axes so they never cover data, and the PNGs carry no timestamp, so the same
input gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

DPI = 110
WIDTH = 10.0  # inches: 1100 px at DPI, about a page's width on screen

PALETTE = (  # tab10, five dark tab20b tones, then three more: a full benchmark (16 models) needs no colour twice
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
    "#111111", "#d6616b", "#a1d99b",
)

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "figure.titlesize": 12,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
}


def colour(index: int) -> str:
    """The colour of the model at display position `index`, the same in every figure."""
    return PALETTE[index % len(PALETTE)]


def _figure(height: float, width: float = WIDTH) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _figure_legend_below(fig: Figure, handles, labels, max_columns: int = 4) -> None:
    """One legend for the whole figure, under the panels (the title is on top), so it covers no data."""
    if handles:
        fig.legend(handles, labels, loc="outside lower center", frameon=False,
                   ncols=min(max_columns, len(labels)))


# ---------------------------------------------------------------- fig. 1: table


def table_png(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
              bold: Sequence[Sequence[bool]], row_colours: Sequence[str], footnote: str = "") -> bytes:
    """The main results table as an image; `bold[r][c]` marks the best value of a column."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        n_rows = len(rows)
        cell_height = 0.42 if any("\n" in cell for row in rows for cell in row) else 0.3
        longest = [max(len(line) for cell in [headers[c], *(row[c] for row in rows)] for line in cell.split("\n"))
                   for c in range(len(headers))]
        widths = np.array([max(longest[0], 10) * 1.3] + [max(n, 5) + 2.0 for n in longest[1:]])  # in characters
        fig = _figure(height=0.9 + cell_height * (n_rows + 1) + (0.25 if footnote else 0),
                      width=max(WIDTH, 0.085 * widths.sum()))  # ~0.085 inch per character at 9.5 pt
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title, loc="left", fontweight="bold")
        table = ax.table(cellText=[list(r) for r in rows], colLabels=list(headers), loc="upper center",
                         cellLoc="center", colWidths=list(widths / widths.sum()))
        table.auto_set_font_size(False)
        table.set_fontsize(9.5)
        for (r, c), cell in table.get_celld().items():
            cell.set_edgecolor("#d0d0d0")
            cell.set_linewidth(0.6)
            cell.set_height(cell_height / (cell_height * (n_rows + 1) + 0.2))
            if r == 0:
                cell.set_facecolor("#eef1f5")
                cell.get_text().set_fontweight("bold")
                continue
            cell.set_facecolor("#fafafa" if r % 2 == 0 else "white")
            if c == 0:
                cell.get_text().set_horizontalalignment("left")
                cell.PAD = 0.04
                cell.get_text().set_color(row_colours[r - 1])
                cell.get_text().set_fontweight("bold")
            elif bold[r - 1][c]:
                cell.get_text().set_fontweight("bold")
                cell.set_facecolor("#fff4d6")
        if footnote:
            fig.supxlabel(footnote, x=0.01, ha="left", fontsize=8.5, color="#555555")  # laid out below the table
        return _png(fig)


# ------------------------------------------------- fig. 2: popularity buckets


@dataclass
class BarSeries:
    name: str
    colour: str
    values: Sequence[float]
    errors: Sequence[float] | None = None


def bucket_bars_png(bucket_labels: Sequence[str], series: Sequence[BarSeries], metric: str,
                    title: str) -> bytes:
    """Grouped bars: one group per popularity bucket, one bar per model."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(height=4.8)
        ax = fig.add_subplot()
        n = max(len(series), 1)
        width = 0.8 / n
        x = np.arange(len(bucket_labels))
        handles = []
        for i, s in enumerate(series):
            errors = None if s.errors is None else np.asarray(s.errors, dtype=float)
            bars = ax.bar(x - 0.4 + width * (i + 0.5), np.asarray(s.values, dtype=float), width * 0.92,
                          color=s.colour, yerr=errors, capsize=2 if errors is not None else 0,
                          error_kw={"elinewidth": 0.8, "ecolor": "#333333"}, label=s.name, zorder=3)
            handles.append(bars)
        ax.set_xticks(x, bucket_labels)
        ax.tick_params(axis="x", length=0)
        ax.grid(axis="x", visible=False)
        top = max([float(np.nanmax(s.values)) for s in series if len(s.values)] + [0.0])
        ax.set_ylim(0, min(1.0, top * 1.15 + 0.02) if top > 0 else 1.0)
        ax.set_ylabel(metric)
        ax.set_xlabel("target item's popularity bucket (B0 = head, B4 = items with 0-1 training interactions)")
        fig.suptitle(title)
        _figure_legend_below(fig, handles, [s.name for s in series], max_columns=4)
        return _png(fig)


# -------------------------------------------------------------- fig. 3: hubness


@dataclass
class NormSeries:
    name: str
    colour: str
    marker: str
    popularity: np.ndarray
    norms: np.ndarray


@dataclass
class OccurrenceSeries:
    name: str
    colour: str
    k_occurrence: np.ndarray


def _binned_median(x: np.ndarray, y: np.ndarray, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
    edges = np.unique(np.geomspace(x.min(), x.max() * 1.0001, bins + 1))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    centres, medians = [], []
    for b in range(len(edges) - 1):
        chosen = y[which == b]
        if chosen.size >= 3:
            centres.append(math.sqrt(edges[b] * edges[b + 1]))
            medians.append(float(np.median(chosen)))
    return np.array(centres), np.array(medians)


def hubness_png(norms: Sequence[NormSeries], occurrences: Sequence[OccurrenceSeries], k: int) -> bytes:
    """(a) item-vector norm vs popularity, (b) CCDF of k-occurrence; either panel may be absent.

    Each panel has its own legend below its x label (the two panels label models differently).
    """
    import matplotlib

    with matplotlib.rc_context(_RC):
        panels = int(bool(norms)) + int(bool(occurrences))
        legend_lines = max(len(norms), len(occurrences))
        fig = _figure(height=4.2 + 0.24 * legend_lines)  # the one-column legends below need room
        axes = list(fig.subplots(1, max(panels, 1), squeeze=False)[0])
        letters = iter("ab") if panels == 2 else iter(["", ""])
        if norms:
            ax = axes.pop(0)
            for i, s in enumerate(norms):
                x = np.asarray(s.popularity, dtype=float) + 1.0
                y = np.asarray(s.norms, dtype=float)
                ax.scatter(x, y, s=5, alpha=0.18, color=s.colour, marker=s.marker, linewidths=0, zorder=2)
                centres, medians = _binned_median(x, y)
                # Later series are drawn on top and smaller, so identical curves (all cosine
                # models sit at norm 1) still show every colour as a ring.
                ax.plot(centres, medians, color=s.colour, lw=max(2.6 - 0.6 * i, 1.0), marker=s.marker,
                        ms=max(8.0 - 1.8 * i, 3.0), zorder=3 + i, label=s.name)
            ax.set_xscale("log")
            ax.set_xlabel("item popularity + 1 (training interactions, log scale)")
            ax.set_ylabel("L2 norm of the scored item vector")
            ax.set_title(f"{_letter(letters)}Item-vector norm vs popularity\n(dots: items, line: binned median)")
            _axes_legend_below(ax, len(norms))
        if occurrences:
            ax = axes.pop(0)
            for s in occurrences:
                values = np.asarray(s.k_occurrence)
                positive = np.sort(values[values > 0])
                if positive.size == 0:
                    continue
                xs, first = np.unique(positive, return_index=True)
                ccdf = (positive.size - first) / values.size  # share of all items with N >= x
                ax.plot(xs, ccdf, color=s.colour, lw=1.8, drawstyle="steps-post",
                        marker="o" if xs.size < 5 else None, ms=5, label=s.name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"k-occurrence N{_subscript(k)} (test contexts with the item in their top-{k})")
            ax.set_ylabel(f"share of items with N{_subscript(k)} ≥ x")
            ax.set_title(f"{_letter(letters)}k-occurrence distribution (CCDF)\nlong, flat tail = hubs")
            _axes_legend_below(ax, len(occurrences))
        for ax in axes:
            ax.set_axis_off()
        return _png(fig)


def _letter(letters) -> str:
    letter = next(letters)
    return f"({letter}) " if letter else ""


def _axes_legend_below(ax, n: int) -> None:
    """A legend under the axes' x label; constrained layout makes room for it."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncols=1 if n > 2 else n,
              borderaxespad=0.0)


def _subscript(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


# ------------------------------------------------------ fig. 4: Semantic-ID index


@dataclass
class UsageSeries:
    name: str
    colour: str
    levels: Sequence[int]
    used: Sequence[float]
    perplexity_ratio: Sequence[float]
    collision_rate: float


def index_png(series: Sequence[UsageSeries]) -> bytes:
    """Per quantizer level: share of codes used and perplexity / codebook size; SID collision rate."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(height=4.6)
        axes = fig.subplots(1, 3, width_ratios=[1.0, 1.0, 1.0])
        levels = sorted({int(level) for s in series for level in s.levels})
        x = np.arange(len(levels))
        width = 0.8 / max(len(series), 1)
        handles = []
        for panel, (ax, field, title) in enumerate([
            (axes[0], "used", "(a) Codes used per level"),
            (axes[1], "perplexity_ratio", "(b) Code perplexity / codebook size"),
        ]):
            for i, s in enumerate(series):
                values = dict(zip((int(v) for v in s.levels), getattr(s, field)))
                heights = [values.get(level, np.nan) for level in levels]
                bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width * 0.92, color=s.colour, zorder=3)
                if panel == 0:
                    handles.append(bars)
            ax.set_xticks(x, [f"level {level}" for level in levels])
            ax.tick_params(axis="x", length=0)
            ax.grid(axis="x", visible=False)
            ax.set_ylim(0, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set_title(title)
        axes[0].set_ylabel("share of the codebook used")
        axes[1].set_ylabel("perplexity / codebook size")
        fig.suptitle("Semantic-ID index health (first seed of each model)")
        ax = axes[2]
        y = np.arange(len(series))
        rates = [s.collision_rate for s in series]
        ax.barh(y, rates, color=[s.colour for s in series], zorder=3, height=0.45)
        for yi, rate in zip(y, rates):
            ax.text(rate, yi, f" {rate:.1%}", va="center", ha="left", fontsize=9)
        for yi, s in zip(y, series):  # names above the bars: no truncated tick labels
            ax.annotate(s.name, (0, yi - 0.3), xytext=(4, 0), textcoords="offset points", va="bottom",
                        ha="left", fontsize=9)
        ax.set_yticks([])
        ax.set_ylim(len(series) - 0.5, -0.9)  # first model on top, bars not stretched when there are few
        ax.set_xlim(0, max(max(rates, default=0) * 1.35, 0.05))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("share of items with a non-unique SID")
        ax.set_title("(c) SID collision rate")
        _figure_legend_below(fig, handles, [s.name for s in series], max_columns=4)
        return _png(fig)


# ------------------------------------------------------- fig. 5: gradient norms


@dataclass
class CurveSeries:
    name: str
    colour: str
    steps: np.ndarray
    values: np.ndarray


def smooth_log(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of log(values), i.e. a running geometric mean (suits a log axis)."""
    values = np.asarray(values, dtype=float)
    logs = np.log(np.clip(values, 1e-30, None))
    if window <= 1 or values.size < 3:
        return np.exp(logs)
    window = min(window, values.size)
    kernel = np.ones(window)
    padded = np.pad(logs, (window // 2, window - 1 - window // 2), mode="edge")
    return np.exp(np.convolve(padded, kernel, mode="valid") / window)


def gradient_png(series: Sequence[CurveSeries]) -> bytes:
    """Item-tower gradient norm per training step: faint raw values, bold smoothed line, log y."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(height=4.6)
        ax = fig.add_subplot()
        handles = []
        for s in series:
            steps = np.asarray(s.steps, dtype=float)
            values = np.asarray(s.values, dtype=float)
            ax.plot(steps, values, color=s.colour, lw=0.7, alpha=0.25, zorder=2)
            window = max(1, values.size // 40)
            (line,) = ax.plot(steps, smooth_log(values, window), color=s.colour, lw=2.2, zorder=3)
            handles.append(line)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("item-tower gradient L2 norm (log scale)")
        fig.suptitle("Gradient reaching the item tower (faint: per step, bold: running geometric mean)")
        _figure_legend_below(fig, handles, [s.name for s in series], max_columns=4)
        return _png(fig)


# ---------------------------------------------------------------- learning curves of one run


def learning_curves_png(title: str, records: Sequence[dict], metric: str = "ndcg@10") -> bytes:
    """Per epoch of a run's log.jsonl: validation `metric` of every ranking rule and of the dense path;
    next-token accuracy per SID level (validation solid, training dashed); beam recall per level.

    Phase changes are marked, so the towers' peak and the decoder's own progress can be told apart.
    """
    import matplotlib

    epochs = np.array([r["epoch"] for r in records], dtype=float)
    methods = ["dense", "generative/lexicographic", "generative/fused", "generative/rerank"]
    with matplotlib.rc_context(_RC):
        fig = _figure(height=4.2)
        panels = fig.subplots(1, 3)
        for index, method in enumerate(methods):
            values = [r["valid"].get(method, {}).get(metric, np.nan) for r in records]
            panels[0].plot(epochs, values, marker="o", ms=3, color=colour(index), label=method.split("/")[-1])
        panels[0].set_ylabel(f"validation {metric}")
        levels = max((len(r["valid"].get("ntp_accuracy", {}).get("overall") or []) for r in records), default=0)
        for level in range(levels):
            def series(split: str, key: str) -> list[float]:
                return [(r.get(split, {}).get(key, {}).get("overall") or [np.nan] * levels)[level] for r in records]

            panels[1].plot(epochs, series("valid", "ntp_accuracy"), marker="o", ms=3, color=colour(level),
                           label=f"level {level + 1}")
            panels[1].plot(epochs, series("train", "ntp_accuracy"), ls="--", color=colour(level))
            panels[2].plot(epochs, series("valid", "beam_recall"), marker="o", ms=3, color=colour(level),
                           label=f"prefix 1..{level + 1}")
        panels[1].set_ylabel("next-token accuracy (valid solid, train dashed)")
        panels[2].set_ylabel("beam recall of the target's prefix")
        phases = [r["phase"] for r in records]
        for ax in panels:
            ax.set_xlabel("epoch")
            for i in range(1, len(phases)):
                if phases[i] != phases[i - 1]:
                    ax.axvline(epochs[i] - 0.5, color="#999999", lw=0.8, ls=":")
            ax.legend(frameon=False, fontsize=8)
        fig.suptitle(title)
        return _png(fig)


# ---------------------------------------------------------------- search at catalogue scale


def scale_png(by_size: dict[int, dict[str, dict[str, float]]]) -> bytes:
    """benchmarks/scale.py's result: per method, batch-1 p50 latency, batched throughput and recall@10
    against the catalogue size (log x): generation's cost should not grow with the catalogue."""
    import matplotlib

    sizes = sorted(by_size)
    methods = list(by_size[sizes[0]])
    panels_spec = [("p50_ms_b1", "batch-1 p50 latency (ms)", True), ("qps_b256", "queries/s, batches of 256", True),
                   ("recall_at_10", "recall@10 vs exact dense top 10", False)]
    with matplotlib.rc_context(_RC):
        fig = _figure(height=4.0)
        panels = fig.subplots(1, 3)
        for ax, (key, label, log_y) in zip(panels, panels_spec):
            for index, method in enumerate(methods):
                ax.plot(sizes, [by_size[n][method][key] for n in sizes], marker="o", ms=4, color=colour(index),
                        label=method)
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            ax.set_xlabel("items in the catalogue")
            ax.set_ylabel(label)
        panels[0].legend(frameon=False, fontsize=8)
        return _png(fig)

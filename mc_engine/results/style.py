"""One look for every figure of mc-engine: sizes that fit a paper's column, a colour-blind-safe
palette with line styles and markers so that many curves stay apart, legends outside the axes,
and tick labels that do not collide.

Colours are Okabe & Ito's eight (Color Universal Design, 2008; distinct under the common colour
vision deficiencies). Curve ``i`` gets colour ``i mod 8``, line style ``(i div 8) mod 4`` and
marker ``i mod 7``: 32 curves differ in colour or line style, and the marker (its own period,
prime to 8) tells them apart again in greyscale prints.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mc_engine.errors import UserInputError

#: Okabe–Ito, black last (it is also the colour of reference lines).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442",
           "#000000")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: The digital (ideal) reference line.
IDEAL = {"color": "0.35", "linestyle": (0, (4, 2)), "linewidth": 1.0}
#: Dash patterns of several digital models (one per checkpoint) in one panel.
IDEAL_DASHES = ((0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 3)))
#: Figure widths in inches: one column or the full page width of a two-column paper.
WIDTHS = {"single": 3.5, "double": 7.2}
#: Formats a figure may be written in besides PNG (vector formats for a paper).
FORMATS = ("png", "svg", "pdf")
DPI = 150
#: Print-sized fonts: a 3.5 in figure at 100 % in a paper reads like body text.
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
      "ytick.labelsize": 7, "legend.fontsize": 7, "legend.title_fontsize": 7,
      "figure.titlesize": 9, "lines.linewidth": 1.3, "lines.markersize": 4,
      "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
      "grid.alpha": 0.3, "grid.linewidth": 0.5, "legend.frameon": False,
      "svg.fonttype": "none", "pdf.fonttype": 42, "figure.dpi": 100}


@dataclass(frozen=True)
class CurveStyle:
    color: str
    linestyle: str
    marker: str

    def kwargs(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


def curve_style(i: int) -> CurveStyle:
    """The style of curve ``i`` (see the module docstring)."""
    return CurveStyle(PALETTE[i % len(PALETTE)],
                      LINE_STYLES[(i // len(PALETTE)) % len(LINE_STYLES)],
                      MARKERS[i % len(MARKERS)])


def width(size: str | float) -> float:
    """A figure width in inches: ``single`` (3.5), ``double`` (7.2) or a number."""
    if isinstance(size, int | float) and not isinstance(size, bool):
        if not 1.0 <= float(size) <= 20.0:
            raise UserInputError(f"expected a width of 1 to 20 inches, got {size!r}", key="size")
        return float(size)
    if size not in WIDTHS:
        raise UserInputError(f"expected one of {', '.join(WIDTHS)} or a width in inches, got "
                             f"{size!r}", key="size")
    return WIDTHS[size]


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """``formats`` (e.g. ``["svg", "pdf"]``) lower-cased and checked against :data:`FORMATS`."""
    out = []
    for name in formats:
        name = str(name).strip().lower().lstrip(".")
        if name not in FORMATS:
            raise UserInputError(f"unknown figure format {name!r}; expected "
                                 f"{', '.join(FORMATS)}", key="--format")
        if name not in out:
            out.append(name)
    return tuple(out)


@contextlib.contextmanager
def context() -> Iterator[None]:
    """The rcParams every figure is built under (fonts, spines, grid)."""
    with rc_context(RC):
        yield


def figure(size: str | float, height: float) -> Figure:
    """A constrained-layout Figure of the given width and ``height`` inches."""
    return Figure(figsize=(width(size), height), layout="constrained")


def legend_outside(fig: Figure, handles, labels, title: str | None = None) -> None:
    """One legend for the figure, right of the axes (never over the data), in columns when
    long."""
    if not handles:
        return
    rows = 18
    ncol = int(np.ceil(len(handles) / rows))
    fig.legend(handles, labels, loc="outside right upper", title=wrap(title, 28) if title else None,
               ncols=ncol, alignment="left", handlelength=2.6)


def wrap(text: str, width_chars: int = 70) -> str:
    """``text`` broken into lines of at most ``width_chars`` (titles that would be cut off)."""
    return "\n".join(textwrap.wrap(text, width_chars)) if text else text


def set_category_ticks(ax: Axes, positions, labels: Sequence[str], axis_width_in: float) -> None:
    """Tick labels at ``positions``, rotated when they would run into each other (about 0.06 in
    per character at 7 pt)."""
    labels = [str(v) for v in labels]
    ax.set_xticks(list(positions), labels)
    room = axis_width_in / max(len(labels), 1)
    if max((len(v) for v in labels), default=0) * 0.06 > room * 0.9:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")


def spans_decades(values: Sequence) -> bool:
    """True when ``values`` are numbers, all positive and finite, spanning more than a decade:
    drawn on a log axis."""
    try:
        array = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return False
    if array.size < 2 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        return False
    return bool(array.max() / array.min() > 10.0)


def save(fig: Figure, path, fmt: str) -> None:
    """Write ``fig`` as ``fmt`` (png at :data:`DPI`)."""
    fig.savefig(path, format=fmt, dpi=DPI if fmt == "png" else None)

"""The figures' house style: tied parameters as one group, labels that name only what varies,
curves that stay apart (colour x line style x marker), legends outside the axes, log axes for
parameters spanning decades, print sizes."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mc_engine.errors import UserInputError
from mc_engine.results import style
from mc_engine.results.labels import Names, tied_groups
from mc_engine.results.plot import accuracy_vs_parameter, accuracy_vs_time
from mc_engine.results.plot_pairs import paired_comparison

TIMES = (0.0, 86400.0, 3.15e7)


def summary_of(points: list[dict], ideal: float = 0.97) -> pd.DataFrame:
    """A summarize()-shaped table: each point at TIMES, means falling with time."""
    rows = []
    for i, point in enumerate(points):
        for k, t in enumerate(TIMES):
            mean = 0.95 - 0.01 * k - 0.001 * i
            rows.append({"study": "s", "point_id": f"p{i:02d}", **point, "t_inference_s": t,
                         "n": 5, "mean": mean, "std": 0.01, "ci95_lo": mean - 0.01,
                         "ci95_hi": mean + 0.01, "q05": mean - 0.02, "q50": mean,
                         "q95": mean + 0.02, "ideal_accuracy": ideal,
                         "drop_from_ideal": ideal - mean})
    return pd.DataFrame(rows)


def test_zip_keys_and_what_follows_a_key_are_one_group_a_product_is_not():
    points = pd.DataFrame([{"device": d, "g_max": g, "on_off": o, "adc_bits": b}
                           for (d, g, o), b in itertools.product(
                               [("pcm", 25.0, np.inf), ("hermes", 20.7, np.inf),
                                ("cmo", 88.2, 9.8)], [6, 8])])
    assert tied_groups(points, ["on_off", "adc_bits", "device", "g_max"]) == \
        [["device", "on_off", "g_max"], ["adc_bits"]]  # device leads: it has the most values


def test_checkpoints_are_named_by_stem_without_their_shared_prefix():
    names = Names(["../ck/digits-mlp-plain.pt", "../ck/digits-mlp-hwa.pt"])
    assert [names.value("checkpoint", c) for c in ("../ck/digits-mlp-plain.pt",
                                                  "../ck/digits-mlp-hwa.pt")] == ["plain", "hwa"]
    assert Names(["a/run1.pt", "b/run1.pt"]).value("checkpoint", "a/run1.pt") == "run1"
    assert Names().value("w_noise", 0.02) == "0.02" and Names().value("x", np.inf) == "inf"


def test_32_curves_differ_in_colour_or_line_style_and_colours_are_okabe_ito():
    looks = [style.curve_style(i) for i in range(32)]
    assert len({(s.color, s.linestyle) for s in looks}) == 32
    assert {s.color for s in looks} == set(style.PALETTE)
    # neighbours differ in marker too (greyscale print)
    assert all(a.marker != b.marker for a, b in zip(looks, looks[1:]))


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)     # builders use no pyplot: give the figure a canvas
    canvas.draw()
    return canvas.get_renderer()


def _extents(fig):
    renderer = _renderer(fig)
    axes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
    legends = [leg.get_window_extent(renderer) for leg in fig.legends]
    return axes, legends


def test_many_curves_are_split_into_panels_with_one_legend_outside_every_axes():
    points = [{"cell_bits": c, "adc_bits": a, "on_off": o, "adc_range": r}
              for c, a, o, r in itertools.product([1, 2, 4, 7], [6, 8], [10.0, np.inf],
                                                  ["fixed", "calibrated"])]
    fig = accuracy_vs_time(summary_of(points), ["cell_bits", "adc_bits", "on_off", "adc_range"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [f"cell_bits = {c}" for c in (1, 2, 4, 7)]
    for ax in visible:      # 8 curves a panel (+ the digital line), none with a legend of its own
        assert len(ax.get_lines()) == 8 + 1 and ax.get_legend() is None
        assert ax.get_xscale() == "log"
    axes, (legend,) = _extents(fig)
    assert all(not legend.overlaps(box) for box in axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "6, 10, fixed" and "digital" in labels and len(labels) == 9
    assert fig.legends[0].get_title().get_text() == "adc_bits, on_off, adc_range"
    assert not any("cell_bits" in label for label in labels)   # the panel says it
    assert fig.get_figwidth() == pytest.approx(7.2)


def test_a_parameter_spanning_decades_is_on_a_log_axis_at_its_values():
    points = [{"tau_s": t, "adc_bits": b} for t in (1.0, 100.0, 1e4) for b in (6, 8)]
    fig = accuracy_vs_parameter(summary_of(points), "tau_s", ["tau_s", "adc_bits"],
                                size="single")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [1.0, 100.0, 1e4]
    assert fig.get_figwidth() == pytest.approx(3.5)
    linear = accuracy_vs_parameter(summary_of(points), "adc_bits", ["tau_s", "adc_bits"])
    assert linear.axes[0].get_xscale() == "linear"
    assert list(linear.axes[0].get_xticks()) == [0, 1]       # evenly spaced categories
    axes, legends = _extents(linear)
    assert legends and all(not legends[0].overlaps(box) for box in axes)


def test_long_checkpoint_ticks_are_rotated_short_ones_are_not():
    long = [f"../checkpoints/model-{name}.pt" for name in
            ("hardware-aware-noise-0.3", "hardware-aware-noise-0.1", "plain-baseline", "x")]
    fig = accuracy_vs_parameter(summary_of([{"checkpoint": c} for c in long]), "checkpoint",
                                ["checkpoint"])
    ticks = fig.axes[0].get_xticklabels()
    assert ticks[0].get_text() == "hardware-aware-noise-0.1" and ticks[0].get_rotation() == 30
    short = accuracy_vs_parameter(summary_of([{"adc_bits": b} for b in (6, 8)]), "adc_bits",
                                  ["adc_bits"])
    assert short.axes[0].get_xticklabels()[0].get_rotation() == 0


def test_a_long_comparison_title_is_wrapped_not_cut():
    table = pd.DataFrame({"t_inference_s": [0.0, 3.15e7], "diff_mean": [0.01, 0.02],
                          **{f"{k}_ci95_{s}": [0.0, 0.01] if s == "lo" else [0.02, 0.03]
                             for k in ("diff", "unpaired") for s in ("lo", "hi")}})
    title = "(" + ", ".join(f"key_{i}=value_{i}" for i in range(10)) + ") − (the other one)"
    fig = paired_comparison(table, title, size="single")
    renderer = _renderer(fig)
    shown = fig.get_suptitle()
    assert shown.replace("\n", " ") == title and shown.count("\n") >= 2
    box = fig._suptitle.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


@pytest.mark.parametrize("bad, message", [("huge", "expected one of single, double"),
                                          (40.0, "expected a width of 1 to 20 inches")])
def test_a_bad_figure_size_is_refused(bad, message):
    with pytest.raises(UserInputError, match=message):
        style.width(bad)

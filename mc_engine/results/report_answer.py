"""The head of the HTML report, which leads with the answer: what the study is (description,
model, data, image count, the digital model's value), how the best and the worst point fare at
the last read time (mean ± 95 % interval, chip-to-chip spread, decay since the first read time),
and which pair of points the paired comparison takes (from the study's own swept keys, or as
``report --compare`` chose)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mc_engine.errors import UserInputError
from mc_engine.results.labels import Names
from mc_engine.results.metrics import Metric
from mc_engine.results.store import STUDY_FILE
from mc_engine.study.units import format_duration


@dataclass
class StudyFile:
    """A study's study.toml as the run wrote it: its path, text and tables (empty when it is
    not on disk or does not parse)."""

    study: str
    path: str = ""
    text: str = ""
    tables: dict = field(default_factory=dict)

    @property
    def sweep_keys(self) -> list[str]:
        """The swept keys in the order the file names them: the plain ``[sweep]`` keys first,
        then those of each ``[[sweep.zip]]``."""
        sweep = self.tables.get("sweep", {})
        keys = [k for k in sweep if k != "zip"]
        for group in sweep.get("zip", []) if isinstance(sweep.get("zip"), list) else []:
            keys += [k for k in group if isinstance(group, dict)]
        return keys

    @property
    def description(self) -> str:
        """The ``description`` key of ``[study]``, else the header comment of the study file
        the run was started from (where that file is still there)."""
        text = self.tables.get("study", {}).get("description", "")
        return text if isinstance(text, str) and text else _source_comment(self.text)


def study_files(df: pd.DataFrame) -> list[StudyFile]:
    """The study.toml of each study of ``df``, from its results folder."""
    folder = Path(df.attrs.get("results_dir", "."))
    found = []
    for study in df["study"].unique():
        entry = StudyFile(str(study))
        for path in (folder / STUDY_FILE, folder / str(study) / STUDY_FILE):
            if path.is_file():
                try:
                    text = path.read_text(encoding="utf-8")
                    tables = tomllib.loads(text)
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                    break
                if tables.get("study", {}).get("name", study) != study:
                    continue
                entry = StudyFile(str(study), str(path), text, tables)
                break
        found.append(entry)
    return found


def header_facts(df: pd.DataFrame, summary: pd.DataFrame, files: list[StudyFile],
                 quantity: Metric) -> list[tuple[str, str]]:
    """(name, text) lines of the header: model, data, images, chips, read times, digital."""
    facts = []
    tables = files[0].tables if len(files) == 1 else {}
    if tables.get("model"):
        facts.append(("model", _pairs(tables["model"])))
    if "checkpoint" in df and df["checkpoint"].nunique() > 1:
        names = Names.of(df)
        facts.append(("checkpoints", ", ".join(f"{names.value('checkpoint', c)} ({c})"
                                               for c in df["checkpoint"].unique())))
    if tables.get("data"):
        facts.append(("data", _pairs(tables["data"])))
    if "n_samples" in df:
        counts = sorted(df["n_samples"].unique())
        word = "tokens" if tables.get("data", {}).get("task") == "language_model" else "images"
        facts.append((f"test {word}", " to ".join(str(int(c)) for c in (counts[0], counts[-1])
                                                   if len(counts) > 1) or str(int(counts[0]))))
    n = summary["n"]
    facts.append(("chips per point", str(int(n.min())) if n.min() == n.max()
                  else f"{int(n.min())} to {int(n.max())} (adaptive repeats)"))
    facts.append(("read times", ", ".join(format_duration(t)
                                          for t in sorted(summary["t_inference_s"].unique()))))
    ideal = summary.drop_duplicates(["study", "checkpoint"] if "checkpoint" in summary
                                    else ["study"])
    values = [(r.get("checkpoint"), r[f"ideal_{quantity.name}"]) for _, r in ideal.iterrows()]
    names = Names.of(summary)
    shown = ", ".join((f"{names.value('checkpoint', c)}: " if c is not None else "") +
                      f"{v:.4f}" for c, v in values if pd.notna(v))
    facts.append((f"digital (ideal) {quantity.name}", shown or "not recorded"))
    return facts


def best_and_worst(summary: pd.DataFrame, groups: list[list[str]], quantity: Metric,
                   names: Names) -> list[dict[str, str]]:
    """The best and the worst point at the last read time (all layers analog in a
    layer-sensitivity study), each as display fields: label, mean ± half-width of its 95 %
    interval, chip spread (5–95 % and std), the value at the first read time and the decay.
    Points are named by the lead of each parameter group (:mod:`.labels`)."""
    last_t, first_t = summary["t_inference_s"].max(), summary["t_inference_s"].min()
    ranked = quantity.best_first(_hardware_rows(summary, last_t).set_index(
        ["study", "point_id"])["mean"])
    if ranked.empty:
        return []
    picks = [("best", ranked.index[0])] + ([("worst", ranked.index[-1])] if len(ranked) > 1
                                           else [])
    several = summary["study"].nunique() > 1
    rows = []
    for role, (study, point) in picks:
        at = summary[(summary["study"] == study) & (summary["point_id"] == point)]
        at = _hardware_rows(at, None)
        last, first = at[at["t_inference_s"] == last_t].iloc[0], \
            at[at["t_inference_s"] == first_t].iloc[0]
        half = (last["ci95_hi"] - last["ci95_lo"]) / 2
        label = names.label(last, [g for g in groups if g[0] != "study"], with_keys=True) \
            or "the point"
        rows.append({
            "role": role, "point": (f"{study}: " if several else "") + label,
            "mean": f"{last['mean']:.4f} ± {half:.4f}" if pd.notna(half)
                    else f"{last['mean']:.4f}",
            "spread": f"{last['q05']:.4f} – {last['q95']:.4f} (std {last['std']:.4f})",
            "first": f"{first['mean']:.4f}",
            "decay": f"{quantity.change(first['mean'], last['mean']):+.4f}",
            "change": f"{last[quantity.change_column]:+.4f}"
                      if pd.notna(last[quantity.change_column]) else "-"})
    return rows


def choose_pair(summary: pd.DataFrame, groups: list[list[str]], sweep_keys: list[str],
                quantity: Metric, chosen: list[str] | None = None) -> \
        tuple[dict, dict, str] | None:
    """(baseline, other, why) of the paired comparison, or None without a pair.

    Chosen (``report --compare K=V[,K=V] K=V[,K=V]``): baseline and other as given, the groups
    they leave out held at the best point's values. Otherwise: the study's leading swept key
    (the first the study file names; the first swept group without a study file), at the
    values of the other parameters where that key changes the metric most at the last read
    time (the largest spread between its values), its best value as ``other`` and the
    runner-up as ``baseline`` (for a key of two values: the two).
    """
    last = _hardware_rows(summary, summary["t_inference_s"].max())
    if len(last) < 2 or not groups:
        return None
    best = last.loc[quantity.best_first(last["mean"]).index[0]]
    if chosen is not None:
        if len(chosen) != 2:
            raise UserInputError(f"expected two points, baseline then other (e.g. adc_bits=6 "
                                 f"adc_bits=8), got {len(chosen)}", key="--compare")
        picks = [_held(_parse(text), best, groups) for text in chosen]
        return picks[0], picks[1], "as chosen with --compare"
    lead = next((g for k in sweep_keys for g in groups if k in g), groups[0])
    held = [g[0] for g in groups if g is not lead]
    contexts = [rows for _, rows in last.groupby(held, sort=False, dropna=False)] if held \
        else [last]
    contexts = [rows for rows in contexts if len(rows) > 1]
    if not contexts:
        return None
    widest = max(contexts, key=lambda rows: rows["mean"].max() - rows["mean"].min())
    ranked = quantity.best_first(widest["mean"]).index
    top, rival = widest.loc[ranked[0]], widest.loc[ranked[1]]
    baseline = {"study": rival["study"], "point_id": rival["point_id"]}
    other = {"study": top["study"], "point_id": top["point_id"]}
    n_values = last[lead[0]].nunique()
    why = (f"the study's leading swept key, {lead[0]}: its best value against the "
           f"{'other' if n_values == 2 else 'runner-up'} one"
           + (f", at the {', '.join(held)} where {lead[0]} changes {quantity.name} most at the "
              f"last read time" if held else ""))
    return baseline, other, why


def _hardware_rows(summary: pd.DataFrame, t: float | None) -> pd.DataFrame:
    from mc_engine.study.spec import ALL_LAYERS

    rows = summary if t is None else summary[summary["t_inference_s"] == t]
    return rows[rows["layer"] == ALL_LAYERS] if "layer" in rows else rows


def _held(selection: dict, best: pd.Series, groups: list[list[str]]) -> dict:
    """``selection`` with each swept group it does not mention held at ``best``'s values."""
    out = dict(selection)
    for group in groups:
        if not any(c in selection for c in group):
            out.update({c: best[c] for c in group})
    if "layer" in best and "layer" not in out:
        out["layer"] = best["layer"]
    return out


def _parse(text: str) -> dict:
    from mc_engine.results.compare import parse_selection

    return parse_selection([item for item in text.split(",") if item.strip()], "compare")


def _pairs(table: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in table.items() if not isinstance(v, dict))


def _source_comment(resolved: str) -> str:
    """The leading comment block of the study file named in a resolved study.toml's first
    line (``... from studies/x.toml:``), where it can still be read."""
    first = resolved.splitlines()[0] if resolved else ""
    if " from " not in first:
        return ""
    source = Path(first.rsplit(" from ", 1)[1].rstrip(":").strip())
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    words = []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if not text or text.startswith(("mc-engine ", "make ")):
            break
        words.append(text)
    return " ".join(words)

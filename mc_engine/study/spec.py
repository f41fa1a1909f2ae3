"""The study file (the README's "Study files"): reading, validation and expansion into trials.

Everything a user can get wrong in a study file is caught here, before any model is loaded or any
worker started, with a :class:`~mc_engine.errors.UserInputError` naming the file and the dotted
key (``studies/x.toml: sweep.adc_bits: expected an integer, got 'a'``). Hardware values are checked
by :mod:`mc_engine.hardware` itself, so the allowed values are declared in one place only.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mc_engine.errors import Fail, UserInputError, check_int, did_you_mean, short_repr
from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.hardware.device_fields import DEVICE_DEFAULTS
from mc_engine.hardware.devices import (
    BUILTIN_DEVICES,
    DEVICES,
    DeviceModel,
)
from mc_engine.hardware.presets import PRESET_KEY, resolve_preset
from mc_engine.study import toml_writer
from mc_engine.study.checkpoints import expand_checkpoint_patterns
from mc_engine.study.keys import point_id, trial_seed
from mc_engine.study.sweep import (
    MAX_TRIALS,
    check_checkpoint_files,
    check_inert,
    check_size,
    expand_points,
    hardware_point,
    load_devices,
    load_tables,
    parse_sweep,
    swept_checkpoint,
    swept_device,
)
from mc_engine.study.units import parse_duration

if TYPE_CHECKING:
    from mc_engine.study.inputs import Inputs

TABLES = ("study", "model", "data", "hardware", "sweep")
STUDY_KEYS = ("name", "seed", "repeats", "inference_times", "description", "fingerprint", "mode",
              "target_ci", "max_repeats")
#: ``[study] mode``: every layer analog, or each analog layer alone plus all of them.
MODES = ("standard", "layer_sensitivity")
#: The ``layer`` value of the all-analog baseline of a layer-sensitivity study.
ALL_LAYERS = "all"
FINGERPRINT_KEYS = ("model", "data")
#: A study name names its results folder: portable file-name characters, short enough for any
#: file system (255 bytes per name) with room for the part files' own names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_LENGTH = 100
#: Seeds are written to study.toml, which (as TOML) holds 64-bit signed integers only.
MAX_SEED = 2**63 - 1
#: Adaptive repeats: the smallest first round (``repeats`` with ``target_ci``). Stein's interval
#: covers for any first round of 2 or more under normal spread, but the repeats it asks for grow
#: as t(0.975, n₀ − 1)² (n₀ = 2 asks for 42× what a known std would need, 5 for 2×), and a
#: handful of chips says little about a skewed spread (:mod:`mc_engine.run.adaptive`).
MIN_FIRST_ROUND = 5
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Trial:
    """One Monte Carlo trial: a hardware point programmed once with ``seed`` (repeat ``repeat``)."""

    point_id: str
    repeat: int
    seed: int
    hardware: HardwareConfig
    checkpoint: str | None = None
    #: Layer-sensitivity studies: the one analog layer, or ALL_LAYERS; None in standard studies.
    layer: str | None = None

    @property
    def analog_layers(self) -> tuple[str, ...] | None:
        """The layers on analog tiles (``evaluate_trial``'s ``layers``); None = all."""
        return None if self.layer in (None, ALL_LAYERS) else (self.layer,)


@dataclass(frozen=True)
class Study:
    """A validated study: what to evaluate (model, data), where (hardware points) and how often.

    ``points`` are the fully expanded and validated hardware points, in sweep order; ``hardware``,
    ``sweep`` and ``zips`` keep the tables as written so the study can be written back.
    ``fingerprint`` (sha256 of the model's weights and of the test data, by
    :func:`mc_engine.study.inputs.fingerprint`) is empty unless the file pins them, as the
    resolved study.toml of a run does.
    """

    name: str
    seed: int
    repeats: int
    inference_times_s: tuple[float, ...]
    model: dict[str, Any]
    data: dict[str, Any]
    hardware: dict[str, Any]
    sweep: dict[str, list[Any]]
    zips: tuple[dict[str, list[Any]], ...]
    points: tuple[HardwareConfig, ...]
    description: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    source: str = "<study>"
    base_dir: Path = field(default_factory=Path)
    mode: str = "standard"
    #: Layer-sensitivity studies: the model's analog layers (:meth:`with_layers`), else empty.
    layers: tuple[str, ...] = ()
    #: Adaptive repeats (Stein's two-stage procedure, :mod:`mc_engine.run.adaptive`):
    #: ``repeats`` is the first round, whose std alone sets each point's total so that the 95 %
    #: interval half-width of its mean accuracy is at most ``target_ci`` at every read time
    #: (at most ``max_repeats`` repeats). None: a fixed ``repeats``.
    target_ci: float | None = None
    max_repeats: int | None = None
    #: The checkpoint file of each point (the checkpoint axis, as written), or () without one.
    checkpoints: tuple[str, ...] = ()
    #: The ``[hardware] preset`` the base point started from ("" for none); ``hardware`` holds
    #: the resolved base point (the preset's values, then the keys given beside it).
    preset: str = ""

    @property
    def point_ids(self) -> list[str]:
        return [point_id(p, c) for p, c in zip(self.points, self.point_checkpoints)]

    @property
    def point_checkpoints(self) -> tuple[str | None, ...]:
        """The checkpoint of every point, None for all without a checkpoint axis."""
        return self.checkpoints or (None,) * len(self.points)

    @property
    def checkpoint_labels(self) -> tuple[str, ...]:
        """The distinct checkpoints of the checkpoint axis, in sweep order."""
        return tuple(dict.fromkeys(self.checkpoints))

    @property
    def n_trials(self) -> int:
        return len(self.points) * self.repeats * len(self._layer_variants())

    def with_layers(self, model: Any) -> Study:
        """This study knowing the analog layers of its loaded ``model``: a layer-sensitivity
        study needs them to list its trials (other studies are returned unchanged)."""
        if self.mode != "layer_sensitivity":
            return self
        from mc_engine.analog import analog_layer_names

        names = tuple(analog_layer_names(model))
        if ALL_LAYERS in names:
            raise UserInputError(f"a layer named {ALL_LAYERS!r} cannot be told apart from the "
                                 f"all-analog baseline of mode = 'layer_sensitivity'",
                                 source=self.source, key="study.mode")
        return replace(self, layers=names)

    def _layer_variants(self) -> list[str | None]:
        if self.mode != "layer_sensitivity":
            return [None]
        if not self.layers:
            raise RuntimeError("a layer-sensitivity study lists its trials after with_layers()")
        return [ALL_LAYERS, *self.layers]

    @property
    def custom_devices(self) -> dict[str, type[DeviceModel]]:
        """The device models of the points that do not ship with the engine, by name (what
        the runner sends to the workers)."""
        return {p.device: DEVICES[p.device] for p in self.points
                if p.device not in BUILTIN_DEVICES}

    @property
    def device_tables(self) -> dict[str, str]:
        """sha256 of every table of measurements (``device_table``) the points read, by name:
        part of the study's fingerprint."""
        return {p.table.name: p.table.sha256 for p in self.points if p.table is not None}

    @property
    def device_params(self) -> tuple[str, ...]:
        """The names of the device models' own parameters over all points, sorted: the extra
        float columns of the results."""
        return tuple(sorted({name for p in self.points for name, _ in p.device_params}))

    def trials(self, repeats: Iterable[int] | None = None) -> list[Trial]:
        """Every trial of the ``repeats`` (default: the first ``self.repeats``), repeat-major,
        so partial results cover all points evenly."""
        variants = self._layer_variants()
        ckpts = self.point_checkpoints
        ids = [[point_id(hw, ckpt, layer) for layer in variants]
               for hw, ckpt in zip(self.points, ckpts)]
        trials = []
        for repeat in range(self.repeats) if repeats is None else repeats:
            seed = trial_seed(self.seed, repeat)  # the same for every point, checkpoint, layer: CRN
            trials += [Trial(pid, repeat, seed, hw, ckpt, layer)
                       for point_ids, hw, ckpt in zip(ids, self.points, ckpts)
                       for pid, layer in zip(point_ids, variants)]
        return trials

    def identity(self) -> dict[str, Any]:
        """What results on disk must share with this study to be resumed by it.

        Points and repeats may change between runs (new trials are added); the seed, times, model
        and data may not, or old and new rows would not be comparable. The fingerprint of the
        model's weights and the data (which can change under an unchanged table) is checked
        separately, since it is known only once they are loaded.
        """
        return {"name": self.name, "seed": self.seed, "inference_times": self.inference_times_s,
                "model": self.model, "data": self.data, "mode": self.mode}

    def to_toml(self) -> str:
        """The resolved study as TOML: times in seconds, every base hardware parameter given,
        and the fingerprint when known."""
        from mc_engine import __version__

        study: dict[str, Any] = {"name": self.name, "seed": self.seed, "repeats": self.repeats,
                                 "inference_times": list(self.inference_times_s)}
        if self.description:
            study["description"] = self.description
        if self.mode != "standard":
            study["mode"] = self.mode
        if self.target_ci is not None:
            study["target_ci"], study["max_repeats"] = self.target_ci, self.max_repeats
        if self.fingerprint:
            study["fingerprint"] = self.fingerprint
        base = from_dict(self.hardware).to_dict()
        if swept_device(self.sweep, self.zips):  # each swept device gives its own defaults
            for name in DEVICE_DEFAULTS.keys() - self.hardware.keys():
                base.pop(name)
        tables: dict[str, Mapping[str, Any]] = {"study": study, "model": self.model,
                                                "data": self.data, "hardware": base}
        if self.sweep:
            tables["sweep"] = self.sweep
        header = (f"Resolved study written by mc-engine {__version__} from {self.source}:\n"
                  f"{len(self.points)} hardware points x {self.repeats} repeats. Relative paths "
                  f"in [model] and [data] are\nrelative to {self.base_dir.resolve()}.")
        if any(":" in name for name in self.custom_devices):
            header += "\n'module:Class' devices are imported from that folder too."
        if self.device_tables:
            header += "\ndevice_table files are read from that folder too."
        return toml_writer.dumps(tables, header, {"sweep.zip": list(self.zips)})

    def load(self, cache_dir: str | Path) -> Inputs:
        """The ``[model]`` and ``[data]`` tables loaded, checked against each other and
        fingerprinted (zoo models are trained once into ``cache_dir``); see
        :func:`mc_engine.study.inputs.load_inputs`."""
        from mc_engine.study.inputs import load_inputs

        return load_inputs(self, Path(cache_dir))


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; relative paths inside it are relative to its folder."""
    path = Path(path)
    source = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("study file not found", source=source) from None
    except IsADirectoryError:
        raise UserInputError("is a directory, expected a study file (.toml)",
                             source=source) from None
    except OSError as err:
        raise UserInputError(f"cannot read study file: {err.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise UserInputError("study file is not UTF-8 text", source=source) from None
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"not valid TOML: {err}", source=source) from None
    return parse_study(doc, source=source, base_dir=path.parent)


def split_tables(doc: Mapping[str, Any], names: tuple[str, ...], required: tuple[str, ...],
                 fail: Fail) -> dict[str, dict[str, Any]]:
    """The tables of a parsed file (study or train file) by name, each a fresh dict ({} where
    absent); an unknown top-level key, a non-table or a missing required table fails."""
    for key, value in doc.items():
        if key not in names:
            raise fail(key, f"unknown {'table' if isinstance(value, dict) else 'key'}"
                            f"{did_you_mean(key, names)}; "
                            f"allowed tables: {', '.join(names)}")
    tables: dict[str, dict[str, Any]] = {}
    for name in names:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise fail(name, f"expected a table [{name}], got {value!r}")
        if name in required and name not in doc:
            raise fail(name, f"missing the [{name}] table")
        tables[name] = dict(value)
    return tables


def parse_study(doc: Mapping[str, Any], *, source: str = "<study>",
                base_dir: Path | None = None) -> Study:
    """Validate a parsed TOML document and expand its sweep into hardware points."""

    def fail(key: str, message: str) -> UserInputError:
        return UserInputError(message, source=source, key=key)

    tables = split_tables(doc, TABLES, ("study", "model", "data"), fail)

    study = tables["study"]
    for key in study:
        if key not in STUDY_KEYS:
            raise fail(f"study.{key}", f"unknown key{did_you_mean(key, STUDY_KEYS)}; allowed: "
                                       f"{', '.join(STUDY_KEYS)}")
    for key in ("name", "seed", "repeats", "inference_times"):
        if key not in study:
            raise fail(f"study.{key}", "missing (required)")
    name = study["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        shown = name if not isinstance(name, str) or len(name) <= 40 else \
            f"{name[:20]}... ({len(name)} characters)"
        raise fail("study.name", f"expected a name of at most {MAX_NAME_LENGTH} letters, "
                                 f"digits, '.', '_' or '-' (it names the results folder), got "
                                 f"{shown!r}")
    seed = check_int(study["seed"], "study.seed", fail, lo=0)
    if seed > MAX_SEED:
        raise fail("study.seed", f"must be < 2**63 (study.toml holds 64-bit integers), got "
                                 f"{short_repr(seed)}")
    repeats = check_int(study["repeats"], "study.repeats", fail, hi=MAX_TRIALS)
    times = _times(study["inference_times"], source, fail)
    description = study.get("description", "")
    if not isinstance(description, str):
        raise fail("study.description", f"expected a string, got {description!r}")
    fingerprint = _fingerprint(study.get("fingerprint", {}), fail)
    mode = study.get("mode", "standard")
    if mode not in MODES:
        raise fail("study.mode", f"expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
    target_ci, max_repeats = _adaptive(study, repeats, fail)

    preset = tables["hardware"].get(PRESET_KEY, "")
    base = _resolved_base(tables["hardware"], tables["sweep"], fail)
    folder = Path(base_dir) if base_dir is not None else Path()
    tables["sweep"] = expand_checkpoint_patterns(tables["sweep"], folder, fail)
    load_devices(base, tables["sweep"], folder, source)
    load_tables(base, tables["sweep"], folder, source)
    hardware_point(base, source, lambda f: f"hardware.{f}")
    sweep, zips = parse_sweep(tables["sweep"], base, source, fail)
    if "checkpoint" in tables["model"] and swept_checkpoint(sweep, zips):
        raise fail("model.checkpoint", "give either [model] checkpoint or a checkpoint axis "
                                       "([sweep] checkpoint = [...]), not both")
    check_size(sweep, zips, max_repeats or repeats, fail)
    points, checkpoints = expand_points(base, sweep, zips, source, fail)
    check_checkpoint_files(checkpoints, folder, fail)
    check_times(points, times, fail)
    check_inert(points, base, sweep, zips, source, fail)
    return Study(name=name, seed=seed, repeats=repeats, inference_times_s=times,
                 model=tables["model"], data=tables["data"], hardware=base, sweep=sweep,
                 zips=zips, points=points, description=description, fingerprint=fingerprint,
                 source=source, base_dir=folder, mode=mode, target_ci=target_ci,
                 max_repeats=max_repeats, checkpoints=checkpoints, preset=preset)


def _resolved_base(hardware: dict[str, Any], sweep: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """[hardware] with its preset resolved (mc_engine.hardware.presets); a preset is a base
    point, so a sweep cannot name one."""
    zips = sweep.get("zip", [])
    if PRESET_KEY in sweep or (isinstance(zips, list) and any(
            isinstance(z, dict) and PRESET_KEY in z for z in zips)):
        raise fail(f"sweep.{PRESET_KEY}", "a preset is a base point: give it in [hardware] "
                                          "and sweep the keys it sets")
    try:
        return resolve_preset(hardware)
    except UserInputError as err:
        raise fail(f"hardware.{PRESET_KEY}", str(err)[len(PRESET_KEY) + 2:]) from None


def check_times(points: Iterable[HardwareConfig], times: tuple[float, ...], fail: Fail) -> None:
    """Every point's device model must be defined at every inference time (Wan 2022's fits
    exist at three times only, a table of measurements over its measured span)."""
    seen = set()
    for hw in points:
        key = (hw.device, hw.device_params, hw.table)
        if key not in seen:
            seen.add(key)
            problem = DEVICES[hw.device](hw).time_problem(times)
            if problem:
                raise fail("study.inference_times", problem)


def _fingerprint(value: Any, fail: Fail) -> dict[str, Any]:
    if value == {}:
        return {}
    value = dict(value) if isinstance(value, dict) else value
    extra = {k: value.pop(k, {}) if isinstance(value, dict) else None
             for k in ("checkpoints", "device_tables")}
    if isinstance(value, dict) and sorted(value) == sorted(FINGERPRINT_KEYS) and \
            all(isinstance(v, str) and _SHA256.match(v) for v in value.values()) and \
            all(isinstance(shas, dict) and all(isinstance(v, str) and _SHA256.match(v)
                                               for v in shas.values())
                for shas in extra.values()):
        return {**value, **{k: shas for k, shas in extra.items() if shas}}
    raise fail("study.fingerprint", "expected { model = \"<sha256>\", data = \"<sha256>\" } as "
                                    "'mc-engine run' writes it into the resolved study.toml, or "
                                    "no fingerprint")


def _adaptive(study: dict[str, Any], repeats: int,
              fail: Fail) -> tuple[float | None, int | None]:
    """``target_ci`` and ``max_repeats``: both or neither; the target a half-width of
    accuracy in (0, 1), at most MAX_TRIALS repeats and no fewer than the first round."""
    if ("target_ci" in study) != ("max_repeats" in study):
        given, missing = ("target_ci", "max_repeats") if "target_ci" in study else \
            ("max_repeats", "target_ci")
        raise fail(f"study.{missing}", f"missing: {given} and {missing} go together (adaptive "
                                       f"repeats: rounds until the 95 % interval half-width "
                                       f"is at most target_ci, up to max_repeats)")
    if "target_ci" not in study:
        return None, None
    target = study["target_ci"]
    if isinstance(target, bool) or not isinstance(target, int | float) or \
            not 0 < target < 1:
        raise fail("study.target_ci", f"expected a number > 0 and < 1 (half-width of the 95 % "
                                      f"interval of the mean accuracy), got {target!r}")
    if repeats < MIN_FIRST_ROUND:
        raise fail("study.repeats", f"expected an integer >= {MIN_FIRST_ROUND} with target_ci "
                                    f"(the first round of adaptive repeats, whose std alone "
                                    f"sets each point's total), got {repeats}")
    max_repeats = check_int(study["max_repeats"], "study.max_repeats", fail, lo=repeats,
                            hi=MAX_TRIALS, hint="(at least repeats, the first round)")
    return float(target), max_repeats


def _times(value: Any, source: str, fail: Fail) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise fail("study.inference_times", f"expected a non-empty list of durations such as "
                                            f"[\"0s\", \"1h\", \"1y\"], got {value!r}")
    seconds = [parse_duration(v, source=source, key=f"study.inference_times[{i}]")
               for i, v in enumerate(value)]
    for i, s in enumerate(seconds):
        if s in seconds[:i]:
            raise fail(f"study.inference_times[{i}]", f"duplicate time {value[i]!r}")
    return tuple(sorted(seconds))

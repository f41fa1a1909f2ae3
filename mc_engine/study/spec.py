"""The study file (DESIGN.md §4): reading, validation and expansion into trials.

Everything a user can get wrong in a study file is caught here, before any model is loaded or any
worker started, with a :class:`~mc_engine.errors.UserInputError` naming the file and the dotted
key (``studies/x.toml: sweep.adc_bits: expected an integer, got 'a'``). Hardware values are checked
by :mod:`mc_engine.hardware` itself, so the allowed values are declared in one place only.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mc_engine.data.factory import import_factory
from mc_engine.errors import Fail, UserInputError, check_int
from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.hardware.devices import (
    BUILTIN_DEVICES,
    DEVICES,
    DeviceModel,
    declaration_problem,
    register_device,
)
from mc_engine.study import toml_writer
from mc_engine.study.keys import point_id, trial_seed
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
#: Trials per study (points x repeats): each is a Dask task and a few result rows; beyond this
#: the scheduler alone would need more memory than a workstation has. Split bigger studies.
MAX_TRIALS = 1_000_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Trial:
    """One Monte Carlo trial: a hardware point programmed once with ``seed`` (repeat ``repeat``)."""

    point_id: str
    repeat: int
    seed: int
    hardware: HardwareConfig
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
    fingerprint: dict[str, str] = field(default_factory=dict)
    source: str = "<study>"
    base_dir: Path = field(default_factory=Path)
    mode: str = "standard"
    #: Layer-sensitivity studies: the model's analog layers (:meth:`with_layers`), else empty.
    layers: tuple[str, ...] = ()
    #: Adaptive repeats: ``repeats`` is the first round; rounds go on per point until the 95 %
    #: interval half-width of its mean accuracy is at most ``target_ci`` at every read time,
    #: or it has ``max_repeats`` (:mod:`mc_engine.run.adaptive`). None: a fixed ``repeats``.
    target_ci: float | None = None
    max_repeats: int | None = None

    @property
    def point_ids(self) -> list[str]:
        return [point_id(p) for p in self.points]

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
    def device_params(self) -> tuple[str, ...]:
        """The names of the device models' own parameters over all points, sorted: the extra
        float columns of the results."""
        return tuple(sorted({name for p in self.points for name, _ in p.device_params}))

    def trials(self, repeats: Iterable[int] | None = None) -> list[Trial]:
        """Every trial of the ``repeats`` (default: the first ``self.repeats``), repeat-major,
        so partial results cover all points evenly."""
        variants = self._layer_variants()
        ids = [[point_id(hw, layer) for layer in variants] for hw in self.points]
        trials = []
        for repeat in range(self.repeats) if repeats is None else repeats:
            seed = trial_seed(self.seed, repeat)  # the same for every point and layer: CRN
            trials += [Trial(pid, repeat, seed, hw, layer)
                       for point_ids, hw in zip(ids, self.points)
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
        tables: dict[str, Mapping[str, Any]] = {"study": study, "model": self.model,
                                                "data": self.data, "hardware": base}
        if self.sweep:
            tables["sweep"] = self.sweep
        header = (f"Resolved study written by mc-engine {__version__} from {self.source}:\n"
                  f"{len(self.points)} hardware points x {self.repeats} repeats. Relative paths "
                  f"in [model] and [data] are\nrelative to {self.base_dir.resolve()}.")
        if any(":" in name for name in self.custom_devices):
            header += "\n'module:Class' devices are imported from that folder too."
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


def parse_study(doc: Mapping[str, Any], *, source: str = "<study>",
                base_dir: Path | None = None) -> Study:
    """Validate a parsed TOML document and expand its sweep into hardware points."""

    def fail(key: str, message: str) -> UserInputError:
        return UserInputError(message, source=source, key=key)

    for key, value in doc.items():
        if key not in TABLES:
            raise fail(key, f"unknown {'table' if isinstance(value, dict) else 'key'}; "
                            f"allowed tables: {', '.join(TABLES)}")
    tables: dict[str, dict[str, Any]] = {}
    for name in TABLES:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise fail(name, f"expected a table [{name}], got {value!r}")
        if name in ("study", "model", "data") and name not in doc:
            raise fail(name, f"missing the [{name}] table")
        tables[name] = dict(value)

    study = tables["study"]
    for key in study:
        if key not in STUDY_KEYS:
            raise fail(f"study.{key}", f"unknown key; allowed: {', '.join(STUDY_KEYS)}")
    for key in ("name", "seed", "repeats", "inference_times"):
        if key not in study:
            raise fail(f"study.{key}", "missing (required)")
    name = study["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("study.name", f"expected a name of letters, digits, '.', '_' or '-' (it "
                                 f"names the results folder), got {name!r}")
    seed = check_int(study["seed"], "study.seed", fail, lo=0)
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

    base = tables["hardware"]
    _load_devices(base, tables["sweep"], Path(base_dir) if base_dir is not None else Path(),
                  source)
    _hardware(base, source, lambda f: f"hardware.{f}")
    sweep, zips = _sweep(tables["sweep"], base, source, fail)
    _check_size(sweep, zips, max_repeats or repeats, fail)
    points = _expand(base, sweep, zips, source, fail)
    return Study(name=name, seed=seed, repeats=repeats, inference_times_s=times,
                 model=tables["model"], data=tables["data"], hardware=base, sweep=sweep,
                 zips=zips, points=points, description=description, fingerprint=fingerprint,
                 source=source, base_dir=Path(base_dir) if base_dir is not None else Path(),
                 mode=mode, target_ci=target_ci, max_repeats=max_repeats)


def load_device(ref: str, base_dir: Path, source: str | None, key: str) -> type[DeviceModel]:
    """Import the DeviceModel subclass named ``"module:Class"`` (the module looked up in the
    study file's folder first, as factories are) and register it under ``ref``."""
    cls = import_factory(ref, base_dir, source, key, kind="Class")
    problem = declaration_problem(cls)
    if problem:
        raise UserInputError(f"{ref!r} {problem}", source=source, key=key)
    register_device(cls, name=ref)
    return cls


def _load_devices(hardware: dict[str, Any], sweep: dict[str, Any], base_dir: Path,
                  source: str) -> None:
    """Import every ``"module:Class"`` device the study names, in [hardware] or swept, so that
    the hardware points can be validated against the class's parameters. Values of the wrong
    shape are left to the hardware and sweep checks."""
    refs: list[tuple[str, Any]] = [("hardware.device", hardware.get("device"))]
    if isinstance(sweep.get("device"), list):
        refs += [("sweep.device", v) for v in sweep["device"]]
    zips = sweep.get("zip")
    for i, group in enumerate(zips if isinstance(zips, list) else []):
        if isinstance(group, dict) and isinstance(group.get("device"), list):
            refs += [(f"sweep.zip[{i}].device", v) for v in group["device"]]
    for key, ref in refs:
        if isinstance(ref, str) and ":" in ref:
            load_device(ref, base_dir, source, key)


def _fingerprint(value: Any, fail: Fail) -> dict[str, str]:
    if value == {}:
        return {}
    if isinstance(value, dict) and sorted(value) == sorted(FINGERPRINT_KEYS) and \
            all(isinstance(v, str) and _SHA256.match(v) for v in value.values()):
        return dict(value)
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
    max_repeats = check_int(study["max_repeats"], "study.max_repeats", fail, lo=repeats,
                            hi=MAX_TRIALS, hint="(at least repeats, the first round)")
    return float(target), max_repeats


def _check_size(sweep: dict[str, list[Any]], zips: tuple[dict[str, list[Any]], ...],
                repeats: int, fail: Fail) -> None:
    """Refuse studies too big to run before expanding them (a few long lists multiply fast)."""
    n_points = math.prod(len(v) for v in sweep.values()) * \
        math.prod(len(next(iter(z.values()))) for z in zips)
    if n_points * repeats > MAX_TRIALS:
        raise fail("sweep" if n_points > MAX_TRIALS else "study.repeats",
                   f"{n_points:_} hardware points x {repeats:_} repeats = "
                   f"{n_points * repeats:_} trials; at most {MAX_TRIALS:_} fit one study: sweep "
                   f"fewer values, use fewer repeats or split the study")


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


def _sweep(table: dict[str, Any], base: dict[str, Any], source: str,
           fail: Fail) -> tuple[dict[str, list[Any]], tuple[dict[str, list[Any]], ...]]:
    """Split ``[sweep]`` into grid lists and ``[[sweep.zip]]`` groups, checking every value."""
    raw_zips = table.pop("zip", [])
    if not isinstance(raw_zips, list) or not all(isinstance(z, dict) for z in raw_zips):
        raise fail("sweep.zip", "expected tables written as [[sweep.zip]]")
    groups = [("sweep", table)] + [(f"sweep.zip[{i}]", z) for i, z in enumerate(raw_zips)]
    owner: dict[str, str] = {}
    for prefix, group in groups:
        if prefix != "sweep" and not group:
            raise fail(prefix, "empty [[sweep.zip]] table")
        lengths = {}
        for key, values in group.items():
            where = f"{prefix}.{key}"
            if key in owner:
                raise fail(where, f"swept twice (also in {owner[key]})")
            owner[key] = where
            if not isinstance(values, list):
                raise fail(where, f"expected a list of values, got {values!r}")
            if not values:
                raise fail(where, "empty list: give at least one value")
            for value in values:
                _hardware({**base, key: value}, source, lambda _f, where=where: where)
            lengths[key] = len(values)
        if prefix != "sweep" and len(set(lengths.values())) > 1:
            first = next(iter(lengths))
            for key, n in lengths.items():
                if n != lengths[first]:
                    raise fail(f"{prefix}.{key}", f"has {n} values but {prefix}.{first} has "
                                                  f"{lengths[first]}; zipped lists must have "
                                                  f"the same length")
    return table, tuple(raw_zips)


def _expand(base: dict[str, Any], sweep: dict[str, list[Any]],
            zips: tuple[dict[str, list[Any]], ...], source: str,
            fail: Fail) -> tuple[HardwareConfig, ...]:
    """The cartesian product of the grid lists and the zip groups, each point validated."""
    axes: list[list[dict[str, Any]]] = [[{k: v} for v in values] for k, values in sweep.items()]
    for group in zips:
        n = len(next(iter(group.values())))
        axes.append([{k: values[i] for k, values in group.items()} for i in range(n)])
    points: list[HardwareConfig] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*axes):
        changes = {k: v for part in combo for k, v in part.items()}
        swept = set(changes)
        config = _hardware({**base, **changes}, source,
                           lambda f, swept=swept: f"{'sweep' if f in swept else 'hardware'}.{f}",
                           f" (at the sweep point {changes})" if changes else "")
        pid = point_id(config)
        if pid in seen:
            raise fail("sweep", f"the sweep points {seen[pid]} and {changes} are the same "
                                f"hardware point; remove the duplicate value")
        seen[pid] = changes
        points.append(config)
    return tuple(points)


def _hardware(values: dict[str, Any], source: str, where: Callable[[str], str],
              suffix: str = "") -> HardwareConfig:
    """A validated hardware point; an error is re-attributed to the study file and its key.

    ``where`` maps the offending hardware field to the dotted study key that set it.
    """
    try:
        return from_dict(values)
    except UserInputError as err:
        field_name = err.key or ""
        message = str(err)
        if field_name and message.startswith(f"{field_name}: "):
            message = message[len(field_name) + 2:]
        raise UserInputError(message + suffix, source=source,
                             key=where(field_name) if field_name else None) from None

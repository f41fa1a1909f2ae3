"""The train file of ``mc-engine train``: reading and validation.

A train file shares the ``[model]`` and ``[data]`` tables of study files (checked by the same
code when the model and data load) and adds ``[train]`` (the recipe) and ``[noise]`` (what the
training forward injects, :mod:`mc_engine.train.noisy`). Every problem is one
:class:`UserInputError` line naming the file and the dotted key, with the allowed keys or
values, before anything is trained.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from mc_engine.data.factory import resolve_path
from mc_engine.errors import Fail, UserInputError, check_int, did_you_mean
from mc_engine.hardware import HardwareConfig, from_dict
from mc_engine.study.spec import split_tables
from mc_engine.train.noisy import TRAIN_PERIPHERY, NoiseSpec
from mc_engine.train.ranges import RangeLearning
from mc_engine.train.recipes import RECIPE_KEYS, Inert, Recipe, check_recipe, parse_recipe

TABLES = ("train", "model", "data", "noise", "sweep")
TRAIN_KEYS = ("name", "seed", "epochs", "batch_size", "optimizer", "lr", "momentum",
              "weight_decay", "schedule", "step_size", "gamma", "init", "augment", "description",
              "out", *RECIPE_KEYS)
#: [noise] keys of the tiles, their mapping, the periphery and the device, passed to
#: HardwareConfig (same names, same checks): what the training forward mirrors.
HARDWARE_NOISE_KEYS = ("max_input_size", "max_output_size", "weight_scaling_omega",
                       "weight_scaling_columnwise", "weight_bits", "cell_bits",
                       "slice_recombination", "dac_bits", "adc_bits", "out_bound", "inp_noise",
                       "out_noise", "w_noise", "w_noise_type", "noise_management", "nm_constant",
                       "bound_management", "device", "g_max", "on_off_ratio", "prog_noise_scale",
                       "sigma_prog")
#: [noise] keys of learned input ranges (mc_engine/train/ranges.py, aihwkit's
#: InputRangeParameter): act only with input_range = 'learn'.
RANGE_KEYS = ("init_from_data", "init_std_alpha", "decay", "input_min_percentage")
NOISE_KEYS = ("weight_noise", "act_noise", "clip_std", *HARDWARE_NOISE_KEYS, "input_range",
              *RANGE_KEYS)
#: [noise] keys of the programming noise: they act only with a device.
DEVICE_NOISE_KEYS = ("g_max", "on_off_ratio", "prog_noise_scale", "sigma_prog")
OPTIMIZERS = ("adam", "sgd", "sam")
SCHEDULES = ("none", "cosine", "step")
#: Default ADC range when adc_bits is set without out_bound (the engine's default).
ADC_BOUND = 12.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TrainSpec:
    """A validated train file. ``init`` is the resolved path of the checkpoint to fine-tune."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    noise: NoiseSpec
    seed: int = 0
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    step_size: int = 30
    gamma: float = 0.1
    init: Path | None = None
    #: ``[train] out``: the checkpoint folder, resolved against the train file's folder (None:
    #: not given; ``mc-engine train --out`` wins over it, results/checkpoints otherwise).
    out: Path | None = None
    augment: bool = False
    description: str = ""
    #: The noise-robust recipes (SAM, adversarial inputs and weights, weight averaging).
    recipe: Recipe = field(default_factory=Recipe)
    tables: dict[str, Any] = field(default_factory=dict)
    source: str = "<train>"
    base_dir: Path = field(default_factory=Path)


def load_train(path: str | Path) -> TrainSpec:
    """Read and validate a train file; relative paths in it are relative to its folder."""
    path = Path(path)
    return parse_train(read_train_file(path), source=str(path), base_dir=path.parent)


def read_train_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of the train file ``path``; UserInputError naming it when it is missing,
    unreadable or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("train file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"cannot read train file: {err}", source=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"not valid TOML: {err}", source=str(path)) from None


def parse_train(doc: Mapping[str, Any], *, source: str = "<train>",
                base_dir: Path | None = None, inert: Inert | None = None) -> TrainSpec:
    """Validate a parsed train file. ``inert(key, message)`` is told of keys that do nothing
    with the other settings (default: refused; a recipe sweep collects them)."""
    base_dir = Path(base_dir) if base_dir is not None else Path()

    def fail(key: str, message: str) -> UserInputError:
        return UserInputError(message, source=source, key=key)

    def refuse(key: str, message: str) -> None:
        raise fail(key, message)

    inert = inert or refuse
    tables = split_tables(doc, TABLES, ("train", "model"), fail)
    if tables.pop("sweep"):
        raise fail("sweep", "a train file with a [sweep] trains one checkpoint per point: read "
                            "it with mc_engine.train.sweep.load_points (as mc-engine train does)")
    if "checkpoint" in tables["model"]:
        raise fail("model.checkpoint", "not used by a train file: give the checkpoint to "
                                       "fine-tune from as train.init")
    train = _train_table(tables["train"], base_dir, fail, inert)
    noise = _noise_table(tables["noise"], base_dir, source, fail, inert)
    batch = train.get("batch_size", TrainSpec.batch_size)
    for key in ("weight_noise", "act_noise"):
        levels = getattr(noise, key)
        if len(levels) > batch:
            raise fail(f"noise.{key}", f"{len(levels)} levels, but a batch of train.batch_size "
                                       f"= {batch} is split into one chunk per level: give at "
                                       f"most {batch} levels (or a larger batch)")
    check_recipe(train["recipe"], noise.ranges is not None, source)
    return TrainSpec(model=tables["model"], data=tables["data"], noise=noise, tables=tables,
                     source=source, base_dir=base_dir, **train)


def _train_table(table: dict[str, Any], base_dir: Path, fail: Fail,
                 inert: Inert) -> dict[str, Any]:
    for key in table:
        if key not in TRAIN_KEYS:
            raise fail(f"train.{key}", f"unknown key{did_you_mean(key, TRAIN_KEYS)}; allowed: "
                                       f"{', '.join(TRAIN_KEYS)}")
    if "name" not in table:
        raise fail("train.name", "missing (required): it names the checkpoint <out>/<name>.pt")
    out: dict[str, Any] = {}
    name = table["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("train.name", f"expected a name of letters, digits, '.', '_' or '-' (it "
                                 f"names the checkpoint file), got {name!r}")
    out["name"] = name
    for key, lo, hi in (("seed", 0, None), ("epochs", 1, 100_000), ("batch_size", 1, 1 << 20),
                        ("step_size", 1, 100_000)):
        if key in table:
            out[key] = check_int(table[key], f"train.{key}", fail, lo=lo, hi=hi)
    for key, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if key in table:
            if table[key] not in choices:
                raise fail(f"train.{key}", f"expected one of {', '.join(map(repr, choices))}, "
                                           f"got {table[key]!r}")
            out[key] = table[key]
    for key, positive in (("lr", True), ("momentum", False), ("weight_decay", False),
                          ("gamma", True)):
        if key in table:
            out[key] = _number(table[key], f"train.{key}", fail, positive=positive)
    if "init" in table:
        if not isinstance(table["init"], str):
            raise fail("train.init", f"expected a checkpoint file path, got {table['init']!r}")
        init = resolve_path(table["init"], base_dir)
        if not init.is_file():
            raise fail("train.init", f"{init} is a directory, not a checkpoint file"
                       if init.is_dir() else f"file {init} does not exist")
        out["init"] = init
    if "out" in table:
        if not isinstance(table["out"], str) or not table["out"].strip():
            raise fail("train.out", f"expected the checkpoint folder (a path relative to this "
                                    f"file), got {table['out']!r}")
        out["out"] = resolve_path(table["out"], base_dir)
    if "augment" in table:
        if not isinstance(table["augment"], bool):
            raise fail("train.augment", f"expected true (random crop with padding 4 and "
                                        f"horizontal flip, for images) or false, got "
                                        f"{table['augment']!r}")
        out["augment"] = table["augment"]
    if "description" in table:
        if not isinstance(table["description"], str):
            raise fail("train.description", f"expected a string, got {table['description']!r}")
        out["description"] = table["description"]
    # Keys that act only with another setting are refused without it (they would do nothing).
    schedule = out.get("schedule", TrainSpec.schedule)
    for key in ("step_size", "gamma"):
        if key in table and schedule != "step":
            inert(f"train.{key}", f"used only by schedule = 'step', and the schedule is "
                                  f"{schedule!r}: remove it, or set schedule = 'step'")
    optimizer = out.get("optimizer", TrainSpec.optimizer)
    out["recipe"] = parse_recipe(table, optimizer, out.get("epochs", TrainSpec.epochs), fail,
                                 inert, lambda value, key, positive=False:
                                 _number(value, key, fail, positive=positive))
    base = out["recipe"].sam_base if optimizer == "sam" else optimizer
    if "momentum" in table and base != "sgd":
        inert("train.momentum", f"used only by optimizer = 'sgd' (or 'sam' with sam_base = "
                                f"'sgd'), and the optimizer is {optimizer!r} (Adam keeps its "
                                f"own moment estimates): remove it, or set optimizer = 'sgd'")
    return out


def _number(value: Any, key: str, fail: Fail, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise fail(key, f"expected a finite number {'> 0' if positive else '>= 0'}, "
                        f"got {value!r}")
    return float(value)


@cache
def noise_presets() -> dict[str, dict[str, Any]]:
    """Every ``[noise] preset`` by name (``presets.toml`` beside this module), its [noise]
    values (``description`` left out)."""
    text = resources.files("mc_engine.train").joinpath("presets.toml").read_text("utf-8")
    return {name: {k: v for k, v in t.items() if k != "description"}
            for name, t in tomllib.loads(text).items()}


def _resolve_preset(table: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """``table`` with its ``preset`` replaced by the preset's [noise] values, the keys given
    beside it taking precedence."""
    if "preset" not in table:
        return table
    rest = {k: v for k, v in table.items() if k != "preset"}
    name, known = table["preset"], noise_presets()
    if not isinstance(name, str) or name not in known:
        raise fail("noise.preset", f"unknown preset {name!r}; presets: {', '.join(sorted(known))}")
    values = {**known[name], **rest}
    if "noise_management" in rest:          # a static range instead of the learned ones
        for key in ("input_range", *RANGE_KEYS):
            if key not in rest:
                values.pop(key, None)
    return values


def _noise_table(table: dict[str, Any], base_dir: Path, source: str, fail: Fail,
                 inert: Inert) -> NoiseSpec:
    table = _resolve_preset(table, fail)
    for key in table:
        if key in NOISE_KEYS:
            continue
        if key in HardwareConfig.field_names():
            raise fail(f"noise.{key}", "a hardware parameter the training forward does not "
                                       "mirror (inference-time effects and read-out schemes "
                                       "are left to the study); the [noise] keys: "
                                       f"{', '.join(NOISE_KEYS)}")
        raise fail(f"noise.{key}", f"unknown key{did_you_mean(key, NOISE_KEYS)}; allowed: "
                                   f"{', '.join(NOISE_KEYS)}")
    levels, act = (_levels(table, key, fail) for key in ("weight_noise", "act_noise"))
    if len(levels) > 1 and len(act) > 1 and len(levels) != len(act):
        raise fail("noise.act_noise", f"{len(act)} levels beside {len(levels)} weight_noise "
                                      f"levels: both split the batch into one chunk per level, "
                                      f"so give as many of each (chunk k sees both k-th "
                                      f"levels), or one value of either")
    bits = table.get("weight_bits")
    if bits == 1 and not isinstance(bits, bool):
        raise fail("noise.weight_bits", "1 bit leaves no level besides 0; use 0 (off) or >= 2")
    clip = _number(table.get("clip_std", 0.0), "noise.clip_std", fail)
    if table.get("device", TRAIN_PERIPHERY["device"]) == "ideal":
        for key in DEVICE_NOISE_KEYS:
            if key == "on_off_ratio" and table.get("weight_bits"):
                continue             # g_min is part of the conductance-unit mapping itself
            if key in table:
                inert(f"noise.{key}", "a parameter of the programming noise, which needs a "
                                      "device (noise.device = 'pcm' or another model); "
                                      "without one it does nothing: remove it, or set "
                                      "noise.device")
    bound = table.get("out_bound")
    if table.get("adc_bits") and isinstance(bound, (int, float)) and not isinstance(bound, bool) \
            and math.isinf(bound):
        raise fail("noise.adc_bits", "an ADC needs a finite range, and noise.out_bound is inf "
                                     f"(no ADC): remove one of them, or give out_bound (default "
                                     f"{ADC_BOUND:g} with adc_bits)")
    ranges = _range_learning(table, fail, inert)
    values = {**TRAIN_PERIPHERY, **{k: v for k, v in table.items() if k in HARDWARE_NOISE_KEYS}}
    if ranges is not None:
        values["noise_management"] = "learned"
    if table.get("adc_bits") and "out_bound" not in table:
        values["out_bound"] = ADC_BOUND
    device = values["device"]
    if isinstance(device, str) and ":" in device:
        from mc_engine.study.sweep import load_device

        load_device(device, base_dir, source, "noise.device")
    try:
        hardware = from_dict(values)
    except UserInputError as err:
        message = str(err)
        if err.key and message.startswith(f"{err.key}: "):
            message = message[len(err.key) + 2:]
        raise fail(f"noise.{err.key}", message) from None
    if ranges is None and hardware.noise_management in ("calibrated", "learned"):
        how = "trained ranges: noise.input_range = 'learn' (they are saved as 'learned')" \
            if hardware.noise_management == "learned" else "'calibrated' is for studies"
        raise fail("noise.noise_management", f"{hardware.noise_management!r} is a static input "
                                             f"range of inference; training accepts 'abs_max', "
                                             f"'none' or 'constant', or {how}")
    try:
        return NoiseSpec(hardware=hardware, weight_noise=levels, clip_std=clip,
                         program=hardware.device != "ideal", ranges=ranges, act_noise=act)
    except UserInputError as err:
        raise fail(f"noise.{err.key}", str(err)[len(err.key) + 2:]) from None


def _levels(table: dict[str, Any], key: str, fail: Fail) -> tuple[float, ...]:
    """The multi-scale levels of ``weight_noise`` or ``act_noise``: one number or a list."""
    levels = table.get(key, [])
    if not isinstance(levels, list):
        levels = [levels]
    if key in table and not levels:
        raise fail(f"noise.{key}", "empty list: give one level or several (multi-scale)")
    return tuple(_number(v, f"noise.{key}", fail) for v in levels)


def _range_learning(table: dict[str, Any], fail: Fail, inert: Inert) -> RangeLearning | None:
    """The learned input ranges of noise.input_range = 'learn' (None without the key)."""
    if "input_range" not in table:
        for key in RANGE_KEYS:
            if key in table:
                inert(f"noise.{key}", "a parameter of learned input ranges: used only with "
                                      "noise.input_range = 'learn'; remove it, or add that")
        return None
    if table["input_range"] != "learn":
        raise fail("noise.input_range", f"expected 'learn' (per-tile input ranges trained "
                                        f"with the weights), got {table['input_range']!r}")
    if "noise_management" in table:
        raise fail("noise.noise_management", "learned input ranges (noise.input_range = "
                                             "'learn') are the noise management: remove "
                                             "noise_management")
    out: dict[str, Any] = {}
    if "init_from_data" in table:
        out["init_from_data"] = check_int(table["init_from_data"], "noise.init_from_data",
                                          fail, lo=0, hi=1 << 30)
    for key in ("init_std_alpha", "decay", "input_min_percentage"):
        if key in table:
            out[key] = _number(table[key], f"noise.{key}", fail,
                               positive=key == "init_std_alpha")
    if out.get("input_min_percentage", 0.0) > 1:
        raise fail("noise.input_min_percentage", f"a fraction of the inputs, in [0, 1], got "
                                                 f"{out['input_min_percentage']!r}")
    return RangeLearning(**out)

"""A custom device's outputs are checked where they enter the engine: raising, the wrong shape,
None, a list, NaN, infinite, negative or absurd conductances each give one error naming the
device class, before any worker starts (the study's device probe) and on the workers too."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mc_engine import HardwareConfig, UserInputError
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.cli import main
from mc_engine.hardware.devices import DEVICES, DeviceModel, register_device

MODULE = '''
import numpy as np
from mc_engine.hardware.devices import DeviceModel

class Broken(DeviceModel):
    name = "broken"
    def program(self, g, rng):
        return {program}
    def read(self, g, state, t_s, rng):
        return {read}
'''

GOOD_PROGRAM = "g.copy(), np.zeros_like(g)"
GOOD_READ = "g.copy()"
CASES = [
    ("program", "None", r"program\(\) returned a NoneType; expected a tuple"),
    ("program", "[g, g]", r"program\(\) returned a list; expected a tuple"),
    ("program", "g[:-1], np.zeros_like(g)", r"program\(\) returned an array of shape"),
    ("program", "g * np.nan, np.zeros_like(g)", "NaN or infinite conductances"),
    ("program", "g - 100.0, np.zeros_like(g)", "negative conductances"),
    ("program", "g + 1e300, np.zeros_like(g)", "more than 1000 x g_max"),
    ("program", "1 / 0", r"program\(\) raised ZeroDivisionError"),
    ("read", "g + np.inf", r"read\(\) at 0 s returned NaN or infinite"),
    ("read", "list(g)", r"read\(\) at 0 s returned a list"),
    ("read", "g.astype(str)", "returned an array of <U"),
]


def _device(program: str, read: str) -> type[DeviceModel]:
    namespace: dict = {}
    exec(MODULE.format(program=program, read=read), namespace)
    return namespace["Broken"]


@pytest.fixture
def broken_registry():
    yield
    DEVICES.pop("broken", None)


@pytest.mark.parametrize("where, code, message", CASES)
def test_a_broken_device_is_named_at_the_boundary(broken_registry, where, code, message):
    cls = _device(code if where == "program" else GOOD_PROGRAM,
                  code if where == "read" else GOOD_READ)
    register_device(cls)
    m = AnalogMatrix(np.ones((2, 3), np.float32), HardwareConfig(device="broken"), 0)
    with pytest.raises(UserInputError) as err:
        m.program(0)
        m.drift(0.0)
    text = str(err.value)
    assert err.value.key == "hardware.device"
    assert "device 'broken'" in text and "Broken" in text
    assert re.search(message, text), text
    assert "\n" not in text


STUDY = """
[study]
name = "broken"
seed = 1
repeats = 1
inference_times = ["0s"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 20

[hardware]
device = "broken_device:Broken"
"""


def test_a_study_reports_a_broken_device_before_anything_runs(tmp_path, capsys):
    (tmp_path / "broken_device.py").write_text(
        MODULE.format(program="g * np.nan, np.zeros_like(g)", read=GOOD_READ))
    (tmp_path / "study.toml").write_text(STUDY)
    out = tmp_path / "results"
    assert main(["run", str(tmp_path / "study.toml"), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "study.toml" in err and "hardware.device" in err and "NaN or infinite" in err
    assert "broken_device.Broken" in err and "Traceback" not in err
    assert not (out / "broken").exists()


@pytest.mark.parametrize("g_max", [1e308, 5e-324])
def test_absurd_g_max_is_rejected(g_max):
    with pytest.raises(UserInputError) as err:
        HardwareConfig(g_max=g_max)
    assert err.value.key == "g_max"


def test_a_module_raising_keyboard_interrupt_at_import_is_reported_as_such(tmp_path, capsys):
    (tmp_path / "interrupting_device.py").write_text("raise KeyboardInterrupt\n")
    (tmp_path / "study.toml").write_text(STUDY.replace("broken_device:", "interrupting_device:"))
    assert main(["validate", str(tmp_path / "study.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "hardware.device" in err and "raised KeyboardInterrupt itself" in err

"""The numbers README.md and docs/*.md quote stay true. Four rules, each failing with the file,
line and number at fault:

1. A measurement (a timing, a throughput, a memory size, a speed-up: MEASUREMENT below) cannot
   be re-derived in a test, so its paragraph (for a table: the table or the paragraph after it)
   says where and when: "measured on <machine>, <date>" (or "Measured <date> on <machine>").
   A number that only looks like one (a setting, a format example) is listed in NOT_MEASURED
   with the reason; one re-derived here is covered by its CLAIMS entry.
2. An example output of a study (a fenced block with mean and std columns) is re-derived: it
   follows a ``<!-- derived: NAME -->`` marker whose NAME this file computes (DERIVED_BLOCKS).
3. A formula constant of docs/physics.md and docs/devices.md (a decimal with three or more
   significant digits) is a literal of the code (mc_engine/**/*.py, presets.toml) to the digits
   printed: the doc quotes the constant the code uses.
4. CLAIMS: numbers in prose computed here from the code, the study files or a short run, as the
   doc prints them.

A new section with new numbers either passes these rules or fails naming the number; add its
derivation to CLAIMS or DERIVED_BLOCKS, or label it as measured.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FORMULA_DOCS = [REPO / "docs" / "physics.md", REPO / "docs" / "devices.md"]

NUM = r"\d[\d,]*(?:\.\d+)?"
#: What a measured number looks like: a rate, a memory size, a short duration, a speed-up, or a
#: duration introduced as one ("about 10 s", "≈ 1 min", "... on 2 cores").
MEASUREMENT = re.compile(
    rf"{NUM}\+? ?(?:M )?(?:trials/s|images/s|devices/s|M/s|[MGK]iB\b|ms\b|ns a normal)"
    rf"|{NUM}× faster|\b{NUM}×(?= |$|,|\))"
    rf"|(?:about|≈|took|takes) {NUM} ?(?:s|min|h)\b|\bon {NUM} cores\b"
    r"|peak RSS")
LABEL = re.compile(r"[Mm]easured\s+(?:on\s[^,.]+,\s+\d{4}-\d{2}-\d{2}|\d{4}-\d{2}-\d{2}\S*\s+on\s)")
#: (file, text): numbers that look like measurements and are not, and why.
NOT_MEASURED = {
    ("README.md", "512 MiB each"): "a setting: WORKER_MEMORY_BYTES (checked in CLAIMS)",
    ("README.md", "41.5 trials/s"): "the format of a progress line, not a result",
    ("README.md", "*memory*: peak RSS"): "says what `make bench` measures; the figures are in "
                                         "the table labelled below it",
}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(first line number, text, is fenced code) of each paragraph, table and code block."""
    out, current, start, fenced = [], [], 0, False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if fenced:
                out.append((start, "\n".join(current), True))
                current, fenced = [], False
            else:
                if current:
                    out.append((start, "\n".join(current), False))
                current, start, fenced = [], n, True
            continue
        if fenced or line.strip():
            if not current:
                start = n
            current.append(line)
        elif current:
            out.append((start, "\n".join(current), False))
            current = []
    if current:
        out.append((start, "\n".join(current), fenced))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_measurement_says_where_and_when_it_was_measured(doc):
    prose = [(n, text) for n, text, code in blocks(doc) if not code]
    claimed = [c.text for c in CLAIMS if c.doc == rel(doc)]
    unlabelled = []
    for i, (n, text) in enumerate(prose):
        flat = " ".join(text.split())
        following = prose[i + 1][1] if i + 1 < len(prose) and text.startswith("|") else ""
        if LABEL.search(text) or LABEL.search(following):
            continue
        for m in MEASUREMENT.finditer(text):
            context = text[max(0, m.start() - 20):m.end() + 20]
            line = n + text[:m.start()].count("\n")
            if any(m.group(0) in snippet and snippet in flat
                   for (file, snippet) in NOT_MEASURED if file == rel(doc)):
                continue
            if any(m.group(0) in c and c in flat for c in claimed):
                continue
            unlabelled.append(f"{rel(doc)}:{line}: {m.group(0)!r} in '...{context}...'")
    assert not unlabelled, (
        "numbers that look measured without a 'measured on <machine>, <date>' label in their "
        "paragraph (label them, derive them in CLAIMS, or list them in NOT_MEASURED with the "
        "reason):\n" + "\n".join(unlabelled))


def code_literals() -> list[float]:
    values = []
    for path in sorted((REPO / "mc_engine").rglob("*.py")):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
        values += [float(t.string.replace("_", "")) for t in tokens
                   if t.type == tokenize.NUMBER and t.string[-1] not in "jJ"
                   and not t.string.startswith(("0x", "0o", "0b"))]
    for path in (REPO / "mc_engine").rglob("*.toml"):
        values += [float(v) for v in re.findall(r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?",
                                                path.read_text(encoding="utf-8"))]
    return values


def significant(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))


@pytest.mark.parametrize("doc", FORMULA_DOCS, ids=rel)
def test_formula_constants_are_the_codes(doc):
    literals = code_literals()
    text = " ".join("\n".join(t for _, t, code in blocks(doc) if not code).split())
    for claim in CLAIMS:   # re-derived there
        if claim.doc == rel(doc):
            text = text.replace(claim.text, "")
    text = re.sub(r"\d+\.\d+\.\d+", "", text)   # versions (aihwkit 1.2.0)
    wrong = []
    for m in re.finditer(r"(?<![\w.^])(\d+\.\d+)(?![\w.])", text):
        printed = m.group(1)
        if significant(printed) < 3:
            continue
        value, half_ulp = float(printed), 0.5 * 10 ** -len(printed.split(".")[1])
        if not any(abs(abs(c) - value) <= half_ulp * (1 + 1e-9) for c in literals):
            wrong.append(f"{printed} ('...{text[max(0, m.start() - 40):m.end() + 10]}...')")
    assert not wrong, (f"{rel(doc)} quotes constants that no literal of mc_engine/ has to the "
                       f"digits printed:\n" + "\n".join(wrong))


# ----------------------------------------------------------------------------------------
# Claims re-derived


@dataclass(frozen=True)
class Claim:
    doc: str
    text: str   # exactly as the doc prints it (whitespace runs are one space)

    def check(self, derived: str) -> None:
        body = " ".join((REPO / self.doc).read_text(encoding="utf-8").split())
        assert self.text in body, (f"{self.doc} no longer says {self.text!r}: update the "
                                   f"claim in {Path(__file__).name}")
        assert derived == self.text, f"{self.doc} says {self.text!r}, re-derived: {derived!r}"


def stein_cost() -> str:
    from scipy.stats import t

    cost = [f"{(t.ppf(0.975, n - 1) / 1.96) ** 2:.2g}× at {n}" for n in (5, 8, 16)]
    return ", ".join(cost)


def quickstart() -> str:
    from mc_engine.study import load_study
    from mc_engine.study.units import format_duration

    study = load_study(REPO / "studies" / "quickstart.toml")
    times = [format_duration(s) for s in study.inference_times_s]
    return (f"{len(study.points)} hardware points (ADC bits × short-term weight noise) × "
            f"{study.repeats} simulated chips, each read at {', '.join(times[:-1])} and "
            f"{times[-1]}")


def cluster_settings() -> str:
    from mc_engine.run import cluster

    return (f"({cluster.WORKERS_PER_CORE} per core, {cluster.WORKER_MEMORY_BYTES // 2**20} "
            f"MiB each")


def cmo_g_min() -> str:
    from mc_engine.hardware import HardwareConfig

    hw = HardwareConfig(device="reram_cmo", g_converter="single_device")
    return (f"g_max {hw.g_max:g} µS, `on_off_ratio` {hw.on_off_ratio:g} "
            f"(g_min {hw.g_min:.0f} µS)")


def sliced_noise_ratio() -> str:
    from mc_engine.hardware import HardwareConfig

    hw = HardwareConfig(weight_bits=8, cell_bits=2, offset="dummy_column")
    assert hw.n_slices == 4
    ratio = sum(4 ** (i * hw.cell_bits) for i in range(hw.n_slices)) ** 0.5
    return f"sqrt(Σ 4^(ic)) = {ratio:.0f}× too small for four 2-bit slices"


def offset_correction() -> str:
    from mc_engine.hardware import HardwareConfig

    hw = HardwareConfig(weight_bits=8, cell_bits=7, offset="dummy_column")
    levels = 2 ** (hw.weight_bits - 1) - 1   # as analog/mapping.py's correction
    correction = (2 ** (hw.n_slices * hw.cell_bits) - 1) / 2 - levels
    return f"({correction:g}·Σ x̃ for 7-bit cells on 8-bit weights)"


def pcm_zero_device() -> str:
    """Programmed to 0 µS the PCM device reads max(0, σ_P(0)·ξ): mean σ/sqrt(2π), std
    σ·sqrt(1/2 − 1/(2π)), with σ_P(0) taken from the kernel itself (one draw with ξ > 0)."""
    import numpy as np

    from mc_engine.kernels.pcm import pcm_program
    from mc_engine.kernels.rng import normal

    key = next(np.uint64(k) for k in range(1, 100) if normal(np.uint64(k), np.uint64(0)) > 0)
    g_prog, nu = np.empty(1), np.empty(1)
    pcm_program(np.zeros(1), key, 25.0, 1.0, 1.0, g_prog, nu)
    sigma = g_prog[0] / normal(key, np.uint64(0))
    mean, std = sigma / np.sqrt(2 * np.pi), sigma * np.sqrt(0.5 - 1 / (2 * np.pi))
    return f"({mean:.3f} ± {std:.3f} µS)"


def normal_cap() -> str:
    """Box-Muller with u1 >= 2^-32 (kernels/rng.py) caps |z| at sqrt(-2 ln 2^-32)."""
    import math

    return f"|z| up to {math.sqrt(-2 * math.log(2.0 ** -32)):.2f} σ"


def dac_block() -> str:
    from mc_engine.analog.rows import BLOCK_BYTES

    return f"~{BLOCK_BYTES / 2**20:.0f} MiB"   # both places the DAC blocks are named


def gpu_batch_memory() -> str:
    from mc_engine.analog import cuda

    most = f"{cuda.MAX_BATCH_FACTOR * cuda.BATCH_SIZE:,}".replace(",", " ")
    return (f"(a quarter of it at {cuda.BYTES_PER_INPUT_VALUE // 1024} KiB per input value of "
            f"an image, at most {most}")


CLAIMS = {
    Claim("docs/physics.md", "sqrt(Σ 4^(ic)) = 66× too small for four 2-bit slices"):
        sliced_noise_ratio,
    Claim("docs/physics.md", "(8064.5·Σ x̃ for 7-bit cells on 8-bit weights)"):
        offset_correction,
    Claim("docs/physics.md", "(0.105 ± 0.154 µS)"): pcm_zero_device,
    Claim("docs/physics.md", "~4 MiB"): dac_block,
    Claim("docs/physics.md", "|z| up to 6.66 σ"): normal_cap,
    Claim("README.md", "(a quarter of it at 4 KiB per input value of an image, at most 10 000"):
        gpu_batch_memory,
    Claim("README.md", "2× at 5, 1.5× at 8, 1.2× at 16"): stein_cost,
    Claim("README.md", "4 hardware points (ADC bits × short-term weight noise) × 8 simulated "
                       "chips, each read at 0 s, 1 h, 1 d and 1 y"): quickstart,
    Claim("README.md", "(8 per core, 512 MiB each"): cluster_settings,
    Claim("docs/devices.md", "g_max 88.2 µS, `on_off_ratio` 9.8 (g_min 9 µS)"): cmo_g_min,
}


@pytest.mark.parametrize("claim", list(CLAIMS), ids=lambda c: f"{c.doc}:{c.text[:30]}")
def test_claim_re_derives(claim):
    claim.check(CLAIMS[claim]())


# ----------------------------------------------------------------------------------------
# Example outputs re-derived by running them

DERIVED_BLOCKS = ("retention",)


def marked_blocks(doc: Path) -> list[tuple[int, str | None, str]]:
    """(line, marker name or None, text) of each fenced block that prints study statistics
    (a header with mean and std columns)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found = []
    for n, text, code in blocks(doc):   # n: the block's first line, after the fence
        header = text.splitlines()[0] if text else ""
        if code and re.search(r"\bmean\b", header) and re.search(r"\bstd\b", header):
            marker = re.match(r"<!-- derived: (\w+)", lines[n - 3].strip() if n >= 3 else "")
            found.append((n, marker.group(1) if marker else None, text))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_example_output_is_re_derived(doc):
    for n, name, _ in marked_blocks(doc):
        assert name in DERIVED_BLOCKS, (
            f"{rel(doc)}:{n}: an example output without a <!-- derived: NAME --> marker naming "
            f"a derivation of {Path(__file__).name} (DERIVED_BLOCKS: {DERIVED_BLOCKS})")


ROW = re.compile(r"^\s*(\S+)\s+(\d+ \w+)\s+(\d+)\s+(.*)$")


def summary_rows(text: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(first column, t) -> (n, mean, std, last column) of summary lines ('...' elided)."""
    rows = {}
    for line in text.splitlines()[1:]:
        if m := ROW.match(line):
            rest = m.group(4).split()
            rows[m.group(1), m.group(2)] = (m.group(3), rest[0], rest[1], rest[-1])
    return rows


def run_summary(study: Path, out: Path, scheduler: str, capsys) -> str:
    from mc_engine.cli import main
    from mc_engine.study import load_study

    assert main(["run", str(study), "--out", str(out), "--scheduler", scheduler]) == 0
    capsys.readouterr()
    assert main(["summary", str(out / load_study(study).name)]) == 0
    return capsys.readouterr().out


def test_retention_example_reproduces(tmp_path, cache_dir, warm_cluster, capsys):
    """docs/devices.md's retention study, as its commands print it, and the sentence on the
    same study with drift_compensation = "global"."""
    doc = REPO / "docs" / "devices.md"
    (block,) = [text for _, name, text in marked_blocks(doc) if name == "retention"]
    (tmp_path / ".cache").symlink_to(cache_dir, target_is_directory=True)
    example = REPO / "docs" / "examples" / "retention_study.toml"
    printed = summary_rows(run_summary(example, tmp_path, warm_cluster, capsys))
    documented = summary_rows(block)
    assert len(documented) == len(block.splitlines()) - 1, "a row of the block did not parse"
    assert {k: printed.get(k) for k in documented} == documented

    text = example.read_text(encoding="utf-8")
    global_study = tmp_path / "examples" / "retention_global.toml"
    global_study.parent.mkdir()
    (global_study.parent / "retention_device.py").write_text(
        (example.parent / "retention_device.py").read_text(encoding="utf-8"))
    global_study.write_text(text.replace('drift_compensation = "none"',
                                         'drift_compensation = "global"')
                            .replace('name = "retention-digits"', 'name = "retention-global"'))
    rows = summary_rows(run_summary(global_study, tmp_path, warm_cluster, capsys))
    at_1d, at_30d = float(rows["10000", "1 d"][1]), float(rows["1000000", "30 d"][1])
    Claim("docs/devices.md", "(54 % at 1 d for 10⁴ s, 95 % at 30 d for 10⁶ s)").check(
        f"({100 * at_1d:.0f} % at 1 d for 10⁴ s, {100 * at_30d:.0f} % at 30 d for 10⁶ s)")

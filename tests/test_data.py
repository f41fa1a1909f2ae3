"""Datasets: the digits split, CIFAR pickles on disk, and the study file's [data] table."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest

from mc_engine.data import CIFAR_STATS, Dataset, digits_split, load_cifar, load_dataset
from mc_engine.errors import UserInputError

REFERENCE = Path(__file__).parent / "data" / "aihwkit" / "digits_split_public.npz"
STUDY = "study.toml"


@pytest.fixture(scope="module")
def reference_split() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as npz:
        return {k: npz[k] for k in npz.files}


def write_module(folder: Path, body: str) -> str:
    """A uniquely named Python module in folder (unique: sys.modules caches by name)."""
    name = f"user_mod_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(body)
    return name


def write_cifar(root: Path, kind: str, sizes: dict[str, int], seed: int = 0) -> Path:
    """Official-format batches (protocol-2 pickles of dicts with bytes keys) under root."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    for file, n in sizes.items():
        batch = {b"batch_label": file.encode(), b"filenames": [b"img.png"] * n,
                 b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
        if kind == "cifar10":
            batch[b"labels"] = [int(v) for v in rng.integers(0, 10, n)]
        else:
            batch[b"fine_labels"] = [int(v) for v in rng.integers(0, 100, n)]
            batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, n)]
        with open(folder / file, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return folder


def raw_batch(file: Path) -> dict:
    with open(file, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def test_digits_split_equals_aihwkit_reference(reference_split):
    split = digits_split()
    assert set(split) == set(reference_split)
    for key, ref in reference_split.items():
        assert split[key].dtype == ref.dtype and split[key].shape == ref.shape
        np.testing.assert_array_equal(split[key], ref)
    assert split["x_train"].dtype == np.float32 and split["y_test"].dtype == np.int64


def test_load_cifar10_scales_normalises_and_orders_channels_first(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", {"test_batch": 5})
    x, y = load_cifar(folder, "cifar10", "test")
    raw = raw_batch(folder / "test_batch")
    assert x.dtype == np.float32 and x.shape == (5, 3, 32, 32)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, raw[b"labels"])
    mean, std = (np.array(v, np.float32).reshape(1, 3, 1, 1) for v in CIFAR_STATS["cifar10"])
    pixels = raw[b"data"].reshape(5, 3, 32, 32).astype(np.float32) / 255
    np.testing.assert_allclose(x, (pixels - mean) / std, rtol=1e-6, atol=1e-6)
    # the first 1024 bytes of a row are the red plane, row-major
    assert x[0, 0, 0, 1] == pytest.approx((raw[b"data"][0, 1] / 255 - 0.4914) / 0.2470, abs=1e-5)
    assert x[0, 2, 31, 31] == pytest.approx((raw[b"data"][0, 3071] / 255 - 0.4465) / 0.2616,
                                            abs=1e-5)


def test_load_cifar_accepts_extracted_folder_or_its_parent(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", {"test_batch": 3})
    x1, y1 = load_cifar(folder)
    x2, y2 = load_cifar(tmp_path)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_load_cifar10_train_concatenates_the_five_batches_in_order(tmp_path):
    folder = write_cifar(tmp_path, "cifar10",
                         {"test_batch": 2, **{f"data_batch_{i}": i for i in range(1, 6)}})
    x, y = load_cifar(tmp_path, "cifar10", "train")
    assert x.shape == (15, 3, 32, 32)
    expected = np.concatenate([raw_batch(folder / f"data_batch_{i}")[b"labels"]
                               for i in range(1, 6)])
    np.testing.assert_array_equal(y, expected)


def test_load_cifar100_reads_fine_labels(tmp_path):
    folder = write_cifar(tmp_path, "cifar100", {"test": 4, "train": 6})
    x, y = load_cifar(tmp_path, "cifar100", "test")
    np.testing.assert_array_equal(y, raw_batch(folder / "test")[b"fine_labels"])
    assert load_cifar(folder, "cifar100", "train")[0].shape == (6, 3, 32, 32)
    mean = np.array(CIFAR_STATS["cifar100"][0], np.float32).reshape(1, 3, 1, 1)
    std = np.array(CIFAR_STATS["cifar100"][1], np.float32).reshape(1, 3, 1, 1)
    pixels = raw_batch(folder / "test")[b"data"].reshape(4, 3, 32, 32) / np.float32(255)
    np.testing.assert_allclose(x, (pixels - mean) / std, rtol=1e-6, atol=1e-6)


def test_load_cifar_missing_batch_file_names_the_path(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", {"test_batch": 2, "data_batch_1": 2})
    with pytest.raises(UserInputError, match="data_batch_2") as err:
        load_cifar(folder, "cifar10", "train")
    assert str(folder) in str(err.value)
    with pytest.raises(UserInputError, match="cifar-100-python"):
        load_cifar(tmp_path, "cifar100")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_cifar_refuses_pickles_that_would_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "executed"
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(UserInputError, match="not a CIFAR python batch"):
        load_cifar(folder)
    assert not marker.exists()


def test_load_cifar_rejects_a_batch_without_image_rows(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    with pytest.raises(UserInputError, match="N x 3072"):
        load_cifar(folder)


def test_empty_data_table_gives_the_digits_test_half(reference_split):
    ds = load_dataset({}, Path("."), STUDY)
    assert isinstance(ds, Dataset) and ds.name == "digits" and len(ds) == 899
    np.testing.assert_array_equal(ds.x, reference_split["x_test"])
    np.testing.assert_array_equal(ds.y, reference_split["y_test"])


def test_limit_keeps_the_first_samples(reference_split):
    ds = load_dataset({"dataset": "digits", "limit": 25}, Path("."), STUDY)
    np.testing.assert_array_equal(ds.x, reference_split["x_test"][:25])
    np.testing.assert_array_equal(ds.y, reference_split["y_test"][:25])
    assert ds.x.base is None  # a copy, not a view holding the whole set
    assert len(load_dataset({"limit": 10_000}, Path("."), STUDY)) == 899


def test_cifar_path_is_resolved_against_the_study_folder(tmp_path):
    write_cifar(tmp_path / "datasets", "cifar100", {"test": 3})
    ds = load_dataset({"dataset": "cifar100", "path": "datasets"}, tmp_path, STUDY)
    assert ds.name == "cifar100" and ds.x.shape == (3, 3, 32, 32) and ds.y.dtype == np.int64


def test_npz_dataset_reads_x_test_and_y_test_as_float32_int64(tmp_path):
    np.savez(tmp_path / "mine.npz", x_test=np.arange(12.0).reshape(4, 3),
             y_test=np.array([0, 1, 2, 1], np.int32), x_train=np.zeros(1))
    ds = load_dataset({"dataset": "npz", "path": "mine.npz"}, tmp_path, STUDY)
    assert ds.name == "npz:mine.npz"
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.x, np.arange(12.0).reshape(4, 3))


def test_factory_is_imported_from_the_study_folder_and_may_return_tensors(tmp_path):
    module = write_module(tmp_path, (
        "import torch\n"
        "def make():\n"
        "    return torch.ones(6, 2, requires_grad=True) * 2, torch.tensor([0, 1, 0, 1, 0, 1])\n"))
    ds = load_dataset({"factory": f"{module}:make", "limit": 4}, tmp_path, STUDY)
    assert ds.name == f"{module}:make"
    assert ds.x.dtype == np.float32 and ds.x.shape == (4, 2) and np.all(ds.x == 2)
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1])


@pytest.mark.parametrize("spec, key, fragment", [
    ("digits", "data", "expected a table"),
    ({"datset": "digits"}, "data.datset", "allowed: dataset, factory, path, limit"),
    ({"dataset": "mnist"}, "data.dataset", "expected one of digits, cifar10, cifar100, npz"),
    ({"dataset": "digits", "factory": "m:f"}, "data.factory", "either dataset or factory"),
    ({"limit": 0}, "data.limit", "positive integer"),
    ({"limit": True}, "data.limit", "positive integer"),
    ({"limit": "10"}, "data.limit", "positive integer"),
    ({"dataset": "digits", "path": "x"}, "data.path", "embedded"),
    ({"dataset": "cifar10"}, "data.path", "required"),
    ({"dataset": "npz", "path": 3}, "data.path", "expected a string"),
    ({"dataset": "cifar10", "path": "nowhere"}, "data.path", "nowhere does not exist"),
    ({"factory": "no_colon"}, "data.factory", "expected 'module:function'"),
    ({"factory": "no_such_module_here:make"}, "data.factory", "cannot import module"),
])
def test_bad_data_table_names_file_and_key(tmp_path, spec, key, fragment):
    with pytest.raises(UserInputError, match=fragment) as err:
        load_dataset(spec, tmp_path, STUDY)
    assert err.value.source == STUDY and err.value.key == key
    assert str(err.value).startswith(f"{STUDY}: {key}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("body, fragment", [
    ("make = 3\n", "not callable"),
    ("def make():\n    return [1, 2, 3]\n", r"must return \(x, y\)"),
    ("def make():\n    raise RuntimeError('disk\\nfull')\n", "raised RuntimeError: disk full"),
    ("import numpy as np\ndef make():\n    return np.full((3, 2), np.nan), np.zeros(3, int)\n",
     "NaN"),
    ("import numpy as np\ndef make():\n    return np.zeros((3, 2)), np.zeros(3)\n",
     "1-D integer array"),
    ("import numpy as np\ndef make():\n    return np.zeros((3, 2)), np.zeros(2, int)\n",
     "same number"),
    ("import numpy as np\ndef make():\n    return np.zeros(3), np.zeros(3, int)\n",
     r"shape N x \.\.\."),
    ("import numpy as np\ndef make():\n    return np.zeros((2, 2)), -np.ones(2, int)\n", ">= 0"),
    ("raise ImportError('needs h5py')\n", "ImportError: needs h5py"),
])
def test_bad_data_factory_is_a_user_input_error(tmp_path, body, fragment):
    module = write_module(tmp_path, body)
    with pytest.raises(UserInputError, match=fragment) as err:
        load_dataset({"factory": f"{module}:make"}, tmp_path, STUDY)
    assert err.value.key == "data.factory" and "\n" not in str(err.value)


def test_factory_naming_a_missing_function_is_rejected(tmp_path):
    module = write_module(tmp_path, "x = 1\n")
    with pytest.raises(UserInputError, match="has no attribute 'make'"):
        load_dataset({"factory": f"{module}:make"}, tmp_path, STUDY)


@pytest.mark.parametrize("arrays, fragment", [
    ({"x": np.zeros((2, 2)), "y": np.zeros(2, int)}, "lacks array 'x_test'"),
    ({"x_test": np.array([[0.0, np.nan]]), "y_test": np.zeros(1, int)}, "NaN"),
])
def test_bad_npz_file_is_rejected_with_data_path(tmp_path, arrays, fragment):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserInputError, match=fragment) as err:
        load_dataset({"dataset": "npz", "path": str(tmp_path / "bad.npz")}, Path("."), STUDY)
    assert err.value.key == "data.path"


def test_unreadable_npz_and_missing_cifar_batches_are_rejected(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(UserInputError, match=r"not a readable \.npz") as err:
        load_dataset({"dataset": "npz", "path": "junk.npz"}, tmp_path, STUDY)
    assert err.value.key == "data.path"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="missing cifar10 batch file") as err:
        load_dataset({"dataset": "cifar10", "path": "empty"}, tmp_path, STUDY)
    assert err.value.key == "data.path" and str(tmp_path / "empty") in str(err.value)

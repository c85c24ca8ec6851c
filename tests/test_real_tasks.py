"""The real-data tasks of ``experiments.real_tasks`` (issue 13): the standard-library corpus
is a fixed file list split by position, the digits split is fixed, sampling is deterministic,
losses are finite, both tasks run through ``reproduce nn``; scikit-learn stays optional."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from manifold_spectral import cli
from manifold_spectral.experiments import nn_training, real_tasks
from manifold_spectral.experiments.real_tasks import STDLIB_FILES, DigitsTask, StdlibBytesTask

SMALL = {"seq_len": 16, "batch": 4, "eval_size": 8, "model": dict(dim=16, heads=2, ff=32, layers=1)}


def _fake_stdlib(root):
    for k, name in enumerate(STDLIB_FILES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([65 + k]) * (100 + k))
    return b"".join(bytes([65 + k]) * (100 + k) for k in range(len(STDLIB_FILES)))


def test_file_list_is_fixed():
    assert STDLIB_FILES == (
        "argparse.py",
        "typing.py",
        "inspect.py",
        "subprocess.py",
        "tarfile.py",
        "pydoc.py",
        "doctest.py",
        "difflib.py",
        "enum.py",
        "dataclasses.py",
        "logging/__init__.py",
        "unittest/mock.py",
    )


def test_corpus_in_order_and_split_by_position(tmp_path):
    data = _fake_stdlib(tmp_path)
    assert real_tasks.stdlib_corpus(tmp_path) == data
    task = StdlibBytesTask(root=tmp_path, **SMALL)
    cut = int(0.9 * len(data))
    assert bytes(task.train_bytes.tolist()) == data[:cut]
    assert bytes(task.val_bytes.tolist()) == data[cut:]
    # every validation window lies inside the validation text
    val = bytes(task.val_bytes.tolist())
    assert all(bytes(w.tolist()) in val for w in task.eval_x)


def test_missing_file_is_a_clear_error(tmp_path):
    _fake_stdlib(tmp_path)
    (tmp_path / "pydoc.py").unlink()
    (tmp_path / "unittest" / "mock.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing under .*: pydoc.py, unittest/mock.py"):
        StdlibBytesTask(root=tmp_path)


def test_stdlib_task_on_this_python():
    task = nn_training.make_task("stdlib", **SMALL)
    assert task.floor is None and task.eval_x.shape == (8, 17)
    x1, _ = task.sample(4, torch.Generator().manual_seed(3))
    x2, _ = task.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and x1.shape == (4, 17) and int(x1.max()) < 256
    model = task.make_model(0)
    assert math.isfinite(float(task.loss(model, x1).detach()))
    bits = task.eval_loss(model)  # near log2(256) = 8 at initialisation
    assert 6.0 < bits < 10.0


def test_digits_split_fixed_and_sampling_deterministic():
    pytest.importorskip("sklearn")
    a, b = DigitsTask(channels=(4, 8)), DigitsTask(channels=(4, 8))
    assert torch.equal(a.test_idx, b.test_idx) and len(a.test_idx) == 1797 - int(0.8 * 1797)
    assert not set(a.train_idx.tolist()) & set(a.test_idx.tolist())
    assert not torch.equal(DigitsTask(split_seed=1).test_idx, a.test_idx)
    x1, y1 = a.sample(8, torch.Generator().manual_seed(0))
    x2, y2 = b.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (8, 1, 8, 8)
    model = a.make_model(0)
    assert math.isfinite(float(a.loss(model, x1, y1).detach()))
    assert abs(a.eval_loss(model) - math.log(10)) < 0.5


def test_without_sklearn_the_module_imports_and_digits_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"manifold_spectral\[baselines\]"):
        DigitsTask()


def test_cli_task_choices_match_the_experiment():
    args = cli.build_parser().parse_args(["reproduce", "nn", "--task", *nn_training.TASKS])
    assert args.task == list(nn_training.TASKS)


def test_cli_method_choices_match_the_registry():
    """``NN_METHODS`` (spelled out for a torch-free ``--help``) is ``OPTIMIZERS``, in order."""
    from manifold_spectral.cli.nn import NN_METHODS

    assert NN_METHODS == tuple(nn_training.OPTIMIZERS)
    assert cli.build_parser().parse_args(["reproduce", "nn"]).methods == list(NN_METHODS)


def test_tiny_cli_run(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    argv = ["reproduce", "nn", "--task", "stdlib", "digits", "--methods", "adamw"]
    argv += ["--trials", "1", "--steps", "3", "--no-ablations", "--precision", "fp32"]
    assert cli.main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "stdlib: byte-level LM" in out and "digits: scikit-learn 8x8 digits" in out
    assert "no known Bayes loss" in out and (tmp_path / "nn.png").exists()

"""The package's structure: one validation module, imports that point down the layers, no
private name used across packages, deprecated aliases for moved names."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import manifold_spectral
from manifold_spectral import validation


@pytest.mark.parametrize("name", ["resolve_device", "check_flag", "symmetric_matrix"])
def test_moved_helpers_warn_at_their_old_place(name):
    from manifold_spectral.manifolds import spectral

    with pytest.warns(DeprecationWarning, match=f"manifold_spectral.validation.{name}"):
        old = getattr(spectral, name)
    assert old is getattr(validation, name)
    with pytest.raises(AttributeError):
        spectral.no_such_name  # noqa: B018


def test_base_reexports_the_validation_checks():
    from manifold_spectral.manifolds import base

    for name in ("check_tensor", "check_positive", "check_size", "resolve_dtype"):
        assert getattr(base, name) is getattr(validation, name)


@pytest.mark.parametrize("bad", [1.0, 1, -0.1, float("nan"), True])
def test_check_momentum_rejects_outside_0_1(bad):
    with pytest.raises((ValueError, TypeError), match="momentum"):
        validation.check_momentum(bad)


def test_check_momentum_accepts_0_1():
    assert validation.check_momentum(0) == 0.0
    assert validation.check_momentum(0.999) == 0.999


# Layers --------------------------------------------------------------------------------------

PACKAGE = Path(manifold_spectral.__file__).resolve().parent

#: Each top-level unit of the package (a module or a subpackage) and its layer. A unit may
#: import only units of a strictly lower layer (imports inside a unit are free); the root
#: ``__init__`` is the facade that re-exports the core. The brief map of the package:
#: linalg -> validation -> manifolds -> rgd -> gaussian -> solvers, optim -> experiments -> cli.
LAYERS = {
    "linalg_init": -1,
    "linalg_numerics": -1,
    "_compat": 0,
    "_threads": 0,
    "_denormals": 0,
    "linalg": 0,
    "validation": 1,
    "manifolds": 2,
    "rgd": 3,
    "geoopt": 3,
    "diagnostics": 3,
    "gaussian": 4,
    "baselines": 4,
    "__init__": 5,
    "solvers": 5,
    "optim": 5,
    "experiments": 6,
    "_measured": 6,
    "_outputs": 7,
    "cli": 8,
    "__main__": 9,
}


def _module_name(path: Path) -> str:
    parts = ["manifold_spectral", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel / "__init__.py").is_file()


def _unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _package_of(module: str) -> str:
    return module if _is_package(module) else module.rpartition(".")[0]


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import in ``path``, at any depth
    (lazy imports inside functions count), for the package's own modules only."""
    module = _module_name(path)
    package = _package_of(module)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "manifold_spectral":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "manifold_spectral":
                yield node.lineno, target, [a.name for a in node.names]


def _edges() -> Iterator[tuple[str, int, str, str]]:
    """(importer, line, imported module, imported name or "") for each import."""
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        for line, target, names in _imports(path):
            if not names:
                yield importer, line, target, ""
            for name in names:
                sub = f"{target}.{name}"
                if (
                    _is_package(sub)
                    or (PACKAGE / Path(*sub.split(".")[1:])).with_suffix(".py").is_file()
                ):
                    yield importer, line, sub, ""  # `from pkg import submodule`
                else:
                    yield importer, line, target, name


def layer_violations() -> list[str]:
    bad = []
    for importer, line, target, _ in _edges():
        a, b = _unit(importer), _unit(target)
        if a != b and not LAYERS[b] < LAYERS[a]:
            bad.append(f"{importer}:{line} imports {target} ({a} {LAYERS[a]} -> {b} {LAYERS[b]})")
    return bad


def private_violations() -> list[str]:
    bad = []
    for importer, line, target, name in _edges():
        own = _package_of(importer)
        parts = target.split(".")
        for i, part in enumerate(parts):  # a private module is private to its parent package
            if part.startswith("_") and not own.startswith(".".join(parts[:i])):
                bad.append(f"{importer}:{line} imports private module {target}")
        dunder = name.startswith("__") and name.endswith("__")  # __version__ is public
        if name.startswith("_") and not dunder and _package_of(target) != own:
            bad.append(f"{importer}:{line} imports private {target}.{name}")
    return bad


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= LAYERS.keys(), f"no layer for {sorted(units - LAYERS.keys())}"


def test_every_import_points_down():
    assert not layer_violations(), "\n".join(layer_violations())


def test_no_private_name_crosses_a_package():
    assert not private_violations(), "\n".join(private_violations())


def test_nes_does_not_load_geoopt():
    code = (
        "import sys, manifold_spectral.solvers.nes, manifold_spectral.solvers.spd\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'geoopt'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    ).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("manifold_spectral.baselines", "XNES", "manifold_spectral.solvers.xnes"),
        ("manifold_spectral.baselines", "CholeskyNES", "manifold_spectral.solvers.cholesky_nes"),
        ("manifold_spectral.baselines.xnes", "XNESSearch", "manifold_spectral.solvers.xnes"),
        (
            "manifold_spectral.baselines.cholesky_nes",
            "CholeskySearch",
            "manifold_spectral.solvers.cholesky_nes",
        ),
        (
            "manifold_spectral.solvers.nes_stop",
            "convergence_stops",
            "manifold_spectral.solvers.es_stop",
        ),
        (
            "manifold_spectral.solvers.nes_eval",
            "run_optimizer",
            "manifold_spectral.solvers.es_eval",
        ),
    ],
)
def test_moved_nes_baselines_keep_their_old_names(old, name, new):
    with pytest.warns(DeprecationWarning, match=new):
        cls = getattr(importlib.import_module(old), name)
    assert cls is getattr(importlib.import_module(new), name)


def test_hessian_is_renamed_dense_curvature_with_a_warning():
    """``Hessian`` took any dense symmetric curvature; its name is ``DenseCurvature`` now and
    the old one still works at both places, with a ``DeprecationWarning``."""
    from manifold_spectral import gaussian

    for module in (manifold_spectral, gaussian):
        with pytest.warns(DeprecationWarning, match="DenseCurvature"):
            old = module.Hessian
        assert old is gaussian.DenseCurvature is manifold_spectral.DenseCurvature
        with pytest.raises(AttributeError):
            module.NoSuchCurvature  # noqa: B018

"""Every dotted name of the package that the README and docs/*.md quote in backticks exists.

A reader looks up what the docs name (``SpectralSPD.split_ties``, ``es_rates.DXSchedule``,
``linalg.cayley_exact_apply``, ...); a renamed function left its old name in the prose
(``Gaussian.precision_gradient_eigenbasis``, now the manifolds' ``precision_egrad_eigenbasis``).
A name is checked when its head is ``manifold_spectral``, the short name of one of the
package's modules or one of its public classes; attributes are resolved by ``getattr`` and
submodules imported on demand.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import manifold_spectral

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "manifold_spectral"
#: Heads that the prose also uses for objects of other packages or for variables:
#: ``geoopt.Manifold`` is geoopt's own class, ``result.x`` an attribute of a returned value,
#: ``distributed.Client`` Dask's.
OTHER = {"result", "distributed"}
EXTERNAL = {"geoopt"}


def _modules() -> dict[str, list[str]]:
    """Short module name -> dotted names of the package's modules (no import needed)."""
    out: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__"):
            parts = parts[:-1]
        out.setdefault(parts[-1], []).append(".".join(parts))
    return out


def _resolve(obj: Any, rest: list[str]) -> bool:
    for name in rest:
        if hasattr(obj, name):
            obj = getattr(obj, name)
        elif isinstance(obj, ModuleType):
            try:
                obj = importlib.import_module(f"{obj.__name__}.{name}")
            except ImportError:
                return False
        else:
            return False
    return True


def _roots(head: str, modules: dict[str, list[str]]) -> list[Any]:
    if head == "manifold_spectral":
        return [manifold_spectral]
    if head in modules:
        return [importlib.import_module(m) for m in modules[head]]
    cls = getattr(manifold_spectral, head, None)
    return [cls] if isinstance(cls, type) else []


def _quoted_names() -> list[tuple[str, str]]:
    names = set()
    for page in PAGES:
        for code in re.findall(r"`([^`\n]+)`", page.read_text()):
            for ref in re.findall(r"\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)", code):
                if ref.rsplit(".", 1)[-1] not in ("py", "md", "png", "csv", "json", "txt", "sh"):
                    names.add((page.name, ref))
    return sorted(names)


def test_every_quoted_package_name_exists():
    modules = _modules()
    missing = []
    for page, ref in _quoted_names():
        head, *rest = ref.split(".")
        if head in OTHER:
            continue
        roots = _roots(head, modules)
        if head in EXTERNAL:
            roots.append(pytest.importorskip(head))
        if roots and not any(_resolve(root, rest) for root in roots):
            missing.append(f"{page}: {ref}")
    assert not missing, missing

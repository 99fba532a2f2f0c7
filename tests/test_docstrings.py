"""Every public class, function, method and property has a numpydoc docstring with an
example, and the examples run.

The public API is ``bayesfm.__all__`` (the submodules it lists count through their own
``__all__``), the public methods and properties of its classes (those defined in bayesfm, not
inherited from the standard library), and the Gibbs kernel :class:`bayesfm.gibbs.FMGibbs`.
Constants need no docstring of their own.

Examples of methods use ``model``, ``X`` and ``y`` from a shared namespace: the ``svi_fm``
fixture of ``conftest.py`` (an FM with side features fitted by SVI) and its training rows.
"""

from __future__ import annotations

import copy
import doctest
import inspect
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm.gibbs import FMGibbs

# public objects outside ``__all__`` that users meet; their own members are kernel hooks
# called by numpyro (init, sample), so only the class docstring counts
EXTRA_PUBLIC = {"bayesfm.gibbs.FMGibbs": FMGibbs}

NUMPYDOC_SECTIONS = {
    "Parameters",
    "Returns",
    "Yields",
    "Receives",
    "Other Parameters",
    "Raises",
    "Warns",
    "Warnings",
    "See Also",
    "Notes",
    "References",
    "Examples",
    "Attributes",
    "Methods",
}
# numpydoc.validate checks not required here: extended summary, See Also
NUMPYDOC_IGNORED = {"ES01", "SA01"}
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


# ----------------------------------------------------------------------- the public API
def _members(cls: type) -> Iterator[tuple[str, object]]:
    """Public methods and properties of ``cls`` defined in bayesfm, each under the name of
    the class that defines it."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("bayesfm"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(value, classmethod | staticmethod):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                yield f"{klass.__module__}.{klass.__qualname__}.{name}", value


def public_api() -> dict[str, object]:
    """Qualified name -> public class, function, method or property (each object once)."""
    modules = [bfm] + [getattr(bfm, n) for n in bfm.__all__ if inspect.ismodule(getattr(bfm, n))]
    found: dict[str, object] = {}
    seen: set[int] = set()

    def add(name: str, obj: object) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            found[name] = obj

    for module in modules:
        for attr in module.__all__:
            obj = getattr(module, attr)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # submodules (walked above) and constants
            add(f"{obj.__module__}.{obj.__qualname__}", obj)
            if inspect.isclass(obj):
                for name, member in _members(obj):
                    add(name, member)
    for name, obj in EXTRA_PUBLIC.items():
        add(name, obj)
    return found


def _target(obj: object) -> object:
    """What holds the docstring and the signature: the getter of a property."""
    return obj.fget if isinstance(obj, property) else obj


# --------------------------------------------------------------- a small numpydoc parser
def numpydoc_sections(doc: str) -> tuple[str, dict[str, list[str]]]:
    """Split a cleaned docstring into its summary paragraph and its sections.

    A section starts with a title line underlined by dashes of the same length. Raises
    ``ValueError`` on a section title numpydoc does not know, or a repeated section.
    """
    lines = doc.splitlines()
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    body = current
    i = 0
    while i < len(lines):
        title, under = lines[i].strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""
        if title and under and set(under) == {"-"} and len(under) == len(title):
            if title not in NUMPYDOC_SECTIONS:
                raise ValueError(f"unknown section {title!r}")
            if title in sections:
                raise ValueError(f"section {title!r} appears twice")
            current = sections[title] = []
            i += 2
            continue
        current.append(lines[i])
        i += 1
    summary = "\n".join(body).strip().split("\n\n")[0]
    return summary, sections


PARAM_LINE = re.compile(r"^(\*{0,2}\w+(?:, \*{0,2}\w+)*)(?: :.*)?$")


def documented_parameters(section: list[str]) -> list[str]:
    """Names documented in a Parameters section (lines at its base indentation)."""
    names: list[str] = []
    for line in section:
        if line.strip() and not line.startswith(" "):
            match = PARAM_LINE.match(line.strip())
            if match:
                names += [n.lstrip("*") for n in match.group(1).split(", ")]
    return names


def signature_parameters(obj: object) -> list[str] | None:
    """Parameter names a Parameters section must document; None when there is no
    signature of bayesfm's own (exceptions and warnings take the built-in arguments)."""
    if inspect.isclass(obj):
        own_init = any(
            "__init__" in vars(k) for k in obj.__mro__ if k.__module__.startswith("bayesfm")
        )
        if not own_init:
            return None
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name in ("self", "cls") and not inspect.isclass(obj):
        params = params[1:]
    return [p.name for p in params]


def docstring_problems(name: str, obj: object) -> list[str]:
    """Why the docstring of ``obj`` fails the contract (empty list: it passes)."""
    target = _target(obj)
    doc = inspect.getdoc(target)
    if not doc:
        return [f"{name}: no docstring"]
    try:
        summary, sections = numpydoc_sections(doc)
    except ValueError as err:
        return [f"{name}: {err}"]
    problems = []
    if not summary or not summary[0].isupper() or not summary.endswith("."):
        problems.append(f"{name}: the summary should be a sentence that ends with a period")
    examples = sections.get("Examples")
    if examples is None:
        problems.append(f"{name}: no Examples section")
    elif not any(line.lstrip().startswith(">>>") for line in examples):
        problems.append(f"{name}: the Examples section has no >>> line")
    if not isinstance(obj, property):
        expected = signature_parameters(target)
        if expected is not None:
            documented = documented_parameters(sections.get("Parameters", []))
            missing = [p for p in expected if p not in documented]
            unknown = [p for p in documented if p not in expected]
            if missing:
                problems.append(f"{name}: parameters not documented: {missing}")
            if unknown:
                problems.append(f"{name}: documented parameters not in the signature: {unknown}")
    return problems


# ------------------------------------------------------------------------------ tests
def test_the_public_api_is_walked():
    api = public_api()
    for name in (
        "bayesfm.estimators.BayesianFM",
        "bayesfm.estimators.BayesianFM.fit",
        "bayesfm.estimators.BayesianFM.predict_interval",
        "bayesfm.estimators.BayesianMF.features",
        "bayesfm.data.FeatureSpec.from_dict",
        "bayesfm.metrics.ranking_metrics",
        "bayesfm.datasets.make_synthetic",
        "bayesfm.diagnostics.ConvergenceWarning",
        "bayesfm.gibbs.FMGibbs",
    ):
        assert name in api, name
    assert not any(k.endswith(("RHAT_MAX", "ML100K_URL")) for k in api)


def test_every_public_object_has_a_numpydoc_docstring_with_an_example():
    problems = [p for name, obj in public_api().items() for p in docstring_problems(name, obj)]
    assert not problems, "\n".join(problems)


def test_the_docstring_checker_reports_what_is_missing():
    def documented(a, b):
        """Add two numbers.

        Parameters
        ----------
        a, b : float
            The numbers.

        Examples
        --------
        >>> documented(1, 2)
        3
        """
        return a + b

    def undocumented(a, c):
        """Add two numbers.

        Parameters
        ----------
        a : float
            A number.
        b : float
            Another.

        Notes
        -----
        No example.
        """

    assert docstring_problems("documented", documented) == []
    problems = "\n".join(docstring_problems("undocumented", undocumented))
    assert "no Examples section" in problems
    assert "not documented: ['c']" in problems
    assert "not in the signature: ['b']" in problems
    assert docstring_problems("f", lambda: None) == ["f: no docstring"]


def test_docstrings_pass_numpydoc_validation():
    validate = pytest.importorskip("numpydoc.validate").validate
    problems = []
    for name in public_api():
        for code, message in validate(name)["errors"]:
            if code not in NUMPYDOC_IGNORED:
                problems.append(f"{name}: {code} {message}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def doc_globals(svi_fm, synthetic_split):
    """Names the examples may use without defining them."""
    data, train, _ = synthetic_split
    return {
        "bfm": bfm,
        "np": np,
        "pd": pd,
        # a shallow copy: predict_posterior replaces idata_ on it, not on the shared fixture
        "model": copy.copy(svi_fm),
        "X": data.X[train],
        "y": data.y[train],
    }


def test_docstring_examples_run(doc_globals):
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report: list[str] = []
    for name, obj in public_api().items():
        target = _target(obj)
        module = inspect.getmodule(target)
        for test in finder.find(target, name, module=module, extraglobs=doc_globals):
            runner.run(test, out=report.append, clear_globs=True)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted >= 100, f"only {attempted} examples found"
    assert failed == 0, "".join(report)

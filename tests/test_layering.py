"""Layering rules, checked by scanning the source (ast), not by convention.

- The pure modules (of the broker, and the agent's bookkeeping in workers/) import nothing
  of zmq, asyncio, socket, diskcache or sqlite3, and of the broker only pure modules.
- Nothing in broker/, workers/ or web/ imports pickle, marshal or shelve, or uses pyzmq's
  pickling shortcuts (``send_pyobj``/``recv_pyobj``/``send_serialized``/``recv_serialized``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [
    "protocol",
    "messages",
    "state",
    "client_requests",
    "worker_messages",
    "jobs",
    "scheduling",
    "progress",
    "liveness",
    "lifecycle",
    "submission",
    "joblog",
    "groups",
    "group_desk",
    "workforce",
    "outbox",
    "effects",
    "core",
    "replies",
    "addresses",
    "listing",
    "retry",
    "outbound",
    "metrics",
    "queue_position",
    "concurrency",
    "periodic",
    "pausing",
    "placement",
    "prefetch",
    "task_controls",
    "alljobs",
    "batches",
    "bundle",
    "tally",
]
PURE_PATHS = [ROOT / "broker" / f"{name}.py" for name in PURE]
WORKER_PURE = ["slot", "outcome_pacing"]  # the agent's pure bookkeeping
WORKER_PURE_PATHS = [ROOT / "workers" / f"{name}.py" for name in WORKER_PURE]
ALLOWED_BROKER_IMPORTS = {f"broker.{name}" for name in [*PURE, "errors"]}
IO_MODULES = {"zmq", "asyncio", "socket", "diskcache", "sqlite3"}
PICKLERS = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
PICKLING_CALLS = {"send_pyobj", "recv_pyobj", "send_serialized", "recv_serialized"}
PACKAGES = ["broker", "workers", "web"]


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Every module an ``import`` names, anywhere in the tree (relative ones resolved)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([package, base]).rstrip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def roots(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def package_sources() -> list[Path]:
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(paths) > 20, paths  # the scan really sees the code
    return paths


def test_scanner_sees_imports() -> None:
    tree = ast.parse(
        textwrap.dedent("""
        import zmq.asyncio
        from . import results
        def later():
            from diskcache import Cache
    """)
    )
    found = imported_modules(tree, "broker")
    assert {"zmq", "broker", "diskcache"} <= roots(found)
    assert "broker.results" in found


@pytest.mark.parametrize("path", PURE_PATHS, ids=PURE)
def test_pure_module_imports_no_io(path: Path) -> None:
    modules = imported_modules(parse(path), "broker")
    assert roots(modules) & IO_MODULES == set()


@pytest.mark.parametrize("path", PURE_PATHS, ids=PURE)
def test_pure_module_imports_only_pure_broker_modules(path: Path) -> None:
    modules = imported_modules(parse(path), "broker")
    broker_modules = {m for m in modules if m.startswith("broker.") and m.count(".") == 1}
    # ``from broker import protocol as p`` names broker.protocol; names like
    # ``broker.jobs.State`` have two dots and are attributes, not modules.
    assert broker_modules - ALLOWED_BROKER_IMPORTS == set()


@pytest.mark.parametrize("path", WORKER_PURE_PATHS, ids=WORKER_PURE)
def test_pure_worker_module_imports_no_io(path: Path) -> None:
    modules = imported_modules(parse(path), "workers")
    assert roots(modules) & IO_MODULES == set()
    assert {m for m in modules if m.startswith("broker.") and m.count(".") == 1} <= ALLOWED_BROKER_IMPORTS


def test_pure_modules_load_no_io_at_run_time() -> None:
    # broker/__init__.py re-exports the client (zmq), so load the pure modules through a bare
    # package object: only what they import themselves, transitively, ends up loaded.
    script = textwrap.dedent(f"""
        import sys, types
        package = types.ModuleType("broker")
        package.__path__ = [{str(ROOT / "broker")!r}]
        sys.modules["broker"] = package
        for name in {PURE!r}:
            __import__("broker." + name)
        loaded = {{m.split(".")[0] for m in sys.modules}}
        print(" ".join(sorted(loaded & set({sorted(IO_MODULES)!r}))))
        print(" ".join(sorted(m for m in sys.modules if m.startswith("broker."))))
    """)
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    io_loaded, broker_loaded = done.stdout.splitlines()
    assert io_loaded == ""
    assert set(broker_loaded.split()) <= ALLOWED_BROKER_IMPORTS
    assert {f"broker.{name}" for name in PURE} <= set(broker_loaded.split())


@pytest.mark.parametrize("path", package_sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_nothing_pickles(path: Path) -> None:
    tree = parse(path)
    assert roots(imported_modules(tree, path.parent.name)) & PICKLERS == set()
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used.add(node.value)  # getattr(sock, "recv_pyobj"), import_module("pickle")
    assert used & (PICKLING_CALLS | PICKLERS) == set()


def test_pickle_scan_would_catch_a_pyobj_call() -> None:
    tree = ast.parse("sock.send_pyobj(x)\nimport marshal\ngetattr(s, 'recv_serialized')")
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert "send_pyobj" in names and "recv_serialized" in constants
    assert roots(imported_modules(tree, "broker")) & PICKLERS == {"marshal"}


def test_only_the_result_tests_import_pickle() -> None:
    users = [
        path.name
        for path in sorted((ROOT / "tests").glob("*.py"))
        if "pickle" in roots(imported_modules(parse(path), "tests"))
    ]
    assert users == ["test_results.py"]


def test_source_tree_is_where_we_think() -> None:
    assert (ROOT / "broker" / "core.py").is_file()
    assert os.path.samefile(ROOT / "tests", Path(__file__).parent)

"""The Store protocol is complete: what the pipeline calls, every store answers, without probes.

And the stores package keeps its shape: no module over 600 lines, no import circle,
no import of the pipeline (the stores sit below it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslsms_notify.alerting import decisions
from sslsms_notify.stores import MemoryStore, Store, StoreHealth, merge, open_store
from sslsms_notify.stores.base import OutboxItem
from sslsms_notify.stores.redis import RedisStore
from sslsms_notify.stores.sqlite import SQLiteStore

from .conftest import free_port

STORES = Path(__file__).resolve().parent.parent / "sslsms_notify" / "stores"
HOUSEKEEPING = ("timer_stores", "maintain", "counters", "health")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "memory":
        backend: Store = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "state.db")
    else:
        backend = RedisStore(request.getfixturevalue("redis_url"), spool=tmp_path / "spool.db")
    yield backend
    backend.close()


def test_every_store_answers_the_whole_protocol(store) -> None:
    assert isinstance(store, Store)
    for name in HOUSEKEEPING:
        assert callable(getattr(type(store), name, None)), name
    assert store.timer_stores()[0] is store
    assert store.maintain() == 0
    assert store.move_spool() == 0  # the name the Notifier calls today
    assert all(isinstance(v, int) for v in store.counters().values())
    assert store.health() == StoreHealth("durable" if store.durable else "volatile")


def test_the_protocol_declares_housekeeping_with_docstrings() -> None:
    for name in HOUSEKEEPING:
        assert getattr(Store, name).__doc__, name


def test_a_memory_store_counts_nothing() -> None:
    assert MemoryStore().counters() == {}


def test_sqlite_health_says_closed_and_a_file_it_cannot_move_to(tmp_path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        assert store.counters() == {"reopened": 0}
        path.unlink()
        path.mkdir()  # nothing can be opened there: writes go to the old file meanwhile
        store.outbox_add([OutboxItem("one", "8801711111111", "text", 1.0, 1.0)])
        assert store.health().state == "down" and "no new one could be opened" in store.health().detail
    finally:
        store.close()
    assert store.health() == StoreHealth("down", "closed")


def test_sqlite_counts_its_moves_to_a_new_file(tmp_path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        store.outbox_add([OutboxItem("kept", "8801711111111", "text", 1.0, 1.0)])
        path.unlink()
        assert store.outbox_open() == 1 and store.counters() == {"reopened": 1}
        assert store.health() == StoreHealth("durable")
        assert [i.csms_id for i in SQLiteStore(path).outbox_list()] == ["kept"]
    finally:
        store.close()


def test_redis_unreachable_is_spooling_and_its_spool_is_swept(tmp_path) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", spool=tmp_path / "spool.db")
    try:
        store.outbox_add([OutboxItem("one", "8801711111111", "text", 1.0, 1.0)])
        health = store.health()
        assert health.state == "spooling" and "Redis unreachable" in health.detail
        assert str(tmp_path / "spool.db") in health.detail
        assert store.timer_stores() == [store, store.spool()]
        assert store.maintain() == 0  # nothing moves back while Redis is away
        assert set(store.counters()) == {
            "data_lost",
            "readded",
            "journal_dropped",
            "rows_moved",
            "journal",
            "replica_waits",
            "replica_timeouts",
        }
    finally:
        store.close()


def test_open_store_checks_what_it_is_given() -> None:
    memory = MemoryStore()
    assert open_store(memory) is memory
    with pytest.raises(ValueError, match="must be a store URL or a Store"):
        open_store(object())  # type: ignore[arg-type]


def test_the_stores_merge_by_the_pipelines_bounds() -> None:
    # The stores do not import the pipeline: the bounds live in both places, and agree.
    assert (merge.DIGEST_KEEP, merge.GROUP_KEEP) == (decisions.DIGEST_KEEP, decisions.GROUP_KEEP)


def _modules() -> dict[str, Path]:
    found = {}
    for path in STORES.rglob("*.py"):
        parts = path.relative_to(STORES.parent.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules ``name`` imports (at load time or inside functions), as absolute names.

    ``from package import module`` is an import of the module, not of the package.
    """
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else str(node.module)
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(modules)
            found.update(submodules or {module})
    return found


def test_no_store_module_is_over_600_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_the_stores_import_no_circle_and_not_the_pipeline() -> None:
    modules = _modules()
    imports = {name: _imports(name, path, modules) for name, path in modules.items()}
    upward = {
        name: sorted(m for m in found if m.startswith("sslsms_notify.alerting"))
        for name, found in imports.items()
    }
    assert {name: found for name, found in upward.items() if found} == {}
    graph = {name: sorted(m for m in found if m in modules and m != name) for name, found in imports.items()}
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, "import circle: " + " -> ".join((*trail[trail.index(name) :], name))
        if name in done:
            return
        for dependency in graph[name]:
            visit(dependency, (*trail, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_every_record_table_has_its_merge_rule() -> None:
    """A spool moving back to Redis, or a replaced SQLite file carried over, merges each
    record by its table's rule: a table without one would stop the move for good."""
    from sslsms_notify.stores.base import RECORDS
    from sslsms_notify.stores.merge import MERGE_RECORD

    assert set(MERGE_RECORD) == set(RECORDS)

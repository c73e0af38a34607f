"""The order tests run in, and which run together (hooks registered by tests/conftest.py).

A real stack (Airflow scheduler, dag-processor, API server, MLflow server) costs CPU even when idle, so:

- **Groups**: a test module stays whole, and every module using one of the session's shared stacks
  (`SHARED_STACKS`: the `pipeline` scenario, the `yaml_datasets` stack) joins one group with the others
  that use it. Under `pytest -n N --dist loadgroup` (`make test`) a group runs on one worker, in
  collection order, and its stack is started once. (xdist's own `xdist_group` marks do not group on
  pytest 9, whose node ids it can no longer suffix: `pytest_xdist_make_scheduler` below schedules by
  these groups instead. The workers collect; they write {module: group} to the file the controller
  named in $DRIFTWATCH_TEST_GROUPS, which it reads when it schedules, after the collection.)
- **Order**: the groups of shared stacks first (the longest), then the other modules with a stack of their
  own, then the unit tests; within a group, the collection order.
- **Stopped when done**: a stack (shared or a module's own) is stopped after the last test of the group
  that started it (a group's tests are contiguous), not at the end of the session, so it does not slow
  down the tests that follow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

# the session-scoped fixtures of stacks shared by several modules
SHARED_STACKS = ("pipeline", "yaml_datasets")


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def groups(items: list[pytest.Item]) -> dict[str, str]:
    """{module: group name}: modules joined when they share a stack (union-find over modules and stacks)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for item in items:
        mine = find(_module(item))
        for fixture in SHARED_STACKS:
            if fixture in item.fixturenames:
                # the stack's name is the group's root, so the group is named after it
                parent[mine] = find(f"stack:{fixture}")
                mine = find(mine)
    out = {}
    for item in items:
        root = find(_module(item))
        out[_module(item)] = root.removeprefix("stack:")
    return out


def _rank(item: pytest.Item, group: str) -> int:
    if group in SHARED_STACKS:
        return 0
    if item.get_closest_marker("integration") is not None:
        return 1
    return 2


GROUPS_FILE = "DRIFTWATCH_TEST_GROUPS"


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # the controller: where its workers say which group each module is in
        os.environ[GROUPS_FILE] = str(
            Path(tempfile.mkdtemp(prefix="driftwatch-test-groups-")) / "groups.json"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        shutil.rmtree(Path(os.environ.pop(GROUPS_FILE, "")).parent, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    of = groups(items)
    _group_of.update(of)
    if hasattr(config, "workerinput") and os.environ.get(GROUPS_FILE):
        target = Path(os.environ[GROUPS_FILE])
        tmp = target.with_name(f"{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps(of))
        os.replace(tmp, target)
    first_seen: dict[str, int] = {}
    for i, item in enumerate(items):
        first_seen.setdefault(of[_module(item)], i)
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (_rank(it, of[_module(it)]), first_seen[of[_module(it)]], order[id(it)]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`: xdist's scope scheduling with our groups as the scopes (None: xdist decides)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # read once, when it schedules (the workers have collected)
                self._groups = json.loads(Path(os.environ[GROUPS_FILE]).read_text())
            module = nodeid.split("::")[0]
            return self._groups.get(module, module)

    return GroupScheduling(config, log)


_factories: list[Any] = []  # the session's stack_factory (one per process: each xdist worker has its own)
_group_of: dict[str, str] = {}  # module -> group, of this process's collection
_current: list[str] = []  # the group of the test being set up
_owned: dict[str, list[str]] = {}  # group -> the stacks started while setting up its tests


def register_factory(factory: Any) -> None:
    _factories[:] = [factory]


def started(name: str) -> None:
    """stack_factory started the stack `name`: it belongs to the group of the test being set up."""
    if _current:
        _owned.setdefault(_current[0], []).append(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    _current[:] = [_group_of.get(_module(item), _module(item))]
    try:
        return (yield)
    finally:
        _current.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    result = yield
    if nextitem is None or not _factories:
        return result  # the end of the session stops every stack anyway
    group = _group_of.get(_module(item), _module(item))
    if _group_of.get(_module(nextitem), _module(nextitem)) != group:
        for name in _owned.pop(group, []):  # its group is done: the next test is another group's
            _factories[0].stop(name)
    return result

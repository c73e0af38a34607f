"""tests/scheduling.py: which test modules run together (a shared stack's modules form one group) and in
what order (the shared stacks' groups first, then modules with a stack of their own, then unit tests)."""

from __future__ import annotations

from types import SimpleNamespace

import scheduling


def _item(nodeid: str, *fixtures: str, integration: bool = False):
    marker = object() if integration else None
    return SimpleNamespace(nodeid=nodeid, fixturenames=list(fixtures), get_closest_marker=lambda name: marker)


ITEMS = [
    _item("tests/unit/test_a.py::test_1", "tmp_path"),
    _item("tests/integration/test_p.py::test_1", "pipeline", integration=True),
    _item("tests/integration/test_own.py::test_1", "stack_factory", integration=True),
    _item("tests/integration/test_both.py::test_1", "tmp_path", integration=True),
    _item("tests/integration/test_both.py::test_2", "yaml_datasets", "pipeline", integration=True),
    _item("tests/integration/test_y.py::test_1", "yaml_datasets", integration=True),
    _item("tests/unit/test_a.py::test_2"),
    _item("tests/e2e/test_y2.py::test_1", "yaml_datasets", integration=True),
]


def test_modules_sharing_a_stack_are_one_group_and_a_module_is_never_split():
    of = scheduling.groups(ITEMS)
    # test_both uses both shared stacks (in one of its tests): everything on either stack is one group
    shared = {of[m] for m in ("tests/integration/test_p.py", "tests/integration/test_both.py")}
    shared |= {of["tests/integration/test_y.py"], of["tests/e2e/test_y2.py"]}
    assert len(shared) == 1 and shared <= set(scheduling.SHARED_STACKS)
    assert of["tests/integration/test_own.py"] == "tests/integration/test_own.py"
    assert of["tests/unit/test_a.py"] == "tests/unit/test_a.py"


def test_the_shared_stacks_run_first_then_other_stacks_then_unit_tests_each_group_contiguous():
    items = list(ITEMS)
    scheduling.pytest_collection_modifyitems(SimpleNamespace(), items)
    order = [i.nodeid for i in items]
    assert order == [
        "tests/integration/test_p.py::test_1",
        "tests/integration/test_both.py::test_1",
        "tests/integration/test_both.py::test_2",
        "tests/integration/test_y.py::test_1",
        "tests/e2e/test_y2.py::test_1",
        "tests/integration/test_own.py::test_1",
        "tests/unit/test_a.py::test_1",
        "tests/unit/test_a.py::test_2",
    ]


def _drive(hook, *args, between=lambda: None):
    """Run a wrapper hook around `between` (what pytest runs inside it)."""
    gen = hook(*args)
    next(gen)
    between()
    try:
        gen.send(None)
    except StopIteration:
        pass


def test_a_stack_is_stopped_after_the_last_test_of_the_group_that_started_it():
    items = list(ITEMS)
    scheduling.pytest_collection_modifyitems(SimpleNamespace(), items)
    stopped: list[str] = []
    scheduling.register_factory(SimpleNamespace(stop=stopped.append))
    starts = {  # the stack each test's set-up starts (a later test of the group finds it started)
        "tests/integration/test_p.py::test_1": "pipeline",
        "tests/integration/test_y.py::test_1": "yaml-datasets",
        "tests/integration/test_own.py::test_1": "own",
    }
    seen = []
    try:
        for item, nextitem in zip(items, [*items[1:], None], strict=True):
            name = starts.get(item.nodeid)
            _drive(
                scheduling.pytest_runtest_setup,
                item,
                between=(lambda n=name: scheduling.started(n)) if name else (lambda: None),
            )
            _drive(scheduling.pytest_runtest_teardown, item, nextitem)
            seen.append((item.nodeid, list(stopped)))
    finally:
        scheduling._factories.clear()
        scheduling._owned.clear()
    after = dict(seen)
    # the shared group's two stacks live until its last test (test_y2), the module's own until its end
    assert after["tests/e2e/test_y2.py::test_1"] == ["pipeline", "yaml-datasets"]
    assert after["tests/integration/test_y.py::test_1"] == []
    assert after["tests/integration/test_own.py::test_1"] == ["pipeline", "yaml-datasets", "own"]

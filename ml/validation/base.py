"""What a validation rule is: `Rule` (asked once per batch) and `FeatureRule` (once per feature column), what
they read (`Basis`: the settings and the reference), what they ask for (`Expectation`) and what their message
reads (`Found`: GX's result of a failed expectation). Pure, like the rules (`ml.validation.rules`).

Defining a subclass registers it in `RULES`, in the order of definition; a subclass without a name, an
expectation type, a way to build its expectations or a message is refused right there (TypeError), so a rule
without a message cannot exist.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ml.config import Settings
from ml.validation.result import Failure, Problem, examples, failure, jsonable, py

if TYPE_CHECKING:
    import pandas as pd

DAY_PARAMETER = "day"  # the suite parameter the date check reads: the logical day is not part of the spec


@dataclass(frozen=True)
class Basis:
    """What the rules are built from: the dataset's settings and the champion's training data."""

    settings: Settings
    reference: pd.DataFrame | None  # None before the first champion (an empty frame counts as none)

    @classmethod
    def of(cls, settings: Settings, reference: pd.DataFrame | None) -> Basis:
        return cls(settings, reference if reference is not None and len(reference) else None)

    @property
    def yaml(self) -> str:
        return self.settings.yaml_path.name

    def reference_column(self, column: str) -> pd.Series | None:
        if self.reference is None or column not in self.reference.columns:
            return None
        return self.reference[column]


@dataclass(frozen=True)
class Expectation:
    """One expectation of the suite: the rule that asked for it, its GX arguments and where they come from."""

    rule: Rule
    kwargs: dict[str, Any]  # JSON-able; the date check's value set is {"$PARAMETER": "day"}
    source: str  # the YAML key or the reference the expected value comes from (in messages and the report)
    # derived from the champion's training data (its ranges, its categories): a failure is plausible novelty,
    # not an impossible value (validation.novelty says what happens: recorded, alerted, or quarantined)
    novelty: bool = False

    @property
    def type(self) -> str:
        return self.rule.expectation

    @property
    def id(self) -> str:
        return f"{self.rule.name}:{self.kwargs['column']}" if "column" in self.kwargs else self.rule.name

    @property
    def columns(self) -> list[str]:
        if "column" in self.kwargs:
            return [self.kwargs["column"]]
        return list(self.kwargs.get("column_list", []))

    def spec(self) -> dict[str, Any]:
        """`{type, kwargs, meta: {id, rule, source}}`: what GX is given."""
        meta: dict[str, Any] = {"id": self.id, "rule": self.rule.name, "source": self.source}
        if self.novelty:
            meta["novelty"] = True
        return {"type": self.type, "kwargs": self.kwargs, "meta": meta}

    def resolved(self, day: dt.date) -> dict[str, Any]:
        """The arguments with the logical day filled in."""
        kwargs = dict(self.kwargs)
        if kwargs.get("value_set") == {"$PARAMETER": DAY_PARAMETER}:
            kwargs["value_set"] = [day.isoformat()]
        return kwargs


@dataclass(frozen=True)
class Found:
    """GX's result of a failed expectation, as a rule's message reads it."""

    kwargs: Mapping[str, Any]  # the expectation's arguments, the logical day filled in
    source: str
    day: dt.date
    result: Mapping[str, Any]

    @property
    def rows(self) -> int:
        return self.result.get("element_count") or 0

    @property
    def unexpected(self) -> int:
        return self.result.get("unexpected_count") or 0

    @property
    def non_null(self) -> int:
        return self.rows - (self.result.get("missing_count") or 0)

    @property
    def unexpected_values(self) -> list[Any]:
        return list(self.result.get("partial_unexpected_list") or [])

    @property
    def examples(self) -> str:
        return examples(self.unexpected_values)

    @property
    def observed(self) -> Any:
        return py(self.result.get("observed_value"))


RULES: list[Rule] = []  # every rule, in the order of definition (ml/validation/rules.py)


class Rule:
    """A rule asked once per batch. Subclasses set `name` and `expectation` and define `expectations` and
    `problem`; defining one registers it (`register=False` for an abstract helper class)."""

    name: ClassVar[str]
    expectation: ClassVar[str]

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:
            _register(cls)

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        """The expectations of this rule for the dataset (none when it does not apply)."""
        raise NotImplementedError

    def problem(self, found: Found) -> Problem:
        """What a failure of one of its expectations says."""
        raise NotImplementedError

    def ask(self, source: str, *, novelty: bool = False, **kwargs: Any) -> Expectation:
        return Expectation(self, jsonable(kwargs), source, novelty)


class FeatureRule(Rule, register=False):
    """A rule asked for each feature column in turn: a column's checks sit together in the suite."""

    def for_column(self, basis: Basis, column: str) -> Iterator[Expectation]:
        raise NotImplementedError

    def expectations(self, basis: Basis) -> Iterator[Expectation]:
        for column in basis.settings.features:
            yield from self.for_column(basis, column)


def _register(cls: type[Rule]) -> None:
    """Refuse a rule without name, expectation type, expectations or message; one message per name."""
    what = f"validation rule {cls.__name__}"
    for attr in ("name", "expectation"):
        if not isinstance(getattr(cls, attr, None), str):
            raise TypeError(f"{what}: set the class attribute `{attr}`.")
    if cls.problem is Rule.problem:
        raise TypeError(f"{what} ({cls.name!r}) has no message: define problem(found) -> Problem.")
    builder = "for_column" if issubclass(cls, FeatureRule) else "expectations"
    if getattr(cls, builder) is getattr(FeatureRule if builder == "for_column" else Rule, builder):
        raise TypeError(f"{what} ({cls.name!r}) asks for nothing: define {builder}().")
    for rule in RULES:
        if rule.name == cls.name and type(rule).problem is not cls.problem:
            raise TypeError(
                f"{what}: name {cls.name!r} is taken by {type(rule).__name__} with another message."
            )
    RULES.append(cls())


# ---------------------------------------------------------------------------------------------- outcomes


def explain(
    expectation: Expectation, result: Mapping[str, Any], error: str | None, *, day: dt.date, file: str
) -> Failure:
    """The Failure of an expectation GX found false (or could not check: `error`)."""
    kwargs = expectation.resolved(day)
    problem = expectation.rule.problem(Found(kwargs, expectation.source, day, result))
    if error:
        problem = replace(problem, found=f"an error while checking: {error}")
    return failure(file, kwargs.get("column"), expectation.type, problem)


def observed(result: Mapping[str, Any]) -> str:
    """What GX saw for one expectation, as the report's "observed" column shows it."""
    if "observed_value" in result:
        return f"observed {py(result['observed_value'])!r}"
    if "unexpected_count" in result:
        count, total = result.get("unexpected_count") or 0, result.get("element_count") or 0
        text = f"{count}/{total} rows unexpected"
        if count:
            text += f", e.g. {examples(result.get('partial_unexpected_list') or [])}"
        return text
    return json.dumps(jsonable(dict(result)), default=str)[:300]

"""A training request: the window a `<usecase>_training` run trains on, and the one schema that
says what a request may hold.

`request_schema(usecase)` is a JSON Schema. The training DAG's trigger form is made of it (one
Airflow Param per property), and `TrainingRequest.from_conf` validates every way in against
it (the DAG's check_request, `driftline train`, the replay, the drift sensor's conf), then
checks what a schema cannot say: the window within the use-case's days, the evidence's size
as JSON, and that a whole number is not written 31.0. A refusal names the field and quotes
the value, briefly.

Import-light: the DAG file imports it at parse time (config, and jsonschema, which Airflow has
already loaded for its Params).
"""

from __future__ import annotations

import datetime as dt
import json
import reprlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

from driftline.config import MAX_WINDOW_DAYS, UseCase

MAX_REASON_CHARS = 500
# A reason goes into a git commit message (an argument: a NUL byte cannot) and onto terminals
# (`driftline lineage`): no control characters but tab and line breaks.
REASON_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*$"
# The drift sensor's evidence: a flat object of figures, texts and lists of them (~1 KB), kept
# whole as one MLflow tag and passed between tasks; anything larger or nested is refused.
MAX_EVIDENCE_CHARS = 5000  # as JSON
MAX_EVIDENCE_FIELDS = 50
MAX_EVIDENCE_NAME_CHARS = 100
MAX_EVIDENCE_ITEMS = 100
MAX_EVIDENCE_ITEM_CHARS = 200
EVIDENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_EVIDENCE_FIELDS,
    "propertyNames": {"type": "string", "maxLength": MAX_EVIDENCE_NAME_CHARS},
    "additionalProperties": {
        "type": ["string", "number", "boolean", "null", "array"],
        "maxLength": MAX_EVIDENCE_CHARS,
        "maxItems": MAX_EVIDENCE_ITEMS,
        "items": {
            "type": ["string", "number", "boolean", "null"],
            "maxLength": MAX_EVIDENCE_ITEM_CHARS,
        },
    },
}

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60
_TYPE_WORDS = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true/false",
    "null": "null",
    "array": "a list",
    "object": "an object",
}


class TrainingRequestError(ValueError):
    """The trigger's conf is not a valid training request; the message names the field."""


def request_schema(usecase: UseCase) -> dict[str, Any]:
    """The JSON Schema of a training request for `usecase`: each property's `default` and
    `description` are the trigger form's; a conf must name window_end, the rest defaults."""
    training = usecase.training
    first_end = usecase.start_date + dt.timedelta(days=training.window_days - 1)
    return {
        "type": "object",
        "properties": {
            "window_end": {
                "type": "string",
                "format": "date",
                "pattern": _not_before_year(usecase.start_date.year),
                "default": first_end.isoformat(),
                "description": "Last day of the training window (YYYY-MM-DD). The holdout is "
                f"the {training.holdout_days} days after it.",
            },
            "window_days": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_WINDOW_DAYS,
                "default": training.window_days,
                "description": "Length of the training window in days.",
            },
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_REASON_CHARS,
                "pattern": REASON_PATTERN,
                "default": "manual",
                "description": "Why this retraining (kept on the model version).",
            },
            "force_promote": {
                "type": "boolean",
                "default": False,
                "description": "Promote even if the gate says no.",
            },
            "evidence": {
                **EVIDENCE_SCHEMA,
                "default": {},
                "description": "Drift evidence, filled in by the drift sensor (kept as text on "
                "the model version: a flat object of figures, texts and lists of them).",
            },
        },
        "required": ["window_end"],
        "additionalProperties": False,
    }


def _accepted(usecase: UseCase) -> dict[str, str]:
    """What each plain field of the schema takes, in the words of a refusal."""
    return {
        "window_end": f"a date (YYYY-MM-DD) from {usecase.start_date.year} on",
        "window_days": f"a whole number 1..{MAX_WINDOW_DAYS}",
        "reason": f"text of 1..{MAX_REASON_CHARS} characters without control characters",
        "force_promote": "true or false",
    }


@dataclass(frozen=True)
class TrainingRequest:
    window_end: dt.date
    window_days: int
    holdout_days: int
    reason: str
    force_promote: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def window_start(self) -> dt.date:
        return self.window_end - dt.timedelta(days=self.window_days - 1)

    @property
    def holdout_start(self) -> dt.date:
        return self.window_end + dt.timedelta(days=1)

    @property
    def holdout_end(self) -> dt.date:
        return self.window_end + dt.timedelta(days=self.holdout_days)

    def days(self) -> list[dt.date]:
        count = (self.holdout_end - self.window_start).days + 1
        return [self.window_start + dt.timedelta(days=i) for i in range(count)]

    def as_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["window_end"] = self.window_end.isoformat()
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingRequest:
        """The inverse of as_dict (a request already checked by from_conf)."""
        return cls(**{**raw, "window_end": dt.date.fromisoformat(raw["window_end"])})

    @classmethod
    def from_conf(cls, conf: dict[str, Any], usecase: UseCase) -> TrainingRequest:
        """Check a trigger's conf against request_schema (undeclared keys too: Airflow lets
        them through its Params), then what the schema cannot say; the schema's defaults
        fill what the conf leaves out."""
        schema = request_schema(usecase)
        problems = sorted(_schema_problems(schema, conf), key=_field_order(schema))
        if problems:
            raise TrainingRequestError(_refusal(problems[0], schema, usecase))
        given = {
            **{name: spec["default"] for name, spec in schema["properties"].items()},
            **conf,
        }
        request = cls(
            window_end=dt.date.fromisoformat(given["window_end"]),
            window_days=given["window_days"],
            holdout_days=usecase.training.holdout_days,
            reason=given["reason"],
            force_promote=given["force_promote"],
            evidence=given["evidence"],
        )
        problem = _beyond_the_schema(request, usecase)
        if problem:
            raise TrainingRequestError(problem)
        return request


def _beyond_the_schema(request: TrainingRequest, usecase: UseCase) -> str | None:
    """What is wrong with a request the schema admits (None: nothing): the window and its
    holdout must lie within the use-case's days, and the evidence stay one MLflow tag."""
    try:
        _ = (request.window_start, request.holdout_end)
    except OverflowError:  # 9999-12-31: the holdout would end after the calendar's last day
        return (
            f"window_end: {request.window_end} leaves no room for the {request.window_days}-day "
            f"window and the {request.holdout_days}-day holdout in the calendar"
        )
    if request.window_start < usecase.start_date:
        return (
            f"window_end: the {request.window_days}-day window would start "
            f"{request.window_start}, before the use-case's first day {usecase.start_date}"
        )
    if usecase.end_date is not None and request.holdout_end > usecase.end_date:
        return (
            f"window_end: the {request.holdout_days}-day holdout would end "
            f"{request.holdout_end}, after the use-case's last day {usecase.end_date}"
        )
    size = len(json.dumps(request.evidence))
    if size > MAX_EVIDENCE_CHARS:
        return f"evidence: {size} characters as JSON, more than {MAX_EVIDENCE_CHARS}"
    return None


def _schema_problems(schema: dict[str, Any], conf: Any) -> Iterator[ValidationError]:
    return _Validator(schema, format_checker=FormatChecker()).iter_errors(conf)


def _field_order(schema: dict[str, Any]):
    """Refusals in the schema's order: the request as a whole (unknown fields) first."""
    fields = list(schema["properties"])

    def order(error: ValidationError) -> int:
        path = list(error.absolute_path)
        return fields.index(path[0]) + 1 if path and path[0] in fields else 0

    return order


def _refusal(error: ValidationError, schema: dict[str, Any], usecase: UseCase) -> str:
    """A refusal that names the field and says what it takes (the schema's rules in words)."""
    path = list(error.absolute_path)
    fields = list(schema["properties"])
    accepted = _accepted(usecase)
    if not path:  # the request as a whole
        if error.validator == "additionalProperties":
            unknown = sorted(str(key) for key in error.instance if key not in fields)
            return (
                f"unknown field(s) {[_clipped(key, 40) for key in unknown[:10]]}"
                f"{' ...' if len(unknown) > 10 else ''}; a training request takes {sorted(fields)}"
            )
        if error.validator == "required":
            missing = next(name for name in error.validator_value if name not in error.instance)
            return f"{missing}: missing; {accepted[missing]}"
        return f"a training request is an object of {fields}, not {_shown(error.instance)}"
    name, *inside = path
    if name == "window_end" and error.validator == "pattern" and _is_date(error.instance):
        return (  # a real date, before the start year: the pattern stands for a date minimum
            f"window_end: {error.instance} is before the use-case's first day "
            f"{usecase.start_date}"
        )
    if name in accepted:
        return f"{name}: {_shown(error.instance)} is not {accepted[name]}"
    return f"{name}: {_evidence_refusal(error, inside)}"


def _evidence_refusal(error: ValidationError, inside: list) -> str:
    """What is wrong with the evidence, where: the object, one of its fields, or an item of
    a field's list."""
    value = error.instance
    if "propertyNames" in error.relative_schema_path:
        return f"field name {_shown(value)} is not text of at most {MAX_EVIDENCE_NAME_CHARS}"
    where = f"{_clipped(str(inside[0]), 40)!r} " if inside else ""
    if len(inside) > 1:
        where += f"item {inside[1]} "
    if error.validator == "type":
        return f"{where}must be {_kinds(error.validator_value)}, not {_shown(value)}"
    if error.validator == "maxProperties":
        return f"{len(value)} fields, more than {error.validator_value}"
    if error.validator == "maxItems":
        return f"{where}holds {len(value)} items, more than {error.validator_value}"
    if error.validator == "maxLength":
        return f"{where}is text longer than {error.validator_value}"
    return f"{where}{_shown(value)} breaks the rule {error.validator}={error.validator_value!r}"


def _is_date(value: str) -> bool:
    return FormatChecker().conforms(value, "date")


def _kinds(types: str | list[str]) -> str:
    """JSON Schema types in words: ["string", "null", "array"] -> text, null or a list of those."""
    words = [_TYPE_WORDS[kind] for kind in ([types] if isinstance(types, str) else types)]
    listed = f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else words[0]
    return f"{listed} of those" if len(words) > 1 and words[-1] == "a list" else listed


def _shown(value: Any) -> str:
    """A value for a refusal message: its repr, cut short (a field may hold a megabyte or an
    object nested a thousand deep)."""
    return _clipped(_SHORT_REPR.repr(value), 80)


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _not_before_year(year: int) -> str:
    """A date pattern admitting the years `year`..9999 (JSON Schema has no date minimum):
    2013 gives 201[3-9], 20[2-9][0-9], 2[1-9][0-9][0-9] or [3-9][0-9][0-9][0-9]."""
    digits = f"{year:04d}"
    years = [f"{digits[:3]}[{digits[3]}-9]"]
    for place in (2, 1, 0):  # a greater digit here, any digits after it
        if digits[place] != "9":
            years.append(f"{digits[:place]}[{int(digits[place]) + 1}-9]" + "[0-9]" * (3 - place))
    return rf"^({'|'.join(years)})-[0-9]{{2}}-[0-9]{{2}}$"


# jsonschema's own messages quote the value in full (repr): a value nested thousands deep
# would raise RecursionError before the refusal is written. These keywords check the same and
# say nothing; _refusal writes the message, quoting the value briefly.
def _type(validator, types, instance, schema):
    types = [types] if isinstance(types, str) else types
    if not any(validator.is_type(instance, kind) for kind in types):
        yield ValidationError(f"is not of type {types}")


def _max_properties(validator, limit, instance, schema):
    if validator.is_type(instance, "object") and len(instance) > limit:
        yield ValidationError(f"has more than {limit} properties")


def _max_items(validator, limit, instance, schema):
    if validator.is_type(instance, "array") and len(instance) > limit:
        yield ValidationError(f"has more than {limit} items")


def _whole_number(checker, instance) -> bool:
    """Stricter than JSON Schema, for which 31.0 is an integer: a window is counted in ints."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    Draft202012Validator,
    validators={"type": _type, "maxProperties": _max_properties, "maxItems": _max_items},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _whole_number),
)

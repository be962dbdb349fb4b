"""Records -> Arrow: how a batch of records becomes one Arrow table per database table.

Ingest scans these tables into DuckDB (``INSERT ... SELECT ... FROM <arrow table>``) and
the journal writes them to disk as they are, so this is the one place that decides a
column's type. The table's name travels in the schema metadata (``TABLE_META``), which
is how a journal segment says which table it belongs to.

    tables = group_by_table([instruction, sample, another_sample], upserted={"requests", "runs"})
    tables[0].table, tables[0].rows.num_rows                 # ("instructions", 1)
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from storage.records import ALL_RECORD_TYPES, Record, canonical_json

TABLE_META = b"distillery.table"  # Arrow schema metadata naming the table of a batch or segment

# Every stored record type by its table name.
RECORD_TYPES: dict[str, type[Record]] = {cls.__table__: cls for cls in ALL_RECORD_TYPES}


def _json_texts(values: list[Any]) -> list[str | None]:
    """``canonical_json`` of each value, computed once per distinct flat dict.

    Serializing dominates ingest time otherwise: a batch's samples mostly share one
    sampling-params dict and an empty metadata dict. Pydantic copies each record's dict
    but keeps its key and value objects, so a dict is looked up by the identities of its
    keys and values: two dicts made of the same objects have the same JSON, while equal
    values of different types (``1``, ``1.0``, ``True``), which an equality key would
    confuse, never share an entry. The objects stay alive (``values`` holds them) for the
    whole call, so an identity is never reused within it.
    """
    cache: dict[tuple[int, ...], str] = {}
    out: list[str | None] = []
    append = out.append
    for value in values:
        if value is None:
            append(None)
        elif type(value) is dict:
            if not value:
                append("{}")
                continue
            key = (*map(id, value), *map(id, value.values()))
            text = cache.get(key)
            if text is None:
                text = cache[key] = canonical_json(value)
            append(text)
        else:
            append(canonical_json(value))
    return out


_SCALAR_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us"),
}


def _arrow_type(annotation: Any) -> pa.DataType | None:
    """The Arrow type of a record field's annotation (None: let pyarrow infer it)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # X | None
        inner = [a for a in args if a is not type(None)]
        return _arrow_type(inner[0]) if len(inner) == 1 else None
    if origin is typing.Literal:
        return pa.string()
    if origin is list and args and args[0] in _SCALAR_TYPES:
        return pa.list_(_SCALAR_TYPES[args[0]])
    return _SCALAR_TYPES.get(annotation)


@functools.cache
def arrow_schema(cls: type[Record]) -> pa.Schema:
    """The Arrow schema of ``cls.row()``: JSON fields as strings, the rest by annotation.

    Explicit types spare pyarrow inferring them from Python objects, which costs more
    than the conversion itself on long strings.
    """
    json_columns = set(cls.json_columns())
    fields = []
    for name, info in cls.model_fields.items():
        kind = pa.string() if name in json_columns else _arrow_type(info.annotation)
        fields.append(pa.field(name, kind if kind is not None else pa.null()))
    return pa.schema(fields, metadata={TABLE_META: cls.__table__.encode()})


def records_to_arrow(records: Sequence[Record]) -> pa.Table:
    """Records of one type as an Arrow table with the columns of ``Record.row()``.

    Built column by column from attributes rather than through ``row()`` per record:
    the result is the same and it is several times faster on large batches.
    """
    cls = type(records[0])
    schema = arrow_schema(cls)
    json_columns = set(cls.json_columns())
    # Pydantic keeps field values in the instance __dict__; reading it directly is the
    # fastest way to transpose records into columns.
    dicts = [r.__dict__ for r in records]
    arrays = []
    for field_ in schema:
        values = list(map(operator.itemgetter(field_.name), dicts))
        if field_.name in json_columns:
            values = _json_texts(values)
        arrays.append(pa.array(values, type=None if pa.types.is_null(field_.type) else field_.type))
    return pa.Table.from_arrays(arrays, names=schema.names).replace_schema_metadata(schema.metadata)


@dataclass
class Batch:
    """One table's share of an ingest call."""

    table: str
    rows: pa.Table
    submitted: int  # records given, before dropping repeats within the batch
    unique: bool  # no key occurs twice in ``rows``


def group_by_table(records: Iterable[Record], *, upserted: Collection[str]) -> list[Batch]:
    """Records of any mix of types as one Arrow batch per table, in first-seen order.

    ``upserted`` names the tables whose SQL picks a winner among rows with the same key
    (the ledger, runs): they keep every row. Elsewhere the key is the content, so a
    repeat within the batch is dropped here.
    """
    by_type: dict[type[Record], list[Record]] = defaultdict(list)
    for record in records:
        by_type[type(record)].append(record)
    batches = []
    for cls, group in by_type.items():
        if cls.__table__ not in RECORD_TYPES:
            raise TypeError(f"{cls.__name__} is not a stored record type")
        submitted = len(group)
        unique = cls.__table__ not in upserted
        if unique:
            # Content-keyed rows repeated within a batch are the same content: keep the
            # first. (Upserted tables keep every row; their SQL picks the winner.)
            key = operator.attrgetter(*cls.__key__)
            if len(set(map(key, group))) < submitted:  # the usual batch has no repeats
                first: dict[Any, Record] = {}
                for record in group:
                    first.setdefault(key(record), record)
                group = list(first.values())
        batches.append(Batch(cls.__table__, records_to_arrow(group), submitted, unique))
    return batches

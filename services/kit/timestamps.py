"""Instants given in requests (query parameters, filters, serializer fields): ISO 8601, read as UTC. The one
parser of request timestamps: :func:`timestamp_parse`, also behind the form/filter field and the DRF field here.

PostgreSQL refuses UTC offsets beyond ±15:59 that Python accepts (``…-21:28``), and a far year with an offset
can overflow when converted, so every instant is converted to UTC here, where a bad one is the client's 400,
not a database error's 500.
"""

from __future__ import annotations

import datetime as dt

import django_filters
from django import forms
from rest_framework import serializers


def timestamp_parse(value: str) -> dt.datetime:
    """An ISO 8601 instant as an aware UTC datetime (naive ones are UTC); ``ValueError`` if it is not one."""
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
    return timestamp_utc(moment)


def timestamp_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC (naive is taken as UTC); ``ValueError`` if it falls outside the representable years."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValueError(f"out of range: {moment.isoformat()}") from exc


class UTCDateTimeField(forms.DateTimeField):
    """A form field for ISO 8601 instants, cleaned to UTC."""

    def to_python(self, value: object) -> dt.datetime | None:
        if value in self.empty_values:
            return None
        if isinstance(value, dt.datetime):
            moment = value
        else:
            try:
                return timestamp_parse(str(value))
            except ValueError as exc:
                raise forms.ValidationError("Enter an ISO 8601 timestamp.", code="invalid") from exc
        try:
            return timestamp_utc(moment)
        except ValueError as exc:
            raise forms.ValidationError("The timestamp is out of range.", code="invalid") from exc


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, its value converted to UTC (every Atrium time filter uses it)."""

    field_class = UTCDateTimeField


class UTCTimestampField(serializers.DateTimeField):
    """A DRF field for ISO 8601 instants, read with :func:`timestamp_parse` (an offset PostgreSQL refuses or a
    year out of range is the client's 400); written as DRF writes date-times."""

    def to_internal_value(self, value: object) -> dt.datetime:
        try:
            if isinstance(value, dt.datetime):
                return timestamp_utc(value)
            if isinstance(value, str):
                return timestamp_parse(value)
        except ValueError:
            pass
        self.fail("invalid", format="ISO 8601")

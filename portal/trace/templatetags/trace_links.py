"""``{% load trace_links %}`` … ``{{ id|trace_url }}``: the trace page of an id, in any template."""

from __future__ import annotations

from django import template

from portal.ui.links import trace_url as _trace_url

register = template.Library()


@register.filter
def trace_url(value: object) -> str:
    return _trace_url(str(value)) if value not in (None, "") else ""

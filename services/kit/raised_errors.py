"""Which domain errors a view can raise, found statically, so that its API reference cannot forget one.

:func:`raised_errors` reads the view method's code (``ast``) and follows the calls it makes into the app's own
functions and methods (services, selectors, helpers), transitively, collecting every ``raise X(...)`` of a
:class:`~services.kit.errors.DomainError` subclass. An error caught on the way (``try: ... except X:`` without a
bare ``raise`` in the handler) does not escape and is not collected. The kit's code is not followed: its
problems (validation, authentication, limits) are listed on every operation by ``services/kit/schema.py``.

It is an over-approximation by design (a raise behind a condition that never holds still counts) and blind to
calls it cannot name statically (a function passed as an argument, ``getattr``): a view that reaches an error
that way declares it by hand. ``tests/service_contract.py`` runs it over every operation of every service;
:func:`undeclared_errors` is what it asserts empty.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
from typing import Any

from services.kit.errors import DomainError
from services.kit.schema import declared_errors

_MAX_DEPTH = 12


def undeclared_errors(view_class: type, method_name: str) -> set[type[DomainError]]:
    """The domain errors ``view_class.method_name`` can raise that its ``api_operation`` does not declare
    (a declared superclass covers its subclasses)."""
    func = getattr(view_class, method_name)
    declared = declared_errors(func)
    return {
        error
        for error in raised_errors(view_class, method_name)
        if not any(issubclass(error, covered) for covered in declared)
    }


def raised_errors(view_class: type, method_name: str) -> set[type[DomainError]]:
    """Every domain error ``view_class.method_name`` (and what it calls in its app) can raise."""
    func = inspect.unwrap(getattr(view_class, method_name))
    root = (view_class.__module__ or "").split(".")[0]
    return _Walker(root, view_class).function(func, depth=0).escaping


class _Found:
    """What a piece of code can raise (``escaping``); every domain error raised anywhere beneath it, caught or
    not (``everything``); and the errors a function makes without raising them at once (``made``, not passed to
    its callers). Code that raises a kept error (``raise result.error``, ``raise error``) can raise any error
    raised beneath it or made in it."""

    def __init__(
        self,
        escaping: set[type[DomainError]] | None = None,
        everything: set[type[DomainError]] | None = None,
        made: set[type[DomainError]] | None = None,
    ) -> None:
        self.escaping = set(escaping or ())
        self.everything = set(everything or ()) | self.escaping
        self.made = set(made or ())

    def __ior__(self, other: _Found) -> _Found:
        self.escaping |= other.escaping
        self.everything |= other.everything
        self.made |= other.made
        return self


class _Walker:
    def __init__(self, root: str, view_class: type) -> None:
        self.root = root
        self.view_class = view_class
        self.mro_names = {klass.__name__ for klass in view_class.__mro__}
        self.seen: dict[Any, _Found] = {}

    def function(self, func: Any, *, depth: int) -> _Found:
        func = inspect.unwrap(func)
        if isinstance(func, functools.partial):
            func = func.func
        if not isinstance(func, types.FunctionType) or not self._followed(func) or depth > _MAX_DEPTH:
            return _Found()
        if func in self.seen:
            return self.seen[func]
        self.seen[func] = _Found()  # recursion: a function calling itself adds nothing new
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        except (OSError, TypeError, SyntaxError):
            return _Found()
        node = tree.body[0]
        body = node.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else [node]
        found = self._block(body, func, depth)
        if any(self._raises_a_value(n, func) for n in ast.walk(node)):
            found.escaping |= found.everything | found.made
        found = _Found(found.escaping, found.everything)  # what it made stays here
        self.seen[func] = found
        return found

    def _followed(self, func: types.FunctionType) -> bool:
        """The app's own code, and the view's methods wherever they come from (DRF's ``retrieve`` calls the
        view's ``get_object``)."""
        module = func.__module__ or ""
        if module.startswith("services.kit"):
            return func.__qualname__.rpartition(".")[0] in self.mro_names
        return module.split(".")[0] == self.root or func.__qualname__.rpartition(".")[0] in self.mro_names

    def _raises_a_value(self, node: ast.AST, func: types.FunctionType) -> bool:
        """``raise something_kept`` (not a class, not a call to one, not a bare re-raise)."""
        if not isinstance(node, ast.Raise) or node.exc is None or isinstance(node.exc, ast.Call):
            return False
        return not isinstance(self._resolve(node.exc, func), type)

    def _block(self, statements: list[ast.stmt], func: types.FunctionType, depth: int) -> _Found:
        found = _Found()
        for statement in statements:
            found |= self._statement(statement, func, depth)
        return found

    def _statement(self, node: ast.AST, func: types.FunctionType, depth: int) -> _Found:
        if isinstance(node, ast.Try | ast.TryStar):
            inside = self._block(node.body, func, depth)
            for handler in node.handlers:
                caught = self._caught(handler, func)
                reraises = any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler))
                if not reraises:
                    inside.escaping = {e for e in inside.escaping if not any(issubclass(e, c) for c in caught)}
                inside |= self._block(handler.body, func, depth)
            inside |= self._block(node.orelse, func, depth)
            inside |= self._block(node.finalbody, func, depth)
            return inside
        if isinstance(node, ast.ClassDef):
            return _Found()
        # A nested function (``def run(): ...`` passed to a retry helper) is walked where it is defined: it is
        # there to be called.
        found = _Found()
        if isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            candidates = (raised.body, raised.orelse) if isinstance(raised, ast.IfExp) else (raised,)
            for candidate in candidates:
                error = self._resolve(candidate, func)
                if isinstance(error, type) and issubclass(error, DomainError):
                    found |= _Found({error})
        if isinstance(node, ast.Call):
            target = self._resolve(node.func, func)
            if isinstance(target, type) and issubclass(target, DomainError):
                found |= _Found(made={target})  # made here, perhaps raised later (``raise error``)
            if isinstance(target, type) and not issubclass(target, BaseException):
                target = getattr(target, "__init__", None)
            if target is not None:
                found |= self.function(target, depth=depth + 1)
        for child in ast.iter_child_nodes(node):
            found |= self._statement(child, func, depth)
        return found

    def _caught(self, handler: ast.ExceptHandler, func: types.FunctionType) -> list[type]:
        if handler.type is None:
            return [BaseException]
        nodes = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        caught = [self._resolve(n, func) for n in nodes]
        return [c for c in caught if isinstance(c, type)]

    def _resolve(self, node: ast.AST, func: types.FunctionType) -> Any:
        """The object a name or dotted attribute names in ``func``'s module (``self.x`` on the view class, or
        on the class that defines ``func``)."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.reverse()
        if node.id in ("self", "cls"):
            owner = self._owner(func)
            value: Any = owner
        elif node.id in func.__globals__:
            value = func.__globals__[node.id]
        else:
            return None  # a local variable or a builtin
        for part in parts:
            value = inspect.getattr_static(value, part, None) if isinstance(value, type) else getattr(value, part, None)
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if value is None:
                return None
        return value

    def _owner(self, func: types.FunctionType) -> type | None:
        """The class whose method ``func`` is: the view class when it has the method, else the class named by
        ``func``'s qualified name in its module."""
        owner_name = func.__qualname__.rpartition(".")[0]
        if owner_name in self.mro_names:
            return self.view_class
        owner = func.__globals__.get(owner_name)
        return owner if isinstance(owner, type) else None

"""Field expressions: ``es.col("price") * es.col("size") > 1000``.

An expression names fields instead of hiding them in a function, so the
runtime can run it two ways with one meaning: record by record (compiled to
a Python closure) or vectorized over a columnar batch (compiled to a polars
expression). Use them in ``filter``, ``map(**fields)``, ``key_by`` and event
time; use a plain function wherever an expression cannot say what you mean.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, final

from eventspine.records import field_getter

if TYPE_CHECKING:
    import polars as pl

__all__ = ["Expr", "col", "lit"]

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "&": lambda a, b: bool(a) and bool(b),
    "|": lambda a, b: bool(a) or bool(b),
}


@final
class Expr:
    """A pure expression over the fields of one record.

    Build expressions with :func:`col` and :func:`lit` and Python operators
    (``+ - * / // % **``, comparisons, ``&``, ``|``, ``~``). Use ``&``/``|``
    (not ``and``/``or``) and parenthesize comparisons: ``(col("a") > 1) & (col("b") < 2)``.
    """

    __slots__ = ("_args", "_op")

    def __init__(self, op: str, *args: Any) -> None:
        self._op = op
        self._args = args

    # -- construction -------------------------------------------------
    def _bin(self, op: str, other: Any, *, swap: bool = False) -> Expr:
        rhs = other if isinstance(other, Expr) else lit(other)
        return Expr(op, rhs, self) if swap else Expr(op, self, rhs)

    def __add__(self, o: Any) -> Expr:
        return self._bin("+", o)

    def __radd__(self, o: Any) -> Expr:
        return self._bin("+", o, swap=True)

    def __sub__(self, o: Any) -> Expr:
        return self._bin("-", o)

    def __rsub__(self, o: Any) -> Expr:
        return self._bin("-", o, swap=True)

    def __mul__(self, o: Any) -> Expr:
        return self._bin("*", o)

    def __rmul__(self, o: Any) -> Expr:
        return self._bin("*", o, swap=True)

    def __truediv__(self, o: Any) -> Expr:
        return self._bin("/", o)

    def __rtruediv__(self, o: Any) -> Expr:
        return self._bin("/", o, swap=True)

    def __floordiv__(self, o: Any) -> Expr:
        return self._bin("//", o)

    def __mod__(self, o: Any) -> Expr:
        return self._bin("%", o)

    def __pow__(self, o: Any) -> Expr:
        return self._bin("**", o)

    def __eq__(self, o: Any) -> Expr:  # type: ignore[override]  # builds an expression
        return self._bin("==", o)

    def __ne__(self, o: Any) -> Expr:  # type: ignore[override]  # builds an expression
        return self._bin("!=", o)

    def __lt__(self, o: Any) -> Expr:
        return self._bin("<", o)

    def __le__(self, o: Any) -> Expr:
        return self._bin("<=", o)

    def __gt__(self, o: Any) -> Expr:
        return self._bin(">", o)

    def __ge__(self, o: Any) -> Expr:
        return self._bin(">=", o)

    def __and__(self, o: Any) -> Expr:
        return self._bin("&", o)

    def __or__(self, o: Any) -> Expr:
        return self._bin("|", o)

    def __invert__(self) -> Expr:
        return Expr("not", self)

    def __neg__(self) -> Expr:
        return Expr("neg", self)

    def __bool__(self) -> bool:
        raise TypeError(
            "an expression has no truth value while the pipeline is defined; "
            "use & and | instead of and/or, and parenthesize comparisons"
        )

    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def is_null(self) -> Expr:
        """True where the value is missing (``None``)."""
        return Expr("is_null", self)

    def is_in(self, values: Sequence[Any]) -> Expr:
        """True where the value is one of ``values``."""
        return Expr("is_in", self, tuple(values))

    def cast(self, to: type) -> Expr:
        """Convert the value to ``int``, ``float``, ``str`` or ``bool``."""
        if to not in (int, float, str, bool):
            raise TypeError(f"cast() takes int, float, str or bool, not {to!r}")
        return Expr("cast", self, to)

    # -- inspection ----------------------------------------------------
    @property
    def fields(self) -> set[str]:
        """The names of the record fields the expression reads."""
        if self._op == "col":
            return {self._args[0]}
        out: set[str] = set()
        for a in self._args:
            if isinstance(a, Expr):
                out |= a.fields
        return out

    @property
    def field_name(self) -> str | None:
        """The field name if the expression is a bare ``col(name)``, else ``None``."""
        return self._args[0] if self._op == "col" else None

    def __repr__(self) -> str:
        if self._op == "col":
            return f"col({self._args[0]!r})"
        if self._op == "lit":
            return repr(self._args[0])
        if self._op in _BINARY:
            return f"({self._args[0]!r} {self._op} {self._args[1]!r})"
        return f"{self._op}({', '.join(map(repr, self._args))})"

    # -- compilation ---------------------------------------------------
    def to_python(self, record_type: type | None = None) -> Callable[[Any], Any]:
        """Return a function ``record -> value`` with the meaning of this expression."""
        op, args = self._op, self._args
        if op == "col":
            return field_getter(args[0], record_type)
        if op == "lit":
            value = args[0]
            return lambda _r: value
        if op in _BINARY:
            fn = _BINARY[op]
            left = args[0].to_python(record_type)
            right = args[1].to_python(record_type)
            if args[1]._op == "lit":
                const = args[1]._args[0]
                return lambda r: fn(left(r), const)
            return lambda r: fn(left(r), right(r))
        inner = args[0].to_python(record_type)
        if op == "not":
            return lambda r: not inner(r)
        if op == "neg":
            return lambda r: -inner(r)
        if op == "is_null":
            return lambda r: inner(r) is None
        if op == "is_in":
            members = frozenset(args[1])
            return lambda r: inner(r) in members
        if op == "cast":
            to = args[1]
            return lambda r: to(inner(r))
        raise AssertionError(f"unknown expression op {op}")

    def to_polars(self) -> pl.Expr:
        """Return the polars expression with the meaning of this expression."""
        import polars as pl

        op, args = self._op, self._args
        out: pl.Expr
        if op == "col":
            out = pl.col(args[0])
            return out
        if op == "lit":
            out = pl.lit(args[0])
            return out
        if op in _BINARY:
            a: pl.Expr = args[0].to_polars()
            b: pl.Expr = args[1].to_polars()
            if op == "&":
                out = a.cast(pl.Boolean) & b.cast(pl.Boolean)
                return out
            if op == "|":
                out = a.cast(pl.Boolean) | b.cast(pl.Boolean)
                return out
            result: pl.Expr = _BINARY[op](a, b)
            return result
        inner: pl.Expr = args[0].to_polars()
        if op == "not":
            out = ~inner.cast(pl.Boolean)
        elif op == "neg":
            out = -inner
        elif op == "is_null":
            out = inner.is_null()
        elif op == "is_in":
            out = inner.is_in(list(args[1]))
        elif op == "cast":
            dtypes = {int: pl.Int64, float: pl.Float64, str: pl.String, bool: pl.Boolean}
            out = inner.cast(dtypes[args[1]])
        else:
            raise AssertionError(f"unknown expression op {op}")
        return out
        raise AssertionError(f"unknown expression op {op}")


def col(name: str) -> Expr:
    """Return an expression that reads field ``name`` of the record."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"col() takes a field name, not {name!r}")
    return Expr("col", name)


def lit(value: Any) -> Expr:
    """Return an expression with a constant value."""
    return Expr("lit", value)

"""The Athena views in sql/: loading, checking and translating them, shared by jobs.athena and jobs.query.

Each file in sql/ holds one `CREATE OR REPLACE VIEW <name> AS ...` statement in Athena's dialect (Trino),
named after the file. The text deployed to Athena is the file's text (its leading comment header and a
trailing semicolon removed); the local runner translates the same text to DuckDB with sqlglot, refusing
anything sqlglot reports as untranslatable, so the views are tested as deployed.

Faithful translation: sqlglot translates some constructs into different semantics without a warning (Trino's
integer `/` becomes DuckDB's float division, `FETCH ... WITH TIES` becomes `LIMIT`, unknown functions pass
through by name). So the views (and ad-hoc Trino queries) are held to a subset of Trino whose translation is
known to keep its meaning (`FAITHFUL_NODES`); anything outside it is an error naming the construct. Widen the
subset only together with a test showing both engines agree.

Window lengths: a view may define them in a CTE named `params` with integer literals `short_window` and
`long_window` (v_signals does). They must equal `signals.sma_short` / `signals.sma_long` of the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from jobs.pipeline.config import REPO_ROOT

SQL_DIR = REPO_ROOT / "sql"
SOURCE_DIALECT = "trino"
LOCAL_DIALECT = "duckdb"
PARAMS_CTE = "params"
WINDOW_PARAMS = {"short_window": "sma_short", "long_window": "sma_long"}

_LEADING_COMMENTS = re.compile(r"\A(?:\s*--[^\n]*(?:\n|\Z))+")


class ViewError(ValueError):
    """A view file that cannot be used; the message names the file."""


class WindowMismatch(ViewError):
    """A view whose window lengths differ from the configuration's."""


@dataclass(frozen=True)
class Windows:
    sma_short: int
    sma_long: int

    def __str__(self) -> str:
        return f"sma_short={self.sma_short}, sma_long={self.sma_long}"


@dataclass(frozen=True)
class View:
    name: str
    path: Path
    statement: str  # what is sent to Athena
    expression: exp.Create
    references: frozenset[str]  # tables and views read (CTE names excluded), lower case

    @property
    def file_name(self) -> str:
        return self.path.name

    @property
    def windows(self) -> Windows | None:
        return view_windows(self)


# Expression nodes whose Trino -> DuckDB translation keeps the meaning (checked by tests/unit/test_sql_views.py).
FAITHFUL_NODES: frozenset[type[exp.Expression]] = frozenset(
    {
        # statements and clauses
        exp.Create,
        exp.Select,
        exp.From,
        exp.Join,
        exp.Where,
        exp.Group,
        exp.Having,
        exp.Order,
        exp.Ordered,
        exp.Limit,
        exp.Offset,
        exp.With,
        exp.CTE,
        exp.Subquery,
        exp.Union,
        exp.Distinct,
        exp.Alias,
        exp.TableAlias,
        exp.Table,
        exp.Column,
        exp.Identifier,
        exp.Star,
        exp.Schema,
        exp.Window,
        exp.WindowSpec,
        # literals and operators
        exp.Literal,
        exp.Null,
        exp.Boolean,
        exp.Paren,
        exp.Neg,
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.And,
        exp.Or,
        exp.Not,
        exp.Is,
        exp.In,
        exp.Between,
        exp.Case,
        exp.If,
        exp.Coalesce,
        exp.Cast,
        exp.DataType,
        exp.Abs,
        exp.Round,
        exp.Greatest,
        exp.Least,
        # aggregates and window functions
        exp.Avg,
        exp.Count,
        exp.Sum,
        exp.Min,
        exp.Max,
        exp.ArgMin,
        exp.ArgMax,
        exp.Lag,
        exp.Lead,
        exp.RowNumber,
        exp.Rank,
        exp.DenseRank,
        exp.FirstValue,
        exp.LastValue,
    }
)
FAITHFUL_CASTS = frozenset(
    {
        exp.DataType.Type.DOUBLE,
        exp.DataType.Type.BIGINT,
        exp.DataType.Type.INT,
        exp.DataType.Type.VARCHAR,
        exp.DataType.Type.DATE,
        exp.DataType.Type.TIMESTAMP,
        exp.DataType.Type.BOOLEAN,
    }
)


def unfaithful_constructs(expression: exp.Expression) -> list[str]:
    """The constructs in `expression` outside the faithfully translated subset (empty when it is inside)."""
    found: list[str] = []
    for node in expression.walk():
        if isinstance(node, exp.Div):
            # Trino divides integers as integers, DuckDB as doubles: only a division by a double is the same.
            sides = (node.this, node.expression)
            if not any(isinstance(side, exp.Cast) and side.to.this == exp.DataType.Type.DOUBLE for side in sides):
                found.append("'/' (cast one side to double: Trino divides integers as integers, DuckDB does not)")
            continue
        if isinstance(node, (exp.Fetch, exp.LimitOptions)):
            # FETCH FIRST ... WITH TIES becomes a plain LIMIT.
            found.append("FETCH FIRST (use LIMIT)")
            continue
        if isinstance(node, exp.Cast) and node.to.this not in FAITHFUL_CASTS:
            found.append(f"CAST to {node.to.sql('trino')}")
        elif isinstance(node, exp.Anonymous):
            found.append(f"function {node.name}()")
        elif type(node) not in FAITHFUL_NODES and not isinstance(node, exp.Cast):
            found.append(node.sql("trino")[:60] if isinstance(node, exp.Func) else type(node).__name__)
    return list(dict.fromkeys(found))


def deployable_text(text: str) -> str:
    """The file's statement without its leading comment header, surrounding blanks and a trailing ';'."""
    body = _LEADING_COMMENTS.sub("", text).strip()
    return body[:-1].rstrip() if body.endswith(";") else body


def parse_view(path: Path) -> View:
    text = path.read_text()
    statement = deployable_text(text)
    where = path.name
    try:
        # Strict: any syntax the Trino grammar does not accept is an error, not a best-effort parse.
        expressions = sqlglot.parse(statement, read=SOURCE_DIALECT, error_level=ErrorLevel.RAISE)
    except ParseError as exc:
        raise ViewError(f"{where}: not valid Trino SQL: {exc}") from None
    expressions = [item for item in expressions if item is not None]
    if len(expressions) != 1:
        raise ViewError(f"{where}: expected exactly one statement, found {len(expressions)}")
    create = expressions[0]
    if not (isinstance(create, exp.Create) and create.kind == "VIEW" and create.args.get("replace")):
        raise ViewError(f"{where}: expected a CREATE OR REPLACE VIEW statement")
    table = create.this if isinstance(create.this, exp.Table) else create.this.find(exp.Table)
    name = table.name if table is not None else ""
    if table is None or table.db or table.catalog:
        raise ViewError(f"{where}: the view name must be unqualified (the database comes from the configuration)")
    if name.lower() != path.stem.lower():
        raise ViewError(f"{where}: creates view {name!r}, expected {path.stem!r} (one view per file, named alike)")
    query = create.expression
    unfaithful = unfaithful_constructs(create)
    if unfaithful:
        raise ViewError(
            f"{where}: uses {', '.join(unfaithful)}, which the local engine cannot run with Trino's meaning "
            "(see FAITHFUL_NODES in jobs/sql_views.py)"
        )
    cte_names = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    references = frozenset(
        t.name.lower() for t in query.find_all(exp.Table) if t.name and t.name.lower() not in cte_names
    )
    view = View(name=name.lower(), path=path, statement=statement, expression=create, references=references)
    _window_literals(view)  # a malformed params CTE fails here, at load, naming the file
    return view


def load_views(sql_dir: Path = SQL_DIR, names: list[str] | None = None) -> list[View]:
    """Every view in sql_dir, each after the views it reads (so they can be created in this order)."""
    paths = sorted(sql_dir.glob("*.sql"))
    if not paths:
        raise ViewError(f"no view files (*.sql) in {sql_dir}")
    views = {view.name: view for view in (parse_view(path) for path in paths)}
    ordered = _dependency_order(views)
    if names:
        wanted = {name.lower() for name in names}
        unknown = sorted(wanted - views.keys())
        if unknown:
            raise ViewError(f"unknown view(s) {', '.join(unknown)}; known: {', '.join(sorted(views))}")
        # Keep what the selection needs to be created in order.
        needed = set()
        stack = list(wanted)
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(ref for ref in views[name].references if ref in views)
        ordered = [view for view in ordered if view.name in needed]
    return ordered


def _dependency_order(views: dict[str, View]) -> list[View]:
    ordered: list[View] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ViewError(f"views depend on each other in a cycle: {' -> '.join((*chain, name))}")
        state[name] = "visiting"
        for ref in sorted(views[name].references):
            if ref in views:
                visit(ref, (*chain, name))
        state[name] = "done"
        ordered.append(views[name])

    for name in sorted(views):
        visit(name, ())
    return ordered


def _params_select(view: View) -> exp.Select | None:
    for cte in view.expression.expression.find_all(exp.CTE):
        if cte.alias_or_name.lower() == PARAMS_CTE and isinstance(cte.this, exp.Select):
            return cte.this
    return None


def _window_literals(view: View) -> dict[str, exp.Literal]:
    select = _params_select(view)
    if select is None:
        return {}
    literals: dict[str, exp.Literal] = {}
    for projection in select.expressions:
        key = projection.alias_or_name.lower()
        if key in WINDOW_PARAMS:
            value = projection.this if isinstance(projection, exp.Alias) else projection
            if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
                raise ViewError(f"{view.file_name}: {PARAMS_CTE}.{key} must be a positive integer literal")
            literals[key] = value
    if set(literals) != set(WINDOW_PARAMS):
        raise ViewError(f"{view.file_name}: the {PARAMS_CTE} CTE must define both short_window and long_window")
    return literals


def view_windows(view: View) -> Windows | None:
    """The window lengths a view defines in its `params` CTE, or None when it defines none."""
    literals = _window_literals(view)
    if not literals:
        return None
    return Windows(sma_short=int(literals["short_window"].this), sma_long=int(literals["long_window"].this))


def check_windows(views: list[View], expected: Windows) -> None:
    """Refuse views whose window lengths differ from the configuration's (the job would disagree with them)."""
    for view in views:
        found = view.windows
        if found is not None and found != expected:
            raise WindowMismatch(
                f"{view.file_name} computes {found} but the configuration has {expected}. "
                f"Change the params CTE in sql/{view.file_name} and signals.sma_short/sma_long together "
                "(and redeploy the views), or pass --substitute-windows to run the views locally with the "
                "configured lengths."
            )


def with_windows(view: View, windows: Windows) -> exp.Create:
    """The view's statement with its `params` literals replaced by `windows` (no-op without params)."""
    create = view.expression.copy()
    copy = View(view.name, view.path, view.statement, create, view.references)
    literals = _window_literals(copy)
    if literals:
        literals["short_window"].replace(exp.Literal.number(windows.sma_short))
        literals["long_window"].replace(exp.Literal.number(windows.sma_long))
    return create


def with_inlined_windows(create: exp.Create, windows: Windows) -> exp.Create:
    """A copy of `create` with each use of a `params` window length replaced by its value from `windows`.

    DuckDB evaluates a frame whose bounds are column values per row, about twice as slow as a frame of
    constant bounds; the literal is the same value, so the view's meaning does not change. The projections that
    carry the lengths through the CTEs stay (they are named, not computed with).
    """
    create = create.copy()
    for column in list(create.find_all(exp.Column)):
        setting = WINDOW_PARAMS.get(column.name.lower())
        if setting is None:
            continue
        parent = column.parent
        projected = isinstance(parent, exp.Select) or (
            isinstance(parent, exp.Alias) and isinstance(parent.parent, exp.Select)
        )
        if not projected:
            column.replace(exp.Literal.number(getattr(windows, setting)))
    return create


def translate_view(view: View, dialect: str = LOCAL_DIALECT, windows: Windows | None = None) -> str:
    """The view's CREATE statement in `dialect`; ViewError naming the view if any part does not translate."""
    create = with_windows(view, windows) if windows else view.expression
    lengths = windows or view.windows
    if lengths is not None:
        create = with_inlined_windows(create, lengths)
    try:
        return create.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE, pretty=True)
    except UnsupportedError as exc:
        raise ViewError(f"{view.file_name}: does not translate from Trino to {dialect}: {exc}") from None


def translate_query(sql: str, read: str = SOURCE_DIALECT, write: str = LOCAL_DIALECT) -> str:
    """One ad-hoc query translated between dialects; ParseError/UnsupportedError become ValueError."""
    try:
        expressions = [e for e in sqlglot.parse(sql, read=read, error_level=ErrorLevel.RAISE) if e is not None]
    except ParseError as exc:
        raise ValueError(f"not valid {read} SQL: {exc}") from None
    if len(expressions) != 1:
        raise ValueError(f"expected exactly one statement, found {len(expressions)}")
    unfaithful = unfaithful_constructs(expressions[0])
    if read == SOURCE_DIALECT and unfaithful:
        raise ValueError(
            f"uses {', '.join(unfaithful)}, which DuckDB would not run with Trino's meaning "
            "(rewrite it, or pass --dialect duckdb to write DuckDB SQL)"
        )
    try:
        return expressions[0].sql(dialect=write, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise ValueError(f"does not translate from {read} to {write}: {exc}") from None


def referenced_names(sql: str, read: str = SOURCE_DIALECT) -> set[str]:
    """Tables and views a query reads (CTE names excluded), lower case; empty if it does not parse."""
    try:
        expressions = [e for e in sqlglot.parse(sql, read=read, error_level=ErrorLevel.RAISE) if e is not None]
    except ParseError:
        return set()
    names: set[str] = set()
    for expression in expressions:
        ctes = {cte.alias_or_name.lower() for cte in expression.find_all(exp.CTE)}
        names.update(t.name.lower() for t in expression.find_all(exp.Table) if t.name and t.name.lower() not in ctes)
    return names

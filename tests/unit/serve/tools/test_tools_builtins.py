"""Built-in tools: calculator (AST, no eval), read-only SQL (ro URI + authorizer + limits), kb_search shape."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import pytest

from domaintune.config.serve_tools import ToolsConfig
from domaintune.serve.hooks import Principal
from domaintune.serve.permissions import permissions_of
from domaintune.serve.tools.builtins import kb_search
from domaintune.serve.tools.builtins.calculator import CalcError, evaluate
from domaintune.serve.tools.builtins.sql import ReadOnlyDatabase, SqlError
from domaintune.serve.tools.calls import ParsedCall
from domaintune.serve.tools.registry import build_runtime


@pytest.mark.parametrize("expr, value", [("1250 * 0.015 + 15", 33.75), ("2 ** 10", 1024), ("-(3 - 5) % 7", 2),
                                         ("max(1, 2, 3) + abs(-4)", 7), ("round(sqrt(2), 3)", 1.414),
                                         ("7 // 2", 3), ("pi > 3", None)])
def test_calculator_evaluates_arithmetic(expr, value):
    if value is None:
        with pytest.raises(CalcError):  # comparisons are not arithmetic
            evaluate(expr)
    else:
        assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os').system('id')", "().__class__", "open('x')", "a", "'s' * 3",
                                  "[1, 2]", "9 ** 9 ** 9", "10 ** 101", "1 / 0", "exp(1000)", "lambda: 1",
                                  "(1).real", "True + 1", "log(-1)"])
def test_calculator_refuses_everything_else(expr):
    with pytest.raises(CalcError):
        evaluate(expr)


@pytest.fixture
def bank_db(tmp_path):
    path = tmp_path / "bank.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE fees (name TEXT, usd REAL)")
    conn.executemany("INSERT INTO fees VALUES (?, ?)", [(f"fee{i}", i) for i in range(50)])
    conn.commit()
    conn.close()
    return path


def test_sql_reads_with_a_row_limit(bank_db):
    db = ReadOnlyDatabase(bank_db, max_rows=10)
    out = db.query("SELECT name, usd FROM fees WHERE usd >= 5 ORDER BY usd")
    assert out["columns"] == ["name", "usd"] and out["rows"][0] == ["fee5", 5.0]
    assert len(out["rows"]) == 10 and out["truncated"] is True
    assert db.query("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) "
                    "SELECT x FROM n")["rows"] == [[1], [2], [3]]
    assert db.tables() == ["fees"]


@pytest.mark.parametrize("sql", ["DELETE FROM fees", "UPDATE fees SET usd = 0", "INSERT INTO fees VALUES ('x', 1)",
                                 "DROP TABLE fees", "CREATE TABLE t (a)", "ATTACH DATABASE ':memory:' AS m",
                                 "PRAGMA query_only = OFF", "PRAGMA writable_schema = 1",
                                 "SELECT load_extension('x')", "SELECT 1; DELETE FROM fees", "VACUUM", ""])
def test_sql_refuses_anything_but_reading(bank_db, sql):
    with pytest.raises(SqlError):
        ReadOnlyDatabase(bank_db).query(sql)
    conn = sqlite3.connect(bank_db)
    assert conn.execute("SELECT count(*) FROM fees").fetchone() == (50,)
    conn.close()


def test_sql_stops_a_long_query(bank_db):
    slow = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n")
    with pytest.raises(SqlError, match="longer than 50 ms"):
        ReadOnlyDatabase(bank_db, time_limit_ms=50).query(slow)


def test_sql_tool_through_the_runtime_and_a_missing_database_is_a_config_error(bank_db, tmp_path):
    cfg = ToolsConfig(server=[{"name": "bank", "kind": "sql", "database": str(bank_db), "max_rows": 2}])
    runtime = build_runtime(cfg)
    assert "Tables: fees" in runtime.tools["bank"].description
    out = asyncio.run(runtime.execute(ParsedCall("bank", '{"query": "SELECT usd FROM fees"}'),
                                      Principal(id="local"), {"bank"}))
    assert out.status == "ok" and '"rows": [[0.0], [1.0]]' in out.content
    from domaintune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"server\[0\] \(bank, kind sql\).*does not exist"):
        build_runtime(ToolsConfig(server=[{"name": "bank", "kind": "sql", "database": str(tmp_path / "no.db")}]))


def test_runtime_refuses_before_running_and_says_why():
    runtime = build_runtime(ToolsConfig(server=[{"name": "calc", "kind": "calculator", "roles": ["engineer"]}]))
    user = Principal(id="u", role="user", permissions=permissions_of("user"))
    scoped = Principal(id="e", role="engineer", permissions=permissions_of("engineer"),
                       scopes={"tools": frozenset({"other"})})
    call = ParsedCall("calc", '{"expression": "1+1"}')
    run = lambda p, enabled={"calc"}: asyncio.run(runtime.execute(call, p, enabled))  # noqa: E731
    assert run(user).status == "denied" and "role 'user'" in run(user).content
    assert run(scoped).status == "denied" and "not scoped" in run(scoped).content
    engineer = Principal(id="e", role="engineer", permissions=permissions_of("engineer"))
    assert run(engineer).status == "ok" and run(engineer, set()).status == "not_enabled"
    auditor = Principal(id="a", role="auditor", permissions=permissions_of("auditor"))
    assert "lacks the 'tools:use' permission" in run(auditor).content


def test_kb_search_accepts_dicts_dataclasses_and_nested_chunks():
    @dataclasses.dataclass
    class Chunk:
        document_id: str
        chunk_id: str
        text: str

    @dataclasses.dataclass
    class Hit:
        chunk: Chunk
        score: float

    class KB:
        def search(self, principal, query, k):
            return [Hit(Chunk("d1", "d1#0", "fee 15"), 0.9), {"document_id": "d2", "text": "t", "secret": "x"}]

    out = kb_search.search(KB(), Principal(id="local"), "fee", 5)
    assert out["results"] == [{"document_id": "d1", "chunk_id": "d1#0", "text": "fee 15", "score": 0.9},
                              {"document_id": "d2", "text": "t"}]

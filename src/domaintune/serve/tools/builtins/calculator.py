"""Built-in `calculator`: arithmetic evaluated from Python's syntax tree, never with eval().

Only numbers, + - * / // % **, unary signs, parentheses and a few math functions are accepted;
names, attributes, calls of anything else, strings and comprehensions are refused. Sizes are capped so
`9**9**9` or a 10,000-digit factorial cannot stall the tool thread.
"""

from __future__ import annotations

import ast
import math
import operator

DESCRIPTION = ("Evaluate an arithmetic expression exactly, e.g. '(1250 * 0.015) + 15' or 'sqrt(2) * 3'. "
               "Supports + - * / // % **, parentheses, abs, round, min, max, sqrt, log, exp, pi and e.")
# The pattern admits only what an expression can contain (digits, operators, the function and constant names):
# a forced call is decoded under it, so even a weak model writes "12 * 7", never "12 times 7".
EXPRESSION = r"^(?:[0-9.+\-*/%(), ]|abs|round|min|max|sqrt|log|exp|pi|e)+$"
PARAMETERS = {"type": "object", "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 500,
                                                              "pattern": EXPRESSION,
                                                              "description": "The expression to evaluate."}},
              "required": ["expression"], "additionalProperties": False}

MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10 ** 100
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "log": math.log,
              "exp": math.exp}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class CalcError(ValueError):
    pass


def evaluate(expression: str) -> int | float:
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise CalcError(f"not an arithmetic expression: {err.msg}") from None
    return _check(_eval(tree.body))


def _check(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalcError("only numbers are supported")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise CalcError(f"the result exceeds {MAX_MAGNITUDE:.0e}")
    return value


def _eval(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalcError(f"exponents above {MAX_EXPONENT} are refused")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalcError("division by zero") from None
        except OverflowError:
            raise CalcError("the result is too large") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords and len(node.args) <= 4:
        try:
            return _check(_FUNCTIONS[node.func.id](*[_eval(a) for a in node.args]))
        except (ValueError, TypeError, OverflowError) as err:
            raise CalcError(f"{node.func.id}(): {err}") from None
    raise CalcError(f"'{ast.unparse(node)}' is not allowed in an arithmetic expression")


def calculator(expression: str) -> dict:
    return {"expression": expression, "result": evaluate(expression)}

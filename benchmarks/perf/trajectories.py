"""The scripted root-model replies of each workload, one text for both libraries.

The root model is played by the mock server: for a root request it returns the reply of
the current workload for the current turn (turn = assistant messages in the request + 1).
Every reply is a single ```` ```repl ```` block, the fence both libraries run. The cells
``print`` what they want the model to see, since only one library echoes a cell's last
expression.

Both libraries end a run differently: rlmx through ``FINAL(value)`` (a REPL function that
ends the run), rlms 0.1.3 by setting ``answer["content"]`` and ``answer["ready"] = True``
(it has no ``FINAL``). The last cell of each trajectory therefore tries ``FINAL`` and falls
back to the answer dict on ``NameError``; rlmx's ``FINAL`` stops the cell with an exception
that is not a ``NameError``, so each library takes its own branch and the text sent, and
so the tokens counted, are the same for both.
"""

from __future__ import annotations

from typing import Any

import common


def finish(expr: str) -> str:
    """Lines that end the run with the value of ``expr`` in either library."""
    return (
        "try:\n"
        f"    FINAL({expr})\n"
        "except NameError:\n"
        f"    answer['content'] = str({expr})\n"
        "    answer['ready'] = True\n"
    )


def cell(code: str) -> str:
    return f"```repl\n{code.rstrip()}\n```"


def fanout(turn: int, params: dict[str, Any]) -> str:
    del turn
    n = int(params.get("prompts", common.FANOUT_PROMPTS))
    return cell(
        f'outs = llm_query_batched([f"q{{i}}" for i in range({n})])\n'
        'bad = sum(1 for i, o in enumerate(outs) if o != f"a{i}")\n'
        "print(len(outs), bad)\n" + finish('f"{len(outs)} {bad}"')
    )


def loop(turn: int, params: dict[str, Any]) -> str:
    last = int(params.get("iterations", common.LOOP_ITERATIONS))
    code = f"x = {turn}\nprint('turn', x)\n"
    if turn >= last:
        code += finish("'done ' + str(x)")
    return cell(code)


def tokens(turn: int, params: dict[str, Any]) -> str:
    last = int(params.get("iterations", common.TOKENS_ITERATIONS))
    sizes = common.TOKENS_PRINT_SIZES
    size = sizes[(turn - 1) % len(sizes)]
    start = (turn - 1) * 50_000
    code = f"part = context[{start}:{start + size}]\nprint(part)\n"
    if turn >= last:
        code += finish(f"'tokens done {turn}'")
    return cell(code)


def context(turn: int, params: dict[str, Any]) -> str:
    del turn, params
    return cell("n = len(context)\nprint(n)\n" + finish("str(n)"))


def concurrency(turn: int, params: dict[str, Any]) -> str:
    del params
    if turn == 1:
        return cell(
            "tag, secret = context.split()[:2]\n"
            'sub = llm_query("echo " + secret)\n'
            "print(tag, secret, sub)\n"
        )
    return cell("print(tag, 'finishing')\n" + finish("secret + '/' + sub"))


def warmup(turn: int, params: dict[str, Any]) -> str:
    del turn, params
    return cell("print('warm')\n" + finish("'warm'"))


SCRIPTS = {
    "fanout": fanout,
    "loop": loop,
    "tokens": tokens,
    "context": context,
    "concurrency": concurrency,
    "warmup": warmup,
}


def root_reply(workload: str, turn: int, params: dict[str, Any]) -> str:
    return SCRIPTS[workload](turn, params)

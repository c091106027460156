"""The behaviour every sandbox must have, as a reusable test suite.

Subclass :class:`SandboxContract` in a ``Test*`` class and implement :meth:`make_sandbox`;
pytest then runs every test below against that sandbox. The suite only uses the public
:class:`~rlmx.sandbox.Sandbox` interface and :class:`~rlmx.sandbox.ExecResult` fields, so
an out-of-process sandbox (a worker process) must pass it unchanged. Everything crossing
the sandbox boundary here is plain data: str cells, JSON-able contexts and answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rlmx.sandbox import ExecResult, Sandbox, SandboxConfig

__all__ = ["FakeHandler", "SandboxContract"]

# Generous: a healthy cell here takes milliseconds; this only bounds a hung sandbox.
DEFAULT_TIMEOUT_S = 20.0
SHORT_TIMEOUT_S = 0.5
# A timed-out cell must come back well before this (timeout + any grace period).
TIMEOUT_BOUND_S = 6.0

_UNSET: Any = object()

OpenSandbox = Callable[..., Awaitable[Sandbox]]


class FakeHandler:
    """A :class:`~rlmx.sandbox.SubCallHandler` that records calls and echoes prompts.

    ``delay`` makes every call wait that long; ``reverse_finish`` makes the prompts of a
    batch complete in reverse order, so a sandbox that reorders answers by completion
    time is caught.
    """

    def __init__(self, *, delay: float = 0.0, reverse_finish: bool = False) -> None:
        self.delay = delay
        self.reverse_finish = reverse_finish
        self.llm_calls: list[tuple[list[str], str | None]] = []
        self.rlm_calls: list[tuple[list[str], list[Any] | None]] = []
        self.cancelled = 0

    async def _answer(self, prompts: list[str], prefix: str) -> list[str]:
        async def one(i: int, prompt: str) -> str:
            if self.reverse_finish:
                await asyncio.sleep(0.01 * (len(prompts) - i))
            return f"{prefix}:{prompt}"

        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        self.llm_calls.append((list(prompts), model))
        return await self._answer(prompts, "echo")

    async def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        self.rlm_calls.append((list(prompts), None if contexts is None else list(contexts)))
        return await self._answer(prompts, "rlm")


def ok(result: ExecResult) -> ExecResult:
    """Assert the cell ran cleanly (no error, no timeout) and return its result."""
    assert result.error is None, result.error
    assert not result.timed_out
    return result


async def run_json(sandbox: Sandbox, expr: str) -> Any:
    """Evaluate ``expr`` in the sandbox and bring its value back through JSON."""
    result = ok(await sandbox.execute(f"print(__import__('json').dumps({expr}))"))
    return json.loads(result.stdout)


class SandboxContract:
    """Tests every sandbox must pass. Not collected itself (no ``Test`` prefix)."""

    async def make_sandbox(self, config: SandboxConfig) -> Sandbox:
        """Return a new, open sandbox for ``config`` (implemented by each subclass)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture
    async def open_sandbox(self) -> AsyncIterator[OpenSandbox]:
        """A factory ``await open_sandbox(config=None, context=...)``; closes all at teardown."""
        opened: list[Sandbox] = []

        async def factory(config: SandboxConfig | None = None, context: Any = _UNSET) -> Sandbox:
            sandbox = await self.make_sandbox(
                config or SandboxConfig(cell_timeout_s=DEFAULT_TIMEOUT_S)
            )
            opened.append(sandbox)
            if context is not _UNSET:
                await sandbox.load_context(context)
            return sandbox

        yield factory
        for sandbox in opened:
            await sandbox.aclose()

    @pytest.fixture
    async def sandbox(self, open_sandbox: OpenSandbox) -> Sandbox:
        return await open_sandbox()

    # ------------------------------------------------------------ persistence & echo
    async def test_namespace_persists_across_cells(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("x = 41"))
        ok(await sandbox.execute("def bump(v):\n    return v + 1"))
        ok(await sandbox.execute("import math"))
        result = ok(await sandbox.execute("print(bump(x), math.floor(2.5))"))
        assert result.stdout == "42 2\n"

    async def test_trailing_expression_is_echoed(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("a = 'abc'\na.upper()"))
        assert result.stdout == "'ABC'\n"
        result = ok(await sandbox.execute("[1, 2] + [3]"))
        assert result.stdout == "[1, 2, 3]\n"

    @pytest.mark.parametrize(
        "code",
        [
            pytest.param("None", id="none"),
            pytest.param("y = 5", id="assignment"),
            pytest.param("z = 1\nz += 1", id="augmented-assignment"),
            pytest.param("[].append(1)", id="call-returning-none"),
            pytest.param("# only a comment", id="comment"),
            pytest.param("", id="empty"),
        ],
    )
    async def test_no_echo(self, sandbox: Sandbox, code: str) -> None:
        result = ok(await sandbox.execute(code))
        assert result.stdout == ""

    async def test_trailing_print_is_not_echoed_twice(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("print('once')"))
        assert result.stdout == "once\n"

    async def test_echo_only_for_the_last_statement(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("1 + 1\n'middle'\n3 * 3"))
        assert result.stdout == "9\n"

    # ------------------------------------------------------------------ output
    async def test_stdout_and_stderr_are_captured_separately(self, sandbox: Sandbox) -> None:
        code = (
            "import sys\n"
            "print('to out')\n"
            "print('to err', file=sys.stderr)\n"
            "_ = sys.stdout.write('more')"
        )
        result = ok(await sandbox.execute(code))
        assert result.stdout == "to out\nmore"
        assert result.stderr == "to err\n"

    async def test_output_belongs_to_its_cell(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("print('first cell')"))
        result = ok(await sandbox.execute("print('second cell')"))
        assert result.stdout == "second cell\n"
        result = ok(await sandbox.execute("v = 1"))
        assert result.stdout == ""
        assert result.stderr == ""

    async def test_output_truncated_keeps_head_and_tail(self, open_sandbox: OpenSandbox) -> None:
        limit = 1000
        sandbox = await open_sandbox(SandboxConfig(max_output_chars=limit))
        code = "print('HEAD-MARK' + 'x' * 5000 + 'TAIL-MARK')"
        result = ok(await sandbox.execute(code))
        assert result.stdout.startswith("HEAD-MARK")
        assert result.stdout.endswith("TAIL-MARK\n")
        assert len(result.stdout) <= limit + 200  # the limit plus a short omission note
        written = len("HEAD-MARK") + 5000 + len("TAIL-MARK") + 1
        assert written - limit <= result.truncated_chars <= written - limit // 2

    async def test_output_under_the_limit_is_not_truncated(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(max_output_chars=1000))
        result = ok(await sandbox.execute("print('y' * 500)"))
        assert result.stdout == "y" * 500 + "\n"
        assert result.truncated_chars == 0

    async def test_huge_print_stays_bounded(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(max_output_chars=2000))
        result = ok(await sandbox.execute("print('x' * 10**8)"))
        assert len(result.stdout) <= 2200
        assert result.stdout.startswith("x" * 100)
        assert result.truncated_chars >= 10**8 - 2000

    async def test_many_small_prints_stay_bounded(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(max_output_chars=2000))
        result = ok(await sandbox.execute("for i in range(100_000):\n    print(i)"))
        assert result.stdout.startswith("0\n1\n2\n")
        assert result.stdout.endswith("99998\n99999\n")
        assert len(result.stdout) <= 2200
        assert result.truncated_chars > 0

    # ------------------------------------------------------------------ errors
    async def test_exception_reported_as_short_traceback(self, sandbox: Sandbox) -> None:
        result = await sandbox.execute("a = 1\nb = 0\nc = a / b\nprint('unreached')")
        assert result.error is not None
        assert "ZeroDivisionError" in result.error
        assert "line 3" in result.error
        assert "c = a / b" in result.error
        assert len(result.error) < 2000
        # Only the model's own frames: nothing from the sandbox's machinery.
        assert "rlmx" not in result.error
        assert "unreached" not in result.stdout
        assert result.final is None
        assert not result.timed_out

    async def test_variables_assigned_before_an_exception_are_kept(self, sandbox: Sandbox) -> None:
        result = await sandbox.execute("kept = 'yes'\nprint('before')\nraise KeyError('boom')")
        assert result.error is not None
        assert "KeyError" in result.error
        assert "boom" in result.error
        assert result.stdout == "before\n"
        assert ok(await sandbox.execute("kept")).stdout == "'yes'\n"

    async def test_traceback_names_function_from_earlier_cell(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("def parse(s):\n    return int(s)"))
        result = await sandbox.execute("parse('not a number')")
        assert result.error is not None
        assert "ValueError" in result.error
        assert "in parse" in result.error
        assert "return int(s)" in result.error

    async def test_syntax_error_reported_and_cell_not_run(self, sandbox: Sandbox) -> None:
        result = await sandbox.execute("before = 1\nprint('x'\nafter = 2")
        assert result.error is not None
        assert "SyntaxError" in result.error
        assert result.stdout == ""
        # Nothing of a cell that does not compile runs.
        names = await run_json(sandbox, "sorted(n for n in ('before', 'after') if n in globals())")
        assert names == []

    async def test_name_error_for_undefined_variable(self, sandbox: Sandbox) -> None:
        result = await sandbox.execute("undefined_thing + 1")
        assert result.error is not None
        assert "NameError" in result.error
        assert "undefined_thing" in result.error

    async def test_sandbox_keeps_working_after_errors(self, sandbox: Sandbox) -> None:
        for code in ("1/0", "def (", "raise SystemExit(3)", "raise KeyboardInterrupt"):
            result = await sandbox.execute(code)
            assert result.error is not None, code
        assert ok(await sandbox.execute("'alive'")).stdout == "'alive'\n"

    # ------------------------------------------------------------------ FINAL
    async def test_final_with_str(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("FINAL('the answer')"))
        assert result.final == "the answer"

    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            ("[1, 2]", "[1, 2]"),
            ("{'a': 1, 'b': [True, None]}", '{"a": 1, "b": [true, null]}'),
            ("42", "42"),
            ("2.5", "2.5"),
            ("'ünïcode'", "ünïcode"),
            ("['ünïcode']", '["ünïcode"]'),
        ],
    )
    async def test_final_renders_values(self, sandbox: Sandbox, expr: str, expected: str) -> None:
        result = ok(await sandbox.execute(f"FINAL({expr})"))
        assert result.final == expected

    async def test_final_escapes_except_exception(self, sandbox: Sandbox) -> None:
        code = "try:\n    FINAL('escaped')\nexcept Exception:\n    pass\nprint('after')"
        result = ok(await sandbox.execute(code))
        assert result.final == "escaped"
        assert "after" not in result.stdout

    async def test_final_stops_the_rest_of_the_cell(self, sandbox: Sandbox) -> None:
        code = "print('before')\nFINAL('done')\nprint('after')\nlate = 1"
        result = ok(await sandbox.execute(code))
        assert result.final == "done"
        assert result.stdout == "before\n"
        assert await run_json(sandbox, "'late' in globals()") is False

    async def test_final_from_inside_a_function(self, sandbox: Sandbox) -> None:
        code = "def finish():\n    for i in range(9):\n        if i == 3:\n            FINAL(i)\n"
        code += "finish()"
        result = ok(await sandbox.execute(code))
        assert result.final == "3"

    async def test_no_final_without_final_call(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("answer = 'not yet'"))
        assert result.final is None

    @pytest.mark.parametrize("arg", ["'answer'", '"answer"', "' answer '"])
    async def test_final_var_by_name(self, sandbox: Sandbox, arg: str) -> None:
        ok(await sandbox.execute("answer = 'Paris'"))
        result = ok(await sandbox.execute(f"FINAL_VAR({arg})"))
        assert result.final == "Paris"

    async def test_final_var_renders_non_str_variable(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("counts = {'a': 2}"))
        result = ok(await sandbox.execute("FINAL_VAR('counts')"))
        assert result.final == '{"a": 2}'

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("[1, 2]", "[1, 2]"),
            ("'Paris is the capital of France.'", "Paris is the capital of France."),
            ("'Paris'", "Paris"),
        ],
    )
    async def test_final_var_with_the_variable_itself(
        self, sandbox: Sandbox, value: str, expected: str
    ) -> None:
        ok(await sandbox.execute(f"answer = {value}"))
        result = ok(await sandbox.execute("FINAL_VAR(answer)"))
        assert result.final == expected

    async def test_final_var_of_missing_name_is_an_error(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("present = 1"))
        result = await sandbox.execute("FINAL_VAR('missing')")
        assert result.final is None
        assert result.error is not None
        assert "missing" in result.error
        assert "present" in result.error  # the message lists what does exist

    # ------------------------------------------------------------------ variables
    async def test_show_vars_lists_user_variables_only(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(
            SandboxConfig(handler=FakeHandler(), cell_timeout_s=DEFAULT_TIMEOUT_S),
            context="some text",
        )
        ok(
            await sandbox.execute(
                "n = 3\nname = 'abc'\ndef f():\n    pass\nimport json\n_hidden = 1"
            )
        )
        result = ok(await sandbox.execute("SHOW_VARS()"))
        listed = {line.split(":", 1)[0].strip() for line in result.stdout.splitlines()}
        assert listed == {"n", "name", "f"}
        assert "name: str" in result.stdout

    async def test_show_vars_with_no_variables(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("SHOW_VARS()"))
        assert result.stdout.strip()
        for helper in ("FINAL", "peek", "grep", "chunk", "select", "context"):
            assert f"{helper}:" not in result.stdout

    async def test_variable_returns_str_values_only(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("s = 'partial answer'\nn = 3\nlst = ['a']\nempty = ''"))
        assert await sandbox.variable("s") == "partial answer"
        assert await sandbox.variable("empty") == ""
        assert await sandbox.variable("n") is None
        assert await sandbox.variable("lst") is None
        assert await sandbox.variable("missing") is None
        assert await sandbox.variable("FINAL") is None

    # ------------------------------------------------------------------ context
    async def test_context_str(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="hello world")
        assert await run_json(sandbox, "[type(context).__name__, len(context)]") == ["str", 11]
        assert await run_json(sandbox, "peek(0, 5)") == "hello"

    async def test_context_list(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context=["one", "two", "three"])
        assert await run_json(sandbox, "[type(context).__name__, len(context)]") == ["list", 3]
        assert await run_json(sandbox, "context[1]") == "two"
        assert (
            await run_json(sandbox, "peek()")
            == "=== [0] ===\none\n=== [1] ===\ntwo\n=== [2] ===\nthree"
        )

    async def test_context_dict(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context={"a.txt": "alpha", "b.json": {"k": [1, 2]}})
        assert await run_json(sandbox, "[type(context).__name__, len(context)]") == ["dict", 2]
        assert await run_json(sandbox, "context['b.json']['k']") == [1, 2]
        text = await run_json(sandbox, "peek()")
        assert text == '=== a.txt ===\nalpha\n=== b.json ===\n{"k": [1, 2]}'
        assert await run_json(sandbox, "grep('alpha')") == ["L2@14: alpha"]

    async def test_no_context_loaded(self, sandbox: Sandbox) -> None:
        assert await run_json(sandbox, "[peek(), grep('x'), chunk('lines', 5)]") == ["", [], [""]]

    async def test_load_context_replaces_previous(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="first version")
        assert await run_json(sandbox, "peek()") == "first version"
        await sandbox.load_context("second version")
        assert await run_json(sandbox, "[context, peek(), grep('second')]") == [
            "second version",
            "second version",
            ["L1@0: second version"],
        ]

    async def test_helpers_follow_a_rebound_context(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context={"a.txt": "apple\nbanana", "b.txt": "cherry"})
        assert await run_json(sandbox, "grep('cherry')") == ["L5@41: cherry"]
        ok(await sandbox.execute("context = context['a.txt']"))
        assert await run_json(sandbox, "[peek(), grep('banana')]") == [
            "apple\nbanana",
            ["L2@6: banana"],
        ]

    async def test_peek(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="0123456789" * 300)
        assert await run_json(sandbox, "peek(5, 12)") == "5678901"
        assert await run_json(sandbox, "len(peek())") == 2000
        assert await run_json(sandbox, "peek(2995, 5000)") == "56789"

    # ------------------------------------------------------------------ grep
    GREP_TEXT = "alpha\nbeta\ngamma beta beta\ndelta\nepsilon\n"

    async def test_grep_reports_line_numbers_and_offsets(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context=self.GREP_TEXT)
        # One hit per line, however many matches the line has.
        assert await run_json(sandbox, "grep('beta')") == ["L2@6: beta", "L3@11: gamma beta beta"]
        assert await run_json(sandbox, "grep('eps')") == ["L5@33: epsilon"]
        assert await run_json(sandbox, "grep('zeta')") == []

    async def test_grep_regex_and_anchors(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context=self.GREP_TEXT)
        assert await run_json(sandbox, r"grep(r'\bd\w+')") == ["L4@27: delta"]
        # Lines are what grep works on: ^ and $ anchor at each line, as in grep(1).
        assert await run_json(sandbox, "grep('^beta')") == ["L2@6: beta"]
        assert await run_json(sandbox, "grep('beta$')") == ["L2@6: beta", "L3@11: gamma beta beta"]
        assert await run_json(sandbox, "grep('(?i)ALPHA')") == ["L1@0: alpha"]

    async def test_grep_context_lines(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context=self.GREP_TEXT)
        assert await run_json(sandbox, "grep('delta', context=1)") == [
            "L4@27: gamma beta beta\ndelta\nepsilon"
        ]
        # At the edges of the text the context is cut short.
        assert await run_json(sandbox, "grep('alpha', context=2)") == [
            "L1@0: alpha\nbeta\ngamma beta beta"
        ]
        hits = await run_json(sandbox, "grep('eps', context=3)")
        assert [hit.rstrip("\n") for hit in hits] == [
            "L5@33: beta\ngamma beta beta\ndelta\nepsilon"
        ]

    async def test_grep_max_matches(self, open_sandbox: OpenSandbox) -> None:
        text = "".join(f"line {i} match\n" for i in range(100))
        sandbox = await open_sandbox(context=text)
        assert len(await run_json(sandbox, "grep('match')")) == 20  # the default
        hits = await run_json(sandbox, "grep('match', max_matches=3)")
        assert hits == ["L1@0: line 0 match", "L2@13: line 1 match", "L3@26: line 2 match"]
        assert len(await run_json(sandbox, "grep('match', max_matches=1000)")) == 100
        assert await run_json(sandbox, "grep('match', max_matches=0)") == []

    async def test_grep_invalid_regex_is_an_error(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context=self.GREP_TEXT)
        result = await sandbox.execute("hits = grep('(unclosed')")
        assert result.error is not None
        assert "error" in result.error.lower()
        assert "hits = grep('(unclosed')" in result.error
        assert ok(await sandbox.execute("'still fine'")).stdout == "'still fine'\n"

    # ------------------------------------------------------------------ chunk & select
    async def test_chunk_lines(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="l1\nl2\nl3\nl4\nl5\n")
        assert await run_json(sandbox, "chunk('lines', 2)") == ["l1\nl2\n", "l3\nl4\n", "l5\n"]
        assert await run_json(sandbox, "chunk('lines', 10)") == ["l1\nl2\nl3\nl4\nl5\n"]
        assert await run_json(sandbox, "chunk('lines', 3, 1)") == ["l1\nl2\nl3\n", "l3\nl4\nl5\n"]

    async def test_chunk_chars(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="abcdefghij")
        assert await run_json(sandbox, "chunk('chars', 4)") == ["abcd", "efgh", "ij"]
        assert await run_json(sandbox, "chunk('chars', 100)") == ["abcdefghij"]
        # With overlap, consecutive chunks share characters, and the last chunk is not
        # one that the previous chunk already contains.
        assert await run_json(sandbox, "chunk('chars', 4, 2)") == ["abcd", "cdef", "efgh", "ghij"]
        assert await run_json(sandbox, "chunk('chars', 4, 1)") == ["abcd", "defg", "ghij"]
        assert await run_json(sandbox, "''.join(chunk('chars', 3))") == "abcdefghij"

    @pytest.mark.parametrize(
        "call",
        [
            "chunk('words', 10)",
            "chunk('chars', 0)",
            "chunk('chars', -5)",
            "chunk('chars', 4, 4)",
            "chunk('lines', 4, -1)",
        ],
    )
    async def test_chunk_bad_arguments_are_errors(
        self, open_sandbox: OpenSandbox, call: str
    ) -> None:
        sandbox = await open_sandbox(context="abcdefghij")
        result = await sandbox.execute(call)
        assert result.error is not None
        assert "ValueError" in result.error

    async def test_select(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="0123456789abcdef")
        assert await run_json(sandbox, "select([(0, 3), (10, 12)])") == "012\n...\nab"
        assert await run_json(sandbox, "select([(2, 5)])") == "234"
        assert await run_json(sandbox, "select((2, 5))") == "234"
        result = await sandbox.execute("select([(1, 2, 3)])")
        assert result.error is not None
        assert "ValueError" in result.error

    # ------------------------------------------------------------------ sub-calls
    @pytest.mark.parametrize(
        "name", ["llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched"]
    )
    async def test_no_sub_call_functions_without_handler(
        self, open_sandbox: OpenSandbox, name: str
    ) -> None:
        sandbox = await open_sandbox(SandboxConfig(handler=None, cell_timeout_s=DEFAULT_TIMEOUT_S))
        result = await sandbox.execute(f"{name}('hi')")
        assert result.error is not None
        assert "NameError" in result.error
        assert name in result.error

    async def _with_handler(self, open_sandbox: OpenSandbox, handler: FakeHandler) -> Sandbox:
        return await open_sandbox(SandboxConfig(handler=handler, cell_timeout_s=DEFAULT_TIMEOUT_S))

    async def test_llm_query_returns_the_handlers_answer(self, open_sandbox: OpenSandbox) -> None:
        handler = FakeHandler()
        sandbox = await self._with_handler(open_sandbox, handler)
        result = ok(await sandbox.execute("r = llm_query('hi there')\nprint(r)"))
        assert result.stdout == "echo:hi there\n"
        assert handler.llm_calls == [(["hi there"], None)]
        assert await sandbox.variable("r") == "echo:hi there"

    async def test_llm_query_batched_keeps_order_and_passes_model(
        self, open_sandbox: OpenSandbox
    ) -> None:
        handler = FakeHandler(reverse_finish=True)
        sandbox = await self._with_handler(open_sandbox, handler)
        prompts = [f"p{i}" for i in range(8)]
        answers = await run_json(sandbox, f"llm_query_batched({prompts!r}, model='small-model')")
        assert answers == [f"echo:{p}" for p in prompts]
        assert handler.llm_calls == [(prompts, "small-model")]
        ok(await sandbox.execute("llm_query('one', model='other')"))
        assert handler.llm_calls[-1] == (["one"], "other")

    async def test_empty_batch_returns_empty_list(self, open_sandbox: OpenSandbox) -> None:
        handler = FakeHandler()
        sandbox = await self._with_handler(open_sandbox, handler)
        assert await run_json(sandbox, "[llm_query_batched([]), rlm_query_batched([])]") == [[], []]

    @pytest.mark.parametrize(
        "call",
        [
            "llm_query(123)",
            "llm_query(None)",
            "llm_query_batched(['ok', 5])",
            "rlm_query(['a list'])",
            "rlm_query_batched([b'bytes'])",
            "llm_query_batched('one string')",
            "rlm_query_batched('one string')",
        ],
    )
    async def test_bad_prompts_are_type_errors(self, open_sandbox: OpenSandbox, call: str) -> None:
        handler = FakeHandler()
        sandbox = await self._with_handler(open_sandbox, handler)
        result = await sandbox.execute(call)
        assert result.error is not None
        assert "TypeError" in result.error
        assert handler.llm_calls == []
        assert handler.rlm_calls == []

    async def test_rlm_query_passes_contexts(self, open_sandbox: OpenSandbox) -> None:
        handler = FakeHandler()
        sandbox = await self._with_handler(open_sandbox, handler)
        assert await run_json(sandbox, "rlm_query('q1')") == "rlm:q1"
        assert await run_json(sandbox, "rlm_query('q2', context={'k': [1, 2]})") == "rlm:q2"
        answers = await run_json(sandbox, "rlm_query_batched(['a', 'b'], contexts=['ca', ['cb']])")
        assert answers == ["rlm:a", "rlm:b"]
        assert handler.rlm_calls == [
            (["q1"], None),
            (["q2"], [{"k": [1, 2]}]),
            (["a", "b"], ["ca", ["cb"]]),
        ]

    async def test_rlm_query_batched_mismatched_contexts(self, open_sandbox: OpenSandbox) -> None:
        handler = FakeHandler()
        sandbox = await self._with_handler(open_sandbox, handler)
        result = await sandbox.execute("rlm_query_batched(['a', 'b'], contexts=['only one'])")
        assert result.error is not None
        assert "ValueError" in result.error
        assert "contexts" in result.error
        assert handler.rlm_calls == []

    async def test_sub_call_answers_are_usable_in_later_cells(
        self, open_sandbox: OpenSandbox
    ) -> None:
        handler = FakeHandler()
        sandbox = await self._with_handler(open_sandbox, handler)
        ok(await sandbox.execute("parts = llm_query_batched(['x', 'y'])"))
        result = ok(await sandbox.execute("FINAL(' + '.join(parts))"))
        assert result.final == "echo:x + echo:y"

    # ------------------------------------------------------------------ timeouts
    async def _short(
        self, open_sandbox: OpenSandbox, handler: FakeHandler | None = None
    ) -> Sandbox:
        return await open_sandbox(SandboxConfig(handler=handler, cell_timeout_s=SHORT_TIMEOUT_S))

    async def test_infinite_loop_times_out_and_namespace_survives(
        self, open_sandbox: OpenSandbox
    ) -> None:
        sandbox = await self._short(open_sandbox)
        ok(await sandbox.execute("survivor = 'still here'"))
        started = time.monotonic()
        result = await sandbox.execute("print('looping')\nwhile True:\n    pass")
        elapsed = time.monotonic() - started
        assert result.timed_out
        assert result.error is not None
        assert "time" in result.error.lower()
        assert result.final is None
        assert SHORT_TIMEOUT_S <= elapsed < TIMEOUT_BOUND_S
        result = ok(await sandbox.execute("print(survivor)"))
        assert result.stdout == "still here\n"
        assert not result.restarted

    async def test_sleep_times_out(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await self._short(open_sandbox)
        ok(await sandbox.execute("before = 1"))
        started = time.monotonic()
        result = await sandbox.execute("import time\ntime.sleep(100)")
        assert time.monotonic() - started < TIMEOUT_BOUND_S
        assert result.timed_out
        assert result.error is not None
        result = ok(await sandbox.execute("print(before + 1)"))
        assert result.stdout == "2\n"

    async def test_slow_sub_call_times_out_and_is_cancelled(
        self, open_sandbox: OpenSandbox
    ) -> None:
        handler = FakeHandler(delay=60)
        sandbox = await self._short(open_sandbox, handler)
        started = time.monotonic()
        result = await sandbox.execute("llm_query('slow')")
        assert time.monotonic() - started < TIMEOUT_BOUND_S
        assert result.timed_out
        assert handler.llm_calls == [(["slow"], None)]
        # The host stops waiting for an answer nobody will read.
        for _ in range(100):
            if handler.cancelled:
                break
            await asyncio.sleep(0.05)
        assert handler.cancelled == 1

    async def test_cancelled_execute_frees_the_sandbox(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox()  # the long default timeout: only cancellation stops it
        ok(await sandbox.execute("kept = 'yes'"))
        task = asyncio.create_task(sandbox.execute("while True:\n    pass"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        result = ok(await sandbox.execute("print(kept)"))
        assert result.stdout == "yes\n"
        assert time.monotonic() - started < TIMEOUT_BOUND_S

    async def test_fast_cell_does_not_time_out(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await self._short(open_sandbox)
        for _ in range(5):
            result = ok(await sandbox.execute("sum(range(1000))"))
            assert result.stdout == "499500\n"

    # ------------------------------------------------------------------ concurrency
    async def test_concurrent_sandboxes_do_not_mix_output(self, open_sandbox: OpenSandbox) -> None:
        first, second = await open_sandbox(), await open_sandbox()
        code = (
            "import sys, time\n"
            "for i in range(200):\n"
            "    print({marker!r})\n"
            "    print({marker!r}, file=sys.stderr)\n"
            "    time.sleep(0.0005)"
        )
        a, b = await asyncio.gather(
            first.execute(code.format(marker="AAA")), second.execute(code.format(marker="BBB"))
        )
        assert ok(a).stdout == "AAA\n" * 200
        assert ok(b).stdout == "BBB\n" * 200
        assert a.stderr == "AAA\n" * 200
        assert b.stderr == "BBB\n" * 200

    async def test_concurrent_sandboxes_keep_separate_namespaces(
        self, open_sandbox: OpenSandbox
    ) -> None:
        first = await open_sandbox(context="first context")
        second = await open_sandbox(context="second context")
        await asyncio.gather(first.execute("who = 'first'"), second.execute("who = 'second'"))
        assert await run_json(first, "[who, context]") == ["first", "first context"]
        assert await run_json(second, "[who, context]") == ["second", "second context"]

    async def test_concurrent_tracebacks_show_their_own_source(
        self, open_sandbox: OpenSandbox
    ) -> None:
        first, second = await open_sandbox(), await open_sandbox()

        async def second_cell() -> ExecResult:
            await asyncio.sleep(0.2)  # starts while the first cell is still sleeping
            return await second.execute("x = 1\ny = 2\nraise KeyError('from second')")

        a, b = await asyncio.gather(
            first.execute("import time\ntime.sleep(0.6)\nraise ValueError('from first')"),
            second_cell(),
        )
        assert a.error is not None
        assert b.error is not None
        assert "raise ValueError('from first')" in a.error
        assert "from second" not in a.error
        assert "raise KeyError('from second')" in b.error
        assert "from first" not in b.error

    async def test_concurrent_sub_calls(self, open_sandbox: OpenSandbox) -> None:
        handler = FakeHandler(delay=0.05)
        sandboxes = [await self._with_handler(open_sandbox, handler) for _ in range(4)]
        results = await asyncio.gather(
            *(sb.execute(f"print(llm_query('from {i}'))") for i, sb in enumerate(sandboxes))
        )
        assert [ok(r).stdout for r in results] == [f"echo:from {i}\n" for i in range(4)]

    # ------------------------------------------------------------------ lifecycle
    async def test_aclose_twice_is_safe(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox()
        ok(await sandbox.execute("1"))
        await sandbox.aclose()
        await sandbox.aclose()

    async def test_aclose_without_any_cell(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox()
        await sandbox.aclose()
        await sandbox.aclose()

    async def test_async_with(self) -> None:
        sandbox = await self.make_sandbox(SandboxConfig(cell_timeout_s=DEFAULT_TIMEOUT_S))
        async with sandbox as entered:
            assert entered is sandbox
            result = ok(await entered.execute("FINAL(6 * 7)"))
            assert result.final == "42"
        await sandbox.aclose()  # already closed by the block: still safe

    async def test_duration_is_measured(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("sum(range(1000))"))
        assert 0 < result.duration_s < DEFAULT_TIMEOUT_S
        result = ok(await sandbox.execute("import time\ntime.sleep(0.1)"))
        assert 0.09 <= result.duration_s < DEFAULT_TIMEOUT_S

    async def test_result_defaults_for_a_clean_cell(self, sandbox: Sandbox) -> None:
        result = ok(await sandbox.execute("v = 1"))
        assert result.final is None
        assert result.truncated_chars == 0
        assert result.restarted is False
        assert result.lost_variables == ()

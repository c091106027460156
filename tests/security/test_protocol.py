"""Escaping through the ``llm_query`` bridge: the worker's pipe to the host.

The worker is started as ``_bootstrap.py IN_FD OUT_FD``; a cell finds its output pipe in
``sys.argv`` and writes whatever bytes it likes there. The host must stay unharmed (its
event loop keeps running, ``execute`` raises nothing), the handler must receive no bogus
call, and the result must say what happened: the worker stopped and replaced for a
broken frame, an error inside the cell for a well-formed but invalid request. The next
cell always works.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from rlmx.sandbox import ExecResult, IsolatedSandbox
from tests.sandbox.contract import FakeHandler
from tests.security._helpers import Opener, run, run_while_ticking

RAW_WRITE = (
    "import os, sys, time, json\n"
    "OUT = int(sys.argv[2])\n"
    "def frame(kind, payload):\n"
    "    return kind + len(payload).to_bytes(4, 'big') + payload\n"
    "def jframe(message):\n"
    "    return frame(b'J', json.dumps(message).encode())\n"
)


async def _with_ticker(sandbox: IsolatedSandbox, code: str) -> ExecResult:
    """Run the attack while a host task keeps ticking; it must keep ticking."""
    r, _elapsed, ticks = await run_while_ticking(sandbox, code, period=0.01, settle_s=0.05)
    assert ticks > 0
    return r


async def _fresh_worker_answers(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, "print('fresh', 'kept' in globals(), context[:6])")
    assert r.stdout == "fresh False public\n"
    assert r.error is None
    assert not r.restarted


# ---------------------------------------------------------- broken frames: worker stopped

_BROKEN = {
    "garbage-bytes": "os.write(OUT, b'\\x00\\xffgarbage' * 100)",
    "unknown-frame-kind": "os.write(OUT, frame(b'X', b'{}'))",
    "huge-json-length": "os.write(OUT, b'J' + (2**31).to_bytes(4, 'big'))",
    "max-json-length": "os.write(OUT, b'J' + (2**32 - 1).to_bytes(4, 'big') + b'{')",
    "unannounced-bytes-frame": "os.write(OUT, frame(b'B', b'data nobody asked for'))",
    "invalid-json": "os.write(OUT, frame(b'J', b'{not json'))",
    "invalid-utf8-json": "os.write(OUT, frame(b'J', b'{\"op\": \"\\xff\\xfe\"}'))",
    "json-not-an-object": "os.write(OUT, jframe([1, 2, 3]))",
    "op-not-a-str": "os.write(OUT, jframe({'op': 5}))",
    "unknown-op": "os.write(OUT, jframe({'op': 'exec_on_host', 'code': 'import os'}))",
    "deeply-nested-json": "os.write(OUT, frame(b'J', b'{\"op\": \"x\", \"a\": ' + b'[' * 200000))",
    "billion-prompts": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 7, 'count': 10**9, "
        "'blobs': 10**9, 'model': None}))"
    ),
    "negative-count": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 7, 'count': -1, "
        "'blobs': -1, 'model': None}))"
    ),
    "count-not-an-int": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 7, 'count': True, "
        "'blobs': 1, 'model': None}) + frame(b'B', b'hi'))"
    ),
    "id-not-an-int": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 'x', 'count': 1, "
        "'blobs': 1, 'model': None}) + frame(b'B', b'hi'))"
    ),
    "blobs-mismatch": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 7, 'count': 1, "
        "'blobs': 5, 'model': None}) + frame(b'B', b'hi') * 5)"
    ),
    "json-instead-of-prompt": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 7, 'count': 1, "
        "'blobs': 1, 'model': None}) + jframe({'op': 'ready'}))"
    ),
    "huge-prompt-frame": (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 7, 'count': 1, "
        "'blobs': 1, 'model': None}) + b'B' + (2**31).to_bytes(4, 'big'))"
    ),
    "rlm-contexts-mismatch": (
        "os.write(OUT, jframe({'op': 'rlm_query_batched', 'id': 7, 'count': 1, "
        "'contexts': True, 'blobs': 1}) + frame(b'B', b'hi'))"
    ),
    "sub-cancel-bad-id": "os.write(OUT, jframe({'op': 'sub_cancel', 'id': [1]}))",
}


@pytest.mark.parametrize("attack", list(_BROKEN.values()), ids=list(_BROKEN))
async def test_broken_frame_stops_the_worker(
    sandbox: IsolatedSandbox, handler: FakeHandler, attack: str
) -> None:
    await run(sandbox, "kept = 1")
    # The cell then waits: only the host's reaction (killing the worker) can end it soon.
    r = await _with_ticker(sandbox, RAW_WRITE + attack + "\ntime.sleep(8)")
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert not r.timed_out
    assert r.error is not None
    assert r.error.startswith("SandboxCrash: the REPL process broke the protocol (")
    assert "a fresh REPL was started. Variables lost: kept." in r.error
    assert handler.llm_calls == []
    assert handler.rlm_calls == []
    await _fresh_worker_answers(sandbox)


async def test_closing_the_channel(sandbox: IsolatedSandbox, handler: FakeHandler) -> None:
    await run(sandbox, "kept = 1")
    r = await _with_ticker(sandbox, RAW_WRITE + "os.close(OUT)\ntime.sleep(8)")
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert r.error is not None
    assert r.error.startswith("SandboxCrash: the REPL process stopped responding.")
    assert handler.llm_calls == []
    await _fresh_worker_answers(sandbox)


async def test_broken_frame_from_a_background_thread(
    sandbox: IsolatedSandbox, handler: FakeHandler
) -> None:
    """The attack fires after its cell has returned, between cells: the host stops the
    worker then, and the next cell runs in a fresh one, told what was lost."""
    await run(sandbox, "kept = 1")
    code = RAW_WRITE + (
        "import threading\n"
        "def later():\n"
        "    time.sleep(0.2)\n"
        "    os.write(OUT, b'\\x00garbage')\n"
        "threading.Thread(target=later, daemon=True).start()\n"
        "print('armed')"
    )
    r = await run(sandbox, code)
    assert r.stdout == "armed\n"
    assert not r.restarted
    await asyncio.sleep(0.5)
    r = await run(sandbox, "print('fresh', 'kept' in globals())")
    assert r.stdout == "fresh False\n"
    assert r.restarted
    assert r.error is not None
    assert r.error.startswith("Before this cell, the REPL process broke the protocol (")
    assert handler.llm_calls == []


# ------------------------------------------------- invalid requests: an error in the cell

_CALL = (
    "client = llm_query.__self__._sub_calls  # the worker's own channel to the host\n"
    "try:\n"
    "    client._call({message}, {blobs})\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)


@pytest.mark.parametrize(
    ("message", "blobs", "expected"),
    [
        pytest.param(
            "{'op': 'llm_query_batched', 'model': None, 'count': 1}",
            "[b'\\xff\\xfe not utf-8']",
            "RuntimeError prompt 0 is not valid UTF-8 text",
            id="invalid-utf8-prompt",
        ),
        pytest.param(
            "{'op': 'llm_query_batched', 'model': 123, 'count': 1}",
            "[b'hi']",
            "RuntimeError model must be a short str naming a model, or None",
            id="model-not-a-str",
        ),
        pytest.param(
            "{'op': 'llm_query_batched', 'model': ['gpt'], 'count': 1}",
            "[b'hi']",
            "RuntimeError model must be a short str naming a model, or None",
            id="model-a-list",
        ),
        pytest.param(
            "{'op': 'llm_query_batched', 'model': 'm' * 10_000, 'count': 1}",
            "[b'hi']",
            "RuntimeError model must be a short str naming a model, or None",
            id="model-too-long",
        ),
    ],
)
async def test_invalid_llm_request_is_refused(
    sandbox: IsolatedSandbox, handler: FakeHandler, message: str, blobs: str, expected: str
) -> None:
    await run(sandbox, "kept = 1")
    r = await _with_ticker(sandbox, _CALL.format(message=message, blobs=blobs))
    assert r.stdout == expected + "\n"
    assert not r.restarted
    assert handler.llm_calls == []
    r = await run(sandbox, "print(kept)")
    assert r.stdout == "1\n"


async def test_invalid_rlm_context_is_refused(
    sandbox: IsolatedSandbox, handler: FakeHandler
) -> None:
    message = "{'op': 'rlm_query_batched', 'contexts': True, 'count': 1}"
    r = await run(sandbox, _CALL.format(message=message, blobs="[b'hi', b'{not json']"))
    assert r.stdout.startswith("RuntimeError context 0 is not valid JSON data")
    assert not r.restarted
    assert handler.rlm_calls == []


async def test_invalid_utf8_prompt_in_raw_frame(
    sandbox: IsolatedSandbox, handler: FakeHandler
) -> None:
    """The same bad prompt as a hand-written frame nobody waits for: refused, ignored."""
    await run(sandbox, "kept = 1")
    code = RAW_WRITE + (
        "os.write(OUT, jframe({'op': 'llm_query_batched', 'id': 424242, 'count': 1, "
        "'blobs': 1, 'model': None}) + frame(b'B', b'\\xff\\xfe\\xfd'))\n"
        "time.sleep(0.2)\n"
        "print('sent')"
    )
    r = await _with_ticker(sandbox, code)
    assert r.stdout == "sent\n"
    assert not r.restarted
    assert handler.llm_calls == []
    r = await run(sandbox, "print(kept)")
    assert r.stdout == "1\n"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("llm_query(123)", "TypeError: llm_query expects a str prompt, got int"),
        ("llm_query(b'x')", "TypeError: llm_query expects a str prompt, got bytes"),
        (
            "llm_query_batched([b'x'])",
            "TypeError: llm_query_batched expects a str prompt, got bytes",
        ),
        (
            "llm_query_batched([None])",
            "TypeError: llm_query_batched expects a str prompt, got NoneType",
        ),
        ("llm_query_batched('abc')", "TypeError: llm_query_batched expects a list of prompts"),
        ("llm_query('x', model=123)", "TypeError: model must be a str, got int"),
        ("rlm_query_batched([1])", "TypeError: rlm_query_batched expects a str prompt, got int"),
    ],
    ids=[
        "llm-int",
        "llm-bytes",
        "batched-bytes",
        "batched-none",
        "batched-str",
        "model-int",
        "rlm-int",
    ],
)
async def test_non_string_prompt_is_a_type_error(
    sandbox: IsolatedSandbox, handler: FakeHandler, call: str, expected: str
) -> None:
    r = await run(sandbox, call)
    assert r.error is not None
    assert expected in r.error
    assert not r.restarted
    assert handler.llm_calls == []
    assert handler.rlm_calls == []


async def test_prompt_smuggling_frames_is_just_text(
    sandbox: IsolatedSandbox, handler: FakeHandler
) -> None:
    """A prompt holding frame headers and JSON reaches the handler as exactly that text,
    as exactly one call."""
    forged = json.dumps({"op": "llm_query_batched", "id": 1, "count": 1, "blobs": 1})
    prompt = "J\x00\x00\x00\x10" + forged + "B\x00\x00\x00\x02hi\udcff"
    r = await run(sandbox, f"print(llm_query({prompt!r}) == 'echo:' + {prompt!r})")
    assert r.stdout == "True\n"
    assert handler.llm_calls == [([prompt], None)]


# ------------------------------------------------ forged replies: only the cell's own result


async def test_forged_exec_result_is_sanitised(sandbox: IsolatedSandbox) -> None:
    """The cell answers its own request early with ill-typed fields: the host keeps only
    what has the right type and size."""
    code = RAW_WRITE + (
        "f = sys._getframe()\n"
        "while f.f_code.co_name != 'serve':\n"
        "    f = f.f_back\n"
        "request_id = f.f_locals['message']['id']\n"
        "os.write(OUT, jframe({'op': 'exec_result', 'id': request_id, 'result': {\n"
        "    'stdout': 123, 'stderr': ['x'], 'error': {'a': 1}, 'final': 5,\n"
        "    'timed_out': 'yes', 'duration_s': 'NaN', 'truncated_chars': -5},\n"
        "    'variables': 'not a list'}))\n"
        "time.sleep(0.2)\n"
        "print('the real output')"
    )
    r = await run(sandbox, code)
    assert r == ExecResult()
    r = await run(sandbox, "print('next')")
    assert r.stdout == "next\n"
    assert not r.restarted


async def test_forged_exec_result_is_bounded(open_sandbox: Opener) -> None:
    sandbox = await open_sandbox(max_output_chars=1000)
    code = RAW_WRITE + (
        "f = sys._getframe()\n"
        "while f.f_code.co_name != 'serve':\n"
        "    f = f.f_back\n"
        "request_id = f.f_locals['message']['id']\n"
        "os.write(OUT, jframe({'op': 'exec_result', 'id': request_id, 'result': {\n"
        "    'stdout': 'A' * 10**6, 'error': 'E' * 10**6, 'duration_s': 1e308},\n"
        "    'variables': ['v' * 1000] * 5000}))\n"
        "time.sleep(0.2)"
    )
    r = await run(sandbox, code)
    assert (r.stdout, r.error, r.restarted) == ("A" * 1200, "E" * 8000, False)
    # The forged variable list is what a crash reports as lost: capped too.
    r = await run(sandbox, "import os\nos.kill(os.getpid(), 9)")
    assert r.restarted
    assert r.lost_variables == ("v" * 200,) * 1000


async def test_forged_replies_to_nobody_are_ignored(
    sandbox: IsolatedSandbox, handler: FakeHandler
) -> None:
    await run(sandbox, "kept = 1")
    code = RAW_WRITE + (
        "os.write(OUT, jframe({'op': 'ready', 'layers': {}}))\n"
        "os.write(OUT, jframe({'op': 'exec_result', 'id': 999999, 'result': {'stdout': 'x'}}))\n"
        "os.write(OUT, jframe({'op': 'context_loaded', 'id': -1}))\n"
        "os.write(OUT, jframe({'op': 'sub_cancel', 'id': 31337}))\n"
        "time.sleep(0.2)\n"
        "print('the real output', kept)"
    )
    r = await _with_ticker(sandbox, code)
    assert r.stdout == "the real output 1\n"
    assert not r.restarted
    assert handler.llm_calls == []

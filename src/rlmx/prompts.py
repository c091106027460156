"""The prompts the root model sees: the system prompt, the per-turn user messages.

The system prompt follows the RLM paper's: the context is *not* in the prompt, it is a
variable in a REPL; the model is told what it is (type, size, item lengths), which
functions it may call, its budget, and how to finish. Everything is plain text built by
pure functions, so a custom ``system_prompt`` can reuse the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlmx.context import ContextDescription

__all__ = [
    "PromptInputs",
    "build_system_prompt",
    "final_answer_now",
    "first_user_message",
    "format_cell_observation",
    "next_step_message",
]


@dataclass(frozen=True, slots=True)
class PromptInputs:
    context: ContextDescription
    depth: int
    max_depth: int
    max_iterations: int
    sub_model: str | None
    sub_model_window: int | None
    can_recurse: bool
    """``rlm_query`` starts a child RLM (``False``: it is a plain model call)."""
    budget_note: str | None = None
    worked_example: bool = False


_INTRO = """\
You are answering a query about a context that is far too large to read at once. The \
context is not in this conversation: it is stored in the variable `context` inside a \
persistent Python REPL. You work by writing Python code that the REPL runs; you see \
what the code prints, then write more code, until you can answer.

{context_summary}
"""

_REPL_BASICS = """\
The REPL gives you:
- `context`: the data. Inspect its structure and size before anything else.
- `peek(start=0, end=2000)`: characters [start, end) of the context's text.
- `grep(pattern, max_matches=20, context=0)`: regex search over the context's text; \
returns lines as "L<line>@<offset>: <text>" with `context` lines around each hit.
- `chunk(mode="chars"|"lines", size=100000, overlap=0)`: the context's text split into pieces.
- `select(ranges)`: the text of character ranges [(start, end), ...], joined.
- `SHOW_VARS()`: the variables you have created.
- `FINAL(value)`: finish with `value` as the answer. `FINAL_VAR(name)`: finish with the \
variable named `name`.
"""

_SUB_CALLS = """\
- `llm_query(prompt, model=None) -> str`: ask a language model ({sub_model}) about a \
piece of text you put in the prompt.{window} It cannot see `context` or your variables: \
include what it needs.
- `llm_query_batched(prompts, model=None) -> list[str]`: many prompts at once, run \
concurrently; much faster than a loop of `llm_query`. Answers keep the prompts' order; a \
failed prompt gives a string starting with "Error:".
- `rlm_query(prompt, context=None) -> str` and `rlm_query_batched(prompts, contexts=None)`: \
{rlm_description}
"""

_RLM_CHILD = (
    "hand a sub-problem to a recursive agent like you, with its own REPL whose `context` "
    "is the `context` you pass (a str, list or dict). Use it for pieces that need "
    "their own exploration."
)
_RLM_PLAIN = (
    "at this depth these behave like `llm_query` (the `context` you pass is appended to "
    "the prompt)."
)

_RULES = """\
How to work:
- Write code in a fenced block that starts with ```repl (```python also works). You may \
write several blocks in one reply; they run in order.
- Output longer than a few thousand characters is cut: print summaries, lengths and \
slices, not whole documents. A bare expression on a cell's last line is printed for you.
- Variables persist between cells. Keep your answer-in-progress in a variable named \
`answer`: if the budget runs out, it is returned as the partial answer.
{strategy}- You have at most {max_iterations} turns{budget}.
- When you know the answer, reply with FINAL(your answer) on its own line, outside any \
code block, or call FINAL(...) / FINAL_VAR("name") inside code. Do not write FINAL in \
the same reply as code whose output you have not seen yet.
"""

_STRATEGY_SUB = """\
- The context is too large for one model call: chunk it, use `llm_query_batched` on \
the chunks, and combine the answers in code.
"""
_STRATEGY_NONE = """\
- You have no sub-model: solve the task with code (search, count, parse) over `context`.
"""

_EXAMPLE = """\
Example of a good first turn:
```repl
print(type(context), len(context))
print(peek(0, 500))
```
and later, with sub-calls available:
```repl
pieces = chunk("chars", 200000)
answers = llm_query_batched([f"List every date in this text:\\n{p}" for p in pieces])
dates = [d for a in answers for d in a.splitlines() if d.strip()]
print(len(dates), dates[:10])
```
"""


def build_system_prompt(inputs: PromptInputs) -> str:
    parts = [
        _INTRO.format(context_summary=inputs.context.summary()),
        _REPL_BASICS,
    ]
    has_sub_calls = inputs.depth < inputs.max_depth
    if has_sub_calls:
        window = (
            f" It reads about {inputs.sub_model_window:,} tokens at most (roughly "
            f"{inputs.sub_model_window * 3:,} characters)."
            if inputs.sub_model_window
            else ""
        )
        parts.append(
            _SUB_CALLS.format(
                sub_model=inputs.sub_model or "the sub-model",
                window=window,
                rlm_description=_RLM_CHILD if inputs.can_recurse else _RLM_PLAIN,
            )
        )
    budget = f"; {inputs.budget_note}" if inputs.budget_note else ""
    parts.append(
        _RULES.format(
            strategy=_STRATEGY_SUB if has_sub_calls else _STRATEGY_NONE,
            max_iterations=inputs.max_iterations,
            budget=budget,
        )
    )
    if inputs.worked_example:
        parts.append(_EXAMPLE)
    return "\n".join(parts)


def first_user_message(query: str | None) -> str:
    if query:
        return (
            f"The query: {query}\n\nYou have not looked at the context yet. Start by "
            "inspecting it with code; do not answer before you have seen it."
        )
    return (
        "There is no separate query: the task is described inside the context. Start by "
        "inspecting the context with code to find it."
    )


def next_step_message(query: str | None, iteration: int, max_iterations: int) -> str:
    left = max_iterations - iteration
    reminder = f' Remember the query: "{query}"' if query else ""
    return (
        f"Turn {iteration + 1} of {max_iterations} ({left} left).{reminder} Continue with "
        "code, or give FINAL(answer) if the outputs above settle it."
    )


def format_cell_observation(
    index: int,
    total: int,
    stdout: str,
    stderr: str,
    error: str | None,
    truncated_chars: int,
    max_output_chars: int,
    timed_out: bool,
    restarted: bool,
    lost_variables: tuple[str, ...],
) -> str:
    """What the model is shown after one cell ran."""
    header = f"[cell {index + 1}/{total} output]" if total > 1 else "[cell output]"
    body: list[str] = []
    if stdout:
        body.append(stdout.rstrip("\n"))
    if stderr:
        body.append("[stderr]\n" + stderr.rstrip("\n"))
    if error:
        body.append(error.rstrip("\n"))
    if not body:
        body.append("(no output: print what you want to see)")
    if truncated_chars:
        body.append(
            f"[output truncated: {truncated_chars:,} characters not shown; the limit is "
            f"{max_output_chars:,}. Print less: lengths, slices, or summaries.]"
        )
    if timed_out:
        body.append("[the cell hit its time limit; make it faster or work on smaller pieces]")
    if restarted:
        lost = ", ".join(lost_variables) if lost_variables else "all of them"
        body.append(f"[the REPL was restarted: variables were lost ({lost}); `context` is back]")
    return header + "\n" + "\n".join(body)


def final_answer_now(reason: str) -> str:
    return (
        f"{reason} Give your final answer now, based on what you have found: reply with "
        "FINAL(your answer). Do not write code."
    )

"""Tests for rlmx.parsing: code fences, final-answer markers and their precedence."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmx.parsing import FinalMarker, ParsedReply, format_help, parse_reply


def value(payload: str) -> FinalMarker:
    return FinalMarker("value", payload)


def var(name: str) -> FinalMarker:
    return FinalMarker("var", name)


# --- code fences -------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["repl", "python", "py", "python3", "ipython", "REPL", "Python"])
def test_code_language_fences_are_code(tag: str) -> None:
    reply = parse_reply(f"Let me look.\n```{tag}\nprint(1)\n```\nThen more text.")
    assert reply == ParsedReply(("print(1)",), None, False, False)


def test_tag_followed_by_attributes_still_counts() -> None:
    assert parse_reply("```python title=x\nx = 1\n```").code_blocks == ("x = 1",)


def test_pandoc_style_braced_tag() -> None:
    assert parse_reply("```{python}\nx = 1\n```").code_blocks == ("x = 1",)


@pytest.mark.parametrize("tag", ["json", "text", "bash", "output", "sh", "markdown"])
def test_other_language_fences_are_never_code(tag: str) -> None:
    # The content compiles as Python, so only the tag keeps it out.
    reply = parse_reply(f"```{tag}\nprint(1)\n```")
    assert reply == ParsedReply((), None, False, False)


def test_multiple_blocks_keep_their_order() -> None:
    text = "```repl\na = 1\n```\nsome text\n```python\nb = 2\n```\n```json\n{}\n```\n```py\nc\n```"
    assert parse_reply(text).code_blocks == ("a = 1", "b = 2", "c")


def test_multiline_code_is_kept_verbatim() -> None:
    code = "def f(x):\n    return x + 1\n\n\nprint(f(2))\n"
    assert parse_reply(f"```repl\n{code}\n```").code_blocks == (code,)


def test_fence_indented_up_to_three_spaces() -> None:
    text = "1. step one\n   ```repl\n   x = 1\n   if x:\n       print(x)\n   ```"
    assert parse_reply(text).code_blocks == ("x = 1\nif x:\n    print(x)",)


def test_fence_indented_four_spaces_is_not_a_fence() -> None:
    assert parse_reply("    ```repl\n    x = 1\n    ```").code_blocks == ()


def test_longer_fence_contains_shorter_ones() -> None:
    text = "````python\ns = '''\n```\ninner\n```\n'''\n````"
    assert parse_reply(text).code_blocks == ("s = '''\n```\ninner\n```\n'''",)


def test_closing_fence_needs_at_least_as_many_backticks() -> None:
    text = "````repl\nx = 1\n```\ny = 2\n`````\nafter"
    assert parse_reply(text).code_blocks == ("x = 1\n```\ny = 2",)


def test_inline_triple_backticks_are_not_a_fence() -> None:
    assert parse_reply("Use ```print(1)``` maybe.\n```print(1)```") == ParsedReply(
        (), None, False, False
    )


def test_tilde_fences_are_not_fences() -> None:
    assert parse_reply("~~~python\nprint(1)\n~~~").code_blocks == ()


def test_empty_code_blocks_are_dropped() -> None:
    text = "```repl\n```\n```python\n   \n\t\n```\n```repl\nx = 1\n```"
    assert parse_reply(text).code_blocks == ("x = 1",)


# --- split fences ------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["repl", "python", "PY", "  python3  "])
def test_split_fence_tag_on_next_line(tag: str) -> None:
    reply = parse_reply(f"```\n{tag}\nprint(1)\n```")
    assert reply.code_blocks == ("print(1)",)


def test_split_fence_counts_as_tagged_for_the_fallback() -> None:
    # The bare block compiles, but the split fence is a tagged code fence, so it is skipped.
    text = "```\nrepl\nx = 1\n```\n```\ny = 2\n```"
    assert parse_reply(text).code_blocks == ("x = 1",)


def test_split_tag_must_be_alone_on_its_line() -> None:
    # "python x" is not a tag line, and does not compile, so nothing runs.
    assert parse_reply("```\npython x\nprint(1)\n```").code_blocks == ()


# --- bare-fence fallback -----------------------------------------------------------------


def test_bare_fence_is_code_when_nothing_is_tagged_and_it_compiles() -> None:
    assert parse_reply("```\nx = [1, 2]\nprint(x)\n```").code_blocks == ("x = [1, 2]\nprint(x)",)


def test_bare_fence_that_does_not_compile_is_not_code() -> None:
    assert parse_reply("```\nThe answer is 42.\n```") == ParsedReply((), None, False, False)


def test_bare_fence_ignored_when_a_tagged_code_fence_exists() -> None:
    text = "```\nprint('example output')\n```\n```repl\nprint(2)\n```"
    assert parse_reply(text).code_blocks == ("print(2)",)


def test_bare_fence_ignored_even_when_the_tagged_fence_comes_later_and_is_empty() -> None:
    assert parse_reply("```\nprint(1)\n```\n```repl\n```").code_blocks == ()


def test_bare_fence_with_other_tag_fence_still_falls_back() -> None:
    assert parse_reply("```json\n{}\n```\n```\nx = 1\n```").code_blocks == ("x = 1",)


def test_bare_fence_with_nul_byte_does_not_compile_and_does_not_raise() -> None:
    assert parse_reply("```\nx = '\x00'\n```").code_blocks == ()


def test_bare_fence_with_deep_nesting_does_not_raise() -> None:
    assert parse_reply("```\n" + "(" * 5000 + "1" + ")" * 5000 + "\n```").code_blocks == ()
    assert parse_reply("```\n" + "-" * 100_000 + "1\n```") is not None


def test_compile_warnings_do_not_reject_code() -> None:
    # An invalid escape warns at compile time; pytest turns warnings into errors here.
    assert parse_reply("```\nprint('\\d')\n```").code_blocks == ("print('\\d')",)


def test_top_level_await_counts_as_compiling() -> None:
    assert parse_reply("```\nx = await f()\n```").code_blocks == ("x = await f()",)


# --- unclosed fences ---------------------------------------------------------------------


def test_unclosed_code_fence_that_compiles_is_used() -> None:
    reply = parse_reply("Running:\n```repl\nx = 1\nprint(x)\n")
    assert reply == ParsedReply(("x = 1\nprint(x)\n",), None, False, False)


def test_unclosed_code_fence_that_does_not_compile_is_ignored() -> None:
    reply = parse_reply("```repl\nx = 1\nresult = llm_query(")
    assert reply == ParsedReply((), None, False, True)


def test_unclosed_fence_after_complete_block_keeps_the_complete_block() -> None:
    reply = parse_reply("```repl\na = 1\n```\n```repl\nfor x in")
    assert reply == ParsedReply(("a = 1",), None, False, True)


@pytest.mark.parametrize("opening", ["```", "```json", "```text"])
def test_unclosed_non_code_fence_is_flagged(opening: str) -> None:
    assert parse_reply(f"{opening}\nx = 1\n") == ParsedReply((), None, False, True)


def test_unclosed_split_fence_that_compiles_is_used() -> None:
    assert parse_reply("```\nrepl\nx = 1").code_blocks == ("x = 1",)


def test_unclosed_empty_code_fence_is_flagged() -> None:
    assert parse_reply("text\n```repl\n") == ParsedReply((), None, False, True)


# --- FINAL markers -----------------------------------------------------------------------


def test_final_alone() -> None:
    assert parse_reply("I have the answer.\nFINAL(42)") == ParsedReply(
        (), value("42"), False, False
    )


def test_final_var_alone() -> None:
    assert parse_reply("FINAL_VAR(result)").final == var("result")


@pytest.mark.parametrize(
    "text",
    ['FINAL_VAR("result")', "FINAL_VAR('result')", "FINAL_VAR( result )", "FINAL_VAR(`result`)"],
)
def test_final_var_strips_quotes_and_spaces(text: str) -> None:
    assert parse_reply(text).final == var("result")


def test_final_before_code_wins_and_drops_the_code() -> None:
    reply = parse_reply("FINAL(Paris)\n```repl\nprint(1)\n```")
    assert reply == ParsedReply((), value("Paris"), False, False)


def test_final_after_code_is_ignored() -> None:
    reply = parse_reply("```repl\nx = compute()\n```\nFINAL(42)")
    assert reply == ParsedReply(("x = compute()",), None, True, False)


def test_final_var_after_code_is_ignored() -> None:
    reply = parse_reply("```python\nanswer = 1\n```\nFINAL_VAR(answer)")
    assert reply == ParsedReply(("answer = 1",), None, True, False)


def test_final_after_a_non_code_fence_is_accepted() -> None:
    reply = parse_reply("```output\n42\n```\nFINAL(42)")
    assert reply == ParsedReply((), value("42"), False, False)


def test_final_after_an_empty_code_fence_is_accepted() -> None:
    assert parse_reply("```repl\n\n```\nFINAL(42)").final == value("42")


def test_final_after_bare_fence_that_is_code_is_ignored() -> None:
    reply = parse_reply("```\nx = 1\n```\nFINAL(1)")
    assert reply == ParsedReply(("x = 1",), None, True, False)


def test_final_inside_a_fence_is_code_not_a_marker() -> None:
    reply = parse_reply("```repl\nFINAL(42)\n```")
    assert reply == ParsedReply(("FINAL(42)",), None, False, False)


def test_final_inside_a_text_fence_is_not_a_marker() -> None:
    assert parse_reply("```text\nFINAL(42)\n```") == ParsedReply((), None, False, False)


def test_first_of_several_finals_wins() -> None:
    assert parse_reply("FINAL(first)\nFINAL(second)\nFINAL_VAR(third)").final == value("first")
    assert parse_reply("FINAL_VAR(a)\nFINAL(b)").final == var("a")


def test_first_final_before_code_wins_over_later_final() -> None:
    reply = parse_reply("FINAL(1)\n```repl\nx\n```\nFINAL(2)")
    assert reply == ParsedReply((), value("1"), False, False)


def test_multiline_final() -> None:
    reply = parse_reply("FINAL(The answer has\ntwo lines.\n)\ntrailing text")
    assert reply.final == value("The answer has\ntwo lines.")


def test_nested_parentheses() -> None:
    assert parse_reply("FINAL(f(x) (y))").final == value("f(x) (y)")


def test_text_after_closing_paren_is_not_part_of_the_payload() -> None:
    assert parse_reply("FINAL(42) because (reasons)").final == value("42")


@pytest.mark.parametrize(
    ("text", "payload"),
    [
        ('FINAL("Paris")', "Paris"),
        ("FINAL('Paris')", "Paris"),
        ("FINAL('''multi\nline''')", "multi\nline"),
        ('FINAL("""a\n(b\n""")', "a\n(b\n"),
        ('FINAL("a)b")', "a)b"),
        ("FINAL('it\\'s')", "it's"),
        ('FINAL(  "spaced"  )', "spaced"),
        ('FINAL("""a \\""" (b""")', 'a """ (b'),
    ],
)
def test_quoted_payload_is_unquoted(text: str, payload: str) -> None:
    assert parse_reply(text).final == value(payload)


@pytest.mark.parametrize(
    "payload",
    ['"Paris" is the answer', "f'{x}'", "b'bytes'", "'unterminated", '"a" + "b"', "123"],
)
def test_payload_that_is_not_a_single_string_literal_stays_raw(payload: str) -> None:
    assert parse_reply(f"FINAL({payload})").final == value(payload)


def test_unterminated_triple_quote_falls_back_to_plain_matching() -> None:
    assert parse_reply('FINAL("""never closed (x) y)').final == value('"""never closed (x) y')
    assert parse_reply("FINAL('twas (so)\nsaid) x").final == value("'twas (so)\nsaid")


def test_apostrophes_in_prose_do_not_break_paren_matching() -> None:
    assert parse_reply("FINAL(it's 5) and Bob's (x)").final == value("it's 5")
    assert parse_reply("FINAL(it's roughly (about) 5)").final == value("it's roughly (about) 5")


def test_unbalanced_payload_runs_to_the_last_closing_paren() -> None:
    assert parse_reply("FINAL(a (b\nmore) text) end ( x").final == value("a (b\nmore) text")
    assert parse_reply("FINAL((a\nb)").final == value("(a\nb")


def test_payload_without_any_closing_paren_takes_the_rest_of_the_line() -> None:
    assert parse_reply("FINAL(no closing paren\nnext line").final == value("no closing paren")
    assert parse_reply("FINAL(  at the end  ").final == value("at the end")


@pytest.mark.parametrize(
    "text",
    [
        "**FINAL(42)**",
        "  FINAL(42)",
        "> FINAL(42)",
        "- FINAL(42)",
        "* FINAL(42)",
        "## FINAL(42)",
        "> **FINAL(42)**",
        "1. FINAL(42)",
        "`FINAL(42)`",
        "**FINAL(42**",
        "FINAL (42)",
    ],
)
def test_markdown_decorated_final(text: str) -> None:
    assert parse_reply(text).final == value("42")


def test_markdown_decorated_final_var() -> None:
    assert parse_reply("**FINAL_VAR(answer)**").final == var("answer")


@pytest.mark.parametrize(
    "text",
    [
        "MY_FINAL(42)",
        "NOT_FINAL(42)",
        "xFINAL(42)",
        "The FINAL(42) comes mid-line",
        "FINAL answer: 42",
        "final(42)",
        "FINAL_VARIABLE(x)",
        "FINALLY(x)",
    ],
)
def test_non_markers_are_not_matched(text: str) -> None:
    assert parse_reply(text) == ParsedReply((), None, False, False)


def test_final_var_is_not_parsed_as_final() -> None:
    reply = parse_reply("FINAL_VAR(x)")
    assert reply.final is not None
    assert reply.final.kind == "var"


def test_final_with_empty_payload() -> None:
    assert parse_reply("FINAL()").final == value("")


def test_final_payload_may_contain_a_code_fence() -> None:
    text = 'FINAL("""Use this:\n```python\nprint(1)\n```\n""")'
    assert parse_reply(text).final == value("Use this:\n```python\nprint(1)\n```\n")


def test_many_asterisks_do_not_backtrack_catastrophically() -> None:
    started = time.perf_counter()
    parse_reply("*" * 5000 + "FINALx(")
    parse_reply("1" * 5000 + "FINAL x")
    assert time.perf_counter() - started < 2


# --- line endings ------------------------------------------------------------------------


def test_windows_line_endings() -> None:
    text = "Plan:\r\n```repl\r\nx = 1\r\nprint(x)\r\n```\r\n"
    assert parse_reply(text).code_blocks == ("x = 1\nprint(x)",)


def test_windows_line_endings_split_fence_and_final() -> None:
    assert parse_reply("```\r\nrepl\r\nx = 1\r\n```").code_blocks == ("x = 1",)
    assert parse_reply("FINAL(a\r\nb)\r\n").final == value("a\nb")
    assert parse_reply("```repl\r\nx\r\n```\r\nFINAL(1)\r\n").ignored_final


# --- format_help -------------------------------------------------------------------------


def test_format_help_shows_the_exact_forms() -> None:
    text = format_help()
    assert "```repl" in text
    assert "FINAL(" in text
    assert "FINAL_VAR(" in text


def test_format_help_example_code_parses_as_code() -> None:
    # The example in the help must itself be a fence the parser accepts.
    code = format_help().split("```repl\n", 1)[1].split("```", 1)[0]
    assert parse_reply(f"```repl\n{code}```").code_blocks
    assert parse_reply(format_help()).code_blocks


# --- properties --------------------------------------------------------------------------

FRAGMENTS = [
    "```",
    "````",
    "repl",
    "python",
    "json",
    "\n",
    "\r\n",
    " ",
    "FINAL(",
    "FINAL_VAR(",
    "(",
    ")",
    "'",
    '"',
    "'''",
    '"""',
    "\\",
    "**",
    "> ",
    "x = 1",
    "\x00",
]

fragment_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40
).map("".join)


def check_invariants(reply: ParsedReply) -> None:
    assert isinstance(reply, ParsedReply)
    assert all(isinstance(block, str) and block.strip() for block in reply.code_blocks)
    if reply.final is not None:
        assert reply.code_blocks == ()
        assert not reply.ignored_final
        assert reply.final.kind in ("value", "var")
        assert isinstance(reply.final.payload, str)


@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    check_invariants(parse_reply(text))


@settings(max_examples=500)
@given(fragment_text)
def test_never_raises_on_fragment_soup(text: str) -> None:
    check_invariants(parse_reply(text))


@given(st.text(alphabet=st.characters(blacklist_characters="`\r")).filter(str.strip))
def test_python_fence_round_trips(code: str) -> None:
    reply = parse_reply(f"```python\n{code}\n```")
    assert reply == ParsedReply((code,), None, False, False)


@given(st.text(alphabet=st.characters(blacklist_characters="`")).filter(lambda s: "FINAL" not in s))
def test_text_without_backticks_or_final_is_empty(text: str) -> None:
    assert parse_reply(text) == ParsedReply((), None, False, False)

"""The checker machinery: right answers pass, wrong ones name the case, stubs are skipped, garbage is explained."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labutils import checks
from labutils.checks import Case, CheckFailed, Exercise, compare, run_cases
from labutils.start_here import check_matmul_flops, check_tensor_bytes

EX = Exercise("99_test", "99.1", "square")
CASES = [Case(f"x={x}", (x,), x * x) for x in (0.0, 1.5, -3.0)]


def test_right_answer_passes_and_is_recorded(capsys):
    assert run_cases(EX, lambda x: x * x, CASES) is None  # a check cell shows no stray value
    assert "all 3 cases pass" in capsys.readouterr().out
    record = json.loads(checks.progress_file().read_text())
    assert record["99_test"]["square"]["number"] == "99.1"
    assert checks.session_status("99_test")["99.1"] == "passed"


def test_wrong_answer_names_the_case(capsys):
    with pytest.raises(CheckFailed, match="1 of 3 cases failed"):
        run_cases(EX, lambda x: x * abs(x), CASES, hint="multiply x by itself")
    out = capsys.readouterr().out
    assert "✗ case 3 (x=-3.0): expected 9, got -9 (got − expected = -18" in out and "hint: multiply x by itself" in out


def test_stub_is_not_attempted(capsys):
    def stub(x):
        raise NotImplementedError("Exercise 99.1")

    checks.reset_session()
    run_cases(EX, stub, CASES)
    assert "not attempted yet" in capsys.readouterr().out
    assert checks.session_status("99_test")["99.1"] == "not attempted"


def test_learner_exception_is_one_line(capsys):
    with pytest.raises(CheckFailed):
        run_cases(EX, lambda x: 1 / 0, CASES)
    assert "your function raised ZeroDivisionError" in capsys.readouterr().out


def test_not_a_function(capsys):
    with pytest.raises(CheckFailed):
        run_cases(EX, 42, CASES)
    assert "expected a function" in capsys.readouterr().out


def test_checkfailed_renders_one_line():
    assert CheckFailed("x")._render_traceback_() == ["CheckFailed: x"]


@pytest.mark.parametrize("got, words", [
    (None, "forget to `return`"),
    ("nine", "expected a number"),
    (float("nan"), "not finite"),
    (np.ones(3), "expected a number"),
])
def test_garbage_scalars(got, words):
    assert words in compare(got, 9.0)


@pytest.mark.parametrize("got, words", [
    (np.ones((2, 2)), "expected shape (3,)"),
    (np.array([1.0, np.nan, 3.0]), "NaN"),
    (np.array(["a", "b", "c"]), "dtype"),
    (torch.tensor([1.0, 2.0, 4.0]), "1 of 3 entries differ"),
    ("abc", "expected an array"),
])
def test_garbage_arrays(got, words):
    assert words in compare(got, np.array([1.0, 2.0, 3.0]))


def test_tensors_and_tuples_compare():
    assert compare(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0])) is None
    assert compare((1, np.array([2.0])), (1, np.array([2.0]))) is None
    assert "tuple of 2" in compare(5, (1, 2))


odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
    st.lists(st.floats(), max_size=4), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.builds(lambda n: np.full(n, np.nan), st.integers(0, 3)),
    st.builds(lambda n: torch.zeros(n, dtype=torch.int8), st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None)
@given(odd_values)
def test_checkers_never_crash_on_garbage(value):
    """Any return value gives a verdict: pass, or CheckFailed with a reason — never another exception."""
    for checker in (check_matmul_flops, check_tensor_bytes):
        try:
            checker(lambda *args, v=value: v)
        except CheckFailed:
            pass


def test_real_checkers_accept_reference_and_reject_wrong():
    check_matmul_flops(lambda m, k, n: 2 * m * k * n)
    with pytest.raises(CheckFailed):
        check_matmul_flops(lambda m, k, n: m * k * n)
    check_tensor_bytes(lambda s, d: int(np.prod(s)) * torch.empty((), dtype=d).element_size())
    with pytest.raises(CheckFailed):
        check_tensor_bytes(lambda s, d: int(np.prod(s)) * 4)


def test_progress_table_and_cli(capsys):
    run_cases(EX, lambda x: x * x, CASES)
    assert "99_test: 1 of 1 exercises passed" in checks.progress_table("99_test")
    from labutils.__main__ import main

    assert main(["progress"]) == 0
    out = capsys.readouterr().out
    assert "00_start_here" in out and "matmul_flops" in out


def test_progress_widget_reports_this_run():
    check_matmul_flops(lambda m, k, n: 2 * m * k * n)
    w = checks.progress_widget("00_start_here")
    assert "matmul_flops" in w.value and "passed" in w.value


def test_progress_file_is_temporary():
    """The suite must never write a learner's real record (conftest points it at a temp folder)."""
    assert "labutils-tests-" in str(checks.progress_file())


@pytest.fixture
def fresh_record(tmp_path, monkeypatch):
    """A private progress record and a clean kernel session for one test."""
    monkeypatch.setenv("LABUTILS_PROGRESS_FILE", str(tmp_path / "progress.json"))
    checks.reset_session()
    yield tmp_path / "progress.json"
    checks.reset_session()


def test_a_later_failure_clears_the_pass(fresh_record):
    run_cases(EX, lambda x: x * x, CASES)
    assert "square" in checks.load_progress()["99_test"]
    with pytest.raises(CheckFailed):
        run_cases(EX, lambda x: x * abs(x), CASES)
    assert "square" not in checks.load_progress().get("99_test", {})
    assert "0 of 1 exercises passed" in checks.progress_table("99_test")


def test_an_old_record_survives_renumbering_and_stale_entries_are_hidden(fresh_record):
    # The record as it was written before exercises were keyed by name: keyed by number.
    fresh_record.write_text(json.dumps({"99_test": {
        "9.1": {"name": "square", "passed_at": "2026-01-01T00:00:00"},
        "9.7": {"name": "removed_exercise", "passed_at": "2026-01-01T00:00:00"}}}))
    table = checks.progress_table("99_test")
    assert "1 of 1 exercises passed" in table and "square" in table and "removed_exercise" not in table
    run_cases(EX, lambda x: x * x, CASES)  # a new pass keeps the stale entry in the file, unshown
    record = json.loads(fresh_record.read_text())
    assert "removed_exercise" in record["99_test"] and record["99_test"]["square"]["number"] == "99.1"


def test_exercise_numbers_carry_the_notebook_number():
    with pytest.raises(ValueError, match="'98.k'"):
        Exercise("98_other", "1.1", "square")
    with pytest.raises(ValueError, match="identifier"):
        Exercise("98_other", "98.1", "not a name")


def test_use_picks_the_learner_only_after_that_function_passed(fresh_record, capsys):
    def square(x):
        return x * x

    def reference(x):
        return x**2

    assert checks.use(square, reference) is reference  # not checked yet
    assert "course's reference for square (Exercise 99.1 has not passed" in capsys.readouterr().out
    run_cases(EX, square, CASES)
    assert checks.use(square, reference) is square
    assert "Using your square (it passed Exercise 99.1" in capsys.readouterr().out

    def square(x):  # redefined: a new object that has not passed
        return x * abs(x)

    assert checks.use(square, reference) is reference
    with pytest.raises(CheckFailed):
        run_cases(EX, square, CASES)
    assert checks.use(square, reference) is reference


def test_use_falls_back_after_a_skip(fresh_record, capsys):
    def square(x):
        raise NotImplementedError

    run_cases(EX, square, CASES)
    assert checks.use(square, abs) is abs


def test_failing_numbers_print_enough_digits_and_the_difference():
    why = compare(0.029571234, 0.029572, rtol=1e-6)  # equal to 4 digits: a false alarm if printed that way
    assert why.startswith("expected 0.029572, got 0.029571 (got − expected = -7.66e-07)"), why
    assert "got/expected = 2" in compare(2.0, 1.0)


def test_diagnose_names_the_mistake(capsys):
    with pytest.raises(CheckFailed):
        run_cases(EX, lambda x: 2 * x * x, CASES[1:],
                  diagnose=lambda got, exp, case: "you doubled it" if got == 2 * exp else None)
    assert "likely mistake: you doubled it" in capsys.readouterr().out

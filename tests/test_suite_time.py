"""bench/suite_time.py (the test command's time from a fresh clone) and the README sentence
bench/readme.py makes of its rows."""
from bench.readme import suite_time_text
from bench.suite_time import closing_line, failed_lines


def test_the_closing_line_is_pytests_last_summary_line():
    output = ("..F.\n=== FAILURES ===\n1 failed, 3 passed in 2.00s is not this line\n"
              "========= 1 failed, 276 passed, 62 warnings in 419.12s (0:06:59) =========\n")
    assert closing_line(output) == "1 failed, 276 passed, 62 warnings in 419.12s (0:06:59)"
    assert closing_line("make: *** [test] Error 2\n") == ""


def test_the_readme_sentence_gives_the_newest_commits_runs_and_says_when_one_failed():
    row = {"commit": "new", "machine": "x86_64, 2 cores", "pytest": ""}
    rows = [{**row, "commit": "old", "workers": "2", "seconds": "900", "exit_status": "0"},
            {**row, "workers": "2", "seconds": "420", "exit_status": "0"},
            {**row, "workers": "2", "seconds": "450", "exit_status": "0"},
            {**row, "workers": "1", "seconds": "600", "exit_status": "1"}]
    text = suite_time_text(rows)
    assert "on a 2-core machine" in text
    assert "`CI=1 bash .ci/run` took 7.0 to 7.5 min in 2 runs;" in text  # not the old commit's 15
    assert "in one process took 10.0 min, 1 of them failing" in text


def test_a_failed_runs_summary_names_its_failures():
    output = ("tests/a.py::t PASSED\nFAILED tests/b.py::test_x - AssertionError\n"
              "make: *** [Makefile:28: test] Error 1\n")
    assert failed_lines(output) == ["FAILED tests/b.py::test_x - AssertionError",
                                    "make: *** [Makefile:28: test] Error 1"]

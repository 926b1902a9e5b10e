"""Job logs: a failing workflow script names its error on the console, with the traceback in its log."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import textwrap

from sourcelens import logs


@contextlib.contextmanager
def restored_streams():
    """Undo log_to_file's redirection of stderr, its excepthook and logging set-up (inside the test
    call: pytest swaps sys.stderr itself between set-up, call and teardown)."""
    stderr, hook = sys.stderr, sys.excepthook
    try:
        yield
    finally:
        if sys.stderr is not stderr:
            sys.stderr.close()
        sys.stderr, sys.excepthook = stderr, hook
        logging.basicConfig(stream=stderr, force=True)


def test_uncaught_exception_goes_to_log_and_one_line_to_console(tmp_path, capsys):
    log_path = tmp_path / "logs" / "job.log"
    with restored_streams():
        logs.log_to_file(log_path).info("started")
        try:
            raise ValueError("results/data/x.h5 is truncated")
        except ValueError:
            sys.excepthook(*sys.exc_info())
    err = capsys.readouterr().err
    assert err == f"ValueError: results/data/x.h5 is truncated (full traceback in {log_path})\n"
    text = log_path.read_text()
    assert "started" in text and "Traceback (most recent call last)" in text
    assert "ValueError: results/data/x.h5 is truncated" in text


def test_second_redirection_still_reports_to_the_console(tmp_path, capsys):
    with restored_streams():
        logs.log_to_file(tmp_path / "a.log")
        with restored_streams():
            logs.log_to_file(tmp_path / "b.log")
            try:
                raise KeyError("x")
            except KeyError:
                sys.excepthook(*sys.exc_info())
    assert f"KeyError: 'x' (full traceback in {tmp_path / 'b.log'})" in capsys.readouterr().err


SNAKEFILE = textwrap.dedent('''
    rule all:
        input:
            "out.txt",


    rule make_bad:
        output:
            "data/bad.h5",
        run:
            import numpy as np
            import pandas as pd
            from sourcelens.io import write_dataset

            write_dataset(output[0], {"images": np.ones((50, 32, 32))}, pd.DataFrame({"i": range(50)}),
                          kind="stamps")
            with open(output[0], "r+b") as fh:
                fh.truncate(2000)


    rule read_bad:
        input:
            "data/bad.h5",
        output:
            "out.txt",
        log:
            "logs/read_bad.log",
        script:
            "read_bad.py"
    ''')

SCRIPT = textwrap.dedent('''
    from sourcelens.logs import log_to_file

    log = log_to_file(snakemake.log[0])
    from sourcelens.io import read_dataset

    read_dataset(snakemake.input[0])
    open(snakemake.output[0], "w").write("read\\n")
    ''')


def test_snakemake_console_names_the_corrupt_input(tmp_path):
    """A real 2-rule workflow: the second rule's script fails on the first rule's truncated .h5."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "read_bad.py").write_text(SCRIPT)
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--cores", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    console = run.stdout + run.stderr
    assert run.returncode != 0, console
    assert "DatasetError: data/bad.h5 is truncated" in console, console
    assert "snakemake --forcerun data/bad.h5" in console and "full traceback in logs/read_bad.log" in console
    assert "Traceback (most recent call last)" in (tmp_path / "logs" / "read_bad.log").read_text()

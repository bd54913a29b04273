"""Capturing what a library prints, from Python and from C/C++ alike."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def captured_output(*quiet_loggers: str) -> Iterator[list[str]]:
    """Capture what is printed to stdout and stderr, by Python and by native code (file
    descriptors 1 and 2), and silence warnings and the loggers named (below ERROR). Yields a list
    that holds the captured text afterwards, for the caller to log or drop."""
    captured: list[str] = []
    loggers = [logging.getLogger(name) for name in quiet_loggers]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    buffer = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with (
                    contextlib.redirect_stdout(buffer),
                    contextlib.redirect_stderr(buffer),
                    warnings.catch_warnings(),
                ):
                    warnings.simplefilter("ignore")
                    yield captured
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                sink.seek(0)
                captured.append(buffer.getvalue() + sink.read().decode(errors="replace"))
    finally:
        for fd in saved:
            os.close(fd)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

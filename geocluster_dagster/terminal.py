"""What a run shows in a terminal: a bar per long pass while it runs, one line per asset.

Dagster's console logger prints every event of a run (tens of DEBUG lines a step); the CLI
shows it only with ``-v``. By default the run's log records go to :class:`AssetLines`, which
prints, as each step ends, the asset, its time and where it wrote, then its failing checks
and the run's warnings; :class:`Bars` draws the progress of the passes inside a step (on a
terminal only: a log file or a pipe gets the asset lines alone).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import dagster as dg
from tqdm import tqdm

from .progress import Update

#: The metadata entry every asset records its product's path in.
OUTPUT_PATH = "output_path"


#: Whether stdout is kept for a machine-readable result (``geocluster --json``): every line for a
#: person then goes to stderr.
_STDOUT_FOR_RESULT = False


def keep_stdout_for_result(keep: bool = True) -> None:
    global _STDOUT_FOR_RESULT
    _STDOUT_FOR_RESULT = keep


def echo(line: str, *, err: bool = False) -> None:
    """Print a line on a line of its own, above any progress bar. The bars draw on a copy of
    the terminal (see :class:`Bars`), which ``tqdm.write`` does not clear when it writes to
    sys.stderr: a FAILED line used to start where a bar of the failed step left off."""
    bars = [bar for bar in list(getattr(tqdm, "_instances", ())) if not bar.disable]
    for bar in bars:
        bar.clear()
        bar.fp.flush()
    file = sys.stderr if err or _STDOUT_FOR_RESULT else sys.stdout
    file.write(line + "\n")
    file.flush()
    for bar in bars:
        bar.refresh()


class Bars:
    """A progress listener that draws one tqdm bar per running task."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}
        # Dagster captures a step's stdout and stderr (the UI shows them), so a step's sys.stderr
        # is no terminal: the bars go to a copy of the terminal taken before the run starts.
        self._terminal = os.fdopen(os.dup(2), "w") if sys.stderr.isatty() else None

    def close(self) -> None:
        for bar in self._bars.values():  # the passes of a failed step never finished
            bar.close()
        self._bars.clear()
        if self._terminal is not None:
            self._terminal.close()

    def __call__(self, update: Update) -> None:
        if self._terminal is None:
            return
        bar = self._bars.get(update.task)
        if bar is None:
            countable = update.total is not None
            bar = tqdm(
                total=update.total,
                desc=update.task,
                unit=update.unit or "it",
                leave=False,
                file=self._terminal,
                bar_format=None if countable else "{desc}: {elapsed}",
            )
            self._bars[update.task] = bar
        if update.total is not None:
            bar.update(update.done - bar.n)
        else:
            bar.refresh()
        if update.finished:
            bar.close()
            del self._bars[update.task]


class AssetLines(logging.Handler):
    """Turns a run's Dagster log records into one line per asset, as each step ends."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.started: dict[str, float] = {}
        self.written: dict[str, dg.RawMetadataMapping] = {}
        self.failed_checks: list[str] = []
        self.failures: list[str] = []
        self.ended: list[str] = []
        self._pending: dict[str, list[str]] = {}
        self._said: dict[str, str] = {}
        self._warned: dict[str, list[str]] = {}  # what each step's warnings already printed

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if meta is None:
            return
        event, step = meta.get("dagster_event"), meta.get("step_key") or ""
        if event is None:
            message = meta.get("orig_message", record.getMessage())
            if message.startswith(_SAID_BY_THE_SUMMARY):
                return
            if record.levelno >= logging.WARNING:  # now: a retry or a wait is news while it lasts
                echo(f"    warning ({step or 'run'}): {message}", err=True)
                self._warned.setdefault(step, []).append(message)
            elif step:
                self._said.setdefault(step, message)  # why a step wrote nothing, if it did not
            return
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            self.started[step] = record.created
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            metadata = materialization.metadata
            self.written[materialization.asset_key.to_user_string()] = metadata
            if "not_compared" in metadata:
                self._said[step] = f"nothing compared: {metadata['not_compared'].value}"
            if "not_assessed" in metadata:
                self._said[step] = f"not assessed: {metadata['not_assessed'].value}"
            if "no_imagery" in metadata and "item_count" in metadata:  # the search: why
                self._later(step, f"    no imagery: {metadata['no_imagery'].value}")
            elif "no_imagery" in metadata:  # a step after it: the reason is said above
                self._said[step] = "no imagery: wrote nothing"
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            if not check.passed:
                line = f"    check {check.check_name} {check.severity.value}: {check.description}"
                self.failed_checks.append(line)
                self._later(step, line)
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            self._step_line(step, record.created)
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            self.failures.append(f"FAILED {step}: {failure_text(event.step_failure_data)}")
            self._step_line(step, record.created, failed=True)
            echo(self.failures[-1], err=True)

    def _later(self, step: str, line: str) -> None:
        """Lines printed under the step's own line, once the step ends."""
        if step:
            self._pending.setdefault(step, []).append(line)
        else:
            echo(line)

    def _step_line(self, step: str, ended: float, *, failed: bool = False) -> None:
        self.ended.append(step)
        seconds = ended - self.started.get(step, ended)
        path = self.written.get(step, {}).get(OUTPUT_PATH)
        if path is not None:
            where = f"-> {getattr(path, 'value', path)}"
        elif step in self._said and not failed and step in self.written:
            where = self._said[step]
        elif not failed:
            where = f"not built: {self._said.get(step, 'it wrote nothing')}"
        else:
            where = ""
        # A reason a warning of this step already printed is not printed again (a change not
        # computed said it in its warning, its step line and its check: once is enough).
        warned = self._warned.pop(step, [])
        what, _, reason = where.partition(": ")
        if reason and any(reason in message for message in warned):
            where = f"{what} (why: the warning above)"
        state = "failed after" if failed else ""
        echo(f"  {step:<14} {state}{seconds:6.1f} s  {where}".rstrip())
        for line in self._pending.pop(step, []):
            told = line.partition(": ")[2]
            if told and any(told in message for message in warned):
                continue
            echo(line)


#: Dagster's own warnings that the end of the summary says better ("not built: ...").
_SAID_BY_THE_SUMMARY = ("Dependencies for step ",)


def failure_text(data: Any) -> str:
    """A step failure in the package's words: a Failure's description, else the innermost
    error of the chain (Dagster's outer one only says which op failed)."""
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return str(user.description)
    error = getattr(data, "error", None)
    return error_text(error) if error is not None else "(no error recorded)"


def error_text(error: Any) -> str:
    """The package's own error in a serialized chain, without its class path (its message
    says what and how to fix); else the innermost error (Dagster's outer ones only say where)."""
    chain = [error]
    while chain[-1].cause is not None:
        chain.append(chain[-1].cause)
    for link in chain:
        prefix, _, rest = str(link.message).strip().partition(": ")
        if prefix.startswith("geocluster_dagster.") and rest:
            return rest
    return str(chain[-1].message).strip()


def run_loggers(lines: AssetLines, verbose: bool) -> dict[str, dg.LoggerDefinition]:
    """The job's loggers for a terminal run: the asset lines, plus Dagster's console with -v."""

    def asset_lines(_: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.getLogger("geocluster_dagster.terminal.run")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.handlers = [lines]
        return logger

    loggers = {
        "geocluster": dg.LoggerDefinition(
            asset_lines, description="One line per asset, as each step ends (geocluster's CLI)."
        )
    }
    if verbose:
        loggers["console"] = dg.colored_console_logger
    return loggers

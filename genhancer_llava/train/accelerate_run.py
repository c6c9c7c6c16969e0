"""`accelerate launch`, with the worker's failure as its exit status and no launcher traceback.

`python -m genhancer_llava.train.accelerate_run ARGS` takes `accelerate launch`'s arguments
and runs the same launcher in this process. When a worker fails, accelerate's launcher raises
torch-elastic's `ChildFailedError` (or `CalledProcessError` for a single plain process) and
Python prints some thirty lines of traceback after the worker's own one-line error; here it
exits quietly with the worker's exit status instead (75 for a clean stop, 2 for a one-line
error), so that what the CLI prints next is the user's last line. A stop signal sent to the
launcher itself (torch-elastic's `SignalException`, raised once the workers have stopped) ends it
as quietly, with 128 + the signal.

A worker's one-line error reaches the CLI through the file named by `$GENHANCER_ERROR_FILE`
(`report_error`); the CLI prints it after the launcher has ended (`read_error`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ERROR_FILE_ENV", "report_error", "read_error", "exit_status", "main"]

ERROR_FILE_ENV = "GENHANCER_ERROR_FILE"


def report_error(message: str) -> bool:
    """Leave the worker's one-line error for the CLI to print last; False (print it yourself)
    when no CLI waits for it (no $GENHANCER_ERROR_FILE) or another rank left another error."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # the first error wins
    except FileExistsError:
        try:  # ranks usually fail alike (they agree on a non-finite loss): say it once
            return Path(path).read_text().strip() == message.strip()
        except OSError:
            return False
    except OSError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(message)
    return True


def read_error(path: Path) -> str | None:
    """The error a worker left in `path` (and remove the file), or None."""
    try:
        message = path.read_text().strip()
    except OSError:
        return None
    path.unlink(missing_ok=True)
    return message or None


def exit_status(code: int) -> int:
    """A child's status as a shell reports it: a signal N becomes 128 + N."""
    return 128 - code if code < 0 else (code or 1)


def main(argv: list[str] | None = None) -> None:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args(argv)
    # In this process only (the workers are others): the agent's "failed (exitcode: 2)
    # local_rank: 0 ..." and "closing signal" log lines say nothing the worker has not, and
    # torch-elastic sets its loggers' levels itself; real agent problems still raise.
    logging.disable(logging.ERROR)
    try:
        launch_command(args)
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        sys.exit(exit_status(failure.exitcode))
    except subprocess.CalledProcessError as err:
        sys.exit(exit_status(err.returncode))
    except SignalException as err:
        # SIGTERM/SIGINT sent to this process itself: the agent has passed it on to the workers
        # and waited for their last checkpoint; they say what happened, the CLI says it last
        sys.exit(128 + err.sigval)


if __name__ == "__main__":
    main(sys.argv[1:])

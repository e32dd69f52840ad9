"""One-line errors for the command-line entry points (train, evaluate, infer, export, ...).

A user who passes a wrong path, a corrupt image, a foreign checkpoint or a bad config value needs
one line saying what is wrong, with which file or option, and what to do, not a 100-line stack. Put
:func:`entry_point` between ``@hydra.main`` and the task function::

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
    @entry_point
    def main(cfg: DictConfig) -> None: ...

It must sit *inside* ``@hydra.main``: Hydra turns every exception leaving the task function into
its own "Error executing job" report with a stack trace. Expected errors (:data:`EXPECTED_ERRORS`)
are printed as ``error: <message>`` on stderr and the process exits with status 2; anything else
keeps its traceback (a bug must stay debuggable). ``HYDRA_FULL_ERROR=1`` shows the traceback of
expected errors too.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

EXIT_USER_ERROR = 2
FULL_ERROR_VARIABLE = "HYDRA_FULL_ERROR"


class UserError(Exception):
    """Base of the project's expected errors that are not ValueError/OSError already."""


class OutputDirError(UserError):
    """An output folder is in use by another run, or holds an earlier run's results."""


# ValueError covers CheckpointError, DataError, InputError, PairError and config-value checks; OSError
# covers missing/unreadable files and folders (FileNotFoundError, IsADirectoryError, PermissionError ...).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError, OmegaConfBaseException)

F = TypeVar("F", bound=Callable[..., Any])
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def one_line(error: BaseException) -> str:
    """The error's message on one line; config errors name the offending key."""
    if isinstance(error, OmegaConfBaseException):
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        key = getattr(error, "full_key", None)
        where = f" (config key {key})" if key else ""
        return (f"config error{where}: {message}; set it on the command line (key=value) or in the config file")
    message = str(error)
    if _WORKER_TRACEBACK in message:  # re-raised from a DataLoader worker: the original message is the last line
        last = message.strip().splitlines()[-1]
        message = re.sub(rf"^[\w.]*\b{type(error).__name__}: ", "", last)
    parts = [message, *getattr(error, "__notes__", [])]  # notes: e.g. which sample was being loaded
    text = " ".join(line.strip() for part in parts for line in part.splitlines() if line.strip()) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def _raw_values(node: object, prefix: str = "") -> dict[str, str]:
    """Every string value of a config, unresolved, by dotted key."""
    if isinstance(node, dict):
        return {k: v for key, item in node.items() for k, v in _raw_values(item, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, item in enumerate(node) for k, v in _raw_values(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): node} if isinstance(node, str) else {}


def interpolation_users(error: BaseException, cfg: object) -> str:
    """For an interpolation that cannot be resolved (e.g. ``${data.generate.root}`` after
    ``data.generate=null``): which keys use it, so the user knows what else to set."""
    if not isinstance(error, InterpolationResolutionError) or not isinstance(cfg, DictConfig):
        return ""
    match = re.search(r"access ([\w.]+)", str(error))
    if match is None:
        return ""
    raw = _raw_values(OmegaConf.to_container(cfg, resolve=False))
    users = sorted(key for key, value in raw.items() if "${" + match.group(1) + "}" in value)
    return f" [{', '.join(users)} use ${{{match.group(1)}}}: set them too, e.g. {users[0]}=<path>]" if users else ""


def _expected_cause(error: BaseException) -> BaseException | None:
    """The expected error behind ``error``: itself, or what a Hydra instantiation wrapped."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        return _expected_cause(error.__cause__)
    return error if isinstance(error, EXPECTED_ERRORS) else None


def _instantiated_key(error: BaseException) -> str:
    """``config <key>: `` for an error raised while Hydra instantiated that config node."""
    if not isinstance(error, InstantiationException):
        return ""
    key = next((line.split(":", 1)[1].strip() for line in str(error).splitlines() if line.startswith("full_key:")), "")
    return f"config {key}: " if key else ""


def report(error: BaseException, context: str = "", hint: str = "") -> None:
    print(f"error: {context}{one_line(error)}{hint} (set {FULL_ERROR_VARIABLE}=1 for the traceback)", file=sys.stderr, flush=True)


def entry_point(task: F) -> F:
    """Wrap a Hydra task function: expected errors become one stderr line and exit status 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as error:
            cause = _expected_cause(error)
            if cause is None or os.environ.get(FULL_ERROR_VARIABLE, "") not in ("", "0"):
                raise
            report(cause, _instantiated_key(error), interpolation_users(cause, args[0] if args else None))
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]

"""One-line errors for the command-line entry points (train, evaluate, infer, export, submit, ...).

A user who passes a wrong path, a corrupt image, a foreign checkpoint, a bad config value or an
override Hydra cannot parse needs one line saying what is wrong, with which file or option, and what
to do, not a 100-line stack. A command declares its ``main`` with :func:`command`::

    @command("infer")
    def main(cfg: DictConfig) -> None: ...

which is ``@hydra.main`` around :func:`entry_point`, preceded by :func:`check_command_line`:

- before Hydra starts, the command line's overrides are parsed and composed once more here, so that
  a grammar error (an unquoted space, non-ASCII or special characters), a key that does not exist or
  a value of the wrong type for its key (``trainer.max_steps=abc``) is one ``error:`` line with the
  fix (the quoting rule: ``'key="my file.png"'``), exit status 2;
- inside ``@hydra.main`` (Hydra turns every exception leaving the task function into its own report
  with a stack trace), expected errors (:data:`EXPECTED_ERRORS`) are printed as ``error: <message>``
  on stderr and the process exits with status 2; anything else keeps its traceback (a bug must stay
  debuggable). OS errors a user can fix (full disk, read-only, permission) say what to do.

``HYDRA_FULL_ERROR=1`` skips both: Hydra's own reports and every traceback are shown.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import hydra
from hydra.errors import HydraException, InstantiationException
from hydra.experimental.callback import Callback
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
    if isinstance(error, OSError) and error.errno in _OS_HINTS and error.strerror:
        message = error.strerror  # without the bare "[Errno N]"; the hint below says what to do
    if _WORKER_TRACEBACK in message:  # re-raised from a DataLoader worker: the original message is the last line
        last = message.strip().splitlines()[-1]
        message = re.sub(rf"^[\w.]*\b{type(error).__name__}: ", "", last)
    parts = [message, *getattr(error, "__notes__", [])]  # notes: e.g. which sample was being loaded
    text = " ".join(line.strip() for part in parts for line in part.splitlines() if line.strip()) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    if isinstance(error, OSError) and error.errno in _OS_HINTS:
        text = f"{text}: {_OS_HINTS[error.errno]}"
    return text


# What to do about the operating system's errors that a user can fix (instead of a bare [Errno N]).
_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space or write to another disk (nothing was left half-written)",
    errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
    errno.EROFS: "the file system is read-only; choose an output location on a writable disk",
    errno.EACCES: "permission denied; choose a location you can write to, or fix the permissions",
}


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


def _full_error() -> bool:
    return os.environ.get(FULL_ERROR_VARIABLE, "") not in ("", "0")


def _quoting_hint(arguments: list[str], index: int) -> str:
    """How to pass the value Hydra could not read: quoted for Hydra, inside quotes for the shell."""
    argument = arguments[index]
    if "=" not in argument and index > 0 and "=" in arguments[index - 1]:
        key, value = f"{arguments[index - 1]} {argument}".split("=", 1)
        return (f"an unquoted space split {key}= into two arguments; quote the value for Hydra and the whole "
                f"argument for the shell: '{key}=\"{value}\"'")
    if "=" not in argument:
        return "every argument is key=value (or a flag such as --cfg job)"
    key, value = argument.split("=", 1)
    return (f"a value with spaces, non-ASCII or special characters (= , [ ] {{ }} ' \") must be quoted for Hydra "
            f"and the argument for the shell: '{key}=\"{value}\"'")


def check_command_line(config_name: str, arguments: list[str], module: str = "stereo.train") -> str | None:
    """The one-line problem with the command line's overrides, or None: Hydra's grammar, keys that do
    not exist, and values of the wrong type for a key (``trainer.max_steps=abc``). Flags (``--cfg``,
    ``-m`` ...) are left to Hydra, as is everything under ``HYDRA_FULL_ERROR=1``."""
    if _full_error() or any(a.startswith("-") for a in arguments):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from stereo.config import CONFIG_DIR

    parser = OverridesParser.create()
    for index, argument in enumerate(arguments):
        try:
            parser.parse_overrides([argument])
        except OverrideParseException:
            return f"cannot read the override {argument!r}: {_quoting_hint(arguments, index)}"
    overrides = parser.parse_overrides(arguments)
    own = [(a, o) for a, o in zip(arguments, overrides) if not o.key_or_group.lstrip("+~").startswith("hydra")]
    for argument, override in own:  # without -m (--multirun), a comma list is a sweep Hydra refuses as ambiguous
        if override.is_sweep_override() and not _is_group(CONFIG_DIR, override.key_or_group):
            key, value = argument.split("=", 1)
            return (f"cannot read the override {argument!r}: a comma makes Hydra read several values (a sweep); "
                    f"a value with a comma must be quoted for Hydra and the argument for the shell: '{key}=\"{value}\"'")
    # Hydra's own settings are left to Hydra, except the search path: the user's config folders
    # (docs/models.md: model=my_model 'hydra.searchpath=[file://my_conf]') are part of every composition.
    search = [a for a, o in zip(arguments, overrides) if o.key_or_group.lstrip("+~") == "hydra.searchpath"]
    groups = [*search, *(a for a, o in own if _is_group(CONFIG_DIR, o.key_or_group))]
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            base = compose(config_name, overrides=groups)
            try:
                compose(config_name, overrides=[*search, *(a for a, _ in own)])
            except (HydraException, OmegaConfBaseException):
                for argument, _ in own:  # which one: compose each alone
                    try:
                        compose(config_name, overrides=[*groups, argument] if argument not in groups else groups)
                    except (HydraException, OmegaConfBaseException) as error:
                        return (f"{argument}: {str(error).splitlines()[0]} (a key that is not in the config needs "
                                f"+key=value; python -m {module} --cfg job lists the keys)")
                raise
            for argument, override in own:
                problem = None if argument in groups else _type_problem(base, override)
                if problem:
                    return f"{argument}: {problem}"
    except (HydraException, OmegaConfBaseException) as error:
        return f"{' '.join(a for a, _ in own)}: {str(error).splitlines()[0]}"
    return None


def _is_group(config_dir: str, key: str) -> bool:
    key = key.lstrip("+~").split("@", 1)[0]
    return "." not in key and os.path.isdir(os.path.join(config_dir, key))


def _type_problem(base: DictConfig, override: Any) -> str | None:
    """A value whose type cannot be the key's: text or a list for a number or a boolean default, unless
    the class the node instantiates (``_target_``) also takes text there (e.g. ``trainer.devices=auto``)."""
    if override.is_sweep_override() or override.is_delete() or override.is_add():
        return None
    key = override.key_or_group
    default = OmegaConf.select(base, key, default=None, throw_on_missing=False, throw_on_resolution_failure=False)
    value = override.value()
    if value is None or default is None or isinstance(default, str) or OmegaConf.is_config(default):
        return None
    if isinstance(default, bool):
        wrong, expected = not isinstance(value, bool), f"true or false (the default is {str(default).lower()})"
    elif isinstance(default, (int, float)):
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        expected = f"{'a whole number' if isinstance(default, int) else 'a number'} (the default is {default})"
    else:
        return None
    return f"expected {expected}" if wrong and not _target_takes_text(base, key) else None


def _target_takes_text(base: DictConfig, key: str) -> bool:
    """Whether the class a config node instantiates declares text as valid for ``key``'s argument."""
    import inspect

    from hydra.utils import get_object

    parent_key, _, argument = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key, default=None) if parent_key else base
    target = parent.get("_target_") if isinstance(parent, DictConfig) else None
    if not target:
        return False
    try:
        parameter = inspect.signature(get_object(str(target))).parameters.get(argument)
    except (ImportError, AttributeError, ValueError, TypeError, HydraException):
        return True  # cannot tell: leave the value to the class
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return True
    if isinstance(parameter.annotation, type):
        return parameter.annotation is str
    annotation = str(parameter.annotation)
    return "str" in annotation or "Any" in annotation or re.search(r"Literal\[[^\]]*'", annotation) is not None


class RunFolderCheck(Callback):
    """A Hydra callback (``hydra.callbacks`` in conf/train.yaml, conf/eval.yaml): creates the run folder
    ``hydra.run.dir`` before Hydra does, so that a folder that cannot be created (read-only disk, no
    permission, a file in the way) is one ``error:`` line and exit status 2 instead of Hydra's stack
    trace. The resolved path is written back into the config, so Hydra's own ``mkdir`` right after
    uses the same folder (``${now:...}`` would otherwise be evaluated again)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from omegaconf import open_dict, read_write

        folder = str(OmegaConf.select(config, "hydra.run.dir"))
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = folder
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            if _full_error():
                raise
            print(f"error: hydra.run.dir={folder}: cannot create the run folder ({error.strerror or error}); choose a "
                  "writable folder (hydra.run.dir=... or paths.log_dir=...) "
                  f"(set {FULL_ERROR_VARIABLE}=1 for the traceback)", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)


def _module_name(task: Callable[..., Any]) -> str:
    """``stereo.train`` also when run as ``python -m stereo.train`` (module ``__main__``)."""
    if task.__module__ == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name if spec is not None else os.path.basename(sys.argv[0])
    return task.__module__


def command(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``@hydra.main`` + :func:`entry_point` + :func:`check_command_line`: a command's ``main()``."""
    from stereo.config import CONFIG_DIR

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(entry_point(task))

        @functools.wraps(task)
        def main() -> Any:
            problem = check_command_line(config_name, sys.argv[1:], _module_name(task))
            if problem is not None:
                print(f"error: {problem} (set {FULL_ERROR_VARIABLE}=1 for Hydra's own report)", file=sys.stderr, flush=True)
                sys.exit(EXIT_USER_ERROR)
            return hydra_main()

        return main

    return decorate


def entry_point(task: F) -> F:
    """Wrap a Hydra task function: expected errors become one stderr line and exit status 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as error:
            cause = _expected_cause(error)
            if cause is None or _full_error():
                raise
            report(cause, _instantiated_key(error), interpolation_users(cause, args[0] if args else None))
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]

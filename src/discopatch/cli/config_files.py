"""Config files for command-line runs: ``--config FILE`` (YAML or TOML) and ``--print-config``.

A config file is a flat mapping from a command's long option names (``max-steps`` or ``max_steps``; positional
arguments by their name, e.g. ``images``) to values written as on the command line but in the file's native types
(``epochs: 4``, ``widths: [32, 64]``, ``resume: true``). The file only supplies the parser's *defaults*
(``parser.set_defaults``), so every flag given on the command line still wins; a repeatable option
(``--webhook``) adds to the file's list.

Why argparse's own defaults and not jsonargparse or pydantic-settings: both would mean rebuilding the ~40 options
of ``fit`` and ``serve`` (plus their custom types such as ``--widths``) in a second declaration and keeping the two in
step. Reading the parser's actions instead derives everything from the one existing declaration: the valid keys are
the actions' long option names, and each value goes through the action's own ``type`` and ``choices``, so a file
accepts exactly what the command line accepts, and a new option is configurable without touching this module.

The file format follows the extension: ``.yaml`` / ``.yml`` (PyYAML) or ``.toml`` (``tomllib``; ``tomli`` on
Python 3.10). A key given twice is an error (YAML would silently keep the last value; TOML refuses it itself), and
``--config`` must name a regular file (a FIFO would block the reader for ever).

Relative paths in a file (``images``, ``out``, ``model``, ``db`` as a SQLite file or ``sqlite:///`` URL,
``alerts-jsonl``: :data:`PATH_KEYS`) are relative to the file's folder, not to the working directory, so a config
file and its data can move together; paths given as flags stay relative to the working directory.

``--print-config`` writes the resolved configuration in the format of the ``--config`` file given, YAML when there is
none, with every path absolute (so the printed file means the same wherever it is saved). Secrets are never written:
``token`` is left out, and credentials inside URLs are shown as ``***`` (:func:`mask_secrets`): a database URL's
password, a webhook URL's user, password, path and query (services such as Slack put the credential in the path),
and any query parameter named like a credential.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
#: Destinations that are about the config file itself, never read from or written to one.
NOT_CONFIGURABLE = ("help", "version", "config", "print_config")
#: Keys read from a file but never printed (or stored with a detector).
SECRETS = ("token",)
#: Keys whose URLs are credentials as a whole (path and query included), not only in their password.
SECRET_URL_KEYS = ("webhook",)
#: Query parameters whose values are masked in every URL.
SECRET_QUERY = re.compile(r"token|key|secret|pass|pwd|auth|sig|credential|session|code", re.IGNORECASE)
MASK = "***"
#: Keys holding file or folder paths, resolved against the config file's folder when relative.
PATH_KEYS = ("images", "out", "model", "db", "alerts-jsonl")
#: A config file is a few hundred bytes; anything this large is the wrong file.
MAX_CONFIG_BYTES = 1 << 20


def add_config_options(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--print-config`` on one sub-command's parser."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="read options from a .yaml/.yml or .toml file (keys: the long option names); command-line flags win",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (file + flags + defaults) as YAML, or TOML for a .toml --config, "
        "and exit",
    )


def has_config_options(p: argparse.ArgumentParser) -> bool:
    return any(a.dest == "config" for a in p._actions)


def config_path(args: Sequence[str]) -> str | None:
    """The ``--config`` value among a sub-command's arguments, found before the real parse so that the file's values
    can become that parse's defaults (a malformed ``--config`` is left for the real parse to report)."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--config")
    try:
        known, _ = pre.parse_known_args(list(args))
    except argparse.ArgumentError:
        return None
    config: str | None = known.config
    return config


def config_format(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: a config file must end in .yaml, .yml or .toml")
    return fmt


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or TOML file (by extension); unreadable or malformed files raise :class:`ConfigError`."""
    fmt = config_format(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read until a writer came, a folder fails late
            raise ConfigError(f"{path}: not a regular file (a config file must be a .yaml, .yml or .toml file)")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {info.st_size} bytes is too large for a config file")
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
    if fmt == "toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def _unique_key_loader() -> Any:
    """PyYAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last value without a word)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            self.flatten_mapping(node)  # merge keys (<<) first, as SafeLoader does
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise ConfigError(f"duplicate key {key!r} on line {line} (first set on line {first[key]})")
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
                first[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each configurable action under its key: the first long option without ``--``, or a positional's name."""
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in NOT_CONFIGURABLE or action.dest == argparse.SUPPRESS:
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        if action.option_strings and not longs:
            continue
        keys[longs[0][2:] if longs else action.dest.replace("_", "-")] = action
    return keys


def apply_config(parser: argparse.ArgumentParser, path: str | Path) -> dict[str, Any]:
    """Make the values in ``path`` the defaults of ``parser``; returns the defaults they replace, by destination
    (for :func:`settle_exclusive`).

    An option the file provides is no longer required on the command line (``--out``), and a positional it provides
    may be left out (``discopatch fit --config run.yaml``).
    """
    data = read_config(path)
    keys = config_keys(parser)
    given: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).replace("_", "-")
        if key not in keys:
            raise ConfigError(f"{path}: unknown key {raw!r}; valid keys: {', '.join(sorted(keys))}")
        if key in given:
            raise ConfigError(f"{path}: {raw!r} and {given[key]!r} set the same option")
        given[key] = str(raw)
        action = keys[key]
        defaults[action.dest] = _convert(action, value, f"{path}: {raw}")
        if key in PATH_KEYS:
            defaults[action.dest] = _rebase(defaults[action.dest], Path(path).parent)
        if defaults[action.dest] is None:  # null: the option stays unset (and required if it is)
            continue
        action.required = False
        if not action.option_strings and action.nargs in (None, "+"):
            action.nargs = "?" if action.nargs is None else "*"
    for group in parser._mutually_exclusive_groups:
        both = [a.option_strings[0] for a in group._group_actions if defaults.get(a.dest, a.default) != a.default]
        if len(both) > 1:
            raise ConfigError(f"{path}: {' and '.join(both)} exclude each other")
    originals = {dest: parser.get_default(dest) for dest in defaults}
    parser.set_defaults(**defaults)
    return originals


def _rebase(value: Any, folder: Path) -> Any:
    """A relative path (or ``sqlite:///`` URL, or a list of them) from a config file, made relative to its folder."""
    if isinstance(value, list):
        return [_rebase(v, folder) for v in value]
    return _map_path(value, lambda p: os.path.join(folder, p))


def _map_path(value: Any, fn: Any) -> Any:
    """``fn`` applied to a relative path: a plain one, or the file of a ``sqlite:///`` URL; other values unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith("sqlite:///"):
        file = value[len("sqlite:///") :]
        return value if not file or file.startswith((":", "/")) else "sqlite:///" + str(fn(file))
    if "://" in value or os.path.isabs(value):
        return value
    return str(fn(value))


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return _map_path(value, os.path.abspath)


def mask_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the credentials inside URL values replaced by ``***`` (see the module docstring); keys may be
    config keys (``alerts-jsonl``) or destinations (``alerts_jsonl``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        whole = key.replace("_", "-") in SECRET_URL_KEYS
        if isinstance(value, (list, tuple)):
            out[key] = [_mask_url(v, whole) if isinstance(v, str) else v for v in value]
        else:
            out[key] = _mask_url(value, whole) if isinstance(value, str) else value
    return out


def _mask_url(text: str, whole: bool) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{MASK}@{host}" if whole else f"{user}:{MASK}@{host}" if has_password else netloc
    path = f"/{MASK}" if whole and parts.path not in ("", "/") else parts.path
    query = "&".join(
        f"{k}={MASK}" if sep and (whole or SECRET_QUERY.search(k)) else f"{k}{sep}{v}"
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def settle_exclusive(parser: argparse.ArgumentParser, args: argparse.Namespace, originals: dict[str, Any]) -> None:
    """A flag on the command line also beats the file's value of an option it excludes (``quiet: true`` in the file,
    ``--verbose`` on the command line: verbose). ``originals`` is what :func:`apply_config` returned."""
    for group in parser._mutually_exclusive_groups:
        from_cli = [a for a in group._group_actions if getattr(args, a.dest) != a.default]
        for action in group._group_actions if from_cli else ():
            if action not in from_cli and action.dest in originals:
                setattr(args, action.dest, originals[action.dest])


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` from a file -> what the command line would have stored for it."""
    if isinstance(action, argparse._StoreConstAction):  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return action.const if value else action.default
    if isinstance(action, argparse.BooleanOptionalAction):
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true, false or null, got {value!r}")
        return value
    if value is None:
        return None
    if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_one(action, v, where) for v in value]
    return _one(action, value, where)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    """One value through the action's ``type`` and ``choices``, from its command-line text: a list becomes the
    comma-separated form that options such as ``--widths`` parse."""
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, (str, int, float)) for v in items):
        raise ConfigError(f"{where}: expected {_expected(action)}, got {value!r}")
    text = ",".join(str(v) for v in items)
    convert = action.type or str
    try:
        out = convert(text)  # type: ignore[operator]
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {_expected(action)}, got {value!r}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return out


def _expected(action: argparse.Action) -> str:
    name = getattr(action.type, "__name__", "")
    integers = ("int", "seed_value", "port_number")
    return "an integer" if name in integers else {"float": "a number"}.get(name, "a value as on the command line")


def resolved_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every configurable option's value after parsing, by key, in plain types: written back with
    :func:`dump_config` and read with ``--config`` it gives the same configuration (secrets left out)."""
    out: dict[str, Any] = {}
    for key, action in config_keys(parser).items():
        if key in SECRETS:
            continue
        value = getattr(args, action.dest, None)
        if isinstance(action, argparse._StoreConstAction):
            value = value == action.const
        out[key] = _plain(value)
        if key in PATH_KEYS:  # absolute, so that a printed file means the same wherever it is saved
            out[key] = _absolute(out[key])
    return mask_secrets(out)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_config(config: dict[str, Any], fmt: str, command: str, omitted: Sequence[str] = ()) -> str:
    """``config`` as a YAML or TOML document with a header saying what it is and which secret keys it leaves out."""
    header = f"# discopatch {command} configuration: use it with --config FILE; flags on the command line win\n"
    header += "".join(f"# {key}: never written here; give it on the command line or in its environment variable\n"
                      for key in omitted)  # fmt: skip
    if any(MASK in str(v) for v in config.values()):
        header += f"# {MASK}: a credential inside a URL, masked; put the real value back before using this file\n"
    if fmt == "yaml":
        import yaml

        class Dumper(yaml.SafeDumper):
            """Block style for the mapping, ``[a, b]`` for lists (as on the command line: ``--widths 32,64``)."""

        Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
        return header + yaml.dump(config, Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    lines = [header.rstrip("\n")]
    for key, value in config.items():
        # TOML has no null: an unset option is left out (and shown as a comment), so it keeps its default
        lines.append(f"# {key} = (not set)" if value is None else f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml(value: Any) -> str:
    """One TOML value: the few types a resolved configuration holds (no tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value)
    escaped = "".join(
        _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text
    )
    return f'"{escaped}"'

"""What may leave the machine in a run: credentials and absolute paths taken out of text.

Clinical data: a run, its artifacts and the logged model are shared (a tracking server, a
model registry), so by default nothing in them names a patient, a directory of this machine or
a secret (``tracking.share_identifiers=false``). This module is the one place that decides
how a value is written when it is not shared:

- a URL's password (``scheme://user:secret@host`` -> ``scheme://user:***@host``) and the
  values of query parameters that carry secrets (``?token=...``, ``password``, ``key`` ...)
  are replaced by ``***`` wherever a URL appears inside a value;
- an absolute path becomes its last component (``/data/site/cohort`` -> ``cohort``);
  a relative path is kept, it says nothing about the machine.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

HIDDEN = "***"
# Query parameters whose values are secrets (matched case-insensitively, as a whole name or a
# suffix: access_token, sas_key, X-Amz-Signature, ...).
_SECRET_QUERY = re.compile(
    r"([?&;](?:[\w.-]*?)(?:token|password|passwd|pwd|secret|key|signature|sig|auth|"
    r"credential|credentials)=)([^&;#\s'\"]*)", re.IGNORECASE)
# scheme://user:password@host  (the user is kept: it names an account, not a secret)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]*:)([^@/\s'\"]*)(@)")
# A bare absolute POSIX path (a whole value), or one after a scheme such as sqlite:///.
_ABSOLUTE = re.compile(r"^(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*:///?)?(?P<path>/[^\s]*)$")
_WINDOWS_ABSOLUTE = re.compile(r"^[a-zA-Z]:[\\/]")


def redact_credentials(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + HIDDEN + m.group(3), text)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + HIDDEN, text)


def redact_path(text: str) -> str:
    """An absolute path (or ``sqlite:////abs/path``, ``file:///abs/path``) cut to its last
    component; anything else unchanged."""
    if _WINDOWS_ABSOLUTE.match(text):
        return PureWindowsPath(text).name
    match = _ABSOLUTE.match(text)
    if match is None:
        return text
    name = PurePosixPath(match["path"]).name
    return f"{match['prefix'] or ''}{name}"


# An absolute path inside free text (a report, a JSON file): two components or more, not part
# of a URL (no scheme or host before it) nor an HTML closing tag.
_PATH_IN_TEXT = re.compile(r"(?<![\w.:/<~-])(/(?:[\w.@+-]+/)+[\w.@+-]*)")


def redact_text(text: str, share_identifiers: bool = False) -> str:
    """Free text (a report file) with credentials hidden and, unless ``share_identifiers``,
    every absolute path cut to its last component."""
    text = redact_credentials(text)
    if share_identifiers:
        return text
    return _PATH_IN_TEXT.sub(lambda m: PurePosixPath(m.group(1)).name or "/", text)


def redact(value: object, share_identifiers: bool = False) -> str:
    """The text of ``value`` as a run may store it: credentials always hidden; absolute paths
    (the whole value, or inside it) cut to their last component unless ``share_identifiers``
    (the user's opt-in)."""
    text = redact_credentials(str(value))
    if share_identifiers:
        return text
    whole = redact_path(text)
    return whole if whole != text else redact_text(text)


def redact_command(argv: list[str], share_identifiers: bool = False) -> str:
    """The command line for the ``command`` tag: each argument through :func:`redact`, and the
    value of an ``x=y`` override too (``tracking.tracking_uri=https://u:p@host``)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and "://" not in key:
            out.append(f"{key}={redact(value, share_identifiers)}")
        else:
            out.append(redact(arg, share_identifiers))
    if out:
        out[0] = PurePosixPath(out[0]).name  # the program, not where it is installed
    return " ".join(out)


def redact_config(cfg: Any) -> dict[str, Any]:
    """A :class:`~progression.config.Config` as plain dicts (``to_dict``) with every text value
    through :func:`redact` under the config's own ``tracking.share_identifiers``: the form
    that checkpoints store and runs log as ``config.yaml`` (``data.cache_dir`` left to the
    default there: the cache is this machine's)."""
    from progression.config import to_dict

    share = cfg.tracking.share_identifiers

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(clean(v) for v in value)
        return redact(value, share) if isinstance(value, str) else value

    stored = clean(to_dict(cfg))
    if not share:  # this machine's image cache: elsewhere a relative name would fill the cwd
        stored["data"]["cache_dir"] = ""
    return stored

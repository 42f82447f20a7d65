"""`companion say` and `chat` through a running server: the turn runs there, on the loaded model.

connect() returns a stand-in for the Companion whose say/more/retry go to the
server of this data folder (found through server.json) while everything else
(listing, showing, history, memory edits) still reads the store directly, as
in-process. It is used only when the server can do exactly what the command asks
(same database, same model, no recipe or recall options, no config.toml recipe);
otherwise, or with --no-server, the command runs in-process. The stream is read
with urllib (stdlib), so Ctrl-C closes the connection and the server cancels
the turn: nothing of it is stored, as in-process.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
from urllib.parse import quote

from . import server_file
from .errors import CompanionError
from .reports import TurnReport
from .settings import database_url

UNSERVED = ("recipe", "layer", "slots", "recall", "new_recipe")  # options the server cannot apply per request


def usable(args) -> dict | None:
    """server.json of a server that answers and can run this command's turns, else None."""
    if getattr(args, "no_server", False) or any(getattr(args, k, None) for k in UNSERVED):
        return None
    found = server_file.running()
    if found is None:
        return None
    info, status = found
    same_db = info.get("db") == database_url(getattr(args, "db", None))
    if not same_db or getattr(args, "model", None) not in (None, status.get("model")):
        return None
    return info


class RemoteCompanion:
    """A Companion whose turns run on the server; other attributes are the local one's."""

    def __init__(self, local, info: dict, args):
        self._local, self._info = local, info
        self._options = {"system": getattr(args, "system", None), "temperature": getattr(args, "temperature", None),
                         "top_p": getattr(args, "top_p", None), "seed": getattr(args, "seed", None),
                         "max_new_tokens": getattr(args, "max_new_tokens", None)}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._local, name)

    def say(self, name: str, text: str, *, on_text=None) -> TurnReport:
        return self._turn(name, "say", text, on_text)

    def more(self, name: str, *, on_text=None) -> TurnReport:
        return self._turn(name, "more", None, on_text)

    def retry(self, name: str, *, on_text=None) -> TurnReport:
        return self._turn(name, "retry", None, on_text)

    def check_resumable(self, name: str) -> None:
        """The server refuses such a session at its first turn; nothing to load here."""

    def warm_up(self, name: str) -> None:
        """The server's model is already loaded."""

    def _turn(self, name: str, action: str, text: str | None, on_text) -> TurnReport:
        body = {"action": action, **{k: v for k, v in self._options.items() if v is not None}}
        if text is not None:
            body["text"] = text
        try:
            resp = server_file.call(self._info, "POST", f"/api/sessions/{quote(name, safe='')}/turn", body,
                                    timeout=3600)
        except urllib.error.HTTPError as exc:
            raise CompanionError(_message(exc.read()) or f"the server answered {exc.code}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CompanionError(f"the server at {self._info['url']} stopped answering ({exc}); "
                                 "`companion ps` checks it, --no-server runs here") from None
        with resp:  # leaving early (Ctrl-C) closes the connection: the server cancels the turn
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if "text" in event:
                    if on_text is not None:
                        on_text(event["text"])
                elif "report" in event:
                    report = event["report"]
                    report = TurnReport(**{**report, "recalled": tuple(report["recalled"])})
                    if self._local is not None:  # /stats reads what the last turn recalled
                        self._local._recalled[name] = report.recalled
                    return report
                else:
                    raise CompanionError(event.get("error", {}).get("message") or "the server refused the turn")
        raise CompanionError("the server closed the stream before the turn ended; `companion show` says whether "
                             "it was stored")


def _message(raw: bytes) -> str | None:
    try:
        return json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


def connect(local, args):
    """The server's stand-in for `local` when one can run this command, else `local` itself."""
    info = usable(args)
    return local if info is None else RemoteCompanion(local, info, args)

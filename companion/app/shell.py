"""`companion completion bash|zsh`: a completion script made from the argument parser itself.

Subcommands and options come from build_parser(), so a command added there completes
without touching this file. Session names come from `companion _sessions` (quick.py,
no torch) wherever an argument names a session: an option or positional whose dest is
in SESSION_DESTS. FILE_DESTS complete file names; an argument with choices, its choices.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh")
SESSION_DESTS = {"session", "name", "old"}  # `new`, `as_name` name sessions that do not exist yet
FILE_DESTS = {"file"}


@dataclass
class Arg:
    flags: tuple[str, ...]  # empty for a positional
    help: str
    kind: str  # "session", "file", "choice", "flag" (takes no value), "value" (free), "rest" (free, repeated)
    choices: tuple[str, ...] = ()


@dataclass
class Command:
    name: str
    help: str
    args: list[Arg] = field(default_factory=list)


def _arg(action: argparse.Action) -> Arg:
    choices = tuple(str(c) for c in action.choices or ())
    if action.nargs == 0:
        kind = "flag"
    elif action.dest in SESSION_DESTS:
        kind = "session"
    elif action.dest in FILE_DESTS:
        kind = "file"
    elif choices:
        kind = "choice"
    else:
        kind = "rest" if not action.option_strings and action.nargs in ("*", "+") else "value"
    text = "" if action.help == argparse.SUPPRESS else (action.help or "")
    return Arg(tuple(action.option_strings), text, kind, choices)


def describe(parser: argparse.ArgumentParser) -> tuple[list[Arg], list[Command]]:
    """The top-level options and each subcommand with its arguments, in the parser's order."""
    top, commands = [], []
    for action in parser._actions:  # argparse has no public way to walk a parser
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                commands.append(Command(name, helps.get(name, ""), [_arg(a) for a in sub._actions]))
        else:
            top.append(_arg(action))
    return top, commands


def _words(args: list[Arg]) -> str:
    return " ".join(f for a in args for f in a.flags)


def bash_script(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    prog = parser.prog
    takes, option_kind, options, positional = [], [], [], []
    for c in commands:
        flags = [a for a in c.args if a.flags]
        options.append(f'        {c.name}) echo "{_words(flags)}" ;;')
        takes += [f'"{c.name} {f}"' for a in flags if a.kind != "flag" for f in a.flags]
        option_kind += [f'        "{c.name} {f}") echo {_bash_kind(a)} ;;' for a in flags
                        if a.kind in ("session", "file", "choice") for f in a.flags]
        kinds = [_bash_kind(a) for a in c.args if not a.flags]
        positional.append(f"        {c.name}) kinds=({' '.join(kinds)}) ;;")
    top_words = " ".join([c.name for c in commands] + [f for a in top for f in a.flags])
    takes_case = "|".join(takes) or '"-"'
    return f"""# bash completion for {prog}; load it with:  eval "$({prog} completion bash)"
_{prog}_sessions() {{
    {prog} _sessions ${{_{prog}_db:+--db "$_{prog}_db"}} 2>/dev/null
}}

_{prog}_takes_value() {{  # $1 command, $2 option
    case "$1 $2" in
        {takes_case}) return 0 ;;
    esac
    return 1
}}

_{prog}_option_kind() {{
    case "$1 $2" in
{chr(10).join(option_kind)}
    esac
}}

_{prog}_options() {{
    case $1 in
{chr(10).join(options)}
    esac
}}

_{prog}() {{
    # Words split on blanks only: COMP_WORDS would also split a --db URL at its colons.
    local line=${{COMP_LINE:0:COMP_POINT}} words cur prev cmd= npos=0 i=1 kind kinds
    local _{prog}_db=
    read -ra words <<< "$line"
    [[ $line == *[[:space:]] || ${{#words[@]}} -eq 0 ]] && words+=("")
    cur=${{words[${{#words[@]}}-1]}}
    prev=${{words[${{#words[@]}}-2]:-}}
    while (( i < ${{#words[@]}} - 1 )); do
        if [[ -z $cmd ]]; then
            case ${{words[i]}} in
                --db) _{prog}_db=${{words[i+1]}}; ((i++)) ;;
                -*) ;;
                *) cmd=${{words[i]}} ;;
            esac
        elif [[ ${{words[i]}} == -* ]]; then
            _{prog}_takes_value "$cmd" "${{words[i]}}" && ((i++))
        else
            ((npos++))
        fi
        ((i++))
    done
    if [[ -z $cmd ]]; then
        [[ $prev == --db ]] && return 0
        COMPREPLY=($(compgen -W "{top_words}" -- "$cur"))
        return 0
    fi
    if [[ $prev == -* ]] && _{prog}_takes_value "$cmd" "$prev"; then
        kind=$(_{prog}_option_kind "$cmd" "$prev")
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_{prog}_options "$cmd")" -- "$cur"))
        return 0
    else
        kinds=()
        case $cmd in
{chr(10).join(positional)}
        esac
        kind=${{kinds[npos]:-}}
    fi
    case $kind in
        session) COMPREPLY=($(compgen -W "$(_{prog}_sessions)" -- "$cur")) ;;
        file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
        choice:*) kind=${{kind#choice:}}; COMPREPLY=($(compgen -W "${{kind//,/ }}" -- "$cur")) ;;
    esac
    return 0
}}
complete -F _{prog} {prog}
"""


def _bash_kind(a: Arg) -> str:
    return "choice:" + ",".join(a.choices) if a.kind == "choice" else a.kind if a.kind in ("session", "file") else "-"


def _zsh_text(text: str, limit: int = 70, colons: bool = False) -> str:
    """A help text fit for _arguments' [...] (colons: _describe's name:text), inside single quotes."""
    text = " ".join(text.split()).replace("[", "(").replace("]", ")").replace("'", "").replace("`", "")
    text = text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."
    return text.replace(":", "\\:") if colons else text


def _zsh_action(a: Arg, prog: str) -> str:
    return {"session": f"_{prog}_sessions", "file": "_files",
            "choice": f"({' '.join(a.choices)})"}.get(a.kind, " ")


def _zsh_spec(a: Arg, prog: str) -> str:
    if not a.flags:
        star = "*" if a.kind == "rest" else ""
        return f"'{star}:{a.kind}:{_zsh_action(a, prog)}'"
    value = "" if a.kind == "flag" else f":{a.kind}:{_zsh_action(a, prog)}"
    if len(a.flags) == 1:
        return f"'{a.flags[0]}[{_zsh_text(a.help)}]{value}'"
    return f"'({' '.join(a.flags)})'{{{','.join(a.flags)}}}'[{_zsh_text(a.help)}]{value}'"


def zsh_script(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    prog = parser.prog
    described = "\n".join(f"        '{c.name}:{_zsh_text(c.help, colons=True)}'" for c in commands)
    cases = "\n".join(f"        {c.name}) _arguments {' '.join(_zsh_spec(a, prog) for a in c.args)} ;;"
                      for c in commands)
    tops = " ".join(_zsh_spec(a, prog) for a in top)
    return f"""#compdef {prog}
# zsh completion for {prog}; load it with:  source <({prog} completion zsh)   (after compinit)
# or save it as _{prog} in a folder on $fpath.
_{prog}_sessions() {{
    local -a names db
    [[ -n $_{prog}_db ]] && db=(--db "$_{prog}_db")
    names=(${{(f)"$({prog} _sessions $db 2>/dev/null)"}})
    compadd -a names
}}

_{prog}() {{
    local curcontext="$curcontext" state line
    typeset -A opt_args
    _arguments -C {tops} '1:command:->command' '*::arg:->args' && return
    case $state in
    command)
        local -a commands
        commands=(
{described}
        )
        _describe -t commands '{prog} command' commands ;;
    args)
        local _{prog}_db=${{opt_args[--db]}}
        case $line[1] in
{cases}
        esac ;;
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _{prog} "$@"
else
    compdef _{prog} {prog}
fi
"""


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    return {"bash": bash_script, "zsh": zsh_script}[shell](parser)

"""Unknown setting names: a typo in a setting must stop the arena, not be silently ignored.

pydantic-settings ignores names it does not know, so `max_leverge = 10` under `[risk]` or
`RISK_MAX_LEVERGE=5` in `.env` would leave the leverage limit at its default. The names are
checked against the `Settings` model before it is built:

- the TOML file: every key and section must be a setting (sections, arrays of tables such as
  `[[agents]]`, and the tables inside them, all derived from the model);
- the environment and `.env`: a name that starts with a section's prefix (`RISK_`, `SCHEDULE_`,
  `EXCHANGE_`, `LLM_`, `LOG_`, `DATABASE_`... one per section of the model) must be a setting of
  that section. The provider sections (`MODELSCOPE_`, `OPENAI_`..., from the provider registry)
  share their prefix with the providers' own tools (`OPENAI_ORG_ID` is the OpenAI SDK's), so
  there only a near miss of a setting (`MODELSCOPE_API_KEYS`) is refused. In `.env`, which holds
  nothing but settings, a near miss of a top-level name (`SYMBOL`) is refused too. Other
  variables (PATH, HOME...) are none of the arena's business.

Each problem is one line naming the unknown name and the closest valid one.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

# How alike a name must be to a valid one to be offered as "did you mean" (difflib's ratio).
_SUGGEST_CUTOFF = 0.6
# How alike a name must be to a valid one to count as its typo where foreign names are allowed.
_TYPO_CUTOFF = 0.8


@dataclass(frozen=True, slots=True)
class SettingNames:
    """The names a settings model accepts, in the environment and in the TOML file."""

    # Environment names (upper case), e.g. RISK_MAX_LEVERAGE, SYMBOLS, RISK (a whole section).
    env: frozenset[str]
    # Section prefix (e.g. "RISK_") -> whether only near misses are refused there.
    prefixes: Mapping[str, bool]
    model: type[BaseModel]

    @classmethod
    def of(cls, model: type[BaseModel], *, lenient_sections: Iterable[str] = ()) -> SettingNames:
        """Derive the names from `model`; `lenient_sections` share their prefix with others."""
        lenient = {name.lower() for name in lenient_sections}
        env: set[str] = set()
        prefixes: dict[str, bool] = {}
        for name, annotation in _fields(model):
            env.add(name.upper())
            section = _model_of(annotation)
            if section is not None:
                prefixes[f"{name.upper()}_"] = name.lower() in lenient
                env.update(f"{name}_{sub}".upper() for sub, _ in _fields(section))
        return cls(env=frozenset(env), prefixes=prefixes, model=model)

    def unknown_env(self, names: Iterable[str], *, where: str, dotenv: bool = False) -> list[str]:
        """Return one line per name in `names` that looks like a setting but is none."""
        problems = []
        for raw in names:
            name = raw.upper()
            if name in self.env:
                continue
            prefix = next((p for p in self.prefixes if name.startswith(p)), None)
            if prefix is None:
                # Not a section's name: another program's variable, unless .env has a near miss.
                near = _closest(name, self.env, _TYPO_CUTOFF) if dotenv else None
                if near is not None:
                    problems.append(_unknown(raw, where, f"did you mean {near}?"))
                continue
            section = sorted(n for n in self.env if n.startswith(prefix))
            # Compared without the prefix they share, which would make any two names alike.
            cutoff = _TYPO_CUTOFF if self.prefixes[prefix] else _SUGGEST_CUTOFF
            near = _closest(name, section, cutoff, prefix=prefix)
            if self.prefixes[prefix]:
                if near is not None:
                    problems.append(_unknown(raw, where, f"did you mean {near}?"))
                continue
            hint = (
                f"did you mean {near}?"
                if near
                else f"the {prefix}* settings are " + ", ".join(section)
            )
            problems.append(_unknown(raw, where, hint))
        return problems

    def unknown_toml(self, document: Mapping[str, Any], *, where: str) -> list[str]:
        """Return one line per key or table of a TOML document that is not a setting."""
        return _unknown_keys(document, self.model, where=where, path="")


def _unknown(name: str, where: str, hint: str) -> str:
    return f"Unknown setting {name} in {where}: {hint} (.env.example lists every setting)"


def _unknown_keys(
    document: Mapping[str, Any], model: type[BaseModel], *, where: str, path: str
) -> list[str]:
    fields = dict(_fields(model))
    problems = []
    for key, value in document.items():
        annotation = fields.get(key) or fields.get(key.lower())
        if annotation is None:
            problems.append(_unknown_toml_key(key, value, sorted(fields), where=where, path=path))
            continue
        inner = f"{path}.{key}" if path else key
        section = _model_of(annotation)
        if section is not None and isinstance(value, Mapping):
            problems += _unknown_keys(value, section, where=where, path=inner)
        items = _item_model(annotation)
        if items is not None and isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    problems += _unknown_keys(item, items, where=where, path=f"[{inner}]")
    return problems


def _unknown_toml_key(key: str, value: Any, known: list[str], *, where: str, path: str) -> str:
    near = _closest(key, known, _SUGGEST_CUTOFF)
    table = isinstance(value, Mapping) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)
    )
    if table and not path:
        what = f"Unknown section [{key}]"
        hint = f"did you mean [{near}]?" if near else "the sections are " + ", ".join(known)
    else:
        under = f" under [{path}]" if path else ""
        what = f"Unknown setting {key}{under}"
        hint = f"did you mean {near}?" if near else "the settings there are " + ", ".join(known)
    return f"{what} in {where}: {hint} (arena.example.toml and .env.example list every setting)"


def _closest(
    name: str, candidates: Iterable[str], cutoff: float, *, prefix: str = ""
) -> str | None:
    """Return the candidate most like `name` (both compared without `prefix`), or None."""
    tails = {candidate[len(prefix) :]: candidate for candidate in candidates}
    found = difflib.get_close_matches(name[len(prefix) :], list(tails), n=1, cutoff=cutoff)
    return tails[found[0]] if found else None


def _fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    """Return each field's name (its alias when it has one) and type."""
    return [(field.alias or name, field.annotation) for name, field in model.model_fields.items()]


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` down to the type inside."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            others = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(others) != 1:
                return annotation
            annotation = others[0]
        else:
            return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """Return the model of a section field (`risk: RiskSettings`), else None."""
    inner = _unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """Return the model of a list-of-tables field (`agents: list[AgentConfig]`), else None."""
    inner = _unwrap(annotation)
    if get_origin(inner) is list:
        args = get_args(inner)
        return _model_of(args[0]) if args else None
    return None

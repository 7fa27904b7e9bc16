"""Chat conversations, rendered with a checkpoint's own chat template as `transformers` renders them.

A chat row is `{"messages": [{"role": ..., "content": ...}, ...]}`. Its tokens are the checkpoint's
chat template rendered over the whole conversation (`add_generation_prompt=False`) and tokenized in
one go, without added special tokens: the ids of transformers' `apply_chat_template(messages,
tokenize=True)`. The template is jinja2 in the same sandbox (trim_blocks, lstrip_blocks,
loopcontrols, `{% generation %}` blocks, its `tojson`, `raise_exception`, `strftime_now`, the
special tokens of the tokenizer config as variables), written here without importing transformers.

Loss mask: every assistant turn is a response. Turn i's span in the rendered text F starts after
P_i = render(messages[:i], add_generation_prompt=True) and ends where T_i = render(messages[:i+1])
ends, trailing whitespace dropped: what the turn adds after the generation prompt, its end-of-turn
marker included (so the model learns to stop). A token is a response token when its characters
overlap a span (transformers' `assistant_masks` rule). Where T_i is not a prefix of F (a template
that rewrites earlier turns, as Qwen3's strips their <think> blocks) the span ends at the first
end-of-turn marker after P_i, the marker being what the template puts after an assistant turn's
content; where P_i itself is not a prefix of F the row is refused.

Prompts for sampling (`jirl eval`, online IQLearn) are the conversation before its last assistant
turn plus the generation prompt; the reference is that turn's content.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jirl.errors import ConfigError

ROLES = ("system", "developer", "user", "assistant", "tool")
TEMPLATE_FILE = "chat_template.jinja"
# Named templates beside the default one, as `NAME.jinja` files (transformers' CHAT_TEMPLATE_DIR).
TEMPLATE_DIR = "additional_chat_templates"
# The special-token attributes transformers passes to a template (its `special_tokens_map`).
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
# Names a message's reasoning comes under; templates read `reasoning_content` (gpt-oss: `thinking`).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_PROBE = "\x00jirl-end-of-turn-probe\x00"

Messages = list[dict[str, Any]]


def check_messages(messages: Any, where: str) -> Messages:
    """The conversation if it is a list of {role, content} turns with known roles and an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where} field 'messages' must be a non-empty list of {{role, content}} turns.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ConfigError(
                f"{where} message {i} is not an object with a 'role'; each turn needs role, content."
            )
        if message["role"] not in ROLES:
            raise ConfigError(
                f"{where} message {i} has the unknown role {message['role']!r}; "
                f"accepted roles are {list(ROLES)}."
            )
        if not isinstance(message.get("content"), str):
            raise ConfigError(
                f"{where} message {i} ({message['role']}) has no text 'content'; each turn needs one."
            )
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError(f"{where} has no assistant turn; a chat row needs at least one (the response).")
    return messages


def last_assistant(messages: Sequence[Mapping[str, Any]]) -> int:
    """The index of the conversation's last assistant turn."""
    return max(i for i, m in enumerate(messages) if m["role"] == "assistant")


# --- the template -------------------------------------------------------------------------------


def read_templates(folder: str | Path) -> dict[str, str]:
    """Every chat template of a checkpoint folder by name, as transformers loads them.

    Files first: `chat_template.jinja` is 'default' and `additional_chat_templates/NAME.jinja` is NAME.
    Without files, `chat_template` in tokenizer_config.json: a string ('default') or a list of
    {name, template}.
    """
    folder = Path(folder)
    templates = {}
    if (folder / TEMPLATE_FILE).is_file():
        templates["default"] = (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    if (folder / TEMPLATE_DIR).is_dir():
        for path in sorted((folder / TEMPLATE_DIR).glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    if templates:
        return templates
    configured = _json(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(configured, str):
        configured = [{"name": "default", "template": configured}]
    for entry in configured if isinstance(configured, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            templates[entry["name"]] = entry.get("template")
    return {name: t for name, t in templates.items() if isinstance(t, str) and t}


def read_template(
    folder: str | Path, name: str = "", templates: Mapping[str, str] | None = None
) -> str | None:
    """The chat template named `name` (`tokenizer.chat_template`), else the folder's 'default' one;
    None when it has none of that name. `templates`: the folder's, when `read_templates` has read them."""
    templates = read_templates(folder) if templates is None else templates
    if name and templates and name not in templates:
        raise ConfigError(
            f"tokenizer.chat_template is {name!r} but {folder} has chat templates named "
            f"{', '.join(map(repr, templates))}; set it to one of them (or '' for 'default')."
        )
    if name and not templates:
        raise ConfigError(
            f"tokenizer.chat_template is {name!r} but {folder} has no chat template; set it to '' "
            f"or use a folder with {TEMPLATE_FILE}, {TEMPLATE_DIR}/{name}.jinja or chat_template in "
            "tokenizer_config.json."
        )
    return templates.get(name or "default")


def special_tokens(folder: str | Path) -> dict[str, str]:
    """{bos_token: "<s>", ...}: the special tokens named in tokenizer_config.json (then
    special_tokens_map.json), which transformers passes to the template as variables."""
    found: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        config = _json(Path(folder) / name)
        for key in SPECIAL_TOKEN_NAMES:
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str) and key not in found:
                found[key] = token
    return found


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class ChatTemplate:
    """A jinja2 chat template and the variables it is rendered with (picklable: compiled on use)."""

    def __init__(self, source: str, variables: Mapping[str, str] | None = None):
        self.source, self.variables = source, dict(variables or {})

    @classmethod
    def from_folder(
        cls, folder: str | Path, name: str = "", templates: Mapping[str, str] | None = None
    ) -> ChatTemplate | None:
        source = read_template(folder, name, templates)
        return None if source is None else cls(source, special_tokens(folder))

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        """The text transformers' apply_chat_template(messages, tokenize=False) gives."""
        import jinja2

        try:
            template = _compile(self.source)
            return template.render(
                {**self.variables, "messages": _template_messages(messages), "tools": None, "documents": None,
                 "add_generation_prompt": add_generation_prompt}
            )  # fmt: skip
        except jinja2.TemplateError as e:
            raise ConfigError(
                f"the chat template refused a conversation: {' '.join(str(e).split())}"
            ) from None

    def response_spans(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """(the rendered conversation, [start, end) character span of every assistant turn in it)."""
        text = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:i], add_generation_prompt=True) if i else self._first_prompt()
            if not text.startswith(prompt):
                raise ConfigError(
                    f"the chat template renders the conversation before assistant turn {i} differently "
                    "within the whole conversation, so the turn cannot be located; use a template whose "
                    "generation prompt is a prefix of the rendered conversation."
                )
            turn = self.render(messages[: i + 1])
            if turn.startswith(prompt) and text.startswith(turn):
                end = len(turn.rstrip())
            else:  # the template rewrites this turn once later turns follow it
                marker = self._end_marker(messages[:i])
                found = text.find(marker, len(prompt)) if marker else -1
                if found < 0:
                    raise ConfigError(
                        f"the chat template rewrites assistant turn {i} within the whole conversation and "
                        "its end-of-turn marker is not found after it; the turn cannot be located."
                    )
                end = found + len(marker)
            spans.append((len(prompt), max(end, len(prompt))))
        return text, spans

    def prompt(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The conversation before its last assistant turn, plus the generation prompt."""
        last = last_assistant(messages)
        return self.render(messages[:last], add_generation_prompt=True) if last else self._first_prompt()

    def _first_prompt(self) -> str:
        """The text before a conversation's first turn when it is an assistant turn: what the template
        writes before that turn's content (templates need not render an empty conversation)."""
        probe = self.render([{"role": "assistant", "content": _PROBE}])
        at = probe.find(_PROBE)
        return probe[:at] if at >= 0 else ""

    def end_of_turn(self) -> str:
        """The end-of-turn marker after an assistant turn that answers a user turn ('' when the template
        renders no such conversation)."""
        return self._end_marker([{"role": "user", "content": "1"}])

    def _end_marker(self, before: Sequence[Mapping[str, Any]]) -> str:
        """What the template writes after an assistant turn's content when another turn follows it (e.g.
        '<|im_end|>'), stripped: the common start of what follows the turn when it is the last one and
        when a user turn follows it, so that text written only at a conversation's end (Phi-3's
        eos_token) is not part of it. Where the two diverge inside a token ('<|endoftext|>' against
        '<|user|>') the marker ends at the last whitespace or '>' before that point."""
        turn = {"role": "assistant", "content": _PROBE}
        endings = []
        for after in ([], [{"role": "user", "content": "\x00"}]):
            try:
                probe = self.render([*before, turn, *after])
            except ConfigError:  # a template that refuses the probe conversation: the last-turn ending
                continue
            at = probe.find(_PROBE)  # the assistant turn's: no other message holds the probe
            if at >= 0:
                endings.append(probe[at + len(_PROBE) :])
        if not endings:
            return ""
        common = min(map(len, endings))
        for k in range(common):
            if len({ending[k] for ending in endings}) > 1:  # they diverge inside the text after the turn:
                common = max(endings[0].rfind(c, 0, k) for c in " \t\n>") + 1  # back to a marker's end
                break
        return endings[0][:common].rstrip()


def _template_messages(messages: Sequence[Mapping[str, Any]]) -> Messages:
    """The messages as transformers hands them to a template: keys valued None dropped, reasoning
    under each of its names."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


@functools.lru_cache(maxsize=16)
def _compile(source: str):
    """The template compiled in transformers' sandboxed environment."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` renders its body (transformers tracks it for masks)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """jinja2's namespace, refusing underscore-prefixed attributes (as transformers' sandbox does)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            for name in dict(*args, **kwargs):
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, *args, **kwargs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a chat template may not set attribute {name!r}.")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals.update(
        raise_exception=raise_exception,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
        dict=_TemplateDict(),
        namespace=Namespace,
    )
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"the chat template is not valid jinja2: {e.message} (line {e.lineno}).") from None


class _TemplateDict:
    """`dict(...)` and `dict.fromkeys(...)` in a template, without the class itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)

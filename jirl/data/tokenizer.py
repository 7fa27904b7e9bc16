"""Tokenizers: byte-level, SentencePiece and Hugging Face `tokenizers`, behind one protocol.

Every tokenizer exposes `pad_id`, `bos_id`, `eos_id`, `vocab_size`, `encode(text)` (no special
tokens added) and `decode(ids)`. `decode` skips pad and BOS, stops at the first EOS, and raises
ConfigError on an id outside [0, vocab_size). When BOS or pad share EOS's id (GPT-2 style
tokenizers, or a model without a pad piece), such ids before the first content token are skipped
as BOS/pad, so `[BOS] + prompt` and left-padded prompts still decode to the prompt.

Padding is always located by lengths, segment ids and loss masks, never by comparing ids with
`pad_id`, so a tokenizer without a pad token uses its EOS id as `pad_id`.

`stop_ids(tokenizer)`: the ids that end a sampled response. EOS, and for a Hugging Face checkpoint
the ids its generation_config.json lists as `eos_token_id` and its chat template's end-of-turn token
(Qwen's '<|im_end|>', Gemma's '<end_of_turn>', Llama 3's '<|eot_id|>'), as transformers' `generate`
stops at the first two: a base model's EOS ('<|endoftext|>') is not what ends a chat turn.
"""

import io
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jirl.data.chat import ChatTemplate, read_templates
from jirl.errors import ConfigError


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline, training loop, sampler and evaluators use."""

    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def stop_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """EOS first, then any other id that ends a response (a tokenizer's `stop_ids`, when it has them)."""
    return tuple(dict.fromkeys((tokenizer.eos_id, *getattr(tokenizer, "stop_ids", ()))))


def _content_ids(ids: Iterable[int], vocab_size: int, bos: int, eos: int, pad: int) -> list[int]:
    """Ids up to the first EOS without pad and BOS; see the module docstring for shared ids."""
    out: list[int] = []
    for i in ids:
        i = int(i)
        if not 0 <= i < vocab_size:
            raise ConfigError(f"Token id {i} is outside the accepted range [0, {vocab_size}).")
        if not out and i in (bos, pad):
            continue
        if i == eos:
            break
        if i not in (bos, pad):
            out.append(i)
    return out


class ByteTokenizer:
    """Maps text to UTF-8 byte ids; byte b is id b + 3.

    Ids 0, 1, 2 are pad, BOS and EOS, so `vocab_size` is 256 + 3 = 259.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    num_special = 3
    vocab_size = 256 + num_special

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text` as ids, without special tokens."""
        return [b + self.num_special for b in text.encode("utf-8")]

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS; pad and BOS are skipped, bad UTF-8 replaced."""
        content = _content_ids(ids, self.vocab_size, self.bos_id, self.eos_id, self.pad_id)
        return bytes(i - self.num_special for i in content).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A SentencePiece `.model`; BOS, EOS and pad come from the model, pad falls back to EOS."""

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        self.path = Path(model_path)
        if not self.path.is_file():
            raise ConfigError(f"SentencePiece model {self.path} does not exist; pass a .model file.")
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        missing = [name for name, i in (("BOS", self.sp.bos_id()), ("EOS", self.sp.eos_id())) if i < 0]
        if missing:
            raise ConfigError(
                f"SentencePiece model {self.path} has no {' and no '.join(missing)} id; "
                "train it with bos_id and eos_id set (as train_sentencepiece does)."
            )
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Piece ids of `text`, without BOS or EOS."""
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS; pad and BOS are skipped."""
        return self.sp.decode(_content_ids(ids, self.vocab_size, self.bos_id, self.eos_id, self.pad_id))


def train_sentencepiece(
    texts: Iterable[str], model_prefix: str, vocab_size: int, *, model_type: str = "unigram", **options: Any
) -> str:
    """Trains a SentencePiece model on `texts` (one sentence each) and returns `<model_prefix>.model`.

    Ids are pad 0, BOS 1, EOS 2, unk 3; unseen characters fall back to byte pieces; text is not
    normalised and gets no dummy leading space, so decode(encode(a) + encode(b)) == a + b for text
    without the "▁" character (as the pipeline's prompt + response concatenation needs); training is
    single-threaded without sampling or shuffling: the same texts and options give a byte-identical
    file. Extra `options` are passed to the SentencePiece trainer and override these settings.
    """
    import sentencepiece as spm

    settings = dict(
        model_type=model_type,
        vocab_size=vocab_size,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    writer = io.BytesIO()  # no model_prefix in the trainer spec, so the bytes do not depend on the path
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=writer, **{**settings, **options}
        )
    except RuntimeError as e:
        raise _training_error(str(e), vocab_size) from e
    path = Path(f"{model_prefix}.model")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(writer.getvalue())
    return str(path)


def _training_error(message: str, vocab_size: int) -> Exception:
    """A one-sentence ConfigError for SentencePiece's common training failures."""
    if m := re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message):
        return ConfigError(f"vocab_size={vocab_size} is too large for this corpus; it allows at most {m[1]}.")
    if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
        return ConfigError(
            f"vocab_size={vocab_size} is too small for this corpus; it needs at least {m[1]} "
            "(its characters, 256 byte pieces and 4 special pieces)."
        )
    if "sentences_.empty()" in message:
        return ConfigError("the corpus is empty; train_sentencepiece needs at least one non-empty text.")
    return ConfigError(f"SentencePiece training failed: {message}")


_BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|endoftext|>")
_EOS_NAMES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>", "<|eot_id|>")
_PAD_NAMES = ("<pad>", "<|pad|>", "[PAD]")


class HFTokenizer:
    """A Hugging Face `tokenizer.json` (or a folder holding one).

    Special tokens, by precedence: the `bos`/`eos`/`pad` arguments, then `tokenizer_config.json`
    and `special_tokens_map.json` beside the file, then common names (`<s>`, `</s>`,
    `<|endoftext|>`, ...). A missing BOS or pad falls back to EOS; a missing EOS is an error.
    `chat_template` is the folder's chat template named by the `chat_template` argument, else its
    'default' one (`jirl.data.chat`); None when it has none; `chat_template_names` lists what it has.
    `stop_ids`: EOS, generation_config.json's `eos_token_id` (one id or a list) and the chat
    template's end-of-turn token when it is one token.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        bos: str | None = None,
        eos: str | None = None,
        pad: str | None = None,
        chat_template: str = "",
    ):
        from tokenizers import Tokenizer as _HF

        self.path = _tokenizer_json(Path(path))
        try:
            self.hf = _HF.from_file(str(self.path))
        except Exception as e:
            raise ConfigError(f"{self.path} could not be read as a tokenizer.json file: {e}") from e
        configured = _configured_specials(self.path.parent)
        explicit = {"bos": bos, "eos": eos, "pad": pad}
        eos_id = self._special("eos", explicit, configured, _EOS_NAMES)
        if eos_id is None:
            raise ConfigError(
                f"{self.path} has no EOS token; name it with the eos argument (tokenizer.eos), eos_token in "
                f"tokenizer_config.json or special_tokens_map.json, or use one of {', '.join(_EOS_NAMES)}."
            )
        self.eos_id = eos_id
        bos_id = self._special("bos", explicit, configured, _BOS_NAMES)
        pad_id = self._special("pad", explicit, configured, _PAD_NAMES)
        self.bos_id = eos_id if bos_id is None else bos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        templates = read_templates(self.path.parent)
        self.chat_template = ChatTemplate.from_folder(self.path.parent, chat_template or "", templates)
        self.chat_template_names = tuple(templates)
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> tuple[int, ...]:
        ids = [self.eos_id]
        generation = self.path.parent / "generation_config.json"
        listed = (
            json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
            if generation.is_file()
            else None
        )
        ids += listed if isinstance(listed, list) else [listed] if isinstance(listed, int) else []
        if self.chat_template is not None:
            marker = self.encode(self.chat_template.end_of_turn())
            ids += marker if len(marker) == 1 else []
        return tuple(dict.fromkeys(i for i in ids if isinstance(i, int) and 0 <= i < self.vocab_size))

    def _special(self, role: str, explicit: dict, configured: dict, names: tuple[str, ...]) -> int | None:
        """The id of the `role` token: explicit, then configured (both must exist), then by name."""
        for source, token in (("argument", explicit[role]), ("tokenizer config", configured.get(role))):
            if token:
                i = self.hf.token_to_id(token)
                if i is None:
                    raise ConfigError(f"{role} token {token!r} (from the {source}) is not in {self.path}.")
                return i
        return next((i for i in map(self.hf.token_to_id, names) if i is not None), None)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` (as `encode`) and each token's [start, end) character span in it."""
        encoding = self.hf.encode(text, add_special_tokens=False)
        return encoding.ids, [tuple(o) for o in encoding.offsets]

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS; special tokens are skipped."""
        content = _content_ids(ids, self.vocab_size, self.bos_id, self.eos_id, self.pad_id)
        return self.hf.decode(content, skip_special_tokens=True)


def _tokenizer_json(path: Path) -> Path:
    """`path` itself, or `path/tokenizer.json` for a folder."""
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{file} does not exist; pass a tokenizer.json file or a folder holding one.")
    return file


def _configured_specials(folder: Path) -> dict[str, str]:
    """bos/eos/pad token strings from tokenizer_config.json, then special_tokens_map.json."""
    found: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = folder / name
        if not file.is_file():
            continue
        config = json.loads(file.read_text(encoding="utf-8"))
        for role in ("bos", "eos", "pad"):
            token = config.get(f"{role}_token")
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str) and token and role not in found:
                found[role] = token
    return found


TOKENIZER_KINDS = ("byte", "sentencepiece", "hf")
# Keys of the `tokenizer` block that only a Hugging Face tokenizer reads.
HF_ONLY_KEYS = ("bos", "eos", "pad", "chat_template")


def check_tokenizer_block(cfg: Mapping[str, Any] | None) -> None:
    """Refuses an unknown `kind`, and the hf-only keys (bos, eos, pad, chat_template) on another kind."""
    cfg = cfg or {}
    kind = cfg.get("kind") or "byte"
    if kind not in TOKENIZER_KINDS:
        raise ConfigError(f"tokenizer.kind is {kind!r}; accepted values are {', '.join(TOKENIZER_KINDS)}.")
    hf_only = [key for key in HF_ONLY_KEYS if cfg.get(key)]
    if hf_only and kind != "hf":
        raise ConfigError(
            f"tokenizer.{hf_only[0]} is set but applies only to tokenizer.kind='hf' (kind is {kind!r}); "
            "unset it or use a Hugging Face tokenizer."
        )


def get_tokenizer(cfg: Mapping[str, Any] | None = None) -> Tokenizer:
    """The tokenizer a config names: `kind` (default "byte"), `path`, and for hf optional bos/eos/pad
    (special tokens by name) and chat_template (a template's name)."""
    cfg = cfg or {}
    check_tokenizer_block(cfg)
    kind = cfg.get("kind") or "byte"
    if kind == "byte":
        return ByteTokenizer()
    path = cfg.get("path")
    if not path:
        raise ConfigError(
            f"tokenizer.path is required for tokenizer.kind {kind!r}; set it to the tokenizer file."
        )
    if not Path(path).exists():
        raise ConfigError(
            f"tokenizer.path {path} does not exist; set it to an existing {kind} tokenizer file."
        )
    if kind == "sentencepiece":
        return SentencePieceTokenizer(path)
    specials = {key: cfg.get(key) for key in ("bos", "eos", "pad")}
    return HFTokenizer(path, **specials, chat_template=cfg.get("chat_template") or "")


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
    """Raises ConfigError when the model's embedding has fewer rows than the tokenizer has ids."""
    if tokenizer.vocab_size > model_vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is {model_vocab_size}; "
            "it must be at least the tokenizer's."
        )

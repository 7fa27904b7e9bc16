# ruff: noqa: E501 (the chat templates are kept as published, long lines and all)
"""Chat rows: tokens equal transformers' apply_chat_template with real-world templates, masks cover every
assistant turn, the pipeline packs them, eval and online sampling prompt with the generation prompt."""

import json

import numpy as np
import pytest

from jirl import data
from jirl.data import chat
from jirl.data.pipeline import tokenize_chat
from jirl.data.tokenizer import HFTokenizer
from jirl.losses._masking import EPISODE_COUNT, batch_counts

# Qwen2.5-Instruct's chat template (ChatML with a default system prompt and tool calls).
QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Meta-Llama-3-8B-Instruct's chat template (BOS from the special tokens, contents trimmed).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Qwen3's chat template (tools left out): <think> blocks are kept after the last user query only.
QWEN3 = r"""{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- if ns.multi_step_tool %}
    {{- raise_exception('No user query found in messages.') }}
{%- endif %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""

# ChatML with generation blocks (as SmolLM3's and other training templates mark assistant text).
CHATML_GENERATION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Phi-3's (mini-instruct): eos_token after the last turn only, so a turn followed by another ends at <|end|>.
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

THOUGHT = "<think>\nsmall sums\n</think>\n\n"
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
]  # fmt: skip
CHATML = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
TEMPLATES = {
    "qwen2.5": (QWEN25, CHATML, [THOUGHT + "a1<|im_end|>", "Two.<|im_end|>"]),
    "llama3": (LLAMA3, LLAMA, [THOUGHT + "a1<|eot_id|>", "Two.<|eot_id|>"]),
    "qwen3": (QWEN3, CHATML, ["a1<|im_end|>", "<think>\n\n</think>\n\nTwo.<|im_end|>"]),
    # the first turn stops at <|end|>: the next user turn is not a response
    "phi3": (PHI3, {"eos_token": "<|endoftext|>"}, [THOUGHT + "a1<|end|>", "Two.<|end|>\n<|endoftext|>"]),
}
CONVERSATION = [
    {"role": "system", "content": "You add numbers."},
    {"role": "user", "content": "1 plus 1?"},
    {"role": "assistant", "content": THOUGHT + "a1"},
    {"role": "user", "content": "and 1 plus 1 again, in words?"},
    {"role": "assistant", "content": "Two."},
]


def write_checkpoint_tokenizer(folder, template, specials, *, jinja_file=False):
    """A tiny byte-level BPE with the specials of ChatML and Llama 3, and `template` as its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(
        [json.dumps(CONVERSATION), "You are Qwen, created by Alibaba Cloud."] * 4, trainer
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials}
    if jinja_file:
        (folder / "chat_template.jinja").write_text(template)
    else:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def transformers_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def runs(mask):
    """[(start, end)] of the runs of 1s in a mask."""
    edges = np.diff(np.concatenate([[0], mask, [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_tokens_equal_apply_chat_template_and_mask_every_assistant_turn(tmp_path, name):
    template, specials, responses = TEMPLATES[name]
    folder = write_checkpoint_tokenizer(tmp_path, template, specials, jinja_file=name == "llama3")
    ours, theirs = HFTokenizer(folder), transformers_tokenizer(folder)
    ex = tokenize_chat(CONVERSATION, ours)
    expected = theirs.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    assert [int(ex["inputs"][0]), *ex["targets"].tolist()] == expected
    assert ex["inputs"][1:].tolist() == ex["targets"][:-1].tolist()
    pieces = [theirs.decode(ex["targets"][a:b]) for a, b in runs(ex["loss_mask"])]
    assert (
        pieces == responses
    )  # each assistant turn as the whole conversation renders it, end marker included
    prompt = ours.encode(ours.chat_template.prompt(CONVERSATION))
    assert prompt == theirs.apply_chat_template(
        CONVERSATION[:4], add_generation_prompt=True, return_dict=False
    )


def test_mask_equals_transformers_assistant_mask_on_generation_blocks(tmp_path):
    folder = write_checkpoint_tokenizer(tmp_path, CHATML_GENERATION, CHATML)
    ex = tokenize_chat(CONVERSATION, HFTokenizer(folder))
    out = transformers_tokenizer(folder).apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert [int(ex["inputs"][0]), *ex["targets"].tolist()] == out["input_ids"]
    assert ex["loss_mask"].tolist() == out["assistant_masks"][1:]


def test_truncation_keeps_bos_the_prompt_end_and_the_responses_start(tmp_path):
    folder = write_checkpoint_tokenizer(tmp_path, LLAMA3, LLAMA)
    tok = HFTokenizer(folder)
    full = tokenize_chat(CONVERSATION, tok)
    first = int(np.argmax(full["loss_mask"]))  # targets before it are prompt
    cut = tokenize_chat(CONVERSATION, tok, seq_len=first + 4)  # room for 4 + first // 2 response tokens
    assert cut["inputs"][0] == tok.bos_id and cut["truncated"][0] == 1 and full["truncated"][0] == 0
    room, half = first + 4, (first + 4) // 2
    kept = slice(first - half, first + room - half)  # half the room for the prompt's end, the rest response
    assert cut["targets"].tolist() == full["targets"][kept].tolist()
    assert cut["loss_mask"].tolist() == full["loss_mask"][kept].tolist() and len(cut["targets"]) == room


def chat_source(tmp_path, rows):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prepared_chat_data_through_the_pipeline_and_the_prompts(tmp_path):
    from jirl.train import device_policy, online

    folder = write_checkpoint_tokenizer(tmp_path / "ckpt", QWEN25, CHATML)
    ours, theirs = HFTokenizer(folder), transformers_tokenizer(folder)
    rows = [{"messages": CONVERSATION[1:3] + [{"role": "user", "content": f"{i} more?"}, CONVERSATION[4]]}
            for i in range(3)]  # fmt: skip
    rows.append({"messages": CONVERSATION[:3]})
    task, data_dir = data.get_task("jsonl"), str(tmp_path / "data")
    task.prepare(data_dir, "chat", chat_source(tmp_path, rows))
    source = task.source("train", data_dir, "chat")
    records = [source[i] for i in range(len(source))]
    kwargs = dict(data_dir=data_dir, tokenizer=ours, seq_len=256, batch_size=2, seed=0, task_config="chat")
    batch = next(data.make_batches(task, "train", shuffle=False, num_epochs=1, **kwargs))
    data.pop_stats(batch)
    assert int(np.max(batch["segment_ids"])) == 3  # packed: three conversations share a row
    assert sum(len(runs(row)) for row in batch["loss_mask"]) == 6  # every assistant turn is a response
    assert float(batch_counts(batch)[EPISODE_COUNT]) == 3  # an episode of S: a conversation's last turn
    expected_prompts = []
    for record in records:
        messages = task.messages(record)
        assert task.reference(record) == messages[-1]["content"]
        expected_prompts.append(
            theirs.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False)
        )
    for segment_prompt in online.prompts_of(batch):
        assert segment_prompt in expected_prompts
    prompts = data.eval_prompts(task, "train", data_dir=data_dir, tokenizer=ours, task_config="chat")
    assert [p for p, _ in prompts] == expected_prompts and [r for _, r in prompts] == ["Two."] * 3
    padded = next(data.make_batches(task, "train", shuffle=False, num_epochs=1, pack=False, **kwargs))
    lengths = np.asarray(device_policy.prompt_lengths({k: padded[k] for k in ("segment_ids", "loss_mask")}))
    assert [padded["inputs"][b, : lengths[b]].tolist() for b in range(2)] == expected_prompts[:2]


def test_chat_rows_are_checked_when_read(tmp_path):
    with pytest.raises(
        ValueError, match=r"chat.jsonl:1 message 1 has the unknown role 'bot'; accepted roles"
    ):
        list(data.get_task("jsonl").read(chat_source(tmp_path, [{"messages": [
            {"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}]), "x", {})["train"])  # fmt: skip
    with pytest.raises(
        ValueError, match=r"chat.jsonl:1 has no assistant turn; a chat row needs at least one"
    ):
        list(
            data.get_task("jsonl").read(chat_source(tmp_path, [{"messages": CONVERSATION[:2]}]), "x", {})[
                "train"
            ]
        )


def test_template_refusals_are_one_line(tmp_path):
    template = chat.ChatTemplate(QWEN3)
    with pytest.raises(ValueError, match=r"^the chat template refused a conversation: No user query found"):
        template.render([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValueError, match=r"^the chat template is not valid jinja2: .* \(line 1\)\.$"):
        chat.ChatTemplate("{% if %}").render(CONVERSATION)
    folder = write_checkpoint_tokenizer(
        tmp_path, "{% for m in messages %}{{ m['content'] }}{% endfor %}", CHATML
    )
    with pytest.raises(ValueError, match=r"^a chat row renders to 1 token\(s\) with this chat template"):
        tokenize_chat(
            [{"role": "user", "content": ""}, {"role": "assistant", "content": "2"}], HFTokenizer(folder)
        )


def test_named_templates_are_chosen_as_transformers_chooses_them(tmp_path):
    """chat_template.jinja is 'default'; additional_chat_templates/NAME.jinja is picked by name."""
    folder = write_checkpoint_tokenizer(tmp_path, LLAMA3, {**CHATML, **LLAMA}, jinja_file=True)
    (folder / chat.TEMPLATE_DIR).mkdir()
    (folder / chat.TEMPLATE_DIR / "chatml.jinja").write_text(QWEN25)
    theirs = transformers_tokenizer(folder)
    for name in ("", "chatml"):
        ex = tokenize_chat(CONVERSATION, HFTokenizer(folder, chat_template=name))
        expected = theirs.apply_chat_template(
            CONVERSATION, tokenize=True, return_dict=False, chat_template=name or None
        )
        assert [int(ex["inputs"][0]), *ex["targets"].tolist()] == expected
    assert HFTokenizer(folder).chat_template_names == ("default", "chatml")
    with pytest.raises(
        ValueError,
        match=r"^tokenizer.chat_template is 'tools' but .* has chat templates named 'default', 'chatml'; ",
    ):
        HFTokenizer(folder, chat_template="tools")


def test_named_templates_from_the_tokenizer_config_and_without_a_default(tmp_path):
    folder = write_checkpoint_tokenizer(tmp_path, LLAMA3, {**CHATML, **LLAMA})
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "llama", "template": LLAMA3}, {"name": "chatml", "template": QWEN25}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = HFTokenizer(folder, chat_template="chatml"), transformers_tokenizer(folder)
    expected = theirs.apply_chat_template(CONVERSATION, return_dict=False, chat_template="chatml")
    ex = tokenize_chat(CONVERSATION, ours)
    assert [int(ex["inputs"][0]), *ex["targets"].tolist()] == expected
    unnamed = HFTokenizer(folder)  # no 'default': transformers refuses too, when asked to render
    with pytest.raises(ValueError, match="multiple chat templates with no default"):
        theirs.apply_chat_template(CONVERSATION)
    assert unnamed.chat_template is None and unnamed.chat_template_names == ("llama", "chatml")
    with pytest.raises(
        ValueError, match=r"templates named 'llama', 'chatml' but none named 'default'; choose one with "
    ):
        tokenize_chat(CONVERSATION, unnamed)


def test_special_token_and_template_keys_belong_to_hf_tokenizers(tmp_path):
    with pytest.raises(ValueError, match=r"^tokenizer.eos is set but applies only to tokenizer.kind='hf'"):
        data.get_tokenizer({"kind": "byte", "eos": "<|eot_id|>"})
    folder = write_checkpoint_tokenizer(tmp_path, LLAMA3, {})  # no template name, but a template
    with pytest.raises(
        ValueError, match=r"^tokenizer.chat_template is 'chatml' but .* has chat templates named 'default'"
    ):
        data.get_tokenizer({"kind": "hf", "path": str(folder), "chat_template": "chatml"})
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"^tokenizer.chat_template is 'chatml' but .* has no chat template"):
        data.get_tokenizer({"kind": "hf", "path": str(folder), "chat_template": "chatml"})
    tokenizer = data.get_tokenizer({"kind": "hf", "path": str(folder), "eos": "<|eot_id|>", "pad": "<|end|>"})
    assert tokenizer.eos_id == tokenizer.hf.token_to_id("<|eot_id|>")
    assert tokenizer.pad_id == tokenizer.hf.token_to_id("<|end|>")

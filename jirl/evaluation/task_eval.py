"""Answer accuracy of a model's greedy (or sampled) continuations on a task split."""

from __future__ import annotations

from typing import Any

from flax import nnx

from jirl import data, sampling
from jirl.data import answers


def answer_accuracy_on_split(
    graphdef: nnx.GraphDef,
    params: Any,
    task: Any,
    tokenizer: Any,
    *,
    data_dir: str,
    split: str,
    num_examples: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    task_config: str = "default",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Decodes a response for the first `num_examples` prompts of `split`; GSM8K-style `#### N` accuracy."""
    encoder_decoder = nnx.merge(graphdef, params).config.is_encoder_decoder
    prompts = data.eval_prompts(
        task, split, data_dir=data_dir, tokenizer=tokenizer, limit=num_examples, task_config=task_config,
        encoder_decoder=encoder_decoder,
    )  # fmt: skip
    prompt_ids = [p for p, _ in prompts]
    references = [r for _, r in prompts]
    outputs = sampling.generate(
        graphdef,
        params,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        eos_id=data.stop_ids(tokenizer),
        pad_id=tokenizer.pad_id,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        num_ids=tokenizer.vocab_size,
    )
    completions = [tokenizer.decode(o) for o in outputs]
    return {
        "accuracy": answers.answer_accuracy(completions, references),
        "num_examples": len(completions),
        "examples": [
            {"prompt": tokenizer.decode(p), "completion": c, "reference": r}
            for p, c, r in zip(prompt_ids, completions, references)
        ],
    }

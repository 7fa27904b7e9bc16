"""`jirl eval`: quality and diversity of a trained run's samples, and reranking by its extracted reward.

For each temperature, K responses per prompt of a split are sampled from the latest checkpoint:
- quality: the task's metric over all K x prompts samples (answer accuracy, ROUGE, BLEU/ChrF);
- diversity: Self-BLEU across the K samples of a prompt (lower = more diverse), distinct-1/2 over
  all samples, and the mean entropy of the model's next-token distribution along the samples;
- answer tasks: right samples per prompt, majority vote over the K samples, and unbiased pass@k.
With `greedy`, answer accuracy of greedy decoding (one sample per prompt, temperature 0) too.
With `rerank=N`, N samples per prompt are scored by the sequence reward R and the log-likelihood;
best-of-N by each is compared with a random pick, with Spearman(R, per-sample metric) and, across
prompts, Spearman(mean R of a prompt's samples, their mean metric).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from jirl import data, sampling
from jirl.data.answers import extract_answer
from jirl.errors import ConfigError
from jirl.evaluation import diversity, quality, rewards, votes
from jirl.train.workdir import Trained, load_trained


def _sample_metric(kind: str, sample: str, reference: str) -> float:
    """The task metric of one sample: answer right (1/0), ROUGE-Lsum F, or sentence ChrF / 100."""
    if kind == "answer_accuracy":
        return float(extract_answer(sample) is not None and extract_answer(sample) == reference)
    if kind == "rouge":
        return quality.rouge([sample], [reference])["rougeLsum"]
    return quality.chrf([sample], [reference]) / 100.0


def _sample(trained: Trained, prompt_ids, k, *, temperature, top_k, top_p, max_new_tokens, seed):
    """K samples per prompt: (texts [P][K], entropies per sample)."""
    repeated = [p for p in prompt_ids for _ in range(k)]
    tokenizer = trained.run.tokenizer
    generations = sampling.generate_with_logprobs(
        trained.graphdef, trained.params, repeated, max_new_tokens=max_new_tokens,
        eos_id=data.stop_ids(tokenizer), pad_id=tokenizer.pad_id, temperature=temperature,
        top_k=top_k, top_p=top_p, seed=seed, num_ids=tokenizer.vocab_size,
    )  # fmt: skip
    texts = [tokenizer.decode(g.tokens) for g in generations]
    return [texts[i * k : (i + 1) * k] for i in range(len(prompt_ids))], [g.entropies for g in generations]


def evaluate(
    workdir: str,
    *,
    split: str = "validation",
    samples: int = 4,
    temperatures: tuple[float, ...] = (1.0,),
    top_k: int = 0,
    top_p: float = 1.0,
    num_prompts: int | None = None,
    max_new_tokens: int | None = None,
    rerank: int = 0,
    greedy: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """The report (see the module docstring); also written to WORKDIR/eval_<split>.json with a plot.

    num_prompts: -1 is every prompt of the split; 0 or None the run's eval.num_examples.
    """
    if samples < 1:
        raise ConfigError(f"--samples={samples} must be at least 1.")
    if rerank == 1 or rerank < 0:
        raise ConfigError(f"--rerank={rerank} must be 0 (off) or at least 2.")
    if num_prompts is not None and num_prompts < -1:
        raise ConfigError(f"--num_prompts={num_prompts} must be -1 (all), 0 (the run's default) or positive.")
    trained = load_trained(workdir)
    run = trained.run
    task, tokenizer, config = run.task, run.tokenizer, run.config
    if split not in task.splits:
        raise ConfigError(
            f"split '{split}' is not a split of task '{task.name}'; it has {list(task.splits)}."
        )
    limit = None if num_prompts == -1 else num_prompts or int(config.eval.num_examples)
    max_new = max_new_tokens or int(config.eval.max_new_tokens)
    prompts = data.eval_prompts(
        task,
        split,
        data_dir=run.data_dir,
        tokenizer=tokenizer,
        limit=limit,
        task_config=config.task.config,
        encoder_decoder=run.model.is_encoder_decoder,
    )
    prompt_ids, references = [p for p, _ in prompts], [r for _, r in prompts]
    kind = task.metric
    report: dict[str, Any] = dict(
        workdir=os.path.abspath(workdir), step=trained.step, task=task.name, split=split,
        prompts=len(prompts), samples=samples, metric=kind, loss=config.loss.name, by_temperature=[],
    )  # fmt: skip
    for temperature in temperatures:
        texts, entropies = _sample(trained, prompt_ids, samples, temperature=temperature, top_k=top_k,
                                   top_p=top_p, max_new_tokens=max_new, seed=seed)  # fmt: skip
        flat = [t for group in texts for t in group]
        row: dict[str, Any] = dict(temperature=temperature)
        if kind != "none":
            row.update(quality.task_metrics(kind, flat, [r for r in references for _ in range(samples)]))
        if kind == "answer_accuracy" and texts:
            row.update(votes.answer_report(texts, references))
        if samples >= 2:
            row["self_bleu"] = diversity.self_bleu(texts)
        row.update(
            distinct_1=diversity.distinct_n(flat, 1),
            distinct_2=diversity.distinct_n(flat, 2),
            mean_token_entropy=diversity.mean_token_entropy(entropies),
        )
        report["by_temperature"].append(row)
    if greedy and kind == "answer_accuracy":
        texts, _ = _sample(trained, prompt_ids, 1, temperature=0.0, top_k=0, top_p=1.0,
                           max_new_tokens=max_new, seed=seed)  # fmt: skip
        correct = votes.correct_per_prompt(texts, references)
        report["greedy"] = dict(accuracy=sum(correct) / max(len(correct), 1), correct=correct)
    if rerank:
        if kind == "none":
            raise ConfigError(f"--rerank needs a task metric; task '{task.name}' has none.")
        texts, _ = _sample(trained, prompt_ids, rerank, temperature=temperatures[0], top_k=top_k, top_p=top_p,
                           max_new_tokens=max_new, seed=seed + 1)  # fmt: skip
        prompt_texts = [tokenizer.decode(p) for p in prompt_ids]
        report["rerank"] = dict(
            temperature=temperatures[0],
            **rewards.rerank_report(
                trained.graphdef, trained.params, tokenizer, prompt_texts, texts,
                lambda i, s: _sample_metric(kind, s, references[i]),
                gamma=float(config.loss.get("gamma", 1.0)), head=run.head, seed=seed,
            ),
        )  # fmt: skip
    report = _finite(report)  # NaN (e.g. a Spearman over constant metrics) -> null, valid JSON
    if jax.process_index() == 0:
        with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
            json.dump(report, f, indent=2)
        report["plot"] = plot_quality_diversity(
            report, os.path.join(workdir, f"eval_{split}_quality_diversity.png")
        )
    return report


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def headline(report: dict[str, Any]) -> str:
    """The first quality metric's name of a report (e.g. answer_accuracy, rouge1, bleu), or ''."""
    keys = {"answer_accuracy": "answer_accuracy", "rouge": "rougeLsum", "bleu": "bleu"}
    return keys.get(report["metric"], "")


def plot_quality_diversity(report: dict[str, Any], path: str) -> str | None:
    """Task quality (y) against Self-BLEU (x, lower = more diverse), one point per temperature."""
    key = headline(report)
    rows = [r for r in report["by_temperature"] if key in r and "self_bleu" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["self_bleu"] for r in rows], [r[key] for r in rows], "o-")
    for r in rows:
        ax.annotate(
            f"T={r['temperature']:g}", (r["self_bleu"], r[key]), textcoords="offset points", xytext=(4, 4)
        )
    ax.set_xlabel("Self-BLEU across samples (lower = more diverse)")
    ax.set_ylabel(key)
    ax.set_title(f"{report['task']} {report['split']}, {report['loss']}, K={report['samples']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""Train the testbed PRM: a token-classification model that scores every step at its `<extra_0>` tag.

Labels. Step t is labelled *correct* iff steps 1..t are all exactly correct (the prefix is still on
track). On this task that is the Math-Shepherd "hard" Monte-Carlo label with a perfect completer (a step
is good iff the right answer is still reachable from it) up to the rare lucky recoveries, it is what
ProcessBench's first-error index encodes, and it matches how Qwen2.5-Math-PRM behaves after a mistake:
every later step scores low. It is exact, so the PRM's noise comes from the PRM itself, as it should.

Initialisation. From the weak language model's backbone by default (`--init`), as real PRMs start from
a language model; a PRM trained from scratch needs far longer to learn the arithmetic it must check.

Data. Whole solutions sampled from the trained weak and strong models on training problems (their real
mistakes, capacity errors included), mixed half and half with fresh demonstrations at the weak and
strong slip rates so the PRM sees many more distinct problems than sampling on a CPU affords.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForTokenClassification, PreTrainedTokenizerFast

from trim.backends.prompts import prm_text
from trim.backends.transformers import StepTagPRM, TransformersGenerator
from trim.prm_quality import auroc
from trim.testbed import DATA_DIR, SAMPLING, task
from trim.testbed.evaluate import prm_step_table, sample_solutions
from trim.testbed.tokenizer import STEP_TAG
from trim.testbed.training import command_line, cosine_lr, length_bucketed, llama_config


def prm_example(tokenizer, question: str, steps: list[str], on_track: list[bool]) -> tuple[list[int], list[int]]:
    """Token ids of the PRM input and a label at every step tag (-100 elsewhere)."""
    text = prm_text(tokenizer, question, steps, STEP_TAG)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    labels_iter = iter(on_track)
    labels = [int(next(labels_iter)) if i == tag else -100 for i in ids]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(examples):
        ids[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
        labels[row, : len(targets)] = torch.tensor(targets)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_prm(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start = time.time()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    train_problems = task.make_split("train", seed=0)
    pools = {}
    for role, offset, count in (("weak", 0, args.weak_samples), ("strong", args.weak_samples, args.strong_samples)):
        generator = TransformersGenerator(DATA_DIR / role, sampling=SAMPLING[role], name=f"testbed-{role}",
                                          seed=args.seed, device="cpu")
        pools[role] = sample_solutions(generator, train_problems[offset: offset + count], seed=args.seed)
        print(f"sampled {count} {role} solutions in {time.time() - start:.0f} s", flush=True)
    sampled = [(s.problem.question, s.steps, s.on_track) for pool in pools.values() for s in pool]
    weak = TransformersGenerator(DATA_DIR / "weak", sampling=SAMPLING["weak"], name="testbed-weak", seed=args.seed,
                                 device="cpu")
    held_out = sample_solutions(weak, task.make_split("validation", size=300), seed=args.seed)
    sampling_time = time.time() - start

    if args.init == "scratch":
        model = LlamaForTokenClassification(llama_config("prm", tokenizer, num_labels=2))
    else:
        # As real PRMs start from a language model (Qwen2.5-Math-PRM from Qwen2.5-Math-Instruct): the
        # backbone already knows the arithmetic, only the judging head and the fine-tuning are new.
        model = LlamaForTokenClassification.from_pretrained(DATA_DIR / args.init, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng([args.seed, 11])
    demos = length_bucketed(task.iter_problems(args.seed + 1), args.batch_size // 2, rng)
    out = Path(args.out or DATA_DIR / "prm")
    history = []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        batch = [sampled[i] for i in rng.choice(len(sampled), args.batch_size // 2, replace=False)]
        for p in next(demos):
            teacher = task.WEAK_TEACHER if rng.random() < 0.7 else task.STRONG_TEACHER
            steps, correct = task.demonstration(p, rng, teacher)
            batch.append((p.question, steps, list(np.cumprod(correct).astype(bool))))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**collate([prm_example(tokenizer, *b) for b in batch], tokenizer.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            checkpoint = out / "checkpoints" / f"step-{step + 1}"
            model.save_pretrained(checkpoint)
            tokenizer.save_pretrained(checkpoint)
            table = prm_step_table(StepTagPRM(checkpoint, device="cpu"), held_out)
            validation_auroc = auroc(table["score"].to_numpy(), table["on_track"].to_numpy())
            history.append({"step": step + 1, "loss": round(loss.item(), 4),
                            "minutes": round((time.time() - start) / 60, 1),
                            "validation_auroc": round(validation_auroc, 4)})
            print(json.dumps(history[-1]), flush=True)
    # Real PRMs are good but imperfect; pick the checkpoint whose validation AUROC is nearest the target
    # (validation problems, never test), so the book's PRM is as noisy as the real one is.
    chosen = min(history, key=lambda h: abs(h["validation_auroc"] - args.target_auroc))
    shutil.copytree(out / "checkpoints" / f"step-{chosen['step']}", out, dirs_exist_ok=True)
    shutil.rmtree(out / "checkpoints")
    (out / "training.json").write_text(json.dumps({
        "command": command_line(), "seed": args.seed,
        "role": "prm", "initialised_from": args.init, "parameters": sum(p.numel() for p in model.parameters()),
        "labels": "on-track: steps 1..t all exactly correct", "steps_planned": args.steps,
        "selected_step": chosen["step"], "selection": f"validation AUROC nearest {args.target_auroc}",
        "batch_size": args.batch_size, "sampled_solutions": {role: len(pool) for role, pool in pools.items()},
        "held_out_validation_solutions": len(held_out), "sampling_wall_time_s": round(sampling_time, 1),
        "sampling": {role: params.__dict__ for role, params in SAMPLING.items()},
        "fresh_demonstrations_per_step": args.batch_size - args.batch_size // 2,
        "wall_time_s": round(time.time() - start, 1), "threads": args.threads, "history": history,
    }, indent=2) + "\n")

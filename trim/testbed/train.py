r"""Train the testbed: tokenizer, weak and strong language models, and the PRM, reproducibly from a seed.

The shipped models were made by exactly the commands their `training.json` records (each took the wall
time recorded there, with the thread count recorded there; data/testbed/README.md lists them in order):

    python -m trim.testbed.train tokenizer
    python -m trim.testbed.train lm --role weak --steps 1000 --eval-every 250
    python -m trim.testbed.train lm --role strong --steps 1000 --eval-every 250
    python -m trim.testbed.train prm --init weak --extra-layers 2 --error-rich-share 0.75 \
        --error-rich-slip-rate 0.25 --error-rich-max-slips 0 --lr 1e-3 --steps 1200 --eval-every 200 \
        --select rates --weak-samples 16000 --threads 2

Each command writes a `transformers` model directory under `data/testbed/` with a `training.json`
beside the weights recording the command, seed, thread count, wall time and data sizes. Same seed and
same thread count, same weights (a different thread count changes the floating-point summation order).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from trim.protocols import STEP_DELIMITER
from trim.testbed import DATA_DIR, task
from trim.testbed.prm_training import LABEL_STYLES, SELECTIONS, train_prm
from trim.testbed.reference import REAL_PRM_AUROC
from trim.testbed.tokenizer import build_tokenizer
from trim.testbed.training import cosine_lr, length_bucketed, llama_config, write_record

TEACHERS = {"weak": task.WEAK_TEACHER, "strong": task.STRONG_TEACHER}

def training_text(tokenizer, question: str, steps: list[str]) -> tuple[str, str]:
    """(prompt, completion) exactly as the chat template renders a continued assistant turn."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    return prompt, STEP_DELIMITER.join(steps) + tokenizer.eos_token


def lm_batch(tokenizer, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded batch; the loss covers the completion only (the question is not predictable)."""
    prompts = tokenizer([p for p, _ in examples], add_special_tokens=False).input_ids
    completions = tokenizer([c for _, c in examples], add_special_tokens=False).input_ids
    length = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(examples), length), tokenizer.pad_token_id)
    labels = torch.full((len(examples), length), -100)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        labels[row, len(p): len(p) + len(c)] = torch.tensor(c)
        mask[row, : len(p) + len(c)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def expected_step_accuracy(model, tokenizer, problems, temperature: float = 1.0) -> dict[str, float]:
    """P(the model samples exactly the gold step | gold prefix) at `temperature`, per step type.

    Correctness is exact match, so this teacher-forced product of token probabilities (terminator
    included) *is* the next-step accuracy of pure sampling, computed without sampling noise."""
    model.eval()
    delimiter = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(STEP_DELIMITER))[0]
    stops = {delimiter, tokenizer.eos_token_id}
    per_type: dict[str, list[float]] = {op: [] for op in task.OP_TYPES}
    for start in range(0, len(problems), 64):
        chunk = problems[start: start + 64]
        batch = lm_batch(tokenizer, [training_text(tokenizer, p.question, p.gold_steps()) for p in chunk])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float() / temperature, -1)
        targets = batch["labels"][:, 1:]
        token_logp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        for row, problem in enumerate(chunk):
            step, total = 0, 0.0
            for pos in (targets[row] != -100).nonzero().flatten().tolist():
                total += token_logp[row, pos].item()
                if targets[row, pos].item() in stops:
                    per_type[problem.step_types[step]].append(math.exp(total))
                    step, total = step + 1, 0.0
    model.train()
    result = {op: float(np.mean(v)) for op, v in per_type.items() if v}
    result["all"] = float(np.mean([x for v in per_type.values() for x in v]))
    return result


def train_tokenizer(args) -> None:
    start = time.time()
    rng = np.random.default_rng(args.seed)
    problems = task.make_split("train", seed=args.seed)
    corpus = [p.question for p in problems]
    corpus += [STEP_DELIMITER.join(task.demonstration(p, rng, task.WEAK_TEACHER)[0]) for p in problems]
    tokenizer = build_tokenizer(corpus)
    out = Path(args.out or DATA_DIR / "tokenizer")
    tokenizer.save_pretrained(out)
    write_record(out, {"command": args.command, "seed": args.seed, "corpus_texts": len(corpus),
                        "vocab_size": len(tokenizer), "wall_time_s": round(time.time() - start, 1)})
    print(f"tokenizer with {len(tokenizer)} tokens -> {out}")


def train_lm(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    model = LlamaForCausalLM(llama_config(args.role, tokenizer))
    out = Path(args.out or DATA_DIR / args.role)
    rng = np.random.default_rng([args.seed, 7])
    stream = task.iter_problems(args.seed)
    validation = task.make_split("validation", size=256)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    start, history = time.time(), []
    batches = length_bucketed(stream, args.batch_size, np.random.default_rng([args.seed, 8]))
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        problems = next(batches)
        examples = [training_text(tokenizer, p.question, task.demonstration(p, rng, TEACHERS[args.role])[0])
                    for p in problems]
        with torch.autocast("cpu", dtype=torch.bfloat16):  # twice as fast on CPUs with bf16 units
            loss = model(**lm_batch(tokenizer, examples)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc = expected_step_accuracy(model, tokenizer, validation)
            history.append({"step": step + 1, "loss": round(loss.item(), 4),
                            "minutes": round((time.time() - start) / 60, 1),
                            **{k: round(v, 4) for k, v in acc.items()}})
            print(json.dumps(history[-1]), flush=True)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            write_record(out, {
                "command": args.command, "seed": args.seed,
                "role": args.role, "parameters": sum(p.numel() for p in model.parameters()),
                "steps_done": step + 1, "steps_planned": args.steps, "batch_size": args.batch_size,
                "training_problems_seen": (step + 1) * args.batch_size,
                "teacher": TEACHERS[args.role].record(),
                "wall_time_s": round(time.time() - start, 1), "threads": args.threads, "history": history})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trim.testbed.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p_tok = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer")
    p_lm = sub.add_parser("lm", help="train the weak or the strong language model")
    p_lm.add_argument("--role", choices=["weak", "strong"], required=True, help="which model to train")
    p_prm = sub.add_parser("prm", help="train the process reward model on weak and strong samples")
    for p in (p_tok, p_lm, p_prm):
        p.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and slips")
        p.add_argument("--out", default=None, help="output directory (default: data/testbed/<name>)")
    p_prm.add_argument("--init", choices=["weak", "strong", "scratch"], default="weak",
                       help="start from this language model's weights (default: weak)")
    p_prm.add_argument("--target-auroc", type=float, default=REAL_PRM_AUROC["S0 vs S2"],
                       help="keep the checkpoint whose validation AUROC (S0 vs S2) is nearest this "
                            f"(default: the real PRM's, {REAL_PRM_AUROC['S0 vs S2']})")
    p_prm.add_argument("--select", choices=sorted(SELECTIONS), default="auroc",
                       help="keep the checkpoint by --target-auroc, or by the distance of its calibrated per-state "
                            "score histograms, or of its calibrated ranged rates, to the real PRM's (default: auroc)")
    p_prm.add_argument("--extra-layers", type=int, default=0,
                       help="identity-initialised layers stacked on the initial model (default 0)")
    p_prm.add_argument("--error-rich-share", type=float, default=0.0,
                       help="share of demonstrations by the error-rich teacher (default 0)")
    p_prm.add_argument("--error-rich-slip-rate", type=float, default=0.08,
                       help="the error-rich teacher's slip rate per written fact (default 0.08)")
    p_prm.add_argument("--error-rich-max-slips", type=int, default=1,
                       help="the error-rich teacher's most random errors per solution, 0 for no cap (default 1)")
    p_prm.add_argument("--labels", choices=sorted(LABEL_STYLES), default="first-error",
                       help="how steps after the first error are labelled (default first-error; see LABEL_STYLES)")
    p_prm.add_argument("--token-labels", action="store_true",
                       help="also label the tokens of steps with a clean prefix: good up to where a first error leaves "
                            "the gold step, bad from there (default: only the step tags)")
    p_prm.add_argument("--stop-after", type=int, default=None,
                       help="stop after this many steps of the --steps schedule (default: all of them)")
    p_prm.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (after --stop-after or a crash)")
    p_prm.add_argument("--validation-samples", type=int, default=500,
                       help="weak solutions of validation problems for selection and calibration")
    p_prm.add_argument("--weak-samples", type=int, default=2000, help="weak solutions sampled for PRM data")
    p_prm.add_argument("--strong-samples", type=int, default=0, help="strong solutions sampled for PRM data")
    # Steps, peak learning rate, validation interval: the shipped language models' (the PRM's command sets its own).
    for p, steps, lr, every in ((p_lm, 1000, 2e-3, 250), (p_prm, 1200, 5e-4, 200)):
        p.add_argument("--tokenizer", default=str(DATA_DIR / "tokenizer"), help="tokenizer directory")
        p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
        p.add_argument("--batch-size", type=int, default=64, help="sequences per step")
        p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate, cosine schedule (default {lr})")
        p.add_argument("--eval-every", type=int, default=every, help="validate and checkpoint every N steps")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    args.command = " ".join(["python -m trim.testbed.train"] + list(sys.argv[1:] if argv is None else argv))
    if args.what == "tokenizer":
        train_tokenizer(args)
    elif args.what == "lm":
        train_lm(args)
    else:
        train_prm(args)


if __name__ == "__main__":
    main()

"""The transformers backends on tiny local models: seeded sampling, stop handling, PRM prefix reuse."""

import dataclasses

import numpy as np
import pytest
import torch
from transformers import LlamaForTokenClassification

from trim.backends.transformers import StepTagPRM, TransformersGenerator
from trim.protocols import SamplingParams, StepRequest
from trim.sampling import filtered_probs, sample_rows
from trim.testbed import DATA_DIR, task
from trim.testbed.training import llama_config


def assert_same_steps(got, expected) -> None:
    """Proposals equal field by field, but for the mean log-probability: it comes from logits computed in
    another batch (other padding, other rows), equal to float noise."""
    assert [dataclasses.replace(p, mean_logprob=None) for p in got] == \
        [dataclasses.replace(p, mean_logprob=None) for p in expected]
    assert np.allclose([p.mean_logprob for p in got], [p.mean_logprob for p in expected], atol=1e-5)


@pytest.fixture(scope="module")
def random_prm(tmp_path_factory):
    """An untrained PRM with the testbed's tokenizer: the scoring paths must agree whatever the weights."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("prm")
    tokenizer = AutoTokenizer.from_pretrained(DATA_DIR / "tokenizer")
    torch.manual_seed(0)
    LlamaForTokenClassification(llama_config("prm", tokenizer, num_labels=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_incremental_prm_scores_equal_full_rescoring(random_prm):
    incremental, full = StepTagPRM(random_prm), StepTagPRM(random_prm, reuse_prefix=False)
    problems = task.make_split("test", size=8)
    rng = np.random.default_rng(0)
    solutions = [task.demonstration(p, rng, task.WEAK_TEACHER)[0] for p in problems]
    for t in range(1, 11):
        rows = [(p.question, s[:t]) for p, s in zip(problems, solutions) if len(s) >= t]
        a = incremental.score([q for q, _ in rows], [s for _, s in rows])
        b = full.score([q for q, _ in rows], [s for _, s in rows])
        assert np.allclose(np.array(sum(a, [])), np.array(sum(b, [])), atol=1e-5)
    assert incremental.prefixes.entries, "prefixes were cached"
    # A branch (a strong rewrite of step 3) reuses the two-step prefix and still matches.
    branch = [s[:2] + ["3) 1 + 1 = 2"] for s in solutions]
    a = incremental.score([p.question for p in problems], branch)
    b = full.score([p.question for p in problems], branch)
    assert np.allclose(np.array(sum(a, [])), np.array(sum(b, [])), atol=1e-5)


def test_length_groups_cut_only_where_padding_costs_more_than_a_forward():
    from trim.backends.prefix_cache import length_groups

    lengths = [40, 3, 41, 2, 4, 39, 3, 42]
    groups = length_groups(lengths, max_rows=64, fixed_cost=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in g) for g in groups] == [[2, 3, 3, 4], [39, 40, 41, 42]]
    assert length_groups(lengths, max_rows=64, fixed_cost=10_000) == [sorted(range(8), key=lambda i: (lengths[i], i))]
    assert all(len(g) <= 3 for g in length_groups([5] * 10, max_rows=3))


def test_prm_scores_rows_of_mixed_lengths_in_separate_forwards_with_the_same_scores(random_prm, monkeypatch):
    prm, alone = StepTagPRM(random_prm), StepTagPRM(random_prm)
    problems = task.make_split("test", size=12)
    rng = np.random.default_rng(1)
    steps = [task.demonstration(p, rng, task.WEAK_TEACHER)[0][: 1 + 4 * (i % 2)] for i, p in enumerate(problems)]
    forwards = []
    original = prm._score_past
    monkeypatch.setattr(prm, "_score_past", lambda *a: forwards.append(len(a[0])) or original(*a))
    together = prm.score([p.question for p in problems], steps)
    assert len(forwards) == 2 and sum(forwards) == 12, "one step and five steps went to separate forwards"
    for p, s, scores in zip(problems, steps, together):
        assert np.allclose(scores, alone.score([p.question], [s])[0], atol=1e-6)


def test_prm_context_overflow_truncates_left_and_marks_lost_steps(random_prm):
    prm = StepTagPRM(random_prm, max_length=40)
    p = task.make_split("test", size=1)[0]
    scores = prm.score([p.question], [p.gold_steps()])[0]
    assert len(scores) == len(p.operations)
    assert np.isnan(scores[0]) and not np.isnan(scores[-1])


def test_prm_rejects_a_step_holding_the_tag(random_prm):
    with pytest.raises(ValueError, match="step tag"):
        StepTagPRM(random_prm).score(["q"], [["a <extra_0> b"]])


def test_missing_model_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        TransformersGenerator(tmp_path / "nope")


def test_sampling_filters_and_rows_are_independent():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 2)
    probs = filtered_probs(logits, SamplingParams(temperature=1.0, top_p=0.7, top_k=0))
    assert probs[0, 2:].sum() == 0 and torch.allclose(probs.sum(-1), torch.ones(2))
    assert filtered_probs(logits, SamplingParams(temperature=1.0, top_p=1.0, top_k=1))[0].tolist() == [1, 0, 0, 0]
    greedy = filtered_probs(logits, SamplingParams(temperature=0.0, top_p=1.0, top_k=0))
    assert greedy[0].argmax() == 0 and greedy[0].sum() == 1
    draws = [sample_rows(logits, SamplingParams(1.0, 1.0, 0), [np.random.default_rng(s), np.random.default_rng(7)])[1]
             for s in range(5)]
    assert len(set(int(d) for d in draws)) == 1  # row 1 never depends on row 0's stream


def test_bad_sampling_settings_are_refused():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_generator_stops_at_the_delimiter_and_reports_tokens():
    generator = TransformersGenerator(DATA_DIR / "weak", SamplingParams(1.0, 1.0, 0, 48), name="w")
    p = task.make_split("test", size=1)[0]
    proposal = generator.propose([StepRequest(p.id, p.question, ())])[0]
    assert "\n\n" not in proposal.text and proposal.tokens >= 3 and not proposal.truncated
    # Its confidence: the mean raw log-probability of the tokens it decoded, as the model computes it afresh.
    prompt = generator.tokenizer(generator.prompt(StepRequest(p.id, p.question, ())), add_special_tokens=False)
    ids = prompt.input_ids + generator.tokenizer(proposal.text + "\n\n", add_special_tokens=False).input_ids
    assert len(ids) - len(prompt.input_ids) == proposal.tokens   # the step's tokens, delimiter included
    with torch.no_grad():
        logp = torch.log_softmax(generator.model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
    again = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][len(prompt.input_ids) - 1:].mean()
    assert proposal.mean_logprob == pytest.approx(float(again), abs=1e-4) and proposal.mean_logprob < 0
    capped = TransformersGenerator(DATA_DIR / "weak", SamplingParams(1.0, 1.0, 0, 2), name="w")
    short = capped.propose([StepRequest(p.id, p.question, ())])[0]
    assert short.truncated and short.tokens == 2


def test_generator_rows_propose_the_same_step_in_a_batch_that_sheds_its_stopped_rows(monkeypatch):
    """Rows stop at different tokens and leave the batch (and its KV cache); each row's step must be the one
    it proposes alone, and its token count must include exactly the tokens up to its own stop."""
    from transformers import DynamicCache

    from trim.testbed import WEAK_SAMPLING

    shed = []
    select = DynamicCache.batch_select_indices
    monkeypatch.setattr(DynamicCache, "batch_select_indices", lambda self, keep: (shed.append(len(keep)),
                                                                                  select(self, keep))[1])
    generator = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w", reuse_prefix=False)
    problems = task.make_split("test", size=40)
    # Mixed prefixes: first steps, and third steps after the gold solution's first two.
    requests = [StepRequest(p.id, p.question, tuple(p.gold_steps()[: 2 * (i % 2)])) for i, p in enumerate(problems)]
    together = generator.propose(requests)
    assert shed and min(shed) < len(requests), "the batch never shed a stopped row"
    alone = [generator.propose([r])[0] for r in requests]
    assert_same_steps(together, alone)
    assert len({p.tokens for p in together}) > 3  # the rows did stop at different lengths


def test_generator_reads_prompts_of_mixed_lengths_in_separate_prefills_and_proposes_the_same_steps(monkeypatch):
    from trim.backends import transformers as backend
    from trim.testbed import WEAK_SAMPLING

    generator = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w")
    groups = []
    cut = backend.length_groups
    monkeypatch.setattr(backend, "length_groups", lambda *a: (groups.append(cut(*a)), groups[-1])[1])
    problems = task.make_split("test", size=24)
    requests = [StepRequest(p.id, p.question, tuple(p.gold_steps()[: 4 * (i % 2)])) for i, p in enumerate(problems)]
    together = generator.propose(requests)
    assert len(groups[0]) >= 2, "prompts with and without four steps were read in separate forwards"
    fresh = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w")
    assert_same_steps(together, [fresh.propose([r])[0] for r in requests])


def test_roomy_cache_gives_the_dynamic_caches_numbers_when_growing_and_shedding_rows():
    from transformers import AutoModelForCausalLM, DynamicCache

    from trim.backends.prefix_cache import roomy_cache

    model = AutoModelForCausalLM.from_pretrained(DATA_DIR / "weak").eval()
    ids = torch.randint(5, 300, (6, 30), generator=torch.Generator().manual_seed(0))
    logits = {}
    for name, cache in (("dynamic", DynamicCache()), ("roomy", roomy_cache(model.config.num_hidden_layers, 4))):
        with torch.inference_mode():
            out, steps = model(input_ids=ids, past_key_values=cache, use_cache=True), []
            for t in range(10):  # past its room of 4 tokens: the buffers grow
                if t == 5:  # three rows stop and leave the batch
                    cache.batch_select_indices(torch.tensor([0, 2, 5]))
                    out.logits = out.logits[[0, 2, 5]]
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                steps.append(out.logits[:, -1])
        logits[name] = steps
        assert cache.get_seq_length() == 40
    assert all(torch.equal(a, b) for a, b in zip(logits["dynamic"], logits["roomy"]))


def test_workspace_reuses_its_memory_and_keeps_no_more_than_its_bound():
    from trim.backends.prefix_cache import Workspace

    workspace, like = Workspace(max_bytes=4 * 1000), torch.zeros(1)
    first = workspace.take((2, 100), like)
    assert workspace.take((3, 50), like).data_ptr() == first.data_ptr(), "a smaller store reuses the memory"
    grown = workspace.take((2, 200), like)  # larger than kept: a new block, bounded by max_bytes
    assert grown.shape == (2, 200) and workspace.buffer.numel() * 4 <= 4 * 1000
    huge = workspace.take((2, 1000), like)  # over the bound: allocated for the batch alone, not kept
    assert huge.shape == (2, 1000) and workspace.buffer.numel() * 4 <= 4 * 1000


def test_prefix_cache_counts_a_shared_segment_once_and_frees_it_with_its_last_holder():
    from trim.backends.prefix_cache import PrefixCache

    segment = lambda tokens: torch.zeros(1, 2, 1, tokens, 4)  # noqa: E731  [layers, 2, heads, tokens, dim]
    size = lambda tokens: 8 * tokens * 4  # noqa: E731  bytes of float32
    cache = PrefixCache(max_bytes=size(30))
    question = (segment(10),)
    cache.put("q", [1] * 10, question)
    cache.put("q+a", [1] * 15, question + (segment(5),))
    cache.put("q+b", [1] * 15, question + (segment(5),))
    assert cache.bytes == size(20), "the question's segment is counted once"
    cache.put("q+a+c", [1] * 25, cache.entries["q+a"]["kv"] + (segment(10),))
    assert cache.bytes == size(30) and len(cache.entries) == 4
    # Over the bound: the oldest entries go until memory is freed; dropping "q" and "q+a" frees nothing, as
    # "q+a+c" still holds their segments, so "q+b" goes too.
    cache.put("other", [2] * 5, (segment(5),))
    assert list(cache.entries) == ["q+a+c", "other"]
    distinct = {id(t): t for entry in cache.entries.values() for t in entry["kv"]}
    assert set(cache.holders) == set(distinct)
    assert cache.bytes == sum(size(t.shape[3]) for t in distinct.values()) == size(30)


def test_generator_prefix_reuse_gives_the_same_solutions_as_rereading():
    from trim.testbed import WEAK_SAMPLING, evaluate

    reuse = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w")
    reread = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w", reuse_prefix=False)
    problems = task.make_split("validation", size=24)
    a = evaluate.sample_solutions(reuse, problems, seed=1)
    b = evaluate.sample_solutions(reread, problems, seed=1)
    assert [s.steps for s in a] == [s.steps for s in b]
    assert reuse.prefixes.entries and not reread.prefixes.entries


def test_an_accepted_weak_step_is_not_read_again(monkeypatch):
    """Decoding a step computes its K/V; the next step of the same solution must start from them and read only
    the delimiter, and still propose what a generator that reads the whole prompt proposes."""
    from trim.backends import prefix_cache
    from trim.testbed import WEAK_SAMPLING

    generator = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w")
    problems = task.make_split("validation", size=6)
    first = generator.propose([StepRequest(p.id, p.question, (), seed=3) for p in problems])
    following = [StepRequest(p.id, p.question, (s.text,), seed=3) for p, s in zip(problems, first)
                 if s.text and not s.finished]
    assert following
    read = []
    original = prefix_cache.PastBatch.__init__

    def recording(self, found, news, *args, **kwargs):
        read.append([len(n) for n in news])
        original(self, found, news, *args, **kwargs)

    monkeypatch.setattr(prefix_cache.PastBatch, "__init__", recording)
    second = generator.propose(following)
    assert read == [[1] * len(following)], "one forward, feeding one token per row: no prefill"
    fresh = TransformersGenerator(DATA_DIR / "weak", WEAK_SAMPLING, name="w", reuse_prefix=False)
    assert_same_steps(second, fresh.propose(following))


def test_prebuilt_attention_masks_give_exactly_the_models_own_numbers(random_prm):
    """The backends build the 4-D attention mask themselves (faster on a CPU); every score and every sampled
    step must be bit-for-bit what transformers computes from the 2-D padding mask."""
    problems = task.make_split("test", size=12)
    rng = np.random.default_rng(1)
    solutions = [task.demonstration(p, rng, task.WEAK_TEACHER)[0] for p in problems]
    ours, theirs = StepTagPRM(random_prm), StepTagPRM(random_prm)
    theirs.prebuilt_masks = False
    assert ours.prebuilt_masks
    for t in (1, 2, 4):  # full passes first, then continuations from cached prefixes
        rows = [(p.question, s[:t]) for p, s in zip(problems, solutions)]
        assert ours.score(*zip(*rows)) == theirs.score(*zip(*rows))
    fast, slow = (TransformersGenerator(DATA_DIR / "weak", SamplingParams(1.0, 1.0, 0, 48), name="w") for _ in "ab")
    slow.prebuilt_masks = False
    for t in (0, 1, 3):
        requests = [StepRequest(p.id, p.question, tuple(s[:t]), seed=2) for p, s in zip(problems, solutions)]
        assert fast.propose(requests) == slow.propose(requests)

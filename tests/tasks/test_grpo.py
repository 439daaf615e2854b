"""GRPO: rewards, sampling, the clipped surrogate against a per-sequence reference, config
checks that name the problem, and a policy whose pass@1 rises from its SFT start."""

import json
import re

import pytest
import torch

from lib import distributed
from lib.data.prompt_data import build_prompt_data, placeholders
from lib.data.sources import DataError
from lib.models.logprobs import IGNORE
from lib.rewards import (exact_match_reward, format_reward, length_penalty,
                         math_verify_reward)
from lib.rollout import Sampler, Sampling, filter_logits
from lib.tasks.grpo import grpo_task
from tests.conftest import REPO, run_launcher

COMPARE = REPO / "assets" / "compare"


def _prompts(tokenizer, n=4, template="{prompt}"):
    data = build_prompt_data(tokenizer, train_files=[str(COMPARE / "eval.jsonl")],
                             eval_files=[str(COMPARE / "eval.jsonl")], template=template)
    return data.train[:n]


def _model(seed=0):
    from lib.models.llama import llama3_model

    torch.manual_seed(seed)
    return llama3_model.__wrapped__("lm", vocab_size=512, num_layers=2, num_heads=4,
                                    num_kv_heads=2, embed_dim=64, intermediate_dim=128,
                                    max_seq_len=64)


# -- rewards --------------------------------------------------------------------------------

def test_each_reward_function_scores_against_the_rows_fields(demo_tokenizer):
    prompts = _prompts(demo_tokenizer, 2)
    answer = prompts[0].fields["answer"]
    texts = [f" {answer}\n", "7", f"The answer is {answer}", f"\\boxed{{{answer}}}"]
    rows = [prompts[0]] * 4
    tokens = [[0] * n for n in (3, 10, 14, 16)]
    assert exact_match_reward()(texts, tokens, rows) == [1.0, 0.0, 0.0, 0.0]
    assert math_verify_reward()(texts, tokens, rows) == [1.0, 0.0, 1.0, 1.0]
    assert format_reward()(texts, tokens, rows) == [1.0, 1.0, 0.0, 0.0]
    # DAPO's overlong shaping: 0 up to 12 tokens, -1/4 per token after, -1 from 16 on
    assert length_penalty(max_tokens=16, buffer_tokens=4)(texts, tokens, rows) == [
        0.0, 0.0, -0.5, -1.0]


@torch.no_grad()
def test_a_reward_model_scores_like_transformers_reads_it(demo_tokenizer, tmp_path):
    """reward_model_reward on a Hugging Face classifier directory (what our reward task
    exports): the score transformers gives prompt + completion."""
    from lib.rewards import reward_model_reward
    from tests.models.test_hf_roundtrip import _make

    family, theirs = _make("qwen2-classifier", tmp_path)
    prompts = _prompts(demo_tokenizer, 2)
    texts = [" 52", " no idea"]
    got = reward_model_reward(checkpoint_dir=str(tmp_path), model_type=family)(
        texts, [[0], [0]], prompts)
    for score, text, p in zip(got, texts, prompts):
        ids = demo_tokenizer.encode(p.text + text, add_bos=True, add_eos=True)
        want = float(theirs.eval()(input_ids=torch.tensor([ids])).logits[0, 0])
        assert score == pytest.approx(want, abs=1e-5)
    assert got[0] != got[1]


def test_a_template_reads_row_fields_and_a_missing_one_names_the_row(demo_tokenizer, tmp_path):
    assert placeholders("Q: {prompt} ({answer})") == ["prompt", "answer"]
    (p,) = _prompts(demo_tokenizer, 1, template="Q: {prompt}\nA:")
    assert p.text.startswith("Q: Which is larger") and p.text.endswith("\nA:")
    assert p.tokens[0] == demo_tokenizer.bos_id and p.fields["answer"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "1"}\n{"question": "b", "answer": "2"}\n')
    with pytest.raises(DataError, match=rf"{bad}:2: no field 'prompt', which the template"):
        build_prompt_data(demo_tokenizer, train_files=[str(bad)], eval_files=[str(bad)])


@pytest.mark.parametrize("row, problem", [
    ('{"prompt": null, "answer": "5"}', "the field 'prompt', which the template '{prompt}' "
     "reads, is null; give a string (prompts are plain text here: a list of messages is not "
     "rendered with a chat template)"),
    ('{"prompt": [{"role": "user", "content": "1 or 2?"}], "answer": "2"}',
     "the field 'prompt', which the template '{prompt}' reads, is a list; give a string"),
    ('{"prompt": " ", "answer": "2"}', "the prompt is empty (the template '{prompt}' gives "
     "' '); remove the row"),
])
def test_a_prompt_that_is_not_text_is_refused_with_its_row(tmp_path, demo_tokenizer, row,
                                                           problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "1"}\n' + row + "\n")
    with pytest.raises(DataError, match="^" + re.escape(f"{bad}:2: {problem}")):
        build_prompt_data(demo_tokenizer, train_files=[str(bad)], eval_files=[str(bad)])


def test_a_reference_answer_that_is_not_text_is_refused_before_the_model_is_built(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = (COMPARE / "train.jsonl").read_text().splitlines()[:40]
    bad.write_text("\n".join([*good, '{"prompt": "Which is larger, 1 or 2?", "answer": null}'])
                   + "\n")
    proc = run_launcher([*GRPO, "--gin_file=gin/debug/smoke.gin",
                         f"--gin_bindings=build_prompt_data.train_files=['{bad}']",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:41: the field 'answer', which the reward functions read, is null; give a "
        "string or a number")
    assert not (tmp_path / "w").exists()


def test_long_prompts_lose_their_oldest_tokens_after_bos(demo_tokenizer):
    data = build_prompt_data(demo_tokenizer, train_files=[str(COMPARE / "eval.jsonl")],
                             eval_fraction=0.5, max_prompt_length=6)
    full = demo_tokenizer.encode(data.train[0].text, add_bos=True, add_eos=False)
    assert data.train[0].tokens == full[:1] + full[-5:]
    assert data.stats()["data/train/truncated"] == len(data.train) == 100


# -- sampling -------------------------------------------------------------------------------

def test_top_p_keeps_the_smallest_set_reaching_p_and_top_k_the_k_best():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out[0]).tolist()  # noqa: E731
    assert kept(filter_logits(logits, 1.0, 0, 0.8)) == [True, True, False, False]
    assert kept(filter_logits(logits, 1.0, 0, 0.81)) == [True, True, True, False]
    assert kept(filter_logits(logits, 1.0, 0, 0.1)) == [True, False, False, False]
    assert kept(filter_logits(logits, 1.0, 3, 1.0)) == [True, True, True, False]
    torch.testing.assert_close(filter_logits(logits, 2.0, 0, 1.0), logits / 2)


@torch.no_grad()
def _greedy_without_cache(model, prompt, new, eos):
    seq = list(prompt)
    for _ in range(new):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        if seq[-1] == eos:
            break
    return seq[len(prompt):]


def test_batched_left_padded_generation_equals_full_forwards_one_prompt_at_a_time(
        demo_tokenizer):
    """Greedy with the KV cache, prompts of different lengths left-padded in one batch: each
    completion is the one that full forwards of that prompt alone give."""
    from lib.generation import complete

    model = _model().eval()
    by_length = {len(p.tokens): p.tokens for p in _prompts(demo_tokenizer, 200)}
    prompts = [*by_length.values(), *(p.tokens for p in _prompts(demo_tokenizer, 3))]
    assert len(by_length) == 3  # one-digit numbers make shorter prompts
    settings = Sampling(max_new_tokens=6, stop_tokens=(demo_tokenizer.eos_id,), greedy=True)
    sampler = Sampler(None, torch.device("cpu"))
    sampler.sync(model)
    got = sampler.generate(prompts, settings, demo_tokenizer.pad_id)
    eos = demo_tokenizer.eos_id
    assert got == [_greedy_without_cache(model, p, 6, eos) for p in prompts]
    # the eval samples' path
    assert complete(model, prompts, 6, [eos], 64, torch.device("cpu")) == got


def test_sampling_is_a_function_of_the_generator_seed(demo_tokenizer):
    model = _model()
    prompts = [p.tokens for p in _prompts(demo_tokenizer, 4)] * 4
    settings = Sampling(max_new_tokens=5, stop_tokens=(demo_tokenizer.eos_id,),
                        temperature=1.5, top_p=0.95)
    sampler = Sampler(None, torch.device("cpu"))
    sampler.sync(model)
    draw = lambda seed: sampler.generate(  # noqa: E731
        prompts, settings, demo_tokenizer.pad_id, torch.Generator().manual_seed(seed))
    assert draw(1) == draw(1) != draw(2)
    assert len({tuple(c) for c in draw(1)}) > 4  # a group's completions differ
    assert model.training  # generation leaves the mode as it found it


# -- the loss -------------------------------------------------------------------------------

def _task(demo_tokenizer, pack, **kwargs):
    data_fn = lambda tok: build_prompt_data(  # noqa: E731
        tok, train_files=[str(COMPARE / "eval.jsonl")], eval_files=[str(COMPARE / "eval.jsonl")])
    task = grpo_task(data_fn=data_fn, reward_fns=[exact_match_reward()], group_size=2,
                     max_new_tokens=6, **kwargs)
    task.setup(demo_tokenizer, distributed.init(), seed=0, global_batch_size=4,
               micro_batch_size=4, eval_batch_size=8, pack=pack)
    return task


def _reference_loss(model, prompts, completions, advantages, old, ref, temperature, low, high,
                    kl_coef, aggregation):
    """The GRPO objective written per completion, from its own unpadded forward."""
    per_seq, tokens = [], 0
    for i, (p, c) in enumerate(zip(prompts, completions)):
        seq = torch.tensor([p.tokens + c])
        logits = model(seq)[0, len(p.tokens) - 1:-1].float() / temperature
        logp = torch.log_softmax(logits, -1)[torch.arange(len(c)), torch.tensor(c)]
        ratio = torch.exp(logp - old[i])
        surrogate = torch.minimum(ratio * advantages[i],
                                  ratio.clamp(1 - low, 1 + high) * advantages[i])
        d = ref[i] - logp
        loss = -surrogate + kl_coef * (torch.exp(d) - d - 1)
        per_seq.append(loss.sum() if aggregation == "token" else loss.mean())
        tokens += len(c)
    return torch.stack(per_seq).sum(), tokens


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_the_loss_equals_the_per_completion_reference_packed_and_padded(demo_tokenizer,
                                                                        aggregation):
    model = _model()
    prompts = _prompts(demo_tokenizer, 4)
    completions = [[30, 31, demo_tokenizer.eos_id], [32, demo_tokenizer.eos_id],
                   [40, 41, 42, 43], [44, demo_tokenizer.eos_id]]
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    g = torch.Generator().manual_seed(0)
    old = [torch.randn(len(c), generator=g) * 0.3 - 3 for c in completions]
    ref = [torch.randn(len(c), generator=g) * 0.3 - 3 for c in completions]
    settings = dict(temperature=0.7, clip_low=0.2, clip_high=0.28, kl_coef=0.05,
                    loss_aggregation=aggregation)
    want, n_tokens = _reference_loss(model, prompts, completions, advantages, old, ref, 0.7,
                                     0.2, 0.28, 0.05, aggregation)
    grads = {}
    for pack in (False, True):
        task = _task(demo_tokenizer, pack, **settings)
        batch = task._collate(prompts, completions)
        assert batch["weight"] == (n_tokens if aggregation == "token" else 4)
        batch["advantages"] = advantages
        # Place the per-token values where each completion's targets are.
        for key, values in (("old_logps", old), ("ref_logps", ref)):
            full = torch.zeros(batch["targets"].shape)
            for i in range(4):
                full[(batch["seq"] == i) & (batch["targets"] != IGNORE)] = values[i]
            batch[key] = full
        batch["rollout_sums"] = (torch.zeros(8), torch.zeros(2))
        model.zero_grad()
        loss, sums = task.micro_batch_loss(model, batch)
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
        loss.backward()
        grads[pack] = [p.grad.clone() for p in model.parameters()]
        assert float(sums[task.sum_names.index("tokens")]) == n_tokens
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_advantages_are_relative_to_the_group(demo_tokenizer):
    task = _task(demo_tokenizer, pack=True)
    task.sampler = Sampler(None, torch.device("cpu"))
    model = _model()
    batch = task.rollout(model, task.step_batches()[0])[0]
    assert batch["advantages"].shape == (8,)
    groups = batch["advantages"].reshape(4, 2)
    torch.testing.assert_close(groups.sum(1), torch.zeros(4))  # zero mean in each group


# -- config checks --------------------------------------------------------------------------

GRPO = ["--gin_file=gin/grpo.gin", "--gin_bindings=Trainer.init_from=''"]

CHECK_CASES = {
    "group_of_one": (["grpo_task.group_size=1"], "group_size=1 must be >= 2"),
    "weights_and_functions": (["grpo_task.reward_weights=[1.0]"],
                              "1 weights for 2 reward functions; give one weight per function"),
    "clip_order": (["grpo_task.clip_low=0.3", "grpo_task.clip_high=0.2"],
                   "clip_low <= clip_high"),
    "kl_setting_without_reference": (["grpo_task.kl_estimator='k1'"],
                                     "kl_estimator='k1' is bound but kl_coef=0 keeps no reference"),
    "passes_and_checkpoints": (["grpo_task.num_passes=3"],
                               "Trainer.num_steps=200 is not a multiple of num_passes=3"),
    "longer_than_the_model": (["grpo_task.max_new_tokens=120"],
                              "max_prompt_length + max_new_tokens = 152 is longer than "
                              "llama3_model.max_seq_len=128"),
    "template_field": (["build_prompt_data.template='Q: {question}'"],
                       "the template reads the field 'question', but the first row of "
                       "assets/compare/train.jsonl has only answer, prompt, teacher"),
    "reward_field": (["math_verify_reward.field='solution'"],
                     "the reward functions read the field 'solution'"),
    "bad_pattern": (["format_reward.pattern='(\\\\d'"], "is not a regular expression"),
    "uncalled_reward": (["grpo_task.reward_fns=[@format_reward]",
                         "grpo_task.reward_weights=[1.0]"],
                        "passes the function itself; call it: @format_reward()"),
    "same_name_twice": (["grpo_task.reward_fns=[@format_reward(), @format_reward()]"],
                        "reward function names ['format', 'format'] repeat"),
}


@pytest.mark.parametrize("case", sorted(CHECK_CASES))
def test_a_grpo_config_that_cannot_work_exits_2_before_any_work(case, tmp_path, capsys,
                                                                 search_roots):
    from absl import flags

    from launchers import train

    bindings, expected = CHECK_CASES[case]
    workdir = tmp_path / "run"
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", f"--workdir={workdir}", *GRPO,
                 *(f"--gin_bindings={b}" for b in bindings)])
    with pytest.raises(SystemExit) as exit_info:
        train.main(["train"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert expected in err, err
    assert not workdir.exists()


# -- end to end -----------------------------------------------------------------------------

@pytest.mark.slow
def test_grpo_raises_pass_at_1_above_its_sft_start(tmp_path):
    """The demo pipeline, shortened: SFT imitates the biased teacher, GRPO corrects it."""
    sft = tmp_path / "sft"
    proc = run_launcher(["--gin_file=gin/sft_compare.gin", "--gin_bindings=Trainer.num_steps=400",
                         "--gin_bindings=sft_task.num_samples=0",
                         "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={sft}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    grpo = tmp_path / "grpo"
    proc = run_launcher([*GRPO[:1], f"--gin_bindings=Trainer.init_from='{sft}'",
                         "--gin_bindings=Trainer.num_steps=40",
                         "--gin_bindings=Trainer.eval_every=20",
                         "--gin_bindings=Trainer.checkpoint_every=40",
                         "--gin_bindings=Trainer.export_hf=True", f"--workdir={grpo}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    passes = {r["step"]: r["eval/pass_at_1"] for r in records if "eval/pass_at_1" in r}
    assert sorted(passes) == [0, 20, 40]
    assert 0.4 < passes[0] < 0.8  # the teacher's habit, learned
    assert passes[40] >= passes[0] + 0.15, passes
    train = [r for r in records if "train/reward" in r]
    assert train[-1]["train/reward"] > train[0]["train/reward"]
    assert "train/kl" not in train[-1]  # no reference with kl_coef=0
    assert {"train/clip_ratio", "train/entropy", "train/equal_reward_groups",
            "train/completion_length_max", "train/truncated", "train/generation_tokens_per_s",
            "train/tokens_per_s", "train/rewards/math_verify",
            "train/rewards/math_verify_std"} <= set(train[-1])
    assert proc.stderr.count("sample @ step 40 | prompt ") == 3
    (record,) = (grpo / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"eval/samples" in record.read_bytes()  # the samples table, with their rewards
    # The policy exports as a causal LM that transformers loads.
    assert json.loads((grpo / "hf" / "config.json").read_text())["architectures"] == [
        "LlamaForCausalLM"]


@pytest.mark.slow
def test_with_two_passes_a_stop_waits_for_the_rollouts_last_pass_and_resumes_exactly(tmp_path):
    from tests.tasks.test_guarantees import _base, _numbers

    class Factory:  # _base's tmp_path_factory: only getbasetemp() is used
        @staticmethod
        def getbasetemp():
            return tmp_path

    base = [*_base("grpo", Factory), "--gin_bindings=grpo_task.num_passes=2"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_launcher([*base, f"--workdir={straight}"]).returncode == 0
    proc = run_launcher([*base, f"--workdir={stopped}"], env={"GINTUNE_SIGNAL_AT": "step_end:1"})
    assert proc.returncode == 75, proc.stderr[-3000:]
    # The signal came after step 1; step 2 ends the rollout, so the checkpoint is of step 2.
    assert "stopped by a signal at step 2" in proc.stderr
    assert sorted(p.name for p in (stopped / "checkpoints").glob("step_*")) == ["step_2"]
    assert run_launcher([*base, f"--workdir={stopped}"]).returncode == 0
    assert _numbers(stopped) == _numbers(straight)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    generated = [r["train/generation_tokens_per_s"] for r in records
                 if "train/generation_tokens_per_s" in r]
    assert generated[0] > 0 and generated[1] == 0  # the second pass samples nothing


@pytest.mark.slow
@pytest.mark.parametrize("overlay, mode, nproc", [
    ([], "frozen_copy", None), ([], "frozen_copy", 2),
    (["--gin_bindings=fsdp.param_dtype='bfloat16'"], "frozen_copy", None),
    (["--gin_file=gin/overlays/lora.gin"], "adapters off", None)])
def test_a_kl_penalty_measures_kl_to_the_initial_policy(tmp_path, overlay, mode, nproc):
    """At step 1 the policy is the reference (KL 0); after updates KL is positive. The
    reference is a frozen copy (sharded and in bf16 as the policy is: on 2 ranks, or in bf16,
    where the generation copy is bf16 too), or under LoRA the policy with its adapters off."""
    proc = run_launcher([*GRPO, *overlay, "--gin_file=gin/debug/smoke.gin",
                         "--gin_bindings=Trainer.log_every=1", "--gin_bindings=lr=3e-3",
                         "--gin_bindings=grpo_task.kl_coef=0.05",
                         # from scratch no answer is right: lengths vary the rewards
                         "--gin_bindings=grpo_task.reward_fns=[@math_verify_reward(), "
                         "@length_penalty()]", "--gin_bindings=length_penalty.max_tokens=8",
                         "--gin_bindings=length_penalty.buffer_tokens=6",
                         "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={tmp_path}"],
                        torchrun_nproc=nproc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    kl = [r["train/kl"] for r in records if "train/kl" in r]
    assert len(kl) == 4 and abs(kl[0]) < 1e-6 and kl[-1] > 1e-6, kl
    assert json.loads((tmp_path / "summary.json").read_text())["reference/mode"] == mode


def test_a_row_without_a_field_a_reward_reads_stops_the_run_before_the_model(tmp_path):
    """The config check reads a .jsonl file's first row; every row is checked when read."""
    rows = tmp_path / "rows.jsonl"
    good = json.dumps({"prompt": "Which is larger, 1 or 2?", "answer": "2"}) + "\n"
    rows.write_text(good + json.dumps({"prompt": "Which is larger, 3 or 2?"}) + "\n" + good * 20)
    workdir = tmp_path / "w"
    proc = run_launcher([*GRPO, f"--gin_bindings=build_prompt_data.train_files=['{rows}']",
                         "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {rows}:2: no field 'answer', which the reward functions read; the row has "
        "prompt")
    assert not workdir.exists()

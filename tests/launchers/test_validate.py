"""Every kind of bad config stops the launcher before any work: exit 2, a useful message, and
nothing in the workdir. The launcher's main() runs in-process (the same code path as the
command; a few cases also run as a real subprocess)."""

import json

import pytest
from absl import flags

from launchers import train
from tests.conftest import REPO, run_launcher, where


def _main(args, workdir):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", f"--workdir={workdir}", *args])
    return train.main(["train"])


def _fails(args, tmp_path, capsys, *expected, monkeypatch=None):
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        _main(args, workdir)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    for text in expected:
        assert text in err, err
    assert not workdir.exists()
    return err


REWARD = ["--gin_file=gin/reward.gin"]

BINDING_CASES = {
    "unknown_configurable": (["Trainr.seed=1"], [
        "--gin_bindings[0]: unknown configurable 'Trainr'; did you mean: Trainer?",
        "Trainr.seed=1"]),
    "unknown_parameter": (["Trainer.num_step=3"], [
        "unknown parameter 'num_step' of Trainer; did you mean: num_steps?"]),
    "unknown_parameter_without_close_match": (["build_adamw.momentum=0.9"], [
        "unknown parameter 'momentum' of build_adamw; valid: lr, weight_decay, betas, eps"]),
    "unknown_scope": (["eval/Trainer.seed=3"], [
        "scope 'eval' is never entered: no @eval/... reference uses it"]),
    "string_for_float": (["build_adamw.lr='1e-4'"], [
        "build_adamw.lr: expected float, got '1e-4' (str)"]),
    "float_for_int": (["Trainer.micro_batch_size=8.5"], [
        "Trainer.micro_batch_size: expected int, got 8.5 (float)"]),
    "string_for_bool": (["RunLogger.use_wandb='false'"], [
        "RunLogger.use_wandb: expected bool, got 'false' (str)"]),
    "string_for_list": (["build_preference_data.train_files='a.jsonl'"], [
        "build_preference_data.train_files: expected a list of str, got 'a.jsonl' (str)"]),
    "wrong_type_through_macro": (["lr='1e-4'"], [
        "--gin_bindings[0]: build_adamw.lr (through %lr): expected float, got '1e-4' (str)"]),
    "undefined_macro": (["build_adamw.weight_decay=%wd"], [
        "undefined macro %wd; defined macros: lr"]),
    "unknown_reference": (["reward_task.data_fn=@build_prefrence_data"], [
        "unknown reference @build_prefrence_data; did you mean: build_preference_data"]),
    "macro_nothing_reads": (["LR=1e-4"], [
        "binding of macro 'LR' does nothing: no binding reads %LR; did you mean: lr?"]),
    "configurable_never_built": (["qwen2_model.num_layers=2"], [
        "binding of qwen2_model.num_layers does nothing: this config never builds "
        "qwen2_model"]),
    "passed_by_caller": (["build_adamw.model=1"], [
        "build_adamw.model is passed by the calling code, so a binding would be ignored"]),
    "unbalanced_quote": (["build_tokenizer.path='assets/demo"], [
        "--gin_bindings[0]: malformed: a ' quote opened here is never closed"]),
    "unbalanced_bracket": (["build_preference_data.train_files=['a.jsonl'"], [
        "--gin_bindings[0]: malformed: a '[' bracket opened here is never closed"]),
    "call_instead_of_literal": (["lr=float('nan')"], [
        "--gin_bindings[0]: malformed: a value must be a literal (a number, string, list, tuple, "
        "dict, True, False or None), a @reference or a %macro; calls and names are not "
        "evaluated"]),
    "micro_batch_zero": (["Trainer.micro_batch_size=0"], [
        "--gin_bindings[0]: Trainer: micro_batch_size=0 must be >= 1"]),
    "batch_not_divisible": (["Trainer.global_batch_size=30"], [
        "--gin_bindings[0]: Trainer: global_batch_size=30 must be divisible by world_size (1) x "
        "micro_batch_size (16), e.g. 16"]),
    "two_held_out_sources": (["build_preference_data.eval_fraction=0.1"], [
        "build_preference_data: give exactly one held-out source"]),
    "warmup_not_shorter_than_training": (["Trainer.num_steps=5"], [
        "build_lr_schedule: warmup_steps=10 must be in [0, num_steps=5)"]),
    "negative_centering": (["build_bradley_terry_loss.center_rewards_coefficient=-0.01"], [
        "center_rewards_coefficient=-0.01 must be >= 0"]),
    "missing_data_file": (["build_preference_data.train_files=['nope.jsonl']"], [
        "train file 'nope.jsonl' not found"]),
    "max_length_beyond_model": (["build_preference_data.max_length=256"], [
        "max_length=256 is longer than llama3_model.max_seq_len=128"]),
}


@pytest.mark.parametrize("case", sorted(BINDING_CASES))
def test_bad_binding_is_refused_before_any_work(case, tmp_path, capsys, search_roots):
    bindings, expected = BINDING_CASES[case]
    _fails([*REWARD, *(f"--gin_bindings={b}" for b in bindings)], tmp_path, capsys, *expected)


FILE_CASES = {
    "same_key_twice": ("Trainer.seed = 1\nTrainer.seed = 2\n", [
        "bad.gin:2: Trainer.seed is bound twice in", "(first at line 1); keep one"]),
    "missing_include": ("include 'gin/no_such.gin'\n", [
        "bad.gin:1: include 'gin/no_such.gin' not found",
        "includes resolve against --gin_search_path, $GINTUNE_GIN_PATH and the repository root"]),
    "malformed_syntax": ("Trainer.seed = = 3\n", ["bad.gin:1: malformed: Unable to parse value"]),
    "unclosed_bracket_in_file": ("Trainer.seed = 1\nbuild_adamw.betas = (0.9,\n  0.99\n", [
        "bad.gin:2: malformed: a '(' bracket opened here is never closed"]),
    "import_not_allowed": ("import os\n", [
        "bad.gin:1: import 'os' is not allowed: a .gin file may only import"]),
    "empty_file": ("# only a comment\n", ["bad.gin is empty: it binds nothing"]),
    "unclosed_triple_quote": ('Trainer.seed = 1\n"""\nnotes\n', [
        'bad.gin:2: malformed: a """ string opened here is never closed']),
    "closed_triple_quote_is_not_a_statement": ('Trainer.seed = 1\n"""\nnotes\n"""\n', [
        "bad.gin:2: malformed: "]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_is_refused_with_its_line(case, tmp_path, capsys, search_roots):
    text, expected = FILE_CASES[case]
    bad = tmp_path / "bad.gin"
    bad.write_text(text)
    _fails([*REWARD, f"--gin_file={bad}"], tmp_path, capsys, *expected)


def test_include_cycle_is_named(tmp_path, capsys):
    (tmp_path / "a.gin").write_text("include 'b.gin'\n")
    (tmp_path / "b.gin").write_text("Trainer.seed = 1\ninclude 'a.gin'\n")
    _fails([f"--gin_search_path={tmp_path}", "--gin_file=a.gin"], tmp_path, capsys,
           "b.gin:2: include cycle: a.gin -> b.gin -> a.gin")


def test_a_gin_file_that_is_not_utf8_is_named_with_its_line_even_when_included(tmp_path, capsys):
    (tmp_path / "latin.gin").write_bytes(b"Trainer.seed = 1\n# caf\xe9\n")
    (tmp_path / "top.gin").write_text("include 'gin/reward.gin'\ninclude 'latin.gin'\n")
    err = _fails([f"--gin_search_path={tmp_path}", "--gin_file=top.gin"], tmp_path, capsys,
                 "latin.gin:2: not valid UTF-8 (byte 0xe9 at column 6); save the file as UTF-8")
    assert "Traceback" not in err and "top.gin" not in err


def test_a_file_is_read_once_however_often_it_is_included(tmp_path, search_roots):
    """A teammate's snippet that includes gin/base/trainer.gin, given after gin/reward.gin
    (which includes it too and overrides its lr), adds its own bindings and nothing else."""
    from launchers.train import BUILDS
    from lib import config

    snippet = tmp_path / "snippet.gin"
    snippet.write_text("include 'gin/base/trainer.gin'\nTrainer.seed = 3\n")
    cfg = config.load(["gin/reward.gin", str(snippet), "gin/reward.gin"], [], builds=BUILDS)
    lr = cfg.table.macros["lr"]
    assert (lr.value, lr.where.source) == (1e-4, "gin/reward.gin")
    assert cfg.table.params[("", "Trainer", "seed")].value == 3
    assert len(cfg.files) == len(set(cfg.files))


def test_every_module_that_registers_a_configurable_may_be_imported():
    import lib.configurables  # noqa: F401  (registers them all)
    from lib.config import registry
    from lib.config.sources import ALLOWED_IMPORTS

    modules = {spec.module for spec in registry.specs().values()
               if spec.module.startswith("lib.")}  # (tests register their own too)
    assert modules and modules <= ALLOWED_IMPORTS, sorted(modules - ALLOWED_IMPORTS)


def test_checks_a_run_would_make_are_made_by_validate_only_too(tmp_path, capsys, search_roots):
    (tmp_path / "rows.txt").write_text("{}\n")
    _fails([*REWARD, "--gin_bindings=Checkpointer.keep_last=-1",
            f"--gin_bindings=build_preference_data.train_files=['{tmp_path / 'rows.txt'}']",
            "--validate_only"], tmp_path, capsys,
           "--gin_bindings[0]: Checkpointer: Checkpointer.keep_last=-1 must be >= 0",
           f"{tmp_path / 'rows.txt'}: unsupported file type '.txt'; use .jsonl, .json, .parquet")


@pytest.mark.parametrize("value", ["0", "-2", "abc"])
def test_a_world_size_that_is_not_a_number_of_ranks_is_refused(tmp_path, capsys, monkeypatch,
                                                                value):
    monkeypatch.setenv("WORLD_SIZE", value)
    _fails([*REWARD, "--validate_only"], tmp_path, capsys,
           f"error: WORLD_SIZE={value!r} is not a number of ranks (a whole number >= 1")


def test_gin_file_that_is_a_directory(tmp_path, capsys, search_roots):
    err = _fails(["--gin_file=gin"], tmp_path, capsys,
                 "--gin_file 'gin' is a directory; pass a .gin file inside it, such as "
                 "gin/base/trainer.gin, gin/benchmarks/")
    assert "has no default" not in err  # what follows from a file not read is one line
    (tmp_path / "snips").mkdir()
    (tmp_path / "top.gin").write_text("include 'snips'\n")
    _fails([f"--gin_search_path={tmp_path}", "--gin_file=top.gin"], tmp_path, capsys,
           f"top.gin:1: include 'snips' is a directory ({tmp_path / 'snips'}); include a .gin "
           "file")


def test_a_search_path_that_is_not_a_directory_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GINTUNE_GIN_PATH", str(tmp_path / "team"))
    _fails([f"--gin_search_path={tmp_path / 'nope'}", *REWARD], tmp_path, capsys,
           f"error: --gin_search_path '{tmp_path / 'nope'}' is not a directory; "
           f"$GINTUNE_GIN_PATH entry '{tmp_path / 'team'}' is not a directory")


def test_one_bindings_flag_may_not_bind_a_key_twice(tmp_path, capsys, search_roots):
    _fails([*REWARD, "--gin_bindings=Trainer.num_steps=4\nTrainer.num_steps=6"], tmp_path,
           capsys, "Trainer.num_steps is bound twice in --gin_bindings[0]; keep one")


def test_required_macro_left_unset(tmp_path, capsys, search_roots):
    _fails(["--gin_file=gin/experiments/qwen2_5_0_5b_reward.gin",
            "--gin_bindings=train_files=['assets/demo/train.jsonl']",
            "--gin_bindings=eval_files=['assets/demo/eval.jsonl']"], tmp_path, capsys,
           f"{where('gin/models/qwen2_5_0_5b.gin', 'hf_checkpoint_dir =')}: required macro "
           "'hf_checkpoint_dir' is not set; "
           "set it with --gin_bindings=\"hf_checkpoint_dir=...\"")


def test_max_length_beyond_the_hf_checkpoints_positions(tmp_path, capsys, hf_dirs,
                                                        search_roots):
    """gin/experiments/qwen2_5_0_5b_reward.gin asks for 1,024 tokens a side."""
    config_json = hf_dirs["qwen2"] / "config.json"
    config_json.write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 512}))
    args = ["--gin_file=gin/experiments/qwen2_5_0_5b_reward.gin",
            f"--gin_bindings=hf_checkpoint_dir='{hf_dirs['qwen2']}'",
            "--gin_bindings=train_files=['assets/demo/train.jsonl']",
            "--gin_bindings=eval_files=['assets/demo/eval.jsonl']"]
    _fails(args, tmp_path, capsys,
           f"max_length=1024 is longer than max_position_embeddings in {hf_dirs['qwen2']}/"
           "config.json=512; lower max_length")
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *args, "--gin_bindings=build_preference_data.max_length=512",
                 "--validate_only"])
    assert train.main(["train"]) == 0


def test_batch_split_is_checked_for_the_torchrun_world_size(tmp_path, capsys, monkeypatch,
                                                           search_roots):
    monkeypatch.setenv("WORLD_SIZE", "3")
    _fails(REWARD, tmp_path, capsys, "must be divisible by world_size (3) x micro_batch_size")


def test_every_problem_is_reported_at_once(tmp_path, capsys, search_roots):
    err = _fails([*REWARD, "--gin_bindings=Trainer.num_step=3", "--gin_bindings=LR=1",
                  "--gin_bindings=RunLogger.use_wandb='x'"], tmp_path, capsys,
                 "3 config problems")
    assert err.index("--gin_bindings[0]") < err.index("--gin_bindings[1]") < err.index(
        "--gin_bindings[2]")


def test_validate_only_prints_the_config_with_provenance_and_exits_0(tmp_path, capsys,
                                                                    search_roots):
    assert _main([*REWARD, "--gin_bindings=lr=1e-4", "--validate_only"], tmp_path / "w") == 0
    out, err = capsys.readouterr()
    assert (f"lr = 0.0001  # --gin_bindings[0]; overrides {where('gin/reward.gin', 'lr =')}, "
            f"{where('gin/base/trainer.gin', 'lr =')}") in out
    assert "build_adamw.eps = 1e-08  # default" in out
    assert f"Trainer.num_steps = 300  # {where('gin/reward.gin', 'Trainer.num_steps')}" in out
    assert "config OK" in err
    assert not (tmp_path / "w").exists()


def test_includes_never_resolve_from_the_working_directory(tmp_path):
    """A gin/ folder in the working directory does not shadow the search roots."""
    (tmp_path / "gin" / "base").mkdir(parents=True)
    (tmp_path / "gin" / "base" / "trainer.gin").write_text("lr = 0.5\nTrainer.seed = 99\n")
    proc = run_launcher([f"--gin_file={REPO / 'gin/reward.gin'}", "--validate_only"],
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"Trainer.seed = 0  # {where('gin/base/trainer.gin', 'Trainer.seed')}" in proc.stdout
    assert f"lr = 0.0001  # {where('gin/reward.gin', 'lr =')}" in proc.stdout


def test_typo_in_lr_exits_2_as_a_real_command(tmp_path):
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_bindings=LR=1e-4",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2
    assert "did you mean: lr?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()

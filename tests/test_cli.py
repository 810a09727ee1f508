"""The binaries' faces: `--help`, one-line user errors, and what TensorFlow's start-up needs.

Each binary runs its cases in one process through its own `run()` (the console script's entry
point, with `sys.argv[0]` its name), so that TensorFlow starts once per binary.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
VERBS = ("train", "evaluate", "export", "serve", "relocalize", "benchmark")
NATIVE_INFO = re.compile(r"^I\d{4} [\d:.]+\s+\d+ \S+:\d+\] ", re.MULTILINE)

# Runs `video_reloc.cli.VERB.run()` once per command line of argv[2] (JSON); prints the exit
# code, standard output and standard error of each as JSON, and TF_CPU_ALLOCATOR_USE_BFC before
# the binary was imported and once TensorFlow has run an op.
DRIVER = textwrap.dedent(
    """
    import contextlib, importlib, io, json, os, sys
    allocator = [os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")]
    from absl import flags

    verb, cases = sys.argv[1], json.loads(sys.argv[2])
    binary = importlib.import_module(f"video_reloc.cli.{verb}")
    import tensorflow as tf
    tf.random.normal((8, 8)).numpy()
    allocator.append(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
    print("ALLOCATOR" + json.dumps(allocator))
    outcomes = []
    for args in cases:
        flags.FLAGS.unparse_flags()
        sys.argv = [f"video-reloc-{verb}", *args]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                binary.run()
                code = 0
            except SystemExit as exit:
                code = exit.code
        outcomes.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    print("OUTCOMES" + json.dumps(outcomes))
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    np.save(root / "query.npy", np.zeros((20, 4), np.float32))
    np.save(root / "reference.npy", np.zeros((50, 4), np.float32))
    (root / "text.npy").write_text("not an array\n")
    (root / "a_file").write_text("")
    (root / "model" / "1").mkdir(parents=True)
    (root / "model" / "1" / "saved_model.pb").write_bytes(b"")
    with h5py.File(root / "features.hdf5", "w") as h5:
        h5.create_dataset("v_video/c3d_features", data=np.zeros((40, 4), np.float32))
    return root


def cases(files):
    """verb -> [(arguments, what the one error line must say)]; `None`: `--help`.

    The user errors of the binaries' command lines, each a traceback or a silent wrong answer
    before: every one must give one line naming the flag, file or field at fault.
    """
    missing = files / "missing"
    # A model base whose version folder looks like a SavedModel: it is loaded only after the
    # options and the features have been read, so their errors come first.
    relocalize = [f"--model={files / 'model'}", f"--reference={files / 'reference.npy'}"]
    query = f"--query={files / 'query.npy'}"
    return {
        "relocalize": [
            (None, ["--query", "--reference", "--query_range", "--top_k", "--fps"]),
            ([*relocalize, f"--query={files / 'nope.npy'}"], "--query: .*nope.npy: no such file"),
            ([*relocalize, f"--query={files / 'nope.mp4'}"], "--query: .*nope.mp4: no such file$"),
            ([*relocalize, query, "--top_k=0"], "--top_k: must be at least 1, got 0"),
            ([*relocalize, query, "--top_k=-1"], "--top_k: must be at least 1, got -1"),
            (
                [*relocalize, query, "--query_range=0:1000"],
                r"--query_range: 0:1000 is not within the 20 features",
            ),
            ([*relocalize, query, "--query_range=10:5"], "--query_range: 10:5: expected 0 <= ST"),
            ([*relocalize, query, "--query_range=a:b"], "--query_range: expected START:END"),
            ([*relocalize, query, "--fps=0"], "--fps: must be positive, got 0"),
            ([*relocalize, query, "--batch_size=0"], "--batch_size: must be at least 1, got 0"),
            ([*relocalize, query, "--stride=0"], r"--stride: must be within 1..--window"),
            (
                [*relocalize, f"--query={files / 'text.npy'}"],
                r"--query: .*text.npy: not a NumPy array file \(.npy\)",
            ),
            (
                [*relocalize, query, f"--reference={files / 'features.hdf5'}:v_nope"],
                "--reference: .*features.hdf5: no group 'v_nope'",
            ),
            (
                [f"--model={missing}", query, f"--reference={files / 'reference.npy'}"],
                f"--model: {missing}: no such file or folder",
            ),
            (
                [f"--model={files}", f"--reference={files / 'reference.npy'}", query],
                "--model: no SavedModel in .* nor in a version folder of it",
            ),
            (
                [f"--query={files / 'query.npy'}"],
                "Flag --model must have a value .*Flag --reference must",
            ),
            ([*relocalize, query, "--top_k=x"], "flag --top_k=x: invalid literal"),
            ([*relocalize, query, "positional"], r"unexpected arguments \['positional'\]"),
        ],
        "evaluate": [
            (None, ["--model", "--split", "--dataset", "--data_dir", "--output", "--batch_size"]),
            ([f"--model={missing}"], f"--model: {missing}: no such file or folder"),
            ([f"--model={files}"], "--model: .*no SavedModel, version folder, checkpoint or mod"),
        ],
        "train": [
            (
                None,
                [
                    "--model_dir",
                    "--preset",
                    "--dataset",
                    "--data_dir",
                    "--manual_dir",
                    "--train_steps",
                    "--batch_size",
                    "--seed",
                    "--strategy",
                    "--ablation",
                    "--units",
                    "--bilinear_rank",
                    "--encoder_keep_prob",
                    "--matching_keep_prob",
                    "--eval_every",
                    "--checkpoint_every",
                    "--normalization",
                    "--distractor_probability",
                    "--keep_checkpoints",
                    "--encoder_dropout",
                ],
            ),
            ([f"--model_dir={files / 'a_file'}"], "--model_dir: .*a_file is a file, not a folder"),
            ([f"--model_dir={missing}", "--train_steps=0"], "--train_steps: must be at least 1"),
            ([f"--model_dir={missing}", "--ablation=tiny"], "flag --ablation=tiny: value should"),
            (
                # An ablation of the other architecture.
                [f"--model_dir={missing}", "--architecture=cgbm", "--ablation=similarity_map_only"],
                r"--ablation: must be one of \['base', .*'full'\] for architecture cgbm, got 'simi",
            ),
            (
                [f"--model_dir={missing}", "--encoder_keep_prob=0.5", "--encoder_dropout=0.5"],
                "--encoder_keep_prob: give it or --encoder_dropout, not both",
            ),
        ],
        "export": [
            (None, ["--checkpoint", "--export_dir", "--version"]),
            ([f"--checkpoint={missing}/ckpt-5"], "--checkpoint: .*ckpt-5: no such checkpoint"),
            ([f"--checkpoint={files}"], "--checkpoint: .*not a checkpoint of video-reloc-train"),
        ],
        "serve": [
            (None, ["--model_base_path", "--model_config_file", "--rest_api_port", "--port"]),
            (
                [f"--model_base_path={missing}", "--model_warmup_shapes=3y"],
                "--model_warmup_shapes: ",
            ),
        ],
        "benchmark": [
            (None, ["--dataset", "--output_dir", "--seeds", "--rows"]),
            (
                [f"--output_dir={files / 'tables'}", "--model_params=units=many"],
                "--model_params: units='many' is not a int",
            ),
            (
                [f"--output_dir={files / 'tables'}", "--seeds=0"],
                "--seeds: must be at least 1, got 0",
            ),
            (
                [f"--output_dir={files / 'tables'}", "--rows=Ours,Nope"],
                r"--rows: unknown rows \['Nope'\]; choose among",
            ),
        ],
    }


def verbose_case(files):
    """A user error under `--verbosity=1`, run last by the relocalize binary's process."""
    return [
        f"--model={files}",
        f"--query={files / 'query.npy'}",
        f"--reference={files / 'reference.npy'}",
        "--top_k=0",
        "--verbosity=1",
    ]


@pytest.fixture(scope="module")
def outcomes(files):
    """verb -> one outcome per case; the binaries run at once, one process each."""
    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    command_lines = {
        verb: [["--help"] if args is None else args for args, _ in verb_cases]
        for verb, verb_cases in cases(files).items()
    }
    command_lines["relocalize"].append(verbose_case(files))
    processes = {
        verb: subprocess.Popen(
            [sys.executable, "-c", DRIVER, verb, json.dumps(verb_command_lines)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )
        for verb, verb_command_lines in command_lines.items()
    }
    found = {}
    for verb, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        allocator = json.loads(stdout.split("ALLOCATOR", 1)[1].splitlines()[0])
        found[verb] = json.loads(stdout.split("OUTCOMES", 1)[1]), stderr, allocator
    return found


def test_every_binary_is_tested():
    assert set(cases(pathlib.Path("x"))) == set(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_the_purpose_an_example_and_the_binarys_flags(verb, files, outcomes):
    (args, flag_names), outcome = cases(files)[verb][0], outcomes[verb][0][0]
    assert args is None and outcome["code"] == 1  # absl's --help exits with 1
    text = outcome["stdout"]
    module = __import__("importlib").util.find_spec(f"video_reloc.cli.{verb}")
    doc = pathlib.Path(module.origin).read_text().split('"""')[1]
    assert doc.splitlines()[0] in text  # the purpose
    assert f"video-reloc-{verb} --" in text  # an example
    flags_section = text.split("\nflags:\n", 1)[1]
    for name in flag_names:
        # Documented: a description of more than a few words follows the flag's name.
        assert re.search(rf"^  {re.escape(name)}: \S.{{9,}}", flags_section, re.MULTILINE), name
    assert "--verbosity" not in flags_section  # absl's own flags stay in --helpfull


def _error_cases():
    return [
        (verb, index)
        for verb, verb_cases in cases(pathlib.Path("x")).items()
        for index, (args, _) in enumerate(verb_cases)
        if args is not None
    ]


@pytest.mark.parametrize("verb, index", _error_cases())
def test_a_user_error_is_one_line_naming_what_is_at_fault(verb, index, files, outcomes):
    args, expected = cases(files)[verb][index]
    outcome = outcomes[verb][0][index]
    assert outcome["code"] == 1, (args, outcome)
    lines = outcome["stderr"].splitlines()
    assert len(lines) == 1, (args, outcome["stderr"])
    assert lines[0].startswith(f"video-reloc-{verb}: ")
    assert re.search(expected, lines[0]), (expected, lines[0])
    assert outcome["stdout"] == ""


def test_the_binaries_start_quietly(outcomes):
    """No INFO line of TensorFlow's C++ side, nor absl's banner, when a binary starts."""
    for verb, (_, stderr, _) in outcomes.items():
        assert not NATIVE_INFO.search(stderr), (verb, stderr[-3000:])
        assert "absl::InitializeLog()" not in stderr, (verb, stderr[-3000:])
        assert "oneDNN custom operations" not in stderr


def test_the_binaries_ask_for_the_bfc_cpu_allocator_before_tensorflow_starts(outcomes):
    """Without TF_CPU_ALLOCATOR_USE_BFC in the environment, each binary sets it to `true` on
    import, before TensorFlow reads it (see test_binaries.py for the setting itself)."""
    for verb, (_, _, allocator) in outcomes.items():
        assert allocator == [None, "true"], verb


# TensorFlow's start-up (video_reloc.cli.startup).


def test_filter_native_log():
    from video_reloc.cli import startup

    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795646577.319638   24627 cpu_feature_guard.cc:227] This TensorFlow binary\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild\n"
        "W0000 00:00:1795646577.5   24627 some_op.cc:12] a warning\n"
        "a line of its own\n"
        "E0000 00:00:1795646579.624621   24627 cuda_platform.cc:52] failed call to cuInit\n"
    )
    lines = text.splitlines(keepends=True)
    assert startup.filter_native_log(text, 0) == text
    assert startup.filter_native_log(text, 1) == "".join(lines[3:])
    assert startup.filter_native_log(text, 2) == lines[5]
    assert startup.filter_native_log("plain text\n", 3) == "plain text\n"
    # Without CUDA drivers, the failed initialization of CUDA is no news.
    no_driver = "I0000 00:00:1.2   24627 cudart_stub.cc:31] Could not find cuda drivers\n"
    assert startup.filter_native_log(no_driver + text, 1) == "".join(lines[3:5])
    assert startup.filter_native_log(no_driver + text, 0) == no_driver + text


def test_verbosity_1_shows_the_traceback_too(outcomes):
    """The one line stays last; `--verbosity=1` adds the traceback above it."""
    outcome = outcomes["relocalize"][0][-1]
    assert outcome["code"] == 1
    assert "Traceback (most recent call last)" in outcome["stderr"]
    assert "UserError" in outcome["stderr"]
    last = outcome["stderr"].splitlines()[-1]
    assert last == "video-reloc-relocalize: --top_k: must be at least 1, got 0"

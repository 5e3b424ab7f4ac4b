"""Running the probe's students: one after another, one per device at a time, or as Ray tasks on a cluster.

Every student (and every control student) is independent once its rows, seed and step count are fixed,
so seeds and controls can train side by side. Each job trains from the base, writes its checkpoints
under `workdir/<key>` (so a rerun, or another worker after a crash, resumes from the last checkpoint and
reuses a finished student) and returns its trait measures and training record. Results come back in job
order whatever the backend, so the statistics do not depend on which worker finished first.

- `local` with one device (or none named): in this process, one student at a time on the base's device.
- `local` on a CPU with several cores (`--probe-workers`, by default one per core while the copies fit in
  memory): that many students side by side, each on an equal share of the threads. A student of a small
  model cannot keep many cores busy on its own (its matrices are too small), so separate students use them
  better; a student's arithmetic does not depend on which thread runs it.
- `local` with several devices (`--probe-devices cuda:0,cuda:1`, or every visible GPU when there are
  several): one worker thread per device, each training one student at a time on its device.
- `ray`: each student a Ray task with `num_gpus=1` (when the cluster has GPUs) on an existing cluster
  (`--probe-ray-address`, e.g. `ray://head:10001` or `auto`); the base is loaded by reference inside the
  task, so `workdir` must be storage every node sees.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("local", "ray")
_ENV_FOR_WORKERS = ("TRAIT_AUDIT_CACHE", "TRAIT_AUDIT_TINY_PROFILE", "HF_HOME", "OMP_NUM_THREADS", "PYTHONPATH")


@dataclass(frozen=True)
class StudentJob:
    seed: int
    role: str  # student | control
    rows: list  # (prompt, completion) pairs
    key: str  # checkpoint folder name: covers base, rows, training settings, seed, role, steps
    label: str  # for progress lines


def devices_for(setting: str | None) -> list[str]:
    """The devices students are spread over: the setting (comma-separated), else every GPU when there are
    several, else [] (one student at a time wherever the base lives)."""
    if setting:
        return [d.strip() for d in setting.split(",") if d.strip()]
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or no CUDA: nothing to spread over
        count = 0
    return [f"cuda:{i}" for i in range(count)] if count > 1 else []


def cpu_workers(setting: int | None, jobs: int, base, config, steps_tokens: int) -> int:
    """Students to train side by side on the CPU: the setting, else one per core this process may use
    (TRAIT_AUDIT_THREADS caps it), never more than the jobs or than the free memory holds copies of the student
    (auditor/models/memory.py `student_bytes`). Commands run torch on one thread each (OMP_NUM_THREADS=1: spin-waiting
    OpenMP threads are costly on a shared machine), so side-by-side students are how a probe uses the cores."""
    from auditor.models.device import detect_hardware, thread_budget
    from auditor.models.memory import HEADROOM, student_bytes

    module = base.weights()[0]
    if str(next(module.parameters()).device) != "cpu":
        return 1
    wanted = setting if setting is not None else thread_budget()
    method = config.resolved_method(sum(p.numel() for p in module.parameters()))
    copy = sum(student_bytes(module, method, steps_tokens))
    fits = max(1, int(detect_hardware().free_bytes("cpu") * HEADROOM // max(copy, 1)))
    return max(1, min(wanted, jobs, fits))


def train_and_measure(base, config, traits, job: StudentJob, steps: int, workdir: Path, device: str | None = None,
                      progress=lambda message: None) -> dict:
    """Train one student (resuming from its checkpoint) and measure the traits on it."""
    from auditor.probe.measure import measure_exact
    from auditor.probe.train import Student
    from auditor.progress import step

    student = Student(base, config, job.seed, device=device)
    with step(f"probe: training the {job.label}", total=steps, unit="steps") as shown:
        info = student.train(job.rows, steps, Path(workdir) / job.key, progress=lambda done, total: shown.update(done, total))
    with step(f"probe: measuring the {job.label}"):  # a step, not a progress() phase: a phase would stay open over the next training
        measures = {trait: [float(v) for v in values] for trait, values in measure_exact(student.as_model(), traits).items()}
    record = {"role": job.role, "seed": job.seed, "checkpoint": str(Path(workdir) / job.key), **info}
    if device is not None:
        record["device"] = device
    return {"measures": measures, "training": record}


def run_students(jobs: list[StudentJob], base, config, traits, steps: int, workdir: Path, backend: str = "local",
                 devices: list[str] = (), ray_address: str | None = None, progress=lambda message: None,
                 workers: int = 1) -> list[dict]:
    """Every job's {measures, training}, in job order. `workers` > 1 trains that many students side by side on
    the base's CPU (see cpu_workers), each with an equal share of torch's threads."""
    if backend == "ray":
        return _run_ray(jobs, base, config, traits, steps, workdir, ray_address, progress)
    if backend != "local":
        raise ValueError(f"probe backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if len(devices) <= 1 and workers > 1:
        import torch

        from auditor.models.device import torch_threads

        with torch_threads(torch.get_num_threads() // workers), ThreadPoolExecutor(workers, thread_name_prefix="probe-student") as pool:
            return list(pool.map(lambda job: train_and_measure(base, config, traits, job, steps, workdir, None, progress), jobs))
    if len(devices) <= 1:
        device = devices[0] if devices else None
        return [train_and_measure(base, config, traits, job, steps, workdir, device, progress) for job in jobs]
    free: queue.Queue = queue.Queue()
    for device in devices:
        free.put(device)

    def one(job):
        device = free.get()  # one student per device at a time
        try:
            return train_and_measure(base, config, traits, job, steps, workdir, device, progress)
        finally:
            free.put(device)

    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="probe-student") as pool:
        return list(pool.map(one, jobs))


# --- Ray -------------------------------------------------------------------------------------------
def _ray_student(ref, config, traits, job, steps, workdir, dtype: str = "auto"):
    """Inside a Ray task: load the base by reference (in the audit's dtype, on the task's GPU if it has one), train one
    student there, measure it."""
    import ray

    from auditor.models import Placement, load_model

    gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    device = "cuda" if gpus else None  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    base = load_model(ref, Placement("cuda" if gpus else "cpu", dtype))
    return train_and_measure(base, config, traits, job, steps, Path(workdir), device)


def _run_ray(jobs, base, config, traits, steps, workdir, address, progress) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--probe-backend ray needs Ray: pip install 'trait-audit[ray]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _ENV_FOR_WORKERS if k in os.environ}
        options = {"log_to_driver": False, "include_dashboard": False}
        if env:  # tasks resolve references (tiny:NAME, the cache) the way this process does
            options["runtime_env"] = {"env_vars": env}
        ray.init(address=address, **options)  # address None: start a local one
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=2)(_ray_student)
    progress(f"probe: {len(jobs)} students as Ray tasks ({int(gpus)} GPUs in the cluster)")
    dtype = getattr(base, "dtype", None) or "auto"  # the precision the audit loaded the base in
    refs = [task.remote(base.ref, config, traits, job, steps, str(workdir), dtype) for job in jobs]
    out = []
    for index, ref in enumerate(refs):
        out.append(ray.get(ref))
        progress(f"probe: Ray students {index + 1}/{len(refs)} done")
    return out

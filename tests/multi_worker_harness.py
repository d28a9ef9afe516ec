"""Runs a training CLI as a real multi-worker cluster on this machine (tests of `--strategy multi_worker`).

Any trainer whose module offers the AAF CLI's two entry points can be driven:

    define_flags(flag_values)          defines the CLI's flags in a fresh absl FlagValues
    train_from_flags(flags, hooks=())  builds and runs the training; hooks are called `hook(step, metrics)`

and that takes `--strategy` and `--snapshot-dir` flags. `run_cluster('aaf.train', [argv_1, argv_2, ...])` starts
`num_workers` processes with their own `TF_CONFIG` (free localhost ports, one CPU replica each); every process runs
the trainings argv_1, argv_2, ... one after the other with `--strategy=multi_worker` appended (one process, one
strategy: several short trainings cost one TensorFlow start-up). A worker can be made to SIGKILL itself once, after a
given step of a given training (`Kill`); launching the same command again then resumes.

Adding another trainer (SegSort, AffinityNet, ...) to the multi-worker tests is a new parametrisation of
`tests/common/train/test_multi_worker.py`: its module name and the argv of a tiny run.

Each worker prints one JSON line per finished training: {"run": i, "first_step": s0, "last_step": s1,
"chief_pid": ..., "pid": ...}; `Cluster.reports(worker)` parses them.
"""
import argparse
import dataclasses
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT_PREFIX = 'MULTI_WORKER_REPORT '


def free_ports(count):
    """`count` distinct TCP ports that were free a moment ago on localhost."""
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(('localhost', 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def tf_config(ports, index):
    """TF_CONFIG of worker `index` in a cluster of localhost workers (worker 0 is the chief)."""
    return json.dumps({'cluster': {'worker': [f'localhost:{p}' for p in ports]},
                       'task': {'type': 'worker', 'index': index}})


@dataclasses.dataclass
class Kill:
    """Worker `worker` SIGKILLs itself after step `step` of training number `run` -- once: the marker file records
    that it happened, so the same command launched again runs through."""
    worker: int
    run: int
    step: int
    marker: str


@dataclasses.dataclass
class Cluster:
    """Finished (or killed) worker processes: return codes and combined stdout/stderr."""
    returncodes: List[int]
    logs: List[str]
    pids: List[int]

    def reports(self, worker):
        return [json.loads(line[len(REPORT_PREFIX):]) for line in self.logs[worker].splitlines()
                if line.startswith(REPORT_PREFIX)]

    def describe(self):
        return '\n'.join(f'--- worker {i} (rc {rc}) ---\n{log[-4000:]}'
                         for i, (rc, log) in enumerate(zip(self.returncodes, self.logs)))


def run_cluster(module, runs, num_workers=2, kill: Optional[Kill] = None, timeout=300, grace=20, log_dir=None,
                env=None, single_process=False, no_dropout=False):
    """Starts `num_workers` workers that each run `module`'s trainings `runs` (lists of CLI tokens) in turn.

    Args:
      module: the CLI module, e.g. 'aaf.train'.
      runs: list of argv lists (without the program name); every worker gets the same ones (same command on every
        host, as on a real cluster).
      num_workers: worker processes (one CPU replica each).
      kill: optional `Kill`; once the victim is dead the others get `grace` seconds to stop on their own (they
        block in, or fail out of, their next collective) and are then SIGKILLed, as an operator would.
      timeout: seconds before every worker is SIGKILLed (a hung cluster fails the test instead of the session).
      log_dir: folder for the workers' logs (default: a temporary one).
      env: extra environment variables of the workers (e.g. TF_ENABLE_ONEDNN_OPTS).
      single_process: run the trainings in ONE process without TF_CONFIG and without `--strategy=multi_worker`
        (the reference a cluster must equal; a subprocess, so the environment applies before TensorFlow starts).
      no_dropout: turn the channel dropouts (`common.models.torch_layers.Dropout2d`) into identities: each replica
        draws its own masks for its part of the batch, which no layout of the batch can reproduce.
    Returns:
      `Cluster`.
    """
    import tempfile
    log_dir = log_dir or tempfile.mkdtemp(prefix='multi_worker_logs_')
    os.makedirs(log_dir, exist_ok=True)
    ports = free_ports(num_workers)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='-1', **(env or {}))
    env.pop('TF_CONFIG', None)
    if single_process:
        num_workers = 1
    command = [sys.executable, os.path.abspath(__file__), '--module', module, '--runs', json.dumps(runs)]
    if kill is not None:
        command += ['--kill', json.dumps(dataclasses.asdict(kill))]
    if no_dropout:
        command.append('--no-dropout')
    procs, log_paths = [], []
    for index in range(num_workers):
        log_paths.append(os.path.join(log_dir, f'worker{index}.log'))
        with open(log_paths[-1], 'w') as log:
            worker_env = env if single_process else dict(env, TF_CONFIG=tf_config(ports, index))
            procs.append(subprocess.Popen(command, env=worker_env,
                                          stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT))
    deadline = time.monotonic() + timeout
    victim_dead_at = None
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if kill is not None and victim_dead_at is None and procs[kill.worker].poll() is not None:
            victim_dead_at = time.monotonic()
        if victim_dead_at is not None and time.monotonic() > victim_dead_at + grace:
            break
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    logs = []
    for path in log_paths:
        with open(path, errors='replace') as log:
            logs.append(log.read())
    return Cluster([p.returncode for p in procs], logs, [p.pid for p in procs])


def _worker_main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--module', required=True)
    parser.add_argument('--runs', required=True, help='JSON list of argv lists')
    parser.add_argument('--kill', default='', help='JSON of a Kill')
    parser.add_argument('--no-dropout', action='store_true', help='Dropout2d layers pass their input through')
    args = parser.parse_args(argv)
    kill = Kill(**json.loads(args.kill)) if args.kill else None
    cluster = os.environ.get('TF_CONFIG')
    index = json.loads(cluster)['task']['index'] if cluster else 0
    strategy = ['--strategy=multi_worker'] if cluster else []
    # Nothing of TensorFlow may run before the CLI makes its strategy; importing is fine.
    from absl import flags
    from common.cli import normalize_flag_names
    cli = importlib.import_module(args.module)
    if args.no_dropout:
        from common.models import torch_layers
        torch_layers.Dropout2d.call = lambda self, inputs, training=False: inputs
    for run_index, run_argv in enumerate(json.loads(args.runs)):
        steps, started = [], time.monotonic()

        def hook(step, metrics, run_index=run_index, steps=steps, started=started):
            steps.append((step, time.monotonic() - started))
            if (kill is not None and kill.worker == index and kill.run == run_index and kill.step == step
                    and not os.path.exists(kill.marker)):
                with open(kill.marker, 'w') as marker:
                    marker.write(f'worker {index} killed itself after step {step} of run {run_index}\n')
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        flag_values = flags.FlagValues()
        cli.define_flags(flag_values)
        flag_values(normalize_flag_names([args.module] + list(run_argv) + strategy))
        cli.train_from_flags(flag_values, hooks=[hook])
        report = dict(run=run_index, first_step=steps[0][0] if steps else None,
                      last_step=steps[-1][0] if steps else None, pid=os.getpid(),
                      seconds_to_first_step=round(steps[0][1], 1) if steps else None,
                      seconds=round(time.monotonic() - started, 1))
        print(REPORT_PREFIX + json.dumps(report), flush=True)


if __name__ == '__main__':
    # Run as a script, sys.path[0] is tests/, whose aaf/ and common/ folders must not stand in for the packages.
    if sys.path and os.path.abspath(sys.path[0] or '.') == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    _worker_main(sys.argv[1:])

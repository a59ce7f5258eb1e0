"""The CE-CLIP step on a GPU's terms: no host reads after the first step, one compiled graph, no graph break.

On a CPU these properties cost nothing either way, so they are checked directly: the operations that
would make a GPU wait for the host are counted (:mod:`openclip_ce.testing.host_sync`), and
``torch.compile`` is asked for one full graph over batches of different contents.
"""

import copy
import re
import sys

import pytest
import torch

from openclip_ce.testing import compiled_steps
from openclip_ce.testing.compiled_steps import compiled_against_eager, tiny_clip
from openclip_ce.testing.host_sync import count_host_reads
from openclip_ce.testing.tiny_clip import TINY_VIT_B_32_CFG, write_tiny_model_dir
from openclip_ce.training.loss import CeClipLoss
from openclip_ce.training.packing import CAPACITY, layout_text_batch
from openclip_ce.testing.proc import run
from openclip_ce.testing.text_batches import text_batch
from openclip_ce.testing.training_runs import train_args


@pytest.fixture
def fixed_rows():
    def fix(batches):
        CAPACITY.configure(max(b.tokens.shape[0] for b in batches))
    yield fix
    CAPACITY.configure(None)


@pytest.mark.parametrize("pack", [True, False])
def test_a_ce_step_after_the_first_reads_nothing_back_from_the_device(pack):
    model, spec = tiny_clip(pack)
    loss = CeClipLoss()

    def step(images, text):
        compiled_steps.step(model, loss, images, text).backward()

    counts = []
    for seed in range(3):
        batch = layout_text_batch(text_batch(8, seed=seed), spec).to("cpu")
        counts.append(count_host_reads(step, torch.randn(8, 3, 32, 32), batch)[1])
    assert counts[1:] == [{}, {}], counts
    # the non-finite check reads one value at steps 1, 1 + every, ... (open_clip's log steps), nothing between
    loss.watch_finite(2)
    reads = [count_host_reads(step, torch.randn(8, 3, 32, 32), batch)[1] for _ in (4, 5)]
    assert reads[0] == {} and sum(reads[1].values()) == 1, reads
    # the counter sees what it should: the old design's boolean gather of the valid negatives
    neg = torch.randn(8, 4, 32)
    assert count_host_reads(lambda: neg[batch.valid])[1] == {"aten::index (boolean mask)": 1}
    assert count_host_reads(lambda: loss.metrics())[1]["Tensor.tolist"] == 2  # metrics read at log steps only


def test_compiled_ce_forward_and_loss_is_one_graph_over_different_batches(fixed_rows):
    model, spec = tiny_clip()
    eager_model, eager_loss, loss = copy.deepcopy(model), CeClipLoss(), CeClipLoss()
    batches = [layout_text_batch(text_batch(8, seed=seed), spec) for seed in range(4)]
    assert len({b.tokens.shape[0] for b in batches}) > 1  # different contents, different packed rows
    fixed_rows(batches)
    counter = compiled_against_eager(model, loss, eager_model, eager_loss, batches, after_step=lambda: (
        torch.testing.assert_close(loss.thresholds, eager_loss.thresholds, rtol=1e-5, atol=1e-6)))
    assert counter.frame_count == 1  # one graph: no recompile for new contents, thresholds updated in the graph
    assert (loss.thresholds > 0).any()
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


# open_clip's main compiles with inductor; this runs the same main with torch.compile's backend set to
# aot_eager (graph capture and autograd tracing as inductor gets them, without generating C++), to
# keep the test at seconds on a CPU: graph breaks and recompiles are decided before the backend runs
_COMPILE_MAIN = ("import functools, runpy, sys, torch; "
                 "torch.compile = functools.partial(torch.compile, backend='aot_eager'); "
                 "sys.argv = ['open_clip_train.main', *sys.argv[1:]]; "
                 "runpy.run_module('open_clip_train.main', run_name='__main__', alter_sys=True)")


def test_open_clip_main_with_torchcompile_logs_no_graph_break_or_recompile(tmp_path):
    from openclip_ce.testing.training_runs import csv_with_negatives

    model = write_tiny_model_dir(tmp_path / "model77", TINY_VIT_B_32_CFG)
    data, logs = csv_with_negatives(tmp_path), tmp_path / "logs"
    args = train_args(model, data, logs, "compiled", "--loss", "ce_clip", "--torchcompile", "--ce-text-rows", "8",
                      samples=16, batch=4)
    args[args.index("webdataset")] = "csv"
    proc = run([sys.executable, "-c", _COMPILE_MAIN, *args], timeout=600, TORCH_LOGS="graph_breaks,recompiles")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (logs / "compiled" / "out.log").read_text()
    assert "Compiling model" in log and len(re.findall(r"Train Epoch: 0 \[", log)) == 4
    assert not re.search(r"graph.break|recompil", proc.stderr, re.IGNORECASE), proc.stderr[-4000:]

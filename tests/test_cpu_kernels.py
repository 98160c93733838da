"""The fused CPU kernels (svmix/models/fast/kernels.cpp) compute what their PyTorch fallbacks compute,
including the scalar tails (widths that are not a multiple of the vector block), and a failed build
falls back with a warning instead of failing."""
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from svmix.models.fast import kernels as cpu_kernels

TOL = 1e-5


@pytest.fixture(scope="module")
def ops():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the fused kernels cannot be built here")
    kernels = cpu_kernels.kernels()
    assert kernels is not None, "the fused CPU kernels failed to build (see the warning above)"
    return kernels


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("frames,batch,groups,size", [(7, 1, 1, 64), (5, 2, 8, 16), (3, 3, 4, 5), (149, 1, 8, 128)])
@pytest.mark.parametrize("pool", [False, True])
def test_layer_norm_into_strided_groups(ops, frames, batch, groups, size, pool):
    """LN rows into a buffer with a ones column after each group, and (odd T: the last frame alone)
    the sums of frame pairs for the half-rate path."""
    g = _gen(frames * size)
    hidden, rows = groups * size, frames * batch
    x = torch.randn(frames, batch, hidden, generator=g) * 3 + 1
    weight, bias = torch.randn(hidden, generator=g), torch.randn(hidden, generator=g)
    buffer = torch.full((rows, groups, size + 1), 7.0)  # a ones column's place must stay untouched
    pooled = torch.full((frames // 2 * batch, groups, size + 1), 7.0)
    ops.layer_norm_into(x.view(rows, hidden), weight, bias, 1e-5, buffer[..., :size],
                        pooled[..., :size] if pool else None, batch)
    expected = F.layer_norm(x, (hidden,), weight, bias, 1e-5).view(frames, batch, groups, size)
    assert (buffer[..., :size] - expected.view(rows, groups, size)).abs().max().item() <= TOL
    assert torch.all(buffer[..., size] == 7.0)
    pairs = (expected[0:frames - frames % 2:2] + expected[1::2]).view(-1, groups, size)
    if pool:
        assert (pooled[..., :size] - pairs).abs().max().item() <= TOL
        assert torch.all(pooled[..., size] == 7.0)
    else:
        assert torch.all(pooled == 7.0)


@pytest.mark.parametrize("frames,batch,hidden,kernel", [(9, 1, 64, 7), (9, 3, 80, 7), (12, 2, 5, 5), (2, 2, 70, 7),
                                                        (149, 1, 1024, 7)])
def test_local_mixing_matches_depthwise_convs(ops, frames, batch, hidden, kernel):
    """Full vector blocks, a narrower last block (80, 70, 5 channels) and fewer frames than taps."""
    g = _gen(frames * hidden)
    first = torch.nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
    second = torch.nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden)
    with torch.no_grad():
        for p in (*first.parameters(), *second.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x, y = torch.randn(frames, batch, hidden, generator=g), torch.randn(frames, batch, hidden, generator=g)
    with torch.inference_mode():
        got = ops.local_mixing(x, y, first.weight.view(hidden, -1).t().contiguous(), first.bias,
                               second.weight.view(hidden, -1).t().contiguous(), second.bias)
        channels_first = y.permute(1, 2, 0)
        expected = x + second(F.gelu(first(channels_first))).permute(2, 0, 1)
    assert (got - expected).abs().max().item() <= TOL
    assert expected.abs().max() > 1


@pytest.mark.parametrize("groups,rows,size", [(8, 149, 128), (3, 10, 20)])
def test_gelu_transpose_into(ops, groups, rows, size):
    src = torch.randn(groups, rows, size, generator=_gen(rows)) * 3
    buffer = torch.full((rows, groups * size + 1), 7.0)
    ops.gelu_transpose_into(src, buffer[:, :-1].view(rows, groups, size))
    expected = F.gelu(src).transpose(0, 1).reshape(rows, -1)
    assert (buffer[:, :-1] - expected).abs().max().item() <= TOL
    assert torch.all(buffer[:, -1] == 7.0)


@pytest.mark.parametrize("frames,batch,size", [(149, 2, 128), (37, 3, 20)])
def test_upsample_add_into_matches_interpolation(ops, frames, batch, size):
    g = _gen(frames)
    groups, low_len = 4, frames // 2
    z = torch.randn(groups, frames * batch, size, generator=g)
    low = torch.randn(groups, low_len * batch, size, generator=g)
    bias = torch.randn(groups, 1, size, generator=g)
    upsample = F.interpolate(torch.eye(low_len)[None], size=frames, mode="linear", align_corners=False)[0].t()
    weight, index = upsample.topk(2, dim=1)
    padded = torch.full((groups, (frames + 2) * batch, size + 1), 7.0)
    ops.upsample_add_into(z, low, index, weight, bias, padded[:, batch:-batch, :size])
    # the reference: interpolate each (group, utterance, channel) series of low-rate frames
    series = low.view(groups, low_len, batch, size).permute(0, 2, 3, 1).reshape(1, -1, low_len)
    up = F.interpolate(series, size=frames, mode="linear", align_corners=False)
    up = up.view(groups, batch, size, frames).permute(0, 3, 1, 2).reshape(groups, frames * batch, size)
    assert (padded[:, batch:-batch, :size] - (z + up + bias)).abs().max().item() <= TOL
    assert torch.all(padded[:, :batch] == 7.0) and torch.all(padded[..., -1] == 7.0)
    with pytest.raises(RuntimeError, match="index out of range"):
        ops.upsample_add_into(z, low, index + low_len, weight, bias, padded[:, batch:-batch, :size])


def test_kernels_reject_wrong_inputs(ops):
    with pytest.raises(RuntimeError, match="float32"):
        ops.gelu_transpose_into(torch.zeros(2, 3, 4, dtype=torch.float64), torch.zeros(3, 2, 4))
    with pytest.raises(RuntimeError, match="unit inner stride"):
        ops.layer_norm_into(torch.zeros(3, 8), torch.ones(8), torch.zeros(8), 1e-5, torch.zeros(3, 4, 2).transpose(1, 2),
                            None, 1)


def test_fast_path_uses_the_kernels_only_for_float32_cpu(ops):
    assert cpu_kernels.usable(torch.zeros(2)) is ops
    assert cpu_kernels.usable(torch.zeros(2, dtype=torch.float64)) is None


def test_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def broken(**kwargs):
        raise RuntimeError("Error building extension 'x'\nfoo.cpp:1: error: something broke\nninja: stopped")

    monkeypatch.setattr(cpp_extension, "load", broken)
    cpu_kernels.kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="svmix.models.fast.kernels"):
            assert cpu_kernels.kernels() is None
            assert cpu_kernels.kernels() is None
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "foo.cpp:1: error: something broke" in warnings[0]
        monkeypatch.setenv("SVMIX_CPU_KERNELS", "0")
        cpu_kernels.kernels.cache_clear()
        assert cpu_kernels.kernels() is None  # switched off: not even tried
    finally:
        cpu_kernels.kernels.cache_clear()



def test_loading_logs_no_cuda_home_warning_on_a_cpu_machine(tmp_path):
    """Importing cpp_extension warns once per process when a CUDA toolkit (CUDA_HOME) is found without a
    GPU; the kernels' loader keeps that line out of every CPU tool's log."""
    if not (torch.version.cuda and torch.cuda._is_compiled()):
        pytest.skip("a CPU-only torch build never warns about CUDA_HOME")
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}

    def stderr_of(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stderr

    assert "No CUDA runtime is found" in stderr_of("import torch.utils.cpp_extension")  # the condition holds
    loaded = stderr_of("from svmix.models.fast import kernels; kernels._import_cpp_extension()")
    assert "No CUDA runtime is found" not in loaded

"""The one device rule and dtype map."""

import pytest
import torch

from srlm_fast.device import DTYPES, default_dtype, resolve_device, resolve_dtype


def test_auto_device_follows_cuda_availability() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu0", "", "meta", "cpu:3", "cuda:-1"])
def test_unknown_device_names_are_refused_with_the_name(name: str) -> None:
    with pytest.raises(ValueError, match="device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_device_is_refused() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def test_dtypes_by_long_and_short_name_and_auto() -> None:
    assert resolve_dtype("float32") is resolve_dtype("fp32") is torch.float32
    assert resolve_dtype("bfloat16") is resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("float16") is resolve_dtype("fp16") is torch.float16
    assert resolve_dtype("auto", "cpu") is torch.float32 is default_dtype("cpu")
    assert default_dtype("cuda") is torch.bfloat16
    assert resolve_dtype(torch.float16) is torch.float16
    assert set(DTYPES.values()) == {torch.float32, torch.bfloat16, torch.float16}
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")

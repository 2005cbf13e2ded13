"""``--rng torch-cuda``: Philox 4x32-10 against Random123's published known answers,
the generator against A1111's own published output, its statistics and offsets, and the
CLI writing and reading it back. No GPU here: ``benchmarks/gpu_rng_check.py`` compares
it with ``torch.randn(device="cuda")`` on one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAST, pixels, png_files

from sdgen.batch.identity import settings_from_infotext
from sdgen.config import GenerationConfig
from sdgen.noise import LatentNoise, check_rng
from sdgen.noise.torch_cuda import TorchCudaGenerator, box_muller, philox4x32
from sdgen.output.png import read_infotext

#: Random123's ``tests/kat_vectors`` (github.com/DEShawResearch/random123), the three
#: "philox4x32 10" lines: counter (4 words), key (2 words), expected output (4 words).
KAT_VECTORS = [
    ("00000000 00000000 00000000 00000000", "00000000 00000000",
     "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    ("ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff",
     "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    ("243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0",
     "d16cfe09 94fdcceb 5001e420 24126ea1"),
]  # fmt: skip

#: The "Expected output" of ``Generator(seed=0).randn(shape=(3, 4))`` in the docstring of
#: A1111's modules/rng_philox.py (which matches torch.randn(3, 4, device="cuda") after
#: torch.manual_seed(0)).
A1111_SEED_0 = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]
#: A1111 does the Box-Muller in float64 from the exact 32-bit words, cuRAND (and sdgen)
#: in float32 from the words rounded to float32: they differ by a few float32 ulps.
A1111_TOLERANCE = 1e-6


def _words(text: str) -> list[int]:
    return [int(word, 16) for word in text.split()]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT_VECTORS)
def test_philox4x32_10_gives_random123s_known_answers(counter, key, expected):
    column = np.array(_words(counter), dtype=np.uint32)[:, None]
    out = philox4x32(column, tuple(_words(key)))
    assert out.dtype == np.uint32 and out.shape == (4, 1)
    assert out[:, 0].tolist() == _words(expected)


def test_philox4x32_computes_many_counters_at_once():
    counters = np.array([_words(counter) for counter, _, _ in KAT_VECTORS], np.uint32).T
    key = tuple(_words(KAT_VECTORS[2][1]))
    together = philox4x32(counters, key)
    for column in range(3):
        assert np.array_equal(
            together[:, column], philox4x32(counters[:, column : column + 1], key)[:, 0]
        )
    assert together[:, 2].tolist() == _words(KAT_VECTORS[2][2])


def test_seed_0_is_a1111s_published_output():
    generator = TorchCudaGenerator(0)
    got = generator.randn((3, 4))
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, A1111_SEED_0, rtol=0, atol=A1111_TOLERANCE)
    assert generator.offset == 1  # as A1111's: one counter step per call


def test_element_0_of_seed_0_is_the_box_muller_of_the_all_zero_known_answer():
    # counter (offset 0, 0, element 0, 0) under key (0, 0): the first KAT vector
    first, second = _words(KAT_VECTORS[0][2])[:2]
    expected = box_muller(np.array([first], np.uint32), np.array([second], np.uint32))[0]
    assert TorchCudaGenerator(0).randn((8,))[0] == expected[0]


def test_normals_have_unit_statistics_and_seeds_are_uncorrelated():
    a = TorchCudaGenerator(1).randn((100_000,)).astype(np.float64)
    b = TorchCudaGenerator(2).randn((100_000,)).astype(np.float64)
    for draws in (a, b):
        assert abs(draws.mean()) < 0.015 and abs(draws.std() - 1) < 0.015
        assert abs((draws**3).mean()) < 0.05 and abs((draws**4).mean() - 3) < 0.1
        assert np.isfinite(draws).all() and np.abs(draws).max() < 7
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.02  # neighbours too


def test_each_call_advances_the_offset_by_one_step():
    generator = TorchCudaGenerator(42)
    first, second = generator.randn((4, 8, 8)), generator.randn((4, 8, 8))
    assert not np.allclose(first, second)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.2
    assert np.array_equal(second, TorchCudaGenerator(42, offset=1).randn((4, 8, 8)))
    assert generator.offset == 2
    # a call draws one block per element whatever the shape: a shorter call is a prefix
    assert np.array_equal(TorchCudaGenerator(42).randn((10,)), first.ravel()[:10])


def test_the_whole_64_bit_seed_keys_the_generator():
    low = TorchCudaGenerator(5).randn((64,))
    assert not np.allclose(TorchCudaGenerator(2**32 + 5).randn((64,)), low)
    # torch takes a negative seed modulo 2^64
    wrapped = TorchCudaGenerator(2**64 - 1).randn((64,))
    assert np.array_equal(TorchCudaGenerator(-1).randn((64,)), wrapped)


def test_past_one_wave_threads_take_their_blocks_other_normals():
    wave, size = 256, 256 * 4 + 300  # two loops of 256 threads, the second partial
    small = TorchCudaGenerator(3, wave=wave)
    got = small.randn((size,))
    assert small.offset == 2  # one counter step per loop
    # element e of loop k is normal (e mod 1024) // 256 of thread e mod 256's k-th block
    loops = []
    for step in (0, 1):
        words = philox4x32(_counters(step, wave), (3, 0))
        loops += [*box_muller(words[0], words[1]), *box_muller(words[2], words[3])]
    assert np.array_equal(got, np.concatenate(loops)[:size])
    # within one wave, the same as a card large enough for everything
    within = TorchCudaGenerator(3, wave=wave).randn((200,))
    assert np.array_equal(within, TorchCudaGenerator(3).randn((200,)))
    with pytest.raises(ValueError, match="multiple of 256"):
        TorchCudaGenerator(3, wave=1000)


def _counters(step: int, threads: int) -> np.ndarray:
    """Counters (step, 0, t, 0) for threads t < ``threads``, as (4, threads) words."""
    counter = np.zeros((4, threads), np.uint32)
    counter[0], counter[2] = step, np.arange(threads)
    return counter


def test_latent_noise_is_randn_of_the_nchw_latent_in_channels_last_order():
    noise, generator = LatentNoise("torch-cuda", 8), TorchCudaGenerator(8)
    for _ in range(2):  # the starting noise, then an ancestral step's
        expected = generator.randn((4, 8, 16)).transpose(1, 2, 0)
        assert np.array_equal(noise.draw(64, 128), expected)


@pytest.mark.parametrize("name", ["torch-cuda", "GPU", "nv", " Cuda "])
def test_a1111s_and_stable_diffusion_cpps_names_are_torch_cuda(name):
    assert check_rng(name) == "torch-cuda"
    assert GenerationConfig("a cat", rng=name).rng == "torch-cuda"


def test_an_a1111_infotext_with_the_nv_rng_reads_as_torch_cuda():
    text = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 512x512, RNG: NV"
    assert settings_from_infotext(text)["rng"] == "torch-cuda"


def test_cli_torch_cuda_run_records_it_and_reads_back(run_cli, hermetic):
    result = run_cli("a red fox", *FAST, "--seed", "5", "--rng", "torch-cuda")
    assert result.exit_code == 0, result.stderr
    [made] = png_files(hermetic / "outputs")
    text = read_infotext(made)
    assert "RNG: torch-cuda" in text
    assert settings_from_infotext(text)["rng"] == "torch-cuda"
    info = run_cli("info", made, "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["settings"]["RNG"] == "torch-cuda"
    # the infotext's value in a prompts file's JSON line makes the same image again
    line = {"prompt": "a red fox", "seed": 5, "rng": "GPU"}
    (hermetic / "prompts.txt").write_text(json.dumps(line) + "\n", encoding="utf-8")
    again = run_cli("--prompts-file", "prompts.txt", *FAST, "--outdir", "again")
    assert again.exit_code == 0, again.stderr
    [remade] = png_files(hermetic / "again")
    assert "RNG: torch-cuda" in read_infotext(remade)
    assert np.array_equal(pixels(remade), pixels(made))

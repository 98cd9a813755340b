import numpy as np
import pytest
import torch

from eps.errors import ArchError
from eps.spaces.nb201.model import EDGES, NB201Network, NB201Supernet, live_edges
from eps.spaces.nb201.space import NB201Space, all_archs, arch_to_str, ints_to_arch, str_to_arch
from tests.conftest import run_eps

pytestmark = pytest.mark.unit


def test_round_trip_all_cells():
    seen = set()
    for arch in all_archs():
        text = arch_to_str(arch)
        assert str_to_arch(text) == arch
        seen.add(text)
    assert len(seen) == 15625


def test_encoding_example_from_spec():
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert str_to_arch(text) == ints_to_arch([[3], [3, 3], [1, 3, 3]])
    assert arch_to_str(ints_to_arch([3, 3, 3, 1, 3, 3])) == text


@pytest.mark.parametrize("bad", [
    "", "|nor_conv_3x3~0|", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",
    "|conv~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "nor_conv_3x3~0+a+b", "|x~0|+|y~0|z~1|+|+",
])
def test_malformed_strings_are_rejected(bad):
    with pytest.raises(ArchError):
        str_to_arch(bad)


@pytest.mark.parametrize("bad", [[1, 2, 3], [0, 0, 0, 0, 0, 5], [[1], [2, 3], [4, 0]], ["a"] * 6, [1.5] * 6])
def test_malformed_int_encodings_are_rejected(bad):
    with pytest.raises(ArchError):
        ints_to_arch(bad)


def hand_count(arch, c=16, n=5, classes=10):
    """Parameters from the layer shapes: convs have no bias, every BN is affine (2 per channel)."""
    per_edge = {0: 0, 1: 0, 2: lambda w: w * w + 2 * w, 3: lambda w: 9 * w * w + 2 * w, 4: 0}
    total = 3 * c * 9 + 2 * c  # stem
    for stage in range(3):
        w = c * 2 ** stage
        total += n * sum(per_edge[op](w) if callable(per_edge[op]) else 0 for op in arch)
        if stage:
            wi = w // 2
            total += 9 * wi * w + 2 * w + 9 * w * w + 2 * w + wi * w  # residual block: conv_a, conv_b, 1x1 shortcut
    total += 2 * 4 * c + 4 * c * classes + classes  # final BN, classifier
    return total


CELLS = [(3,) * 6, (0,) * 6, (2,) * 6, (1, 2, 3, 4, 0, 2), (4,) * 6, (1,) * 6, (3, 0, 0, 0, 0, 0),
         (0, 0, 0, 0, 0, 3), (2, 3, 2, 3, 2, 3), (3, 3, 3, 1, 3, 3), (4, 2, 1, 0, 3, 4), (0, 1, 2, 3, 4, 0)]


@pytest.mark.parametrize("arch", CELLS)
def test_param_counts_match_layer_shapes(arch):
    space = NB201Space()
    assert space.num_params(arch) == hand_count(arch)


def test_param_counts_match_benchmark_figures():
    space = NB201Space()
    assert space.num_params((3,) * 6) == 1531546
    assert space.num_params((0,) * 6) == 73306


@pytest.mark.cli
def test_cli_arch_params():
    all3 = arch_to_str((3,) * 6)
    none = arch_to_str((0,) * 6)
    out = run_eps("arch", "params", "--space", "nb201", all3, none).stdout.splitlines()
    assert out[0].split()[0] == "1.531546" and out[1].split()[0] == "0.073306"


@pytest.mark.cli
def test_cli_rejects_bad_arch_in_one_line():
    proc = run_eps("arch", "params", "--space", "nb201", "|nor_conv_3x3~0|", check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "expected 3" in proc.stderr


def test_sampling_is_uniform_and_mutation_rate():
    space = NB201Space(p_opwise=0.5)
    rng = np.random.default_rng(0)
    samples = np.array([space.sample(rng) for _ in range(5000)])
    counts = np.bincount(samples.ravel(), minlength=5) / samples.size
    assert np.allclose(counts, 0.2, atol=0.02)
    changed = [sum(a != b for a, b in zip(arch, space.mutate(arch, rng))) for arch in map(tuple, samples)]
    assert np.mean(changed) / 6 == pytest.approx(0.5 * 4 / 5, abs=0.02)


def test_live_edges():
    assert live_edges((0,) * 6) == ()
    # edge 1<-0 is a conv but node 1 feeds only `none` edges: dead
    assert [e for e, _, _ in live_edges((3, 0, 0, 1, 0, 0))] == [3]
    assert [e for e, _, _ in live_edges((3, 3, 3, 3, 3, 3))] == list(range(6))


@pytest.mark.parametrize("arch", [(3, 0, 0, 1, 0, 0), (0,) * 6, (1, 2, 3, 4, 0, 2), (2, 0, 4, 0, 3, 0), (4, 3, 0, 0, 0, 1)])
def test_fast_supernet_equals_plain(arch):
    """Skipping dead edges and channels_last change no loss and no gradient that can be non-zero."""
    torch.manual_seed(0)
    plain = NB201Supernet(4, 1, skip_dead=False)
    fast = NB201Supernet(4, 1, skip_dead=True)
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    lp = torch.nn.functional.cross_entropy(plain(x, arch), y)
    lf = torch.nn.functional.cross_entropy(fast(x.contiguous(memory_format=torch.channels_last), arch), y)
    assert torch.allclose(lp, lf, atol=1e-5)
    lp.backward(), lf.backward()
    for (name, pp), (_, pf) in zip(plain.named_parameters(), fast.named_parameters()):
        gp = pp.grad if pp.grad is not None else torch.zeros_like(pp)
        gf = pf.grad if pf.grad is not None else torch.zeros_like(pf)
        assert torch.allclose(gp, gf, atol=1e-5), name


def test_standalone_network_forward():
    net = NB201Network((1, 2, 3, 4, 0, 2), channels=4, cells_per_stage=1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(EDGES) == 6

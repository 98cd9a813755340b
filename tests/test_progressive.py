"""The progressive variant (spec §1.8, §5 item 14): which cells run at which search iteration, how a new cell starts,
and an exact resume across a growth step."""
import copy

import pytest
import torch

from eps import checkpoint
from eps.params import defaults
from eps.spaces import get_space
from tests.conftest import DATA_ROOT

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]
ARCH = (3, 3, 3, 3, 3, 3)


def make_task(schedule, init="own", seed=7):
    section = copy.deepcopy(defaults()["nb201"])
    section["space"].update(channels=4, cells_per_stage=3)
    section["search"].update(batch_size=16, fitness_batch_size=20)
    section["supernet"].update(data_subset=100, progressive=schedule, new_cell_init=init)
    torch.manual_seed(0)
    space = get_space("nb201", section)
    return space.search_task(section, DATA_ROOT, torch.device("cpu"), seed=seed, stage="search")


def cells_run(task):
    """Per cell (stage, position) whether its forward ran in the next training step."""
    ran, hooks = [], []
    for layer, pos in zip(task.model.layers, task.model.cell_pos):
        if pos >= 0:
            hooks.append(layer.register_forward_hook(lambda m, i, o, pos=pos: ran.append(pos)))
    task.train_step(ARCH, 0.05)
    for h in hooks:
        h.remove()
    return sorted(ran)


def test_depth_grows_on_the_schedule():
    task = make_task([2, 4])
    runs = [cells_run(task) for _ in range(6)]
    # steps 1-2: one cell per stage (three stages), steps 3-4: two, steps 5-6: all three
    assert runs == [[0, 0, 0]] * 2 + [[0, 0, 0, 1, 1, 1]] * 2 + [[0, 0, 0, 1, 1, 1, 2, 2, 2]] * 2


def test_no_schedule_runs_every_cell_and_keeps_the_state_dict_keys():
    task = make_task(None)
    assert cells_run(task) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "active_cells" not in task.model.state_dict()


def test_new_cells_keep_their_init_or_copy_the_previous_cell():
    for init in ("own", "copy_previous"):
        task = make_task([1], init)
        cells = [layer for layer, pos in zip(task.model.layers, task.model.cell_pos) if pos >= 0]
        initial = copy.deepcopy(cells[1].state_dict())
        task.train_step(ARCH, 0.05)            # one step on one cell per stage
        task.model.set_progress(1)             # the second cell of each stage becomes active
        new, previous = cells[1].state_dict(), cells[0].state_dict()
        same_as_init = all(torch.equal(new[k], initial[k]) for k in new)
        same_as_previous = all(torch.equal(new[k], previous[k]) for k in new)
        assert (same_as_init, same_as_previous) == ((True, False) if init == "own" else (False, True))


def test_resume_across_a_growth_step_is_exact():
    whole = make_task([3, 5])
    for _ in range(7):
        whole.train_step(ARCH, 0.05)
    part = make_task([3, 5])
    for _ in range(4):
        part.train_step(ARCH, 0.05)
    state = checkpoint.loads(checkpoint.dumps(part.state_dict()))
    resumed = make_task([3, 5], seed=7)
    resumed.load_state_dict(state)
    for _ in range(3):
        resumed.train_step(ARCH, 0.05)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.model._depth == 3


def test_schedule_must_increase():
    from eps.params import load_params
    from eps.errors import ConfigError
    with pytest.raises(ConfigError, match="nb201.supernet.progressive"):
        load_params(None, {"nb201": {"supernet": {"progressive": [30000, 15000]}}})

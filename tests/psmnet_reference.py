"""Test helpers: an independent, loop-based re-statement of the PSMNet authors' forward pass and a
writer for checkpoints in the authors' public format (keys/shapes from their released file).

The reference follows the authors' code line by line (explicit per-disparity loop for the cost
volume, their hourglass wiring, their SPP concatenation order) and reads the layers of our model
only as weight containers, so it checks our wiring, not our code against itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

AUTHORS_KEYS_TSV = Path(__file__).parent / "data" / "psmnet_official_stackhourglass_keys.tsv"


def authors_keys() -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) rows of the authors' released stackhourglass checkpoint (514 entries)."""
    rows = []
    for line in AUTHORS_KEYS_TSV.read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


def random_authors_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the authors' keys and shapes; BN statistics kept plausible."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in authors_keys():
        if dtype == "int64":
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(".weight") and len(shape) == 1:  # BN scale
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5
    return state


def save_authors_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"epoch": 10, "state_dict": state, "train_loss": 1.23}, path)
    return path


def reference_cost_volume(ref: torch.Tensor, target: torch.Tensor, levels: int) -> torch.Tensor:
    """The authors' loop: zeros, then for each level i fill columns i.. of both halves."""
    n, c, h, w = ref.shape
    cost = ref.new_zeros(n, 2 * c, levels, h, w)
    for i in range(levels):
        if i > 0:
            cost[:, :c, i, :, i:] = ref[:, :, :, i:]
            cost[:, c:, i, :, i:] = target[:, :, :, :-i]
        else:
            cost[:, :c, i] = ref
            cost[:, c:, i] = target
    return cost


def reference_features(fe, x: torch.Tensor) -> torch.Tensor:
    """The authors' feature_extraction.forward (no attention)."""
    out = fe.firstconv(x)
    out = fe.layer1(out)
    raw = fe.layer2(out)
    out = fe.layer3(raw)
    skip = fe.layer4(out)
    size = (skip.size(2), skip.size(3))
    b1 = F.interpolate(fe.branch1(skip), size, mode="bilinear", align_corners=False)
    b2 = F.interpolate(fe.branch2(skip), size, mode="bilinear", align_corners=False)
    b3 = F.interpolate(fe.branch3(skip), size, mode="bilinear", align_corners=False)
    b4 = F.interpolate(fe.branch4(skip), size, mode="bilinear", align_corners=False)
    return fe.lastconv(torch.cat((raw, skip, b4, b3, b2, b1), 1))


def reference_hourglass(hg, x, presqu, postsqu):
    """The authors' hourglass.forward (no attention)."""
    out = hg.conv1(x)
    pre = hg.conv2(out)
    pre = F.relu(pre + postsqu) if postsqu is not None else F.relu(pre)
    out = hg.conv3(pre)
    out = hg.conv4(out)
    post = F.relu(hg.conv5(out) + presqu) if presqu is not None else F.relu(hg.conv5(out) + pre)
    return hg.conv6(post), pre, post


def reference_stackhourglass_costs(agg, cost: torch.Tensor) -> list[torch.Tensor]:
    """The authors' 3-D part of PSMNet.forward (stackhourglass), before upsampling."""
    cost0 = agg.dres0(cost)
    cost0 = agg.dres1(cost0) + cost0
    out1, pre1, post1 = reference_hourglass(agg.dres2, cost0, None, None)
    out1 = out1 + cost0
    out2, pre2, post2 = reference_hourglass(agg.dres3, out1, pre1, post1)
    out2 = out2 + cost0
    out3, pre3, post3 = reference_hourglass(agg.dres4, out2, pre1, post2)
    out3 = out3 + cost0
    cost1 = agg.classif1(out1)
    cost2 = agg.classif2(out2) + cost1
    cost3 = agg.classif3(out3) + cost2
    return [cost1, cost2, cost3]


def reference_regression(cost: torch.Tensor, maxdisp: int, h: int, w: int) -> torch.Tensor:
    """Upsample (align_corners=False), softmax over disparity, Σ d·p_d."""
    cost = F.interpolate(cost, [maxdisp, h, w], mode="trilinear", align_corners=False)
    prob = F.softmax(torch.squeeze(cost, 1), dim=1)
    disp = torch.arange(maxdisp, dtype=prob.dtype).view(1, maxdisp, 1, 1)
    return torch.sum(prob * disp, 1)


def reference_psmnet_eval(model, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The authors' stackhourglass PSMNet.forward in eval mode, with our model's layers as weights."""
    ref = reference_features(model.feature_extraction, left)
    target = reference_features(model.feature_extraction, right)
    cost = reference_cost_volume(ref, target, model.max_disp // 4)
    cost3 = reference_stackhourglass_costs(model.aggregation, cost)[-1]
    return reference_regression(cost3, model.max_disp, left.shape[2], left.shape[3])

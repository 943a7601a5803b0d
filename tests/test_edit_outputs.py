"""Edit-job outputs: run directories are never reused, files never overwritten, the grid has the documented layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_modules.edit_outputs import (
    caption_height,
    make_grid,
    new_run_dir,
    resize_uint8,
    save_gif,
    save_png,
    slug,
    to_uint8,
    unused_path,
)


def test_to_uint8_maps_range_and_clamps():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0, -7.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    assert out[0, 0, 0].tolist() == [0, 128, 255, 255, 0]


def test_new_run_dir_never_reuses(tmp_path):
    a, b, c = (new_run_dir(tmp_path, "Job A") for _ in range(3))
    assert len({a, b, c}) == 3 and all(p.is_dir() and p.name.startswith("job-a-") for p in (a, b, c))


def test_unused_path_and_save_refuse_overwrite(tmp_path):
    img = torch.zeros(3, 4, 4, dtype=torch.uint8)
    first = save_png(img, tmp_path / "grid.png")
    with pytest.raises(FileExistsError):
        save_png(img, first)
    second = unused_path(tmp_path / "grid.png")
    assert second.name == "grid-2.png"
    save_png(img, second)
    assert unused_path(tmp_path / "grid.png").name == "grid-3.png"


def test_slug():
    assert slug("Latin music") == "latin-music" and slug("fire, crackling!") == "fire-crackling"


def test_resize_uint8_up_is_nearest_down_is_smooth():
    img = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    up = resize_uint8(img, 32)
    assert torch.equal(up[0, :, ::4, ::4], img[0])  # each source pixel becomes a 4x4 block
    down = resize_uint8(torch.full((1, 3, 64, 64), 200, dtype=torch.uint8), 16)
    assert down.shape == (1, 3, 16, 16) and (down == 200).all()


def test_grid_layout_size_and_cells(tmp_path):
    cell, rows, cols = 40, 2, 4
    colours = [[torch.full((3, 10, 10), 30 * (r * cols + c), dtype=torch.uint8) for c in range(cols)]
               for r in range(rows)]
    colours[1][2] = None
    grid = make_grid(colours, ["source", "fire", "rain", "a very long sound label"], ["", ""], cell)
    cap = caption_height(cell)
    assert grid.shape == (cap + rows * cell, cols * cell, 3) and grid.dtype == np.uint8
    # centre pixel of each filled cell carries its colour; the empty cell stays white
    for r in range(rows):
        for c in range(cols):
            px = grid[cap + r * cell + cell // 2, c * cell + cell // 2]
            expect = 255 if (r, c) == (1, 2) else 30 * (r * cols + c)
            assert (px == expect).all(), (r, c, px)
    assert (grid[:cap] < 128).any()  # captions drawn in the header band


def test_gif_has_all_frames(tmp_path):
    frames = [torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (0, 100, 200)]
    path = save_gif(frames, tmp_path / "a.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 3

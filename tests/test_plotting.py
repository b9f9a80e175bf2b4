import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from ntklib import plotting


def test_savefig_writes_png_pdf_and_numbers(tmp_path):
    plotting.set_theme()
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    paths = plotting.savefig(fig, "line", "nb", fig_dir=tmp_path, pdf=True,
                             data={"x": [1, 2], "y": [3, 4]})
    assert [p.name for p in paths] == ["line.png", "line.pdf", "line.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert pd.read_csv(tmp_path / "nb" / "line.csv").shape == (2, 2)
    plotting.save_numbers({"ratio": np.float64(2.5), "v": np.arange(2)}, "r", "nb", tmp_path)
    assert json.loads((tmp_path / "nb" / "r.json").read_text()) == {"ratio": 2.5, "v": [0, 1]}
    plt.close("all")


def test_image_grid():
    fig = plotting.image_grid(np.random.rand(5, 8, 8, 1), ncols=3, titles=list("abcde"))
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match="image_grid expects"):
        plotting.image_grid(np.zeros((8, 8)))
    plt.close("all")

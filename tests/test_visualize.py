"""Tests of the figures (`video_reloc.visualize`): axes in seconds, legends, what is drawn where."""

import numpy as np

from video_reloc import visualize

T = 50
SECONDS = 0.5


def _probabilities():
    p = np.full((T, 4), 0.05)
    p[:, 3] = 0.85
    p[20:30, 2], p[20:30, 3] = 0.85, 0.05
    p[20, 0], p[29, 1] = 0.8, 0.7
    return p / p.sum(axis=1, keepdims=True)


def _pixel(figure, axes, x, y):
    """RGB of the drawn figure at data point (x, y) of `axes`."""
    image = visualize.figure_image(figure)
    px, py = axes.transData.transform((x, y))
    return image[int(round(image.shape[0] - py)), int(round(px))]


def _close(rgb, hex_color):
    expected = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(rgb.astype(int) - expected).max() <= 3


def test_timeline_figure_reads_in_seconds_with_truth_prediction_and_probabilities():
    figure = visualize.timeline_figure(
        T, SECONDS, _probabilities(), groundtruth=(20, 30), predictions=[(18, 28)], title="pair"
    )
    bars, curves = figure.axes
    assert curves.get_xlabel() == "reference time (s)" and curves.get_ylabel() == "probability"
    assert curves.get_xlim() == (0, T * SECONDS)
    assert [t.get_text() for t in bars.get_yticklabels()] == ["prediction", "ground truth"]
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["inside", "start", "end"]
    assert bars.get_title() == "pair"
    # Truth (green) spans 10-15 s on its row, prediction (red) 9-14 s on its own.
    assert _close(_pixel(figure, bars, 12.5, 1), visualize.TRUTH)
    assert not _close(_pixel(figure, bars, 9.5, 1), visualize.TRUTH)
    assert _close(_pixel(figure, bars, 9.5, 0), visualize.PREDICTION)
    assert not _close(_pixel(figure, bars, 14.5, 0), visualize.PREDICTION)
    start = curves.get_lines()[1]  # the start probability, at each step's centre
    np.testing.assert_allclose(start.get_xdata(), (np.arange(T) + 0.5) * SECONDS)
    np.testing.assert_allclose(start.get_ydata(), _probabilities()[:, 0])
    image = visualize.figure_image(figure)
    assert image.shape == (380, 900, 3) and image.dtype == np.uint8


def test_timeline_figure_of_the_top_k_and_without_seconds():
    figure = visualize.timeline_figure(
        T, None, _probabilities(), predictions=[(20, 30), (0, 5)], prediction_labels=["a", "b"]
    )
    bars, curves = figure.axes
    assert curves.get_xlabel() == "reference step (feature)" and curves.get_xlim() == (0, T)
    assert [t.get_text() for t in bars.get_yticklabels()] == ["b", "a"]
    bare = visualize.timeline_figure(T, SECONDS, groundtruth=(1, 2))
    assert len(bare.axes) == 1 and bare.axes[0].get_xlabel() == "reference time (s)"


def test_attention_figure_has_labelled_query_and_reference_axes(tmp_path):
    rng = np.random.default_rng(0)
    attention = np.zeros((T + 5, 12))  # padded past the lengths
    attention[:T, :8] = rng.dirichlet(np.ones(8), size=T)
    attention[22, 3] = 5.0  # would stand out if the padding or scale were wrong
    figure = visualize.attention_figure(
        attention, T, 8, SECONDS, 0.25, groundtruth=(20, 30), prediction=(21, 29), title="att"
    )
    axes, colorbar = figure.axes
    assert axes.get_xlabel() == "reference time (s)" and axes.get_ylabel() == "query time (s)"
    assert axes.get_xlim() == (0, T * SECONDS) and axes.get_ylim() == (0, 8 * 0.25)
    assert colorbar.get_ylabel() == "attention weight"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["ground truth", "prediction"]
    (image,) = axes.get_images()
    assert image.get_array().shape == (8, T)  # query up, reference across, padding cut
    assert image.get_array()[3, 22] == 5.0
    path = visualize.save_figure(figure, tmp_path / "a" / "attention.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pair_figures_one_pair_of_figures_per_example():
    outputs = {
        "start": np.array([20, 3]),
        "end": np.array([30, 9]),
        "probabilities": np.stack([_probabilities()] * 2),
        "attention": np.full((2, T, 6), 1 / 6),
    }
    inputs = {"reference_length": np.array([T, 40]), "query_length": np.array([6, 4])}
    figures = visualize.pair_figures(
        outputs, inputs, np.array([[20, 30], [2, 8]]), np.array([0.5, 1.0]), np.array([0.5, 1.0])
    )
    assert len(figures) == 2
    (timeline, attention) = figures[1]
    assert timeline.axes[1].get_xlim() == (0, 40.0)
    assert attention.axes[0].get_ylim() == (0, 4.0)

"""The report's charts: PNGs drawn without pyplot, with every label inside the image."""

from __future__ import annotations

import threading

from flows import artifacts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _overflow(fig) -> list[float]:
    """How far (inches) what is drawn pokes out of the image: left, bottom, right, top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    drawn = fig.get_tightbbox(canvas.get_renderer())  # inches, only the artists drawn
    width, height = fig.get_size_inches()
    return [round(max(0.0, v), 2) for v in (-drawn.x0, -drawn.y0, drawn.x1 - width, drawn.y1 - height)]


def test_funnel_labels_and_counts_fit_in_the_image_whatever_their_length():
    for stages in ([("samples", 3)], [("samples", 2000), ("new (not in other runs)", 1990),
                                      ("after minhash:near_duplicate", 1500), ("after rouge_novelty:too_similar", 7)]):
        fig = artifacts._funnel_figure(stages, "Filter funnel")
        assert _overflow(fig) == [0.0, 0.0, 0.0, 0.0], stages
        png = artifacts.funnel_chart(stages)
        assert png.startswith(PNG_MAGIC)


def test_charts_draw_in_parallel_threads():
    # The generate flow draws the funnel and the histogram in two threads at once.
    results: list[bytes] = []

    def draw(i: int) -> None:
        if i % 2:
            results.append(artifacts.length_histogram({"response": list(range(1, 200 + i))}))
        else:
            results.append(artifacts.funnel_chart([("samples", 10 + i), ("kept", i)]))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r.startswith(PNG_MAGIC) for r in results)
    assert artifacts.loss_curve([1, 2, 3], [2.0, 1.5, 1.2]).startswith(PNG_MAGIC)
    assert artifacts.length_histogram({"response": []}).startswith(PNG_MAGIC)  # nothing kept yet

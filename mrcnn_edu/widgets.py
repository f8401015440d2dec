"""Widgets for the notebooks that still show something without a widget frontend.

:func:`interactive_figure` draws the figure once with the controls' default values as an ordinary output,
so a headless run, an HTML export or GitHub's viewer shows it; where Jupyter can display widgets, the controls
appear under it and redraw the *same* output in place when their values change (``continuous_update=False``,
or a Run button with ``manual=True`` for anything that runs the model).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["interactive_figure"]


def interactive_figure(draw: Callable, manual: bool = False, **controls):
    """Show ``draw(**values)`` (a matplotlib Figure) and let ipywidgets ``controls`` change the values.

    draw: called with one keyword argument per control, returns a ``matplotlib.figure.Figure``.
    manual: redraw only when a "Run" button is pressed (for slow draws that run the model).
    controls: ``name=widget`` pairs, e.g. ``iou=ipywidgets.FloatSlider(value=0.7, min=0, max=1)``.
    Displays the figure and the controls; returns None (so a cell ending in this call shows nothing twice).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import DisplayHandle, display

    if not controls:
        raise ValueError("controls must name at least one widget, e.g. k=IntSlider(...)")
    for name, control in controls.items():
        if not hasattr(control, "value"):
            raise ValueError(f"control {name!r} must be an ipywidgets widget with a value, got {control!r}")
        if hasattr(control, "continuous_update"):
            control.continuous_update = False

    def values() -> dict:
        return {name: control.value for name, control in controls.items()}

    def render():
        figure = draw(**values())
        plt.close(figure)  # shown through the display handle only, not again by the inline backend
        return figure

    handle = DisplayHandle()
    handle.display(render())

    def redraw(*_):
        handle.update(render())

    children = list(controls.values())
    if manual:
        button = widgets.Button(description="Run")
        button.on_click(redraw)
        children.append(button)
    else:
        for control in controls.values():
            control.observe(redraw, names="value")
    display(widgets.VBox(children))

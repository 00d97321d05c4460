"""Figure helpers: what they draw, from small tables."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from personavec.io.plots import CONDITION_COLOURS, mitigation_sweep  # noqa: E402


def test_mitigation_sweep_lines_start_at_none_and_base_is_a_band():
    runs = {"base": "base", "none": "p_II", "post-hoc -1": "a", "post-hoc -2": "b",
            "preventative 1": "c", "preventative 2": "d"}  # fmt: skip
    values = [50.0, 60.0, 55.0, 40.0, 58.0, 52.0]
    table = pd.DataFrame({"condition": list(runs), "value": values,
                          "low": [v - 5 for v in values], "high": [v + 5 for v in values]})  # fmt: skip
    fig, ax = plt.subplots()
    mitigation_sweep(ax, table, runs)
    lines = {c.get_label(): c for c in ax.containers}
    assert set(lines) == {"post-hoc", "preventative"}
    for kind, expected in (("post-hoc", [60.0, 55.0, 40.0]), ("preventative", [60.0, 58.0, 52.0])):
        x, y = lines[kind].lines[0].get_data()
        assert list(x) == [0.0, 1.0, 2.0] and list(y) == expected  # |coef|, from "none"
        assert lines[kind].lines[0].get_color() == CONDITION_COLOURS[kind]
    assert [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_label() == "base"] == [50.0]
    plt.close(fig)

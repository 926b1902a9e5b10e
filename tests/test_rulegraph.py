"""The rule-graph figure of the README: parsed from `snakemake --rulegraph`, layered, and kept up to date."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from sourcelens.plots.workflow import main, parse_rulegraph, rule_graph, rule_layers
from test_workflow import REPO, run_snakemake

DOT = """digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
\t0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
\t1[label = "train", color = "0.10 0.6 0.85", style="rounded"];
\t2[label = "simulate", color = "0.20 0.6 0.85", style="rounded"];
\t3[label = "catalogue", color = "0.30 0.6 0.85", style="rounded"];
\t4[label = "plot", color = "0.40 0.6 0.85", style="rounded"];
\t1 -> 0
\t2 -> 1
\t3 -> 2
\t3 -> 0
\t2 -> 4
\t4 -> 0
}
"""


def test_rulegraph_is_parsed_and_layered_by_longest_path(tmp_path):
    graph = parse_rulegraph(DOT)
    assert set(graph.nodes) == {"all", "train", "simulate", "catalogue", "plot"}
    assert set(graph.edges) == {("train", "all"), ("simulate", "train"), ("catalogue", "simulate"),
                                ("catalogue", "all"), ("simulate", "plot"), ("plot", "all")}
    # `all` sits below its deepest input (train), not beside catalogue's direct edge
    assert rule_layers(graph) == [["catalogue"], ["simulate"], ["plot", "train"], ["all"]]
    fig = rule_graph(graph, title="t")
    assert isinstance(fig, Figure)
    assert {t.get_text() for t in fig.axes[0].texts} - {""} == set(graph.nodes)   # "" : the arrows
    (tmp_path / "g.dot").write_text(DOT)
    assert main([str(tmp_path / "g.dot"), str(tmp_path / "g.svg")]) == 0
    assert (tmp_path / "g.svg").read_text().count("<svg") == 1 and not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="rulegraph"):
        parse_rulegraph("not a graph")


def test_readme_rule_graph_is_the_workflows(tmp_path):
    """docs/rulegraph.dot (drawn in the README) is the default workflow's current rule graph."""
    res = run_snakemake(tmp_path, "--rulegraph")
    assert res.returncode == 0, res.stderr[-3000:]
    current = parse_rulegraph(res.stdout)
    committed = parse_rulegraph((REPO / "docs" / "rulegraph.dot").read_text())
    assert set(current.nodes) == set(committed.nodes) and set(current.edges) == set(committed.edges), (
        "the workflow changed: regenerate the README's rule graph with `snakemake --rulegraph > docs/rulegraph.dot "
        "&& python -m sourcelens.plots.workflow docs/rulegraph.dot docs/rulegraph.svg`")
    assert "docs/rulegraph.svg" in (REPO / "README.md").read_text()

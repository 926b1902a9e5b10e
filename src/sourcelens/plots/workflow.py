"""The workflow's own rule graph (``snakemake --rulegraph``) drawn without Graphviz: rules in layers from the
inputs down to ``all`` (each rule one layer below its lowest-placed input rule), ordered within a layer by the
mean position of their inputs so that edges cross little. The README's figure is drawn by this module from the
DOT text the workflow writes (``docs/rulegraph.dot``; a test keeps it equal to the current workflow's).

Command: ``python -m sourcelens.plots.workflow RULEGRAPH.dot OUT.svg``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import networkx as nx
from matplotlib.figure import Figure

__all__ = ["parse_rulegraph", "rule_layers", "rule_graph"]

_NODE = re.compile(r'^\s*(\d+)\s*\[\s*label\s*=\s*"([^"]+)"')
_EDGE = re.compile(r"^\s*(\d+)\s*->\s*(\d+)")


def parse_rulegraph(dot: str) -> nx.DiGraph:
    """The rules (nodes named by rule) and their dependencies (edges from input rule to consumer) of the DOT
    text ``snakemake --rulegraph`` prints; ValueError when it holds no rule."""
    names, edges = {}, []
    for line in dot.splitlines():
        if m := _NODE.match(line):
            names[m.group(1)] = m.group(2)
        elif m := _EDGE.match(line):
            edges.append((m.group(1), m.group(2)))
    if not names:
        raise ValueError("no rule in this DOT text: expected the output of `snakemake --rulegraph`")
    graph = nx.DiGraph()
    graph.add_nodes_from(names.values())
    graph.add_edges_from((names[a], names[b]) for a, b in edges)
    return graph


def rule_layers(graph: nx.DiGraph) -> list[list[str]]:
    """Rules by layer (longest path from a rule without inputs), each layer ordered by the mean position of
    its rules' inputs in the layer above (ties by name)."""
    depth: dict[str, int] = {}
    for rule in nx.topological_sort(graph):
        depth[rule] = 1 + max((depth[p] for p in graph.predecessors(rule)), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for rule, d in depth.items():
        layers[d].append(rule)
    position: dict[str, float] = {}
    for layer in layers:
        def key(rule: str) -> tuple[float, str]:
            above = [position[p] for p in graph.predecessors(rule)]
            return (sum(above) / len(above) if above else 0.0, rule)

        layer.sort(key=key)
        for i, rule in enumerate(layer):
            position[rule] = (i + 0.5) / len(layer)
    return layers


def rule_graph(graph: nx.DiGraph, title: str = "") -> Figure:
    """The rule graph, inputs at the top and ``all`` at the bottom, one box per rule."""
    layers = rule_layers(graph)
    width = max(len(layer) for layer in layers)
    fig = Figure(figsize=(max(8.0, 1.45 * width), 0.9 * len(layers) + 0.6))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.94 if title else 0.98))
    pos = {rule: ((i + 0.5) / len(layer), -d) for d, layer in enumerate(layers) for i, rule in enumerate(layer)}
    for a, b in graph.edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        into_target = graph.out_degree(b) == 0 and graph.in_degree(b) > 2   # the target rule (`all`): faint
        ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                    arrowprops={"arrowstyle": "-|>", "color": "0.8" if into_target else "0.45", "lw": 0.7,
                                "shrinkA": 0, "shrinkB": 0})
    for rule, (x, y) in pos.items():
        ax.text(x, y, rule, ha="center", va="center", fontsize=7.5,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#e8f0fb" if graph.in_degree(rule) else "#fdf1d8",
                      "ec": "#4a6fa5", "lw": 0.8})
    ax.set_xlim(0, 1)
    ax.set_ylim(-len(layers) + 0.5, 0.5)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m sourcelens.plots.workflow RULEGRAPH.dot OUT.svg|png", file=sys.stderr)
        return 2
    dot, out = Path(args[0]), Path(args[1])
    graph = parse_rulegraph(dot.read_text())
    fig = rule_graph(graph, title=f"sourcelens: {graph.number_of_nodes()} rules (snakemake --rulegraph)")
    from ..io import save_figure

    save_figure(fig, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A readable tree view of the layer graph (classes, shapes, parameter counts)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.tree import Tree

from hf2kh.inspect.graph import LayerGraph


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _label(graph: LayerGraph, path: str) -> str:
    node = graph.module(path)
    name = path.rpartition(".")[2] or "(root)"
    label = f"[bold]{name}[/] [cyan]{node.class_name}[/]"
    own = [p for p in graph.parameters if p.name in node.param_names]
    if own:
        label += " " + ", ".join(f"{p.name.rpartition('.')[2]}{list(p.shape)}" for p in own)
    if node.num_params:
        label += f" [dim]({human_count(node.num_params)} params)[/]"
    if node.calls:
        out = graph.calls[node.calls[0]].outputs
        if out:
            label += f" -> {list(graph.value(out[0]).shape)}"
    return label


def render_tree(graph: LayerGraph) -> Tree:
    total = sum(math.prod(p.shape) for p in graph.parameters)
    root = Tree(
        f"[bold]{graph.model_class}[/] model_type={graph.model_type!r} "
        f"[dim]({human_count(total)} params, sample input {graph.sample_input['input_ids']})[/]"
    )
    collapsed = {g.container: g for g in graph.block_groups if not g.shared}
    shared = {g.container: g for g in graph.block_groups if g.shared}

    def add(tree: Tree, path: str) -> None:
        node = graph.module(path)
        group = collapsed.get(path)
        for child in node.children:
            index = child.rpartition(".")[2]
            if group is not None and index.isdigit():
                if int(index) != group.indices[0]:
                    continue
                for variant in group.variants:
                    first = f"{path}.{variant.indices[0]}"
                    span = _span(variant.indices)
                    branch = tree.add(
                        f"[magenta]{span}[/] x{len(variant.indices)} " + _label(graph, first)
                    )
                    for diff in variant.differences:
                        branch.add(f"[yellow]differs: {diff}[/]")
                    add(branch, first)
                continue
            label = _label(graph, child)
            if child in shared:
                calls = len(shared[child].indices)
                label = f"[magenta]x{calls} calls[/] (one block shared by all layers) " + label
            add(tree.add(label), child)

    add(root, "")
    if graph.tied:
        ties = root.add("[bold]tied parameters[/]")
        for t in graph.tied:
            ties.add(f"{t.name} = {t.target}")
    return root


def _span(indices: list[int]) -> str:
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"[{indices[0]}..{indices[-1]}]"
    return "[" + ",".join(map(str, indices)) + "]"


def print_graph(graph: LayerGraph, console: Console | None = None) -> None:
    (console or Console()).print(render_tree(graph))

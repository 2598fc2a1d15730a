"""One import direction: no cycle among mtp_jax modules (imports inside functions count
too), `mtp_jax/config.py` imports nothing of the project, and `data/` imports neither
`interop/` nor `model/`. Read from the source with the standard library's `ast`."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "mtp_jax"


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """{module: project modules it imports, anywhere in its source}."""
  mods = {}
  for p in root.rglob("*.py"):
    parts = ("mtp_jax",) + p.relative_to(root).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    mods[name] = p
  graph = {}
  for name, p in mods.items():
    pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
          base = ".".join(up + ([base] if base else []))
        targets = [base] + [f"{base}.{a.name}" for a in node.names]
      else:
        continue
      out.update(t for t in targets if t in mods and t != name)
    graph[name] = out
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan, iterative)."""
  index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = counter[0]
    counter[0] += 1
    stack.append(start)
    on.add(start)
    while work:
      v, it = work[-1]
      w = next(it, None)
      if w is not None:
        if w not in index:
          index[w] = low[w] = counter[0]
          counter[0] += 1
          stack.append(w)
          on.add(w)
          work.append((w, iter(sorted(graph[w]))))
        elif w in on:
          low[v] = min(low[v], index[w])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[v])
      if low[v] == index[v]:
        comp = []
        while True:
          x = stack.pop()
          on.discard(x)
          comp.append(x)
          if x == v:
            break
        if len(comp) > 1:
          out.append(sorted(comp))
  return out


def test_cycle_finder_finds_a_planted_cycle():
  g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(g) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
  found = cycles(import_graph())
  assert not found, f"{len(found)} import cycle(s): {found}"


def test_config_is_the_bottom():
  assert import_graph()["mtp_jax.config"] == set()


def test_data_imports_neither_interop_nor_model():
  bad = sorted((a, b) for a, bs in import_graph().items() if a.startswith("mtp_jax.data")
               for b in bs if b.startswith(("mtp_jax.interop", "mtp_jax.model")))
  assert not bad, bad
